"""One small registry type: a dict of names, a decorator refusing duplicates, helpful lookups."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: Every registry ever created, by kind, so `kiln list` and `kiln schema` see domain-pack kinds too.
ALL_REGISTRIES: dict[str, Registry[Any]] = {}


def suggest(word: str, choices: list[str], n: int = 3) -> list[str]:
    """Up to `n` likely meanings of a misspelt name, best first (case-insensitive): the
    name after a namespace (`resnet18` -> `torchvision/resnet18`), names it begins
    (`f1` -> `f1_macro`), then close spellings of whole names or of names after their
    namespace."""
    wanted = str(word).lower()
    lowered = {c.lower(): c for c in choices}
    tails = {c.rsplit("/", 1)[1]: full for c, full in lowered.items() if "/" in c}
    if wanted in tails:  # the same name, in its namespace: nothing else is as likely
        return [tails[wanted]]
    hits: list[str] = []
    if len(wanted) >= 2:
        hits += sorted((c for c in lowered if c.startswith(wanted) and c != wanted), key=len)
    hits += difflib.get_close_matches(wanted, list(lowered), n=n, cutoff=0.6)
    hits += [tails[t] for t in difflib.get_close_matches(wanted, list(tails), n=n, cutoff=0.6)]
    found = []
    for hit in hits:
        name = lowered.get(hit, hit)
        if name not in found:
            found.append(name)
    return found[:n]


def did_you_mean(word: str, choices: list[str]) -> str:
    """`"did you mean 'epochs'? "` or an empty string when nothing is close."""
    hits = suggest(word, choices)
    if not hits:
        return ""
    return "did you mean " + " or ".join(repr(h) for h in hits) + "? "


def choices_text(choices: list[str], limit: int = 40) -> str:
    shown = ", ".join(sorted(choices)[:limit])
    return shown + (f", ... ({len(choices) - limit} more)" if len(choices) > limit else "")


def plural(kind: str) -> str:
    """`loss` -> `losses`, `model` -> `models` (registry kinds in messages)."""
    return kind + ("es" if kind.endswith(("s", "x", "ch", "sh")) else "s")


def article(word: str) -> str:
    """`an optimizer`, `a model`."""
    return ("an " if word[:1].lower() in ("a", "e", "i", "o", "u") else "a ") + word


def _origin(module_name: str) -> str:
    """A module name, or for a plugin loaded from a file, that file (what the user knows)."""
    import sys

    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    if module_name.startswith("torchkiln_plugin_") and path:
        from pathlib import Path

        try:
            return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
        except ValueError:
            return path
    return module_name


class UnknownNameError(LookupError):
    """A name that no registered entry (nor the generic adapter) answers to."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        self.kind, self.name, self.known = kind, name, known  # kind: the registry's label
        super().__init__(
            f"unknown {kind} {name!r}; {did_you_mean(name, known)}"
            f"known {plural(kind)}: {choices_text(known)}"
        )


class DuplicateNameError(ValueError):
    pass


class IncompleteEntryError(TypeError):
    """A class registered without the methods its kind declares (e.g. a model without
    `build`): refused when it registers, not when a spec first uses it."""


class Registry(Generic[T]):
    """Named entries of one kind (models, optimizers, stage kinds...).

    An entry names itself through its `registry_name()` classmethod, so the name
    lives in one place (for components, the `name: Literal[...]` tag). `generic`
    optionally answers names that are not registered, e.g. any `torch.optim` class
    through one adapter; `generic_names` lists those for suggestions.
    """

    def __init__(
        self,
        kind: str,
        doc: str,
        *,
        generic: Callable[[str], T | None] | None = None,
        generic_names: Callable[[], list[str]] | None = None,
        label: str | None = None,
    ) -> None:
        if kind in ALL_REGISTRIES:
            raise DuplicateNameError(f"a registry of kind {kind!r} already exists")
        self.kind, self.doc = kind, doc
        #: How messages name an entry ("stage kind" reads better than "stage").
        self.label = label or kind
        self._entries: dict[str, T] = {}
        self._generic, self._generic_names = generic, generic_names
        ALL_REGISTRIES[kind] = self

    def set_generic(
        self, lookup: Callable[[str], T | None], names: Callable[[], list[str]]
    ) -> None:
        """Install the adapter that answers names nobody registered (one per registry)."""
        if self._generic is not None:
            raise DuplicateNameError(f"the {self.kind} registry already has a generic adapter")
        self._generic, self._generic_names = lookup, names

    def register(self, entry: T) -> T:
        """Decorator: add `entry` under its own name; refuse a name already taken."""
        name = entry.registry_name()  # type: ignore[attr-defined]
        if name in self._entries:
            holder = _origin(self._entries[name].__module__)  # type: ignore[attr-defined]
            newcomer = _origin(entry.__module__)  # type: ignore[attr-defined]
            raise DuplicateNameError(
                f"{self.kind} {name!r} is already registered by {holder}; "
                f"{newcomer} cannot register it again; pick another name"
            )
        if inspect.isabstract(entry):
            missing = ", ".join(f"{m}()" for m in sorted(entry.__abstractmethods__))  # type: ignore[attr-defined]
            raise IncompleteEntryError(
                f"{self.label} {name!r} ({_origin(entry.__module__)}) does not implement "  # type: ignore[attr-defined]
                f"{missing}, which every {self.label} must"
            )
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        """The entry called `name`, or the generic adapter's answer; else `UnknownNameError`."""
        if name in self._entries:
            return self._entries[name]
        if self._generic is not None:
            found = self._generic(name)
            if found is not None:
                return found
        raise UnknownNameError(self.label, name, self.known_names())

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def generic_names(self) -> list[str]:
        """Names only the generic adapter answers (not registered), sorted."""
        if self._generic_names is None:
            return []
        return sorted(set(self._generic_names()) - set(self._entries))

    def known_names(self) -> list[str]:
        return self.names() + self.generic_names()

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[tuple[str, T]]:
        return iter(sorted(self._entries.items()))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"
