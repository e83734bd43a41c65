"""A careful hand-written PyTorch training script: the baseline of `train_process.py`.

It does what `kiln run SPEC --stage train` does for `small_cnn` on a dataset artifact,
the way a careful user writes it by hand, in plain PyTorch (no torchkiln import):

- reads the images and labels of the load_data artifact (`data.safetensors`) and
  normalises them once, as in-memory float tensors;
- builds the same small CNN in plain `torch.nn` and loads build_model's initial weights
  (so both runs start from the same point and can be compared number for number);
- each epoch: a seeded `randperm`, batches by indexing the tensors, forward, backward,
  `AdamW.step()`, `zero_grad(set_to_none=True)`, the running loss kept on the device;
  then validation (batches of 256, no grad) and a copy of the best state by val loss;
- writes the best state (`weights.safetensors`) and the per-epoch history (JSON).

The seeds follow torchkiln's (`epoch_seed`), so the history it prints is the one the
train stage writes: the proof that both did the same work.

    python benchmarks/plain_train.py DATASET_DIR MODEL_DIR OUT_DIR [--epochs 5] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + 1) % (2**63 - 1)


class SmallCnn(nn.Module):
    """conv-BN-ReLU-maxpool blocks, then Flatten, Linear, ReLU, Dropout, Linear."""

    def __init__(self, channels: list[int], hidden: int, dropout: float, classes: int) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        c_in, side = 1, 28
        for c in channels:
            blocks += [
                nn.Conv2d(c_in, c, 3, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c_in, side = c, side // 2
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c_in * side * side, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("model", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()

    torch.manual_seed(args.seed)
    meta = json.loads((args.dataset / "meta.json").read_text())["info"]
    tensors = load_file(args.dataset / "data.safetensors")
    mean = torch.tensor(meta["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(meta["std"]).view(1, -1, 1, 1)
    x_train = (tensors["train.x"].float().div_(255.0) - mean) / std
    x_val = (tensors["val.x"].float().div_(255.0) - mean) / std
    y_train, y_val = tensors["train.y"], tensors["val.y"]

    config = json.loads((args.model / "model.json").read_text())["model"]
    model = SmallCnn(config["channels"], config["hidden"], config["dropout"], len(meta["classes"]))
    model.load_state_dict(load_file(args.model / "weights.safetensors"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    loss_fn = nn.CrossEntropyLoss()
    n = len(y_train)

    history, best_loss, best_state = [], float("inf"), None
    for epoch in range(args.epochs):
        epoch_started = time.perf_counter()
        seed = epoch_seed(args.seed, epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        torch.manual_seed(seed)
        model.train()
        total = torch.zeros(())
        for index in order.split(args.batch_size):
            x, y = x_train[index], y_train[index]
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            total += loss.detach() * len(y)
        model.eval()
        val_loss, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)
        with torch.no_grad():
            for index in torch.arange(len(y_val)).split(256):
                logits = model(x_val[index])
                val_loss += loss_fn(logits, y_val[index]) * len(index)
                correct += (logits.argmax(dim=1) == y_val[index]).sum()
        record = {
            "epoch": epoch + 1,
            "train_loss": float(total) / n,
            "val_loss": float(val_loss) / len(y_val),
            "val_accuracy": float(correct) / len(y_val),
        }
        history.append(record)
        if record["val_loss"] < best_loss:
            best_loss = record["val_loss"]
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        shown = "  ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "epoch")
        seconds = time.perf_counter() - epoch_started
        print(f"epoch {epoch + 1}/{args.epochs}  {shown}  ({seconds:.1f}s)", file=sys.stderr)

    args.out.mkdir(parents=True, exist_ok=True)
    assert best_state is not None
    save_file(best_state, str(args.out / "weights.safetensors"))
    (args.out / "history.json").write_text(json.dumps(history, indent=2))
    print(f"trained in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
