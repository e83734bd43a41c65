"""torchkiln's train stage next to the strongest plain PyTorch loops, epoch by epoch.

One process, the same model, data, batch size and thread count for all three loops:

- model: `small_cnn`, channels [32, 64], hidden 128, dropout 0.25 (421,738 parameters),
  the same initial weights for all three (build_model's artifact; the script checks);
- data: `mnist_sample` split val 0.1 / test 0.2 (3500 train and 500 val images, 28x28,
  uint8 in the artifact), no augmentation, normalised with the train statistics;
- training: batch 64, AdamW (lr 1e-3, weight decay 0.01), cross-entropy, fp32, CPU.

What is timed is a whole epoch as `kiln run --stage train` runs it, on each side:

- torchkiln: load_data and build_model run for real (`torchkiln.runner.run_stage`) into a
  temporary folder; the train stage's `SupervisedSteps` and training split come from
  `torchkiln.runtime.train.build_steps` on a `StageContext` made as the runner makes it,
  with the stage's `Selection` and `Checkpointer` (`runtime/checkpoints.py`). Each round is
  one call of the engine's `fit()` (`runtime/engine.py`) with `plan_of(cfg)` cut to one
  epoch, on the same steps (the model and optimizer carry on from round to round): the
  seeded batch order, batch indexing of the uint8 split, normalising each batch, the
  step, loss and accuracy summed on the device, the non-finite guard, the progress line,
  validation, the copy of the best state and the epoch checkpoint (written and fsynced).
  Between rounds the checkpoint is removed, untimed (else the next `fit()` would resume
  from it and have no epoch left to run), as `run_train` removes it after a run.
  Why one-epoch `fit()` calls and not one `fit()` over N epochs: only per-epoch timings
  can alternate with the plain loops, so both see the same machine load; a one-epoch
  `fit()` is exactly the per-epoch path plus a checkpoint-existence check.
- in-memory plain loop (the strongest hand-written one): the split normalised once into
  float tensors, each epoch a seeded `randperm` and batches by indexing, forward,
  backward, `step()`, `zero_grad(set_to_none=True)`, the running loss kept on the device;
  then validation (batches of 256, no grad) and a copy of the state.
- DataLoader plain loop (the tutorials' one): the same, with a `DataLoader` over a
  `TensorDataset` of the normalised tensors (`shuffle=True`), validation through one too.

Each round is a one-epoch run for every loop, so each copies its best state every round
(as every improving epoch does). The in-memory loop uses torchkiln's epoch seeds, so it
computes exactly what torchkiln computes: the script checks that both report the same
validation loss every round (the proof that the work is the same). The DataLoader loop
draws its own order.

For each thread count (`--threads 1 2`): one untimed warm-up epoch per loop, then
`--rounds` rounds in which the loops alternate, the order reversed every round. It prints
each loop's seconds per epoch (median, min and max), samples/s at the median, CPU seconds,
and the ratios torchkiln / plain (plain's median time over torchkiln's: 1.00 = as fast;
the same ratio of CPU seconds is shown beside it, less disturbed by other processes).
The target is judged on the medians at `--gate-threads` (1 by default, where other jobs on
the machine disturb timings least): torchkiln >= `--min-ratio` (0.97) x the in-memory
loop. Exits 1 when missed, or when torchkiln and the in-memory loop disagree.

    .venv/bin/python benchmarks/train_overhead.py [--rounds 7] [--threads 1 2] [--min-ratio 0.97]
        [--quick]

`--profile` adds a cProfile of one more torchkiln epoch (top functions by cumulative time).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from machine import load, machine
from torch import nn

SPEC = """\
name: overhead
task: classification
seed: 0
device: cpu
stages:
  load_data:
    dataset: {{name: mnist_sample}}
    split: {{val: 0.1, test: 0.2}}
  build_model:
    model: {{name: small_cnn, channels: [32, 64], hidden: 128, dropout: 0.25}}
  train:
    epochs: 1
    batch_size: {batch_size}
    optimizer: {{name: AdamW, lr: 1.0e-3, weight_decay: 0.01}}
