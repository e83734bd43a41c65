"""Text pack, pure Python parts: tokenizers, vocabulary and encoding round trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from torchkiln.text.tokenizers import CharTokenizer, WordTokenizer, tokenizer_from_json
from torchkiln.text.vocab import CLS, PAD, UNK, UNK_INDEX, TextEncoder, Vocabulary

TEXT = "Don't panic: the BBC's 2 reports, café-bar!"


def test_word_tokenizer_splits_words_and_punctuation() -> None:
    assert WordTokenizer().tokenize(TEXT) == [
        "don't", "panic", ":", "the", "bbc's", "2", "reports", ",", "café", "-", "bar", "!",
    ]  # fmt: skip
    cased = WordTokenizer(lowercase=False, strip_accents=True).tokenize("Café Noir")
    assert cased == ["Cafe", "Noir"]
    assert WordTokenizer(pattern=r"[a-z]+").tokenize("ab1 cd") == ["ab", "cd"]
    # A group in a user's pattern does not change what a token is.
    assert WordTokenizer(pattern=r"(a)b+").tokenize("abb ab") == ["abb", "ab"]


def test_bad_patterns_are_validation_errors() -> None:
    with pytest.raises(ValidationError, match="not a valid regular expression"):
        WordTokenizer(pattern="(")
    with pytest.raises(ValidationError, match="empty string"):
        WordTokenizer(pattern=r"\w*")


def test_char_tokenizer_round_trips() -> None:
    text = "Hello, World! 42"
    assert "".join(CharTokenizer().tokenize(text)) == text
    assert CharTokenizer().tokenize("a \n\t b") == ["a", " ", "b"]
    assert CharTokenizer(lowercase=True, collapse_whitespace=False).tokenize("A\nb") == [
        "a", "\n", "b",
    ]  # fmt: skip


def test_tokenizer_config_round_trips_through_json() -> None:
    for tok in (WordTokenizer(lowercase=False, pattern=r"\S+"), CharTokenizer(lowercase=True)):
        again = tokenizer_from_json(json.loads(json.dumps(tok.model_dump(mode="json"))))
        assert again == tok
        assert again.tokenize(TEXT) == tok.tokenize(TEXT)


CORPUS = [["a", "b", "a", "c"], ["a", "b", "d"], ["e", "a"]]


def test_vocabulary_min_freq_max_size_and_order() -> None:
    vocab = Vocabulary.build(CORPUS, min_freq=1, max_size=None, add_cls=False)
    # specials first, then by decreasing count, ties in code-point order
    assert vocab.tokens == [PAD, UNK, "a", "b", "c", "d", "e"]
    assert vocab.counts == [0, 0, 4, 2, 1, 1, 1]
    assert Vocabulary.build(CORPUS, min_freq=2, max_size=None, add_cls=False).tokens == [
        PAD, UNK, "a", "b",
    ]  # fmt: skip
    small = Vocabulary.build(CORPUS, min_freq=1, max_size=4, add_cls=True)
    assert small.tokens == [PAD, UNK, CLS, "a"]  # max_size counts the specials
    assert small.cls_index == 2


def test_vocabulary_oov_and_json_round_trip() -> None:
    vocab = Vocabulary.build(CORPUS, min_freq=2, max_size=None, add_cls=False)
    assert vocab.ids(["a", "zzz", "b", "c"]) == [2, UNK_INDEX, 3, UNK_INDEX]
    again = Vocabulary.from_json(json.loads(json.dumps(vocab.to_json())))
    assert again == vocab
    assert again.decode(again.ids(["b", "a"])) == ["b", "a"]


def test_encoder_truncates_adds_cls_and_never_returns_empty() -> None:
    word = WordTokenizer()
    vocab = Vocabulary.build(
        [word.tokenize("one two three four five")], min_freq=1, max_size=None, add_cls=False
    )
    encoder = TextEncoder(word, vocab, max_length=3)
    assert encoder.decode(encoder.encode("One two three four five")) == "one two three"
    assert encoder.encode("six") == [UNK_INDEX]
    assert encoder.encode("") == [UNK_INDEX]  # models need one real position
    with_cls = Vocabulary.build(
        [word.tokenize("one two three")], min_freq=1, max_size=None, add_cls=True
    )
    enc = TextEncoder(word, with_cls, max_length=3)
    ids = enc.encode("one two three")
    assert len(ids) == 3 and ids[0] == with_cls.cls_index  # <cls> counts towards max_length
    assert enc.decode(ids) == "<cls> one two"
    assert enc.encode("") == [with_cls.cls_index, UNK_INDEX]


def test_encoder_round_trips_through_its_files(tmp_path: Path) -> None:
    char = CharTokenizer(lowercase=True)
    texts = ["Hello there", "hello world"]
    vocab = Vocabulary.build(
        [char.tokenize(t) for t in texts], min_freq=1, max_size=None, add_cls=False
    )
    encoder = TextEncoder(char, vocab, max_length=50)
    (tmp_path / "tokenizer.json").write_text(json.dumps(encoder.settings()))
    (tmp_path / "vocab.json").write_text(json.dumps(vocab.to_json()))
    again = TextEncoder.from_folder(tmp_path)
    for text in [*texts, "held?"]:
        assert again.encode(text) == encoder.encode(text)
    assert again.decode(again.encode("Hello world")) == "hello world"
    assert again.decode(again.encode("held?")) == "held<unk>"
