"""The two exact ways an RNN keeps padding out, per training step, on this machine.

`bbc_lstm`'s shape: batch 32, 400 tokens, embedding 128, a bidirectional LSTM of 64 units
per direction, max pooling, one AdamW step. Each step is timed for:

- packed: `pack_padded_sequence` (on the CPU a step-by-step loop, not oneDNN's kernel);
- masked: torchkiln's masked path (`RnnNet._masked`): one pass per direction over the
  padded batch, the backward one on each text reversed within its length (exact);
- padded (not exact): one bidirectional pass over the padded batch, the floor (its
  backward direction reads padding first, so it is not a choice, only a reference).

The two exact paths must agree on every valid position (checked); `rnn_classifier`'s
`pack: auto` uses the masked path on the CPU. Exits 1 when masked is not faster than packed.

    .venv/bin/python benchmarks/rnn_paths.py [--threads 2] [--repeats 5] [--lengths 300-400]
        [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import load, machine

from torchkiln.data.info import DatasetInfo
from torchkiln.text.models import RnnClassifier


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lengths", default="300-400", help="text lengths, drawn uniformly")
    parser.add_argument("--quick", action="store_true", help="--repeats 2")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 2
    torch.set_num_threads(args.threads)
    low, high = (int(v) for v in args.lengths.split("-"))
    batch, length = 32, high
    extra = {"vocab_size": 20000, "pad_index": 0, "max_length": length}
    info = DatasetInfo("text", "classification", tuple("abcde"), (), {"train": 1}, extra=extra)
    cfg = RnnClassifier(embedding_dim=128, hidden_size=64, bidirectional=True, pooling="max",
                        dropout=0.0)  # fmt: skip
    torch.manual_seed(0)
    model = cfg.build(info).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    lengths = torch.randint(low, high + 1, (batch,))
    tokens = torch.randint(2, 20000, (batch, length))
    tokens[torch.arange(length).unsqueeze(0) >= lengths.unsqueeze(1)] = 0
    targets = torch.randint(0, 5, (batch,))
    layer = model.encoder[0]

    def padded_once(x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        return layer(x)[0]

    paths = {
        "packed": lambda x, n: model._packed(layer, x, n),
        "masked": lambda x, n: model._masked(layer, x, n),
        "padded (not exact)": padded_once,
    }
    x = model.embedding(tokens)
    keep = (torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1)
    with torch.no_grad():
        gap = ((paths["packed"](x, lengths) - paths["masked"](x, lengths)).abs() * keep).max()
    loss_fn = nn.CrossEntropyLoss()

    def step(encode: object) -> float:
        start = time.perf_counter()
        out = encode(model.embedding(tokens), lengths)  # type: ignore[operator]
        pooled = out.masked_fill(~keep, float("-inf")).max(dim=1).values
        loss_fn(model.head(pooled), targets).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    times: dict[str, list[float]] = {name: [] for name in paths}
    for encode in paths.values():
        step(encode)  # warm-up
    for round_ in range(args.repeats):
        order = list(paths) if round_ % 2 == 0 else list(reversed(paths))
        for name in order:
            times[name].append(step(paths[name]))
    print(f"CPU: {machine()}; {args.threads} thread(s); {load()}")
    print(f"batch {batch}, lengths {low}-{high}, embedding 128, BiLSTM 64 per direction")
    for name, values in times.items():
        print(f"{name:<20} {statistics.median(values) * 1000:8.0f} ms per step "
              f"(min {min(values) * 1000:.0f}, max {max(values) * 1000:.0f})")  # fmt: skip
    print(f"largest difference packed vs masked on valid positions: {float(gap):.2e}")
    ratio = statistics.median(times["packed"]) / statistics.median(times["masked"])
    verdict = "PASS" if ratio > 1 and gap < 1e-4 else "FAIL"
    print(f"{verdict}: the masked path is {ratio:.2f}x as fast as packing, and exact")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