"""
VAL_BATCH = 256


def prepare(folder: Path, batch_size: int) -> Any:
    """Run load_data and build_model for real; return the train stage's StageContext,
    made as `runner.run_stage` makes it."""
    from torchkiln.layout import scratch_dir, stage_paths
    from torchkiln.runner import run_stage
    from torchkiln.runtime.context import StageContext
    from torchkiln.schemas.spec import load_pipeline

    (folder / "overhead.yaml").write_text(SPEC.format(batch_size=batch_size))
    pipeline = load_pipeline(Path("overhead.yaml"))
    for name in ("load_data", "build_model"):
        with contextlib.redirect_stderr(io.StringIO()):
            run_stage(pipeline, name, log=False)
    node = pipeline.stages["train"]
    staging = folder / "train-staging"
    ctx = StageContext(
        pipeline=pipeline.name,
        stage="train",
        config=node.config,
        seed=pipeline.seed,
        task=pipeline.task,
        device=pipeline.device,
        deterministic=pipeline.deterministic,
        inputs={slot: stage_paths(pipeline.name, src).out for slot, src in node.inputs.items()},
        out_dir=staging / "out",
        metrics_path=staging / "metrics.json",
        plots_dir=staging / "plots",
        scratch_dir=scratch_dir(pipeline.name, "train"),
    )
    ctx.out_dir.mkdir(parents=True)
    return ctx


class Kiln:
    """The train stage's engine: `fit()` with the supervised steps, one epoch per call."""

    name = "torchkiln"

    def __init__(self, ctx: Any) -> None:
        from torchkiln.runtime.checkpoints import Checkpointer, run_key
        from torchkiln.runtime.device import resolve_device
        from torchkiln.runtime.engine import fit
        from torchkiln.runtime.train import build_steps, plan_of, selection_of

        cfg = ctx.config
        self.fit = fit
        # As run_train makes them (in one process: no `distributed:` settings).
        device = resolve_device(ctx.device, deterministic=ctx.deterministic)
        self.steps, self.train = build_steps(ctx, device)
        self.selection = selection_of(self.steps)
        key = run_key(cfg, ctx.seed, ctx.task.name, ctx.device, ctx.inputs)
        self.checkpoints = Checkpointer(ctx.scratch_dir, key, stage=ctx.stage, enabled=cfg.resume)
        self.plan = replace(plan_of(cfg), epochs=1)
        self.seed = ctx.seed
        self.saving = 0.0  # seconds spent writing checkpoints, over the timed rounds
        save = self.checkpoints.save

        def timed_save(state: dict[str, Any]) -> None:
            started = time.perf_counter()
            save(state)
            self.saving += time.perf_counter() - started

        self.checkpoints.save = timed_save  # type: ignore[method-assign]

    @property
    def model(self) -> nn.Module:
        return self.steps.plain_model

    def epoch(self) -> float:
        with contextlib.redirect_stderr(io.StringIO()):  # its one progress line per epoch
            result = self.fit(
                self.steps,
                self.train,
                self.plan,
                self.selection,
                seed=self.seed,
                device=self.steps.device,
                checkpoints=self.checkpoints,
            )
        return float(result.history[-1]["val_loss"])

    def after(self) -> None:
        self.checkpoints.clear()


class Plain:
    """A hand-written loop: in-memory batch indexing, or a DataLoader (`loader=True`)."""

    def __init__(self, ctx: Any, batch_size: int, *, loader: bool) -> None:
        from safetensors.torch import load_file

        from torchkiln.runtime.datasets import open_dataset
        from torchkiln.runtime.model_artifact import open_model

        self.name = "DataLoader" if loader else "in-memory"
        data = open_dataset(ctx.input("dataset"))
        tensors = load_file(ctx.input("dataset") / "data.safetensors")
        mean = torch.tensor(data.info.mean).view(1, -1, 1, 1)
        std = torch.tensor(data.info.std).view(1, -1, 1, 1)
        self.x = (tensors["train.x"].float().div_(255.0) - mean) / std
        self.y = tensors["train.y"]
        self.x_val = (tensors["val.x"].float().div_(255.0) - mean) / std
        self.y_val = tensors["val.y"]
        self.batch_size, self.seed = batch_size, ctx.seed
        self.loader = loader
        if loader:
            dataset = torch.utils.data.TensorDataset
            self.train_loader = torch.utils.data.DataLoader(
                dataset(self.x, self.y),
                batch_size=batch_size,
                shuffle=True,
                generator=torch.Generator().manual_seed(ctx.seed),
            )
            self.val_loader = torch.utils.data.DataLoader(
                dataset(self.x_val, self.y_val), batch_size=VAL_BATCH
            )
        self.model = open_model(ctx.input("model")).build()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=0.01)
        self.loss_fn = nn.CrossEntropyLoss()
        self.best: dict[str, torch.Tensor] = {}

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.loader:
            yield from self.train_loader
            return
        seed = epoch_seed(self.seed, 0)
        order = torch.randperm(len(self.y), generator=torch.Generator().manual_seed(seed))
        for index in order.split(self.batch_size):
            yield self.x[index], self.y[index]

    def val_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.loader:
            yield from self.val_loader
            return
        for index in torch.arange(len(self.y_val)).split(VAL_BATCH):
            yield self.x_val[index], self.y_val[index]

    def epoch(self) -> float:
        torch.manual_seed(epoch_seed(self.seed, 0))  # dropout draws, as torchkiln seeds them
        self.model.train()
        total = torch.zeros(())
        for x, y in self.batches():
            loss = self.loss_fn(self.model(x), y)
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            total += loss.detach() * len(y)
        self.model.eval()
        val_loss = torch.zeros(())
        correct = torch.zeros((), dtype=torch.long)
        with torch.no_grad():
            for x, y in self.val_batches():
                logits = self.model(x)
                val_loss += self.loss_fn(logits, y) * len(y)
                correct += (logits.argmax(dim=1) == y).sum()
        self.train_loss = float(total) / len(self.y)
        # Each round is a one-epoch run: its epoch is the best so far, its state is kept.
        self.best = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return float(val_loss) / len(self.y_val)

    def after(self) -> None:
        pass


