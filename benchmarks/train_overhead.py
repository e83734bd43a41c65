"""torchkiln's train loop next to a plain hand-written PyTorch loop: same model, data, batch.

Both train `small_cnn` (channels [32, 64]) on the train split of `mnist_sample` (3500 real
MNIST digits, 28x28), batch 128, AdamW, fp32, no augmentation, on the CPU, in this one
process with the same `torch.set_num_threads`:

- torchkiln: load_data and build_model run for real into a temporary folder; the train
  stage's `Fit` is built by `torchkiln.runtime.train.build_fit` from a `StageContext` that
  points at those artifacts, and `fit.train_epoch(epoch)` is timed (it includes the
  non-finite guard, loss and accuracy accumulation, and normalising each uint8 batch).
- plain: the idiomatic loop, a DataLoader over a TensorDataset of normalised float
  tensors (shuffle=True), the same initial weights and optimizer settings,
  `zero_grad(set_to_none=True)`, no `loss.item()` per step.

After one warm-up epoch each, the two alternate (the order flips every round) and the
median samples/s of each is compared.

    .venv/bin/python benchmarks/train_overhead.py [--rounds 5] [--threads 2] [--min-ratio 0.97]

Prints samples/s of each and the ratio torchkiln / plain; exits 1 when the ratio is below
`--min-ratio`. `--profile` adds a cProfile of one torchkiln epoch (top functions by
cumulative time).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

LR, WEIGHT_DECAY = 3.0e-3, 1.0e-4

SPEC = """\
name: overhead
task: classification
seed: 0
device: cpu
stages:
  load_data:
    dataset: {{name: mnist_sample}}
    split: {{val: 0.1, test: 0.2, stratify: true}}
  build_model:
    model: {{name: small_cnn, channels: [32, 64], hidden: 128, dropout: 0.25}}
  train:
    epochs: 1
    batch_size: {batch_size}
    optimizer: {{name: AdamW, lr: {lr}, weight_decay: {weight_decay}}}
    precision: fp32
"""


def prepare(folder: Path, batch_size: int) -> tuple[object, object]:
    """Run load_data and build_model for real; return the train stage's context and the
    pipeline (so both loops start from the same artifacts)."""
    from torchkiln.runner import SCRATCH, run_stage, stage_paths
    from torchkiln.runtime.context import StageContext
    from torchkiln.schemas.spec import load_pipeline

    spec = SPEC.format(batch_size=batch_size, lr=LR, weight_decay=WEIGHT_DECAY)
    (folder / "overhead.yaml").write_text(spec)
    pipeline = load_pipeline(Path("overhead.yaml"))
    for name in ("load_data", "build_model"):
        run_stage(pipeline, name, log=False)
    node = pipeline.stages["train"]
    staging = folder / "train-staging"
    ctx = StageContext(
        pipeline=pipeline.name,
        stage="train",
        config=node.config,
        seed=pipeline.seed,
        task=pipeline.task,
        device="cpu",
        inputs={slot: stage_paths(pipeline.name, src).out for slot, src in node.inputs.items()},
        out_dir=staging / "out",
        metrics_path=staging / "metrics.json",
        plots_dir=staging / "plots",
        scratch_dir=SCRATCH / pipeline.name / "train",
    )
    return ctx, pipeline


class Plain:
    """The hand-written loop, as the PyTorch tutorials write it."""

    def __init__(self, ctx: object, batch_size: int) -> None:
        from torchkiln.runtime.datasets import open_dataset
        from torchkiln.runtime.model_artifact import open_model

        data = open_dataset(ctx.input("dataset"))  # type: ignore[attr-defined]
        split = data.split("train")
        (images,), targets = split.batch(torch.arange(len(split)))
        mean = torch.tensor(data.info.mean).view(1, -1, 1, 1)
        std = torch.tensor(data.info.std).view(1, -1, 1, 1)
        x = (images.float() / 255.0 - mean) / std
        self.samples = len(targets)
        self.loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x, targets),
            batch_size=batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(0),
        )
        self.model = open_model(ctx.input("model")).build()  # type: ignore[attr-defined]
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY
        )
        self.loss_fn = nn.CrossEntropyLoss()

    def train_epoch(self, epoch: int) -> float:
        self.model.train()
        total = torch.zeros(())
        for x, y in self.loader:
            loss = self.loss_fn(self.model(x), y)
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            total += loss.detach() * len(y)
        return float(total) / self.samples


def timed(run: Callable[[int], object], epoch: int) -> tuple[float, float]:
    """Wall seconds and CPU seconds (all threads of this process) of one epoch."""
    wall, cpu = time.perf_counter(), time.process_time()
    run(epoch)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed epochs of each loop")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--min-ratio", type=float, default=0.97, help="exit 1 below this")
    parser.add_argument("--profile", action="store_true", help="cProfile one torchkiln epoch")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    home = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as tmp:
        os.chdir(tmp)
        try:
            from torchkiln.runtime.train import build_fit

            ctx, _ = prepare(Path(tmp), args.batch_size)
            fit = build_fit(ctx)  # type: ignore[arg-type]
            plain = Plain(ctx, args.batch_size)
            samples = len(fit.train)
            assert samples == plain.samples
            with torch.no_grad():  # same initial weights
                for a, b in zip(fit.model.parameters(), plain.model.parameters(), strict=True):
                    assert a.equal(b)
            loops = {"torchkiln": fit.train_epoch, "plain": plain.train_epoch}
            print(
                f"small_cnn [32, 64] on mnist_sample: {samples} training images, batch "
                f"{args.batch_size}, AdamW, fp32, CPU, torch {torch.__version__}, "
                f"{torch.get_num_threads()} threads",
                flush=True,
            )
            for name, run in loops.items():  # warm-up (allocator, kernels, first-touch)
                print(f"warm-up {name}: {timed(run, 0)[0]:.2f}s", flush=True)
            seconds: dict[str, list[float]] = {name: [] for name in loops}
            cpu: dict[str, list[float]] = {name: [] for name in loops}
            for r in range(args.rounds):
                order = list(loops) if r % 2 == 0 else list(reversed(loops))
                for name in order:
                    wall, used = timed(loops[name], r + 1)
                    seconds[name].append(wall)
                    cpu[name].append(used)
                shown = "  ".join(
                    f"{n} {samples / seconds[n][-1]:6.0f}/s ({cpu[n][-1]:.2f} CPU s)" for n in loops
                )
                print(f"round {r + 1}: {shown}", flush=True)
            if args.profile:
                profile_epoch(fit.train_epoch, args.rounds + 1)
        finally:
            os.chdir(home)
    rates = {name: samples / statistics.median(s) for name, s in seconds.items()}
    best = {name: samples / min(s) for name, s in seconds.items()}
    ratio = rates["torchkiln"] / rates["plain"]
    for name in loops:
        print(
            f"{name + ':':10s} {rates[name]:.0f} samples/s median, {best[name]:.0f} best, "
            f"{statistics.median(cpu[name]):.2f} CPU s per epoch (median of {args.rounds})"
        )
    # The best epochs are what each loop costs when nothing else competes for the CPU.
    print(f"ratio of the best epochs: {best['torchkiln'] / best['plain']:.3f}")
    print(f"ratio torchkiln / plain: {ratio:.3f} (target >= {args.min_ratio})")
    if ratio < args.min_ratio:
        print("torchkiln's train loop is slower than the target", file=sys.stderr)
        return 1
    return 0


def profile_epoch(run: Callable[[int], object], epoch: int) -> None:
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(run, epoch)
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    sys.exit(main())
