"""The preprocessor of the "text" modality (registered by the text pack's `__init__`).

Text is tokenized and encoded once, by load_data, so batches reach the model as they are
stored: `(tokens int64 [batch, seq], lengths int64 [batch])`. Exported text models take
the same two inputs, with free batch and sequence axes; the export folder also gets the
dataset's `tokenizer.json` and `vocab.json`, so raw text can be classified from the
exported files alone (`kiln predict`, or the snippet in the model card).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchkiln.data.info import DatasetInfo
from torchkiln.io import atomic_copy, atomic_write_text
from torchkiln.runtime.exporting import ExportTarget
from torchkiln.runtime.preprocess import Preprocessor, Rebuild

#: sequence length of the example batch exports are traced with
TRACE_LENGTH = 16
#: what the export folder needs besides the model to classify raw text
EXPORT_FILES = ("tokenizer.json", "vocab.json")

USAGE = {
    "prepare": """\
from torchkiln.text.vocab import TextEncoder      # or re-implement: see tokenizer.json
encoder = TextEncoder.from_folder(".")            # tokenizer.json + vocab.json
ids = [encoder.encode(t) for t in texts]
lengths = torch.tensor([len(i) for i in ids])
tokens = torch.zeros(len(ids), int(lengths.max()), dtype=torch.long)   # 0 is <pad>
for row, i in enumerate(ids):
    tokens[row, : len(i)] = torch.tensor(i)""",
    "footer": '# or, from a shell: kiln predict pipelines/<name>.yaml "some text"',
}


class TextPreprocessor(Preprocessor):
    """Stored batches are already model inputs: nothing to transform."""

    def __init__(self, info: DatasetInfo) -> None:
        self.info = info

    def to(self, device: torch.device | str) -> TextPreprocessor:
        return self

    def train_inputs(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return inputs

    def eval_inputs(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return inputs

    def export_target(
        self, model: nn.Module, stored: tuple[torch.Tensor, ...], rebuild: Rebuild
    ) -> ExportTarget:
        """Exported text models take `tokens` (int64 [batch, sequence], right-padded with 0)
        and `lengths` (int64 [batch]) and return class logits.

        Traced on the stored batch cut to `TRACE_LENGTH` tokens (tracing an RNN costs time in
        proportion to the sequence length, and the sequence axis is free anyway), then checked
        on that, on half of it, on the full stored batch and at shorter lengths."""
        from torchkiln.runtime.model_artifact import state_for_saving

        tokens, lengths = stored[0].cpu(), stored[1].cpu()

        def cut(batch: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
            short = lengths[:batch].clamp(max=min(size, tokens.shape[1]))
            return tokens[:batch, : int(short.max())].clone(), short.clone()

        full = len(tokens)
        example = cut(full, TRACE_LENGTH)
        cases = [cut(full, tokens.shape[1]), cut(full, max(1, tokens.shape[1] // 2)), cut(1, 3)]
        return ExportTarget(
            module=model.eval(),
            example=example,
            input_names=["tokens", "lengths"],
            dynamic_axes={"tokens": {0: "batch", 1: "sequence"}, "lengths": {0: "batch"}},
            output_names=["logits"],
            rebuild=rebuild,
            weights=state_for_saving(model),
            extra_checks=cases,
        )

    def export_files(self, dataset_dir: Path, out_dir: Path) -> list[str]:
        """Copy the tokenizer settings and vocabulary next to the exported model."""
        for name in EXPORT_FILES:
            atomic_copy(dataset_dir / name, out_dir / name)
        return list(EXPORT_FILES)

    def write_mistakes(
        self,
        split: Any,
        wrong: torch.Tensor,
        predicted: torch.Tensor,
        classes: list[str],
        out_dir: Path,
        plots_dir: Path,
    ) -> None:
        """misclassified.jsonl in the evaluation artifact: source, labels and the text as
        the model saw it (decoded ids, truncated for reading)."""
        lines = []
        for i in wrong.tolist():
            example = split.example(i)
            record = {
                "index": i,
                "source": example["source"],
                "actual": classes[int(split.targets[i])],
                "predicted": classes[int(predicted[i])],
                "text": example["text"][:400],
            }
            lines.append(json.dumps(record, sort_keys=True, ensure_ascii=False))
        atomic_write_text(out_dir / "misclassified.jsonl", "".join(f"{x}\n" for x in lines))

    def describe(self) -> dict[str, Any]:
        extra = self.info.extra
        return {
            "input": "int64 token ids [batch, sequence] right-padded with <pad> (id 0), "
            "and int64 lengths [batch]",
            "tokenizer": extra.get("tokenizer"),
            "vocab_size": extra.get("vocab_size"),
            "max_length": extra.get("max_length"),
            "files": "tokenizer.json and vocab.json (encode raw text with these)",
            "usage": USAGE,
        }


def text_preprocessor(info: DatasetInfo, transforms_dir: Path | None) -> TextPreprocessor:
    """The preprocessor for text; an augment stage's image transforms do not apply."""
    return TextPreprocessor(info)