def epoch_seed(seed: int, epoch: int) -> int:
    from torchkiln.runtime.loop import epoch_seed as seeds

    return seeds(seed, epoch)


@dataclass
class Timing:
    wall: list[float]
    cpu: list[float]


def timed(run: Callable[[], float]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (all threads of this process) and the result of one epoch."""
    wall, cpu = time.perf_counter(), time.process_time()
    value = run()
    return time.perf_counter() - wall, time.process_time() - cpu, value


def measure(loops: list[Any], threads: int, rounds: int, samples: int) -> dict[str, Timing]:
    torch.set_num_threads(threads)
    print(f"\n{threads} thread(s), {rounds} rounds; {load()}", flush=True)
    for loop in loops:  # warm-up: allocator, kernels, first touch
        wall, _, _ = timed(loop.epoch)
        loop.after()
        print(f"  warm-up {loop.name}: {wall:.2f}s", flush=True)
    times = {loop.name: Timing([], []) for loop in loops}
    for r in range(rounds):
        order = loops if r % 2 == 0 else loops[::-1]
        values: dict[str, float] = {}
        for loop in order:
            wall, cpu, values[loop.name] = timed(loop.epoch)
            loop.after()
            times[loop.name].wall.append(wall)
            times[loop.name].cpu.append(cpu)
        shown = "  ".join(f"{n} {t.wall[-1]:.3f}s" for n, t in times.items())
        print(f"  round {r + 1}: {shown}", flush=True)
        if values["torchkiln"] != values["in-memory"]:
            raise SystemExit(
                f"torchkiln and the in-memory loop disagree (val_loss {values['torchkiln']!r} "
                f"vs {values['in-memory']!r}): they are not doing the same work"
            )
    print(f"  after: {load()}")
    for name, t in times.items():
        median = statistics.median(t.wall)
        print(
            f"  {name:10s} {median:.3f} s/epoch median [min {min(t.wall):.3f}, max "
            f"{max(t.wall):.3f}], {samples / median:.0f} train samples/s, "
            f"{statistics.median(t.cpu):.2f} CPU s"
        )
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed epochs of each loop")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--gate-threads", type=int, default=1, help="judge the target here")
    parser.add_argument("--min-ratio", type=float, default=0.97, help="exit 1 below this")
    parser.add_argument("--profile", action="store_true", help="cProfile one torchkiln epoch")
    parser.add_argument("--quick", action="store_true", help="--rounds 2")
    args = parser.parse_args()
    if args.quick:
        args.rounds = 2
    os.environ["KILN_PROGRESS"] = "lines"  # as under dvc repro: no bar

    home = Path.cwd()
    results: dict[int, dict[str, Timing]] = {}
    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as tmp:
        os.chdir(tmp)
        try:
            ctx = prepare(Path(tmp), args.batch_size)
            kiln = Kiln(ctx)
            memory = Plain(ctx, args.batch_size, loader=False)
            loader = Plain(ctx, args.batch_size, loader=True)
            samples = len(kiln.train)
            assert samples == len(memory.y)
            with torch.no_grad():  # the same initial weights
                for model in (memory.model, loader.model):
                    for a, b in zip(kiln.model.parameters(), model.parameters(), strict=True):
                        assert a.equal(b)
            print(
                f"small_cnn [32, 64] on mnist_sample: {samples} train and {len(memory.y_val)} "
                f"val images per epoch, batch {args.batch_size}, AdamW, fp32, CPU, torch "
                f"{torch.__version__}\n{machine()}",
                flush=True,
            )
            loops = [kiln, memory, loader]
            for threads in args.threads:
                kiln.saving = 0.0
                results[threads] = measure(loops, threads, args.rounds, samples)
                print(
                    f"  of torchkiln's epoch: checkpoint writing "
                    f"{kiln.saving / args.rounds:.3f} s (mean)"
                )
            if args.profile:
                profile_epoch(kiln)
        finally:
            os.chdir(home)

    failed = False
    print()
    for threads, times in results.items():
        kiln_median = statistics.median(times["torchkiln"].wall)
        kiln_cpu = statistics.median(times["torchkiln"].cpu)
        for plain in ("in-memory", "DataLoader"):
            ratio = statistics.median(times[plain].wall) / kiln_median
            cpu_ratio = statistics.median(times[plain].cpu) / kiln_cpu
            what = (
                f"torchkiln / {plain} loop at {threads} thread(s): {ratio:.3f}x "
                f"(CPU seconds: {cpu_ratio:.3f}x)"
            )
            if plain == "in-memory" and threads == args.gate_threads:
                ok = ratio >= args.min_ratio
                failed |= not ok
                print(f"{'PASS' if ok else 'FAIL'}: {what} (target >= {args.min_ratio})")
            else:
                print(f"INFO: {what} (not gated)")
    if args.gate_threads not in results:
        print(f"FAIL: no run at --gate-threads {args.gate_threads}")
        return 1
    return 1 if failed else 0


def profile_epoch(kiln: Kiln) -> None:
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(kiln.epoch)
    kiln.after()
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    sys.exit(main())
