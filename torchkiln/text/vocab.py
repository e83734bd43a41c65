"""Vocabulary and text encoding, in pure Python (no torch).

load_data learns a `Vocabulary` from the train split's tokens and encodes every split
with a `TextEncoder`; the export stage copies `vocab.json` and `tokenizer.json` next to
the exported model, and `kiln predict` rebuilds the very same `TextEncoder` from those two
files. One implementation on both sides, so raw text is encoded identically.

Ids: 0 is `<pad>`, 1 is `<unk>`, 2 is `<cls>` when the dataset adds one; then the
learned tokens by decreasing train-split frequency (ties in code-point order).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchkiln.errors import InputError
from torchkiln.io import read_json
from torchkiln.text.tokenizers import TokenizerConfig, tokenizer_from_json

PAD, UNK, CLS = "<pad>", "<unk>", "<cls>"
PAD_INDEX, UNK_INDEX = 0, 1
FORMAT = "torchkiln-text/1"


@dataclass
class Vocabulary:
    """Token strings by id; specials first."""

    tokens: list[str]
    #: train-split frequency of each token (0 for specials)
    counts: list[int]
    specials: dict[str, str]
    _index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index = {t: i for i, t in enumerate(self.tokens)}
        if len(self._index) != len(self.tokens):
            raise ValueError("a vocabulary lists some token twice")

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._index

    def id(self, token: str) -> int:
        return self._index.get(token, UNK_INDEX)

    def ids(self, tokens: Iterable[str]) -> list[int]:
        index = self._index
        return [index.get(t, UNK_INDEX) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[i] for i in ids]

    @property
    def cls_index(self) -> int | None:
        return self._index.get(CLS) if "cls" in self.specials else None

    @classmethod
    def build(
        cls,
        token_lists: Iterable[list[str]],
        *,
        min_freq: int,
        max_size: int | None,
        add_cls: bool,
    ) -> Vocabulary:
        """Learn from tokenized (train) examples: keep tokens seen at least `min_freq` times,
        the most frequent first, at most `max_size` entries in all (specials included)."""
        counter: Counter[str] = Counter()
        for tokens in token_lists:
            counter.update(tokens)
        specials = {"pad": PAD, "unk": UNK, **({"cls": CLS} if add_cls else {})}
        reserved = set(specials.values())
        learned = sorted(
            ((t, n) for t, n in counter.items() if n >= min_freq and t not in reserved),
            key=lambda item: (-item[1], item[0]),
        )
        if max_size is not None:
            learned = learned[: max(0, max_size - len(specials))]
        return cls(
            tokens=[*specials.values(), *(t for t, _ in learned)],
            counts=[0] * len(specials) + [n for _, n in learned],
            specials=specials,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "tokens": self.tokens,
            "counts": self.counts,
            "specials": self.specials,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Vocabulary:
        return cls(
            tokens=list(data["tokens"]),
            counts=list(data["counts"]),
            specials=dict(data["specials"]),
        )


@dataclass
class TextEncoder:
    """Raw text -> token ids: tokenize, map through the vocabulary, add `<cls>`, truncate."""

    tokenizer: TokenizerConfig
    vocab: Vocabulary
    max_length: int

    def tokens(self, text: str) -> list[str]:
        return self.tokenizer.tokenize(text)

    def encode_tokens(self, tokens: list[str]) -> list[int]:
        """Ids of already tokenized text; never empty (an empty text becomes `<unk>`), at
        most `max_length` long (the start of a longer text is kept)."""
        ids = self.vocab.ids(tokens[: self.max_length])
        cls_index = self.vocab.cls_index
        if cls_index is not None:
            ids.insert(0, cls_index)
        if len(ids) == (cls_index is not None):
            ids.append(UNK_INDEX)  # models need at least one real position
        return ids[: self.max_length]

    def encode(self, text: str) -> list[int]:
        return self.encode_tokens(self.tokens(text))

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.joiner.join(self.vocab.decode(ids))

    def settings(self) -> dict[str, Any]:
        """What tokenizer.json holds: everything but the vocabulary itself."""
        return {
            "format": FORMAT,
            "tokenizer": self.tokenizer.model_dump(mode="json"),
            "max_length": self.max_length,
            "pad_index": PAD_INDEX,
            "unk_index": UNK_INDEX,
            "cls_index": self.vocab.cls_index,
            "vocab_size": len(self.vocab),
            "truncation": "keep the first max_length tokens (<cls> included)",
        }

    @classmethod
    def from_json(cls, settings: dict[str, Any], vocab: dict[str, Any]) -> TextEncoder:
        return cls(
            tokenizer=tokenizer_from_json(settings["tokenizer"]),
            vocab=Vocabulary.from_json(vocab),
            max_length=int(settings["max_length"]),
        )

    @classmethod
    def from_folder(cls, folder: Path) -> TextEncoder:
        """From a folder holding `tokenizer.json` and `vocab.json` (a dataset or export).
        A damaged file (not JSON, or not what kiln wrote) is an `InputError` naming it."""
        settings, vocab = read_json(folder / "tokenizer.json"), read_json(folder / "vocab.json")
        try:
            return cls.from_json(settings, vocab)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputError(
                f"{folder.as_posix()}/vocab.json and tokenizer.json are not the vocabulary "
                f"kiln writes ({type(exc).__name__}: {exc})",
                folder / "vocab.json",
            ) from exc
