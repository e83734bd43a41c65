"""Tokenizers: the `tokenizer` registry and the built-in word and char tokenizers.

Pure Python (no torch): load_data tokenizes with these, and `kiln predict` rebuilds the
same tokenizer from an export folder's `tokenizer.json` without importing torch. A plugin
adds a tokenizer like any component:

    from typing import Literal
    from torchkiln.text.tokenizers import TokenizerConfig, tokenizers

    @tokenizers.register
    class Whitespace(TokenizerConfig):
        \"\"\"Split on whitespace.\"\"\"
        name: Literal["whitespace"] = "whitespace"

        def tokenize(self, text: str) -> list[str]:
            return text.split()
"""

from __future__ import annotations

import re
import unicodedata
from abc import abstractmethod
from typing import Any, ClassVar, Literal

from pydantic import field_validator

from torchkiln.registry.component import Component
from torchkiln.registry.registry import Registry


class TokenizerConfig(Component):
    """Splits a text into tokens (strings); the vocabulary maps them to ids."""

    #: How tokens are joined back into readable text (misclassified examples, previews).
    joiner: ClassVar[str] = " "

    @abstractmethod
    def tokenize(self, text: str) -> list[str]:
        """The tokens of `text`, in order."""


tokenizers: Registry[type[TokenizerConfig]] = Registry(
    "tokenizer", "A tokenizer: how text datasets split raw text into tokens."
)


def _normalise(text: str, lowercase: bool, strip_accents: bool) -> str:
    if strip_accents:
        text = "".join(
            c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)
        )
    return text.lower() if lowercase else text


@tokenizers.register
class WordTokenizer(TokenizerConfig):
    """Words and punctuation by a regular expression (every match is one token)."""

    name: Literal["word"] = "word"
    pattern: str = r"\w+(?:['\u2019]\w+)*|[^\w\s]"
    """Regular expression whose matches are the tokens (Python `re` syntax). The default
    keeps words (with inner apostrophes) and single punctuation marks."""
    lowercase: bool = True
    """Lowercase the text before tokenizing."""
    strip_accents: bool = False
    """Remove accents (café -> cafe) before tokenizing."""

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        if compiled.match(""):
            raise ValueError("the pattern matches the empty string, so it would loop forever")
        return value

    def tokenize(self, text: str) -> list[str]:
        # `re` caches compiled patterns; finditer (not findall) so groups in a user's
        # pattern do not change what a token is.
        text = _normalise(text, self.lowercase, self.strip_accents)
        return [m.group(0) for m in re.finditer(self.pattern, text)]


@tokenizers.register
class CharTokenizer(TokenizerConfig):
    """Every character is a token (robust to spelling; long sequences)."""

    name: Literal["char"] = "char"
    lowercase: bool = False
    """Lowercase the text before tokenizing."""
    collapse_whitespace: bool = True
    """Turn every run of whitespace (newlines included) into one space."""

    joiner: ClassVar[str] = ""

    def tokenize(self, text: str) -> list[str]:
        text = _normalise(text, self.lowercase, False)
        if self.collapse_whitespace:
            text = " ".join(text.split())
        return list(text)


def tokenizer_from_json(data: dict[str, Any]) -> TokenizerConfig:
    """Rebuild a tokenizer from its `model_dump` (tokenizer.json's `tokenizer`)."""
    return tokenizers.get(data["name"]).model_validate(data)
