"""Output files: written whole or not at all, and readable (labels not cut, usage true)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from torchkiln.io import atomic_copy
from torchkiln.runtime.datasets import TensorSplit, write_tensors
from torchkiln.runtime.export import usage_snippet
from torchkiln.runtime.mistakes import TILE, mistakes_grid


def test_a_failed_tensor_write_leaves_neither_a_file_nor_a_temporary(tmp_path: Path) -> None:
    target = tmp_path / "data.safetensors"
    a = torch.zeros(4)
    with pytest.raises(RuntimeError, match="share memory"):  # safetensors refuses these
        write_tensors(target, {"a": a, "b": a})
    assert list(tmp_path.iterdir()) == []
    write_tensors(target, {"a": a})
    assert [p.name for p in tmp_path.iterdir()] == ["data.safetensors"]


def test_atomic_copy(tmp_path: Path) -> None:
    (tmp_path / "vocab.json").write_text('{"a": 1}')
    atomic_copy(tmp_path / "vocab.json", tmp_path / "out" / "vocab.json")
    assert (tmp_path / "out" / "vocab.json").read_text() == '{"a": 1}'
    with pytest.raises(FileNotFoundError):
        atomic_copy(tmp_path / "missing.json", tmp_path / "out" / "missing.json")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["vocab.json"]


def test_the_mistakes_grid_is_wide_enough_for_long_class_names(tmp_path: Path) -> None:
    from PIL import Image, ImageDraw

    classes = ["circle", "triangle", "a very long class name indeed"]
    split = TensorSplit((torch.zeros(3, 1, 8, 8, dtype=torch.uint8),), torch.tensor([0, 1, 2]))
    predicted = torch.tensor([1, 2, 0])
    mistakes_grid(split, torch.tensor([0, 1, 2]), predicted, classes, tmp_path / "m.png", columns=3)
    longest = "a very long class name indeed -> circle"
    width = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(longest)
    with Image.open(tmp_path / "m.png") as sheet:
        assert sheet.width >= 3 * width and sheet.width > 3 * TILE
    # short names keep the compact layout
    mistakes_grid(split, torch.tensor([0]), predicted, ["0", "1", "2"], tmp_path / "s.png")
    with Image.open(tmp_path / "s.png") as sheet:
        assert sheet.width == 6 * TILE


def card(*formats: str) -> dict:
    return {
        "inputs": ["images"],
        "outputs": ["logits"],
        "input": {"input": "float32 images in [0, 1], N x C x H x W"},
        "files": [{"format": f} for f in formats],
    }


def test_the_usage_snippet_shows_only_the_formats_that_were_exported() -> None:
    onnx_only = usage_snippet(card("onnx"))
    assert 'onnxruntime.InferenceSession("model.onnx")' in onnx_only
    assert "torch.jit.load" not in onnx_only and "safetensors" not in onnx_only
    script_only = usage_snippet(card("torchscript", "config"))
    assert 'torch.jit.load("model.pt")' in script_only and "onnxruntime" not in script_only
    everything = usage_snippet(card("torchscript", "onnx", "safetensors"))
    for needle in ("torch.jit.load", "onnxruntime", 'load_file("model.safetensors")'):
        assert needle in everything
    text = card("onnx")
    text["input"]["usage"] = {"prepare": "tokens = ...", "footer": "# or: kiln predict"}
    shown = usage_snippet(text)
    assert shown.index("tokens = ...") < shown.index("onnxruntime") < shown.index("kiln predict")
