"""`kiln list [KIND]`: what a spec can name, with parameters, types, defaults and bounds."""

from __future__ import annotations

import argparse

from torchkiln.commands import AddCommand
from torchkiln.errors import UsageError


def register(add: AddCommand) -> None:
    p = add("list", run, "List registered stage kinds and components with their parameters.")
    p.add_argument(
        "kind", nargs="?", help="one kind, singular or plural: stage, dataset, models, losses, ..."
    )
    p.add_argument("--brief", action="store_true", help="names and summaries only")


def kind_named(word: str, known: list[str]) -> str | None:
    """The registry kind a user means: `loss`, `losses`, `Losses` and `gan_losses` all work."""
    from torchkiln.registry.registry import plural

    wanted = word.strip().lower()
    for kind in known:
        if wanted in (kind, plural(kind)):
            return kind
    return None


def run(args: argparse.Namespace) -> int:
    from torchkiln.commands.common import default_specs
    from torchkiln.describe import registry_text
    from torchkiln.project import load_plugins_of
    from torchkiln.registry import ALL_REGISTRIES
    from torchkiln.registry.registry import did_you_mean

    load_plugins_of(default_specs())
    known = sorted(ALL_REGISTRIES)
    if args.kind is None:
        kinds = known
    else:
        kind = kind_named(args.kind, known)
        if kind is None:
            raise UsageError(
                f"no kind {args.kind!r}; {did_you_mean(args.kind, known)}kinds: {', '.join(known)}"
            )
        kinds = [kind]
    print("\n\n".join(registry_text(ALL_REGISTRIES[k], verbose=not args.brief) for k in kinds))
    return 0
