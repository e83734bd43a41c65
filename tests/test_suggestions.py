"""Did-you-mean: what a user probably meant by a name the registry does not know."""

from __future__ import annotations

import pytest

from torchkiln.registry.registry import did_you_mean, suggest

MODELS = ["mlp", "small_cnn", "torchvision/resnet18", "torchvision/resnet34", "dcgan"]


@pytest.mark.parametrize(
    ("word", "choices", "expected"),
    [
        ("resnet18", MODELS, ["torchvision/resnet18"]),  # the name after its namespace
        ("ResNet18", MODELS, ["torchvision/resnet18"]),
        ("resnt34", MODELS, ["torchvision/resnet34", "torchvision/resnet18"]),  # misspelt
        ("f1", ["accuracy", "f1_macro", "top_k"], ["f1_macro"]),  # a prefix
        ("small", MODELS, ["small_cnn"]),
        ("epochz", ["epochs", "batch_size"], ["epochs"]),  # a close spelling
        ("Adamw", ["AdamW", "Adam", "SGD"], ["AdamW", "Adam"]),
        ("zzz", MODELS, []),
    ],
)
def test_suggest(word: str, choices: list[str], expected: list[str]) -> None:
    assert suggest(word, choices) == expected


def test_did_you_mean_reads_as_a_question() -> None:
    assert did_you_mean("f1", ["f1_macro", "accuracy"]) == "did you mean 'f1_macro'? "
    assert did_you_mean("zzz", ["f1_macro"]) == ""
