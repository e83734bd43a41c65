"""`kiln predict SPEC "some text" ...` for text classifiers: raw text encoded with the
export folder's `tokenizer.json` and `vocab.json` exactly as load_data did, then
`model.onnx` under onnxruntime (numpy only, no torch import) or `model.pt` under
TorchScript."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torchkiln.commands.exports import exported_file, read_card
from torchkiln.errors import RunError, UsageError


def _inputs(args: argparse.Namespace) -> list[str]:
    texts = list(args.inputs)
    if args.file:
        if args.file == "-":
            lines = sys.stdin.read().splitlines()
        else:
            path = Path(args.file)
            if not path.is_file():
                raise UsageError(f"--file {args.file}: no such file")
            raw = path.read_bytes()
            try:
                lines = raw.decode("utf-8-sig").splitlines()
            except UnicodeDecodeError as exc:
                line = raw[: exc.start].count(b"\n") + 1
                raise UsageError(
                    f"--file {args.file}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
                    "save it as UTF-8"
                ) from None
        texts += [line for line in lines if line.strip()]
    if not texts:
        raise UsageError("give texts to classify, or --file FILE with one text per line")
    return texts


class Classifier:
    """Raw text -> class probabilities, from an export folder alone."""

    def __init__(self, folder: Path, fmt: str = "auto", path: Path | None = None) -> None:
        from torchkiln.text.vocab import TextEncoder

        self.folder = folder
        card = json.loads((folder / "model_card.json").read_text(encoding="utf-8"))
        self.classes: list[str] = list(card["classes"])
        self.encoder = TextEncoder.from_folder(folder)
        if path is None:
            fmt, path = exported_file(folder, fmt)
        self.format = fmt
        self.run = self._onnx(path) if fmt == "onnx" else self._torchscript(path)

    def _onnx(self, path: Path) -> Callable[[Any, Any], Any]:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda tokens, lengths: session.run(None, {"tokens": tokens, "lengths": lengths})[0]

    def _torchscript(self, path: Path) -> Callable[[Any, Any], Any]:
        import warnings

        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit is deprecated upstream; still works
            module = torch.jit.load(str(path), map_location="cpu")

        def run(tokens: Any, lengths: Any) -> Any:
            with torch.no_grad():
                return module(torch.from_numpy(tokens), torch.from_numpy(lengths)).numpy()

        return run

    def probabilities(self, texts: list[str], batch_size: int = 64) -> Any:
        import numpy as np

        out = []
        for start in range(0, len(texts), batch_size):
            ids = [self.encoder.encode(t) for t in texts[start : start + batch_size]]
            lengths = np.array([len(i) for i in ids], dtype=np.int64)
            tokens = np.zeros((len(ids), int(lengths.max())), dtype=np.int64)  # 0 is <pad>
            for row, seq in enumerate(ids):
                tokens[row, : len(seq)] = seq
            logits = np.asarray(self.run(tokens, lengths), dtype=np.float64)
            logits -= logits.max(axis=1, keepdims=True)
            exp = np.exp(logits)
            out.append(exp / exp.sum(axis=1, keepdims=True))
        return np.concatenate(out)


def open_classifier(folder: Path, fmt: str = "auto", path: Path | None = None) -> Classifier:
    read_card(folder)
    if not (folder / "tokenizer.json").exists() or not (folder / "vocab.json").exists():
        raise RunError(
            f"{folder.as_posix()} has no tokenizer.json/vocab.json: `kiln predict` classifies "
            "raw text, and this export is not a text model"
        )
    return Classifier(folder, fmt, path)


def _preview(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def predict_text(
    args: argparse.Namespace, folder: Path, card: dict[str, Any], fmt: str, path: Path
) -> int:
    """Classify the texts on the command line (and the lines of --file)."""
    if args.top < 1:
        raise UsageError("--top must be at least 1")
    texts = _inputs(args)
    classifier = open_classifier(folder, fmt, path)
    probs = classifier.probabilities(texts)
    k = min(args.top, len(classifier.classes))
    for text, row in zip(texts, probs, strict=True):
        best = sorted(range(len(row)), key=lambda i: (-row[i], i))[:k]
        ranked = [(classifier.classes[i], float(row[i])) for i in best]
        if args.json:
            record = {"text": text, "label": ranked[0][0], "probability": round(ranked[0][1], 6)}
            if k > 1:
                record["top"] = [{"label": c, "probability": round(p, 6)} for c, p in ranked]
            print(json.dumps(record, ensure_ascii=False, sort_keys=True))
        else:
            shown = "  ".join(f"{c}\t{p:.4f}" for c, p in ranked)
            print(f"{shown}\t{_preview(text)}")
    return 0
