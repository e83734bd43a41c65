"""The train stage through the real `kiln run`: a killed run resumes to the same weights,
a non-finite loss stops with the epoch and step, stage order is enforced, and the
precision options behave on the CPU."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from kiln_e2e import (
    KILN,
    TIMEOUT,
    failed,
    kiln,
    kiln_env,
    ok,
    shared_folder,
    synthetic,
    write_spec,
)

pytestmark = pytest.mark.e2e

UPSTREAM = ("load_data", "augment", "build_model")


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
            "train": {
                "epochs": 2,
                "batch_size": 8,
                "optimizer": {"name": "SGD", "lr": 0.05, "momentum": 0.9},
                **train,
            },
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
    log_path = tmp_path / "killed.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(KILN), "run", "fit.yaml", "--stage", "train"],
            cwd=resumed,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=kiln_env(),
        )
        try:
            deadline = time.monotonic() + TIMEOUT
            while time.monotonic() < deadline and process.poll() is None:
                logged = log_path.read_text()
                if "epoch 2/30" in logged and list(scratch.glob("*.pt")):
                    break
                time.sleep(0.02)
            assert process.poll() is None, "training ended before it could be killed:\n" + (
                log_path.read_text()
            )
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    killed_log = log_path.read_text()
    assert process.returncode == -signal.SIGKILL
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


def test_bf16_trains_on_the_cpu(upstream: Path, tmp_path: Path) -> None:
    folder = prepared(upstream, tmp_path, precision="bf16", epochs=1)
    ok(kiln("run", "fit.yaml", "--stage", "train", cwd=folder))
    assert (folder / "runs/fit/train/out/weights.safetensors").is_file()
    from safetensors.torch import load_file

    weights = load_file(folder / "runs/fit/train/out/weights.safetensors")
    # autocast computes in bf16; the weights stay float32
    assert {str(t.dtype) for t in weights.values()} == {"torch.float32"}


def test_fp16_on_the_cpu_is_a_clear_error(upstream: Path, tmp_path: Path) -> None:
    folder = prepared(upstream, tmp_path, precision="fp16", epochs=1)
    message = failed(kiln("run", "fit.yaml", "--stage", "train", cwd=folder))
    assert "fp16 needs a CUDA device" in message and "bf16" in message
    assert not (folder / "runs/fit/train/out").exists()
