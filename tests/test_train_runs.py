"""The train stage through the real `kiln run`: a killed run resumes to the same weights,
a non-finite loss stops with the epoch and step, stage order is enforced, and the
precision options behave on the CPU (bf16 really computes in bfloat16)."""

from __future__ import annotations

import math
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from cli_tools import (
    KILN,
    TIMEOUT,
    environment,
    failed,
    kiln,
    ok,
    shared_folder,
    synthetic,
    write_spec,
)

from torchkiln.io import read_json

pytestmark = pytest.mark.e2e

UPSTREAM = ("load_data", "augment", "build_model")


def train_block(**train: Any) -> dict[str, Any]:
    return {
        "epochs": 2,
        "batch_size": 8,
        "optimizer": {"name": "SGD", "lr": 0.05, "momentum": 0.9},
        **train,
    }


def spec(folder: Path, name: str = "fit", **train: Any) -> Path:
    """A pipeline whose train stage is an MLP on synthetic data (fast per epoch)."""
    return write_spec(
        folder,
        name,
        {
            "load_data": {
                "dataset": synthetic(num_classes=4, per_class=60, size=8),
                "split": {"val": 0.2, "test": 0.2},
            },
            "augment": {"train": [], "preview": 0},
            "build_model": {"model": {"name": "mlp", "hidden": [32], "dropout": 0.2}},
            "train": train_block(**train),
            "evaluate": {},
        },
    )


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where load_data, augment and build_model of `spec()` have run."""

    def build(folder: Path) -> None:
        spec(folder)
        args = [a for s in UPSTREAM for a in ("--stage", s)]
        ok(kiln("run", "fit.yaml", *args, cwd=folder))

    return shared_folder(tmp_path_factory, "upstream", build)


def prepared(upstream: Path, into: Path, **train: Any) -> Path:
    """A copy of `upstream` with the train block of the spec replaced."""
    shutil.copytree(upstream / "runs", into / "runs")
    spec(into, **train)
    return into


def test_killed_training_resumes_to_identical_weights(upstream: Path, tmp_path: Path) -> None:
    train = {
        "epochs": 30,
        "scheduler": {"name": "OneCycleLR"},  # steps per batch: resumed mid-schedule
        "early_stopping": {"patience": 50},
    }
    reference = prepared(upstream, tmp_path / "reference", **train)
    resumed = prepared(upstream, tmp_path / "resumed", **train)

    scratch = resumed / ".kiln/scratch/fit/train"
    process = subprocess.Popen(
        [str(KILN), "run", "fit.yaml", "--stage", "train"],
        cwd=resumed,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment(),
    )
    assert process.stdout is not None
    watchdog = threading.Timer(TIMEOUT, process.kill)  # a hung child ends the line stream
    watchdog.start()
    lines: list[str] = []
    try:
        # Each epoch's line is logged just before that epoch's checkpoint is written, so
        # once "epoch 2/30" has been read, the checkpoint after epoch 1 is on disk.
        for line in process.stdout:  # blocks until the child writes a line, or ends
            lines.append(line)
            if line.startswith("epoch 2/30"):
                break
        assert process.poll() is None, "training ended before it could be killed:\n" + (
            "".join(lines)
        )
        assert list(scratch.glob("*.pt")), "no checkpoint after epoch 1:\n" + "".join(lines)
        process.send_signal(signal.SIGKILL)
        lines.append(process.stdout.read())
        process.wait(timeout=30)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
    killed_log = "".join(lines)
    assert process.returncode == -signal.SIGKILL, killed_log
    assert "epoch 30/30" not in killed_log
    assert len(list(scratch.glob("*.pt"))) == 1  # the epoch checkpoint survived the kill
    assert not (resumed / "runs/fit/train/out").exists()
    assert not (resumed / "runs/fit/train/metrics.json").exists()

    second = ok(kiln("run", "fit.yaml", "--stage", "train", cwd=resumed))
    assert "resuming from the checkpoint after epoch" in second.stderr
    assert "epoch 1/30" not in second.stderr
    assert "epoch 30/30" in second.stderr
    assert not list(scratch.glob("*.pt"))  # cleared once the stage succeeded

    whole = ok(kiln("run", "fit.yaml", "--stage", "train", cwd=reference))
    assert "resuming" not in whole.stderr
    for rel in ("out/weights.safetensors", "out/model.json", "metrics.json", "plots/history.json"):
        a = (reference / "runs/fit/train" / rel).read_bytes()
        b = (resumed / "runs/fit/train" / rel).read_bytes()
        assert a == b, f"{rel} differs between the resumed and the uninterrupted run"


def test_non_finite_loss_stops_with_epoch_and_step(upstream: Path, tmp_path: Path) -> None:
    folder = prepared(upstream, tmp_path, optimizer={"name": "SGD", "lr": 1.0e6}, epochs=3)
    message = failed(kiln("run", "fit.yaml", "--stage", "train", cwd=folder))
    assert "the loss became" in message
    assert "at epoch 1, step " in message
    assert "lower learning rate" in message
    assert not (folder / "runs/fit/train/out").exists()
    assert not (folder / "runs/fit/train/metrics.json").exists()
    assert not list((folder / "runs/fit/train").glob(".staging-*"))


def test_evaluate_before_train_says_what_to_run_first(upstream: Path, tmp_path: Path) -> None:
    folder = prepared(upstream, tmp_path)
    message = failed(kiln("run", "fit.yaml", "--stage", "evaluate", cwd=folder))
    assert "stage 'evaluate' needs the output of stage 'train'" in message
    assert "kiln run fit.yaml --stage train" in message
    assert not (folder / "runs/fit/evaluate").exists()


#: A test model that counts, in buffers saved with its weights, the training forward
#: passes whose hidden activations were bfloat16 and those that were float32.
PROBE_PLUGIN = """\
from typing import Literal

from torchkiln.registry import ModelConfig, models


@models.register
class ProbeMlp(ModelConfig):
    name: Literal["probe_mlp"] = "probe_mlp"

    def build(self, info):
        import math

        import torch
        from torch import nn

        class Probe(nn.Module):
            def __init__(self, size, classes):
                super().__init__()
                self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(size, 32), nn.ReLU())
                self.head = nn.Linear(32, classes)
                self.register_buffer("bf16_passes", torch.zeros((), dtype=torch.int64))
                self.register_buffer("fp32_passes", torch.zeros((), dtype=torch.int64))

            def forward(self, x):
                hidden = self.hidden(x)
                if self.training and hidden.dtype == torch.bfloat16:
                    self.bf16_passes += 1
                elif self.training and hidden.dtype == torch.float32:
                    self.fp32_passes += 1
                return self.head(hidden)

        return Probe(math.prod(info.input_shape), len(info.classes))
"""


def test_bf16_runs_the_forward_pass_in_bfloat16(upstream: Path, tmp_path: Path) -> None:
    """The same spec trained with `precision: bf16` and with fp32: the bf16 run's forward
    passes computed in bfloat16 (the probe model counted them), its weights stay float32,
    and they differ from the fp32 run's."""
    from safetensors.torch import load_file

    shutil.copytree(upstream / "runs", tmp_path / "runs")
    (tmp_path / "probe.py").write_text(PROBE_PLUGIN)
    write_spec(
        tmp_path,
        "fit",
        {
            "load_data": {
                "dataset": synthetic(num_classes=4, per_class=60, size=8),
                "split": {"val": 0.2, "test": 0.2},
            },
            "augment": {"train": [], "preview": 0},
            "build_model": {"model": {"name": "probe_mlp"}},
            "train": train_block(precision="bf16"),
            "train_fp32": {"uses": "train", **train_block(precision="fp32")},
        },
        plugins=["probe.py"],
    )
    args = [a for s in ("build_model", "train", "train_fp32") for a in ("--stage", s)]
    ok(kiln("run", "fit.yaml", *args, cwd=tmp_path))
    runs = tmp_path / "runs/fit"
    train_examples = read_json(runs / "load_data/out/meta.json")["info"]["counts"]["train"]
    per_epoch = math.ceil(train_examples / 8)

    def steps(stage: str) -> int:  # the weights kept are the best epoch's
        return per_epoch * read_json(runs / stage / "metrics.json")["best_epoch"]

    bf16 = load_file(runs / "train/out/weights.safetensors")
    fp32 = load_file(runs / "train_fp32/out/weights.safetensors")
    assert (int(bf16["bf16_passes"]), int(bf16["fp32_passes"])) == (steps("train"), 0)
    assert (int(fp32["bf16_passes"]), int(fp32["fp32_passes"])) == (0, steps("train_fp32"))
    parameters = ["hidden.1.weight", "hidden.1.bias", "head.weight", "head.bias"]
    # autocast computes in bf16; the weights it updates stay float32
    assert {str(bf16[k].dtype) for k in parameters} == {"torch.float32"}
    assert not all(bf16[k].equal(fp32[k]) for k in parameters)
    bf16_history = read_json(runs / "train/plots/history.json")
    fp32_history = read_json(runs / "train_fp32/plots/history.json")
    assert bf16_history[0]["train_loss"] != fp32_history[0]["train_loss"]
    assert bf16_history[0]["train_loss"] == pytest.approx(fp32_history[0]["train_loss"], rel=0.05)


def test_fp16_on_the_cpu_is_a_clear_error(upstream: Path, tmp_path: Path) -> None:
    folder = prepared(upstream, tmp_path, precision="fp16", epochs=1)
    message = failed(kiln("run", "fit.yaml", "--stage", "train", cwd=folder))
    assert "fp16 needs a CUDA device" in message and "bf16" in message
    assert not (folder / "runs/fit/train/out").exists()
