"""Distributed training on the CPU (gloo, 2 processes) through the real `kiln run`: the same
meaning as one process, byte-identical reruns, only rank 0 writing, a killed worker failing
the stage with its rank named and no process left behind, and resuming on another count."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_tools import KILN, digests, environment, kiln, ok, synthetic, write_spec

pytestmark = pytest.mark.e2e


def write(folder: Path, epochs: int = 3, per_class: int = 120, **train: Any) -> Path:
    """Spec `p`: a model without dropout or BatchNorm, so one process and two compute the
    same thing."""
    folder.mkdir(parents=True, exist_ok=True)
    return write_spec(
        folder,
        "p",
        {
            "load_data": {
                "dataset": synthetic(num_classes=4, per_class=per_class),
                "split": {"val": 0.2, "test": 0.2},
            },
            "build_model": {"model": {"name": "mlp", "hidden": [32]}},
            "train": {
                "epochs": epochs,
                "batch_size": 16,
                "optimizer": {"name": "AdamW", "lr": 0.003},
                **train,
            },
        },
        device="cpu",
    )


def weights(folder: Path, name: str = "p") -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(folder / "runs" / name / "train" / "out" / "weights.safetensors")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same spec on one process, and twice on two (in separate folders)."""
    root = tmp_path_factory.mktemp("ddp")
    folders = {}
    for label, settings in (("one", {}), ("two", {"distributed": {"nproc": 2}})):
        folders[label] = root / label
        write(folders[label], **settings)
        ok(kiln("run", "p.yaml", cwd=folders[label]))
    folders["again"] = root / "again"
    write(folders["again"], distributed={"nproc": 2})
    ok(kiln("run", "p.yaml", cwd=folders["again"]))
    return folders


def test_two_processes_train_what_one_does(runs: dict[str, Path]) -> None:
    """Global batch 16 as 2 x 8: DDP's averaged gradients are the whole batch's, so the
    weights agree to float rounding (summation order)."""
    one, two = weights(runs["one"]), weights(runs["two"])
    assert one.keys() == two.keys()
    for key in one:
        scale = float(one[key].abs().max())
        assert float((one[key] - two[key]).abs().max()) <= 1e-5 * max(scale, 1.0), key
    m1 = json.loads((runs["one"] / "runs/p/train/metrics.json").read_text())
    m2 = json.loads((runs["two"] / "runs/p/train/metrics.json").read_text())
    assert m1["best_epoch"] == m2["best_epoch"]
    assert abs(m1["val_accuracy"] - m2["val_accuracy"]) < 1e-9  # the same predictions
    meta = json.loads((runs["two"] / "runs/p/train/out/model.json").read_text())
    assert meta["training"]["distributed"] == {
        "nproc": 2,
        "backend": "gloo",
        "strategy": "ddp",
        "sync_batchnorm": False,
        "processes": 2,
    }


def test_the_same_process_count_reruns_byte_for_byte(runs: dict[str, Path]) -> None:
    assert digests(runs["two"] / "runs") == digests(runs["again"] / "runs")


def test_only_rank_0_writes(runs: dict[str, Path]) -> None:
    """The workers' tree: exactly the outputs one process writes, nothing else anywhere."""
    one = {p for p in digests(runs["one"]) if p != "p.yaml"}
    two = {p for p in digests(runs["two"]) if p != "p.yaml"}
    assert one == two
    assert not list(runs["two"].glob(".kiln/scratch/p/train/*.pt"))  # cleared on success


def test_invalid_settings_are_refused_before_anything_runs(tmp_path: Path) -> None:
    write(tmp_path, batch_size=15, distributed={"nproc": 2, "backend": "nccl"})
    result = kiln("validate", "p.yaml", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "stages.train.distributed.nproc: batch_size 15 is the global batch" in result.stderr
    assert "stages.train.distributed.backend: nccl needs CUDA" in result.stderr
    spec = yaml.safe_load((tmp_path / "p.yaml").read_text())
    spec["device"] = "cuda"
    spec["stages"]["train"]["batch_size"] = 16
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec))
    result = kiln("run", "p.yaml", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "CUDA is not available" in result.stderr


def _worker_of_rank(parent: int, rank: int) -> int | None:
    for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environ:
            return int(child)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status").read_text() if Path(f"/proc/{pid}").exists() else ""
    return "State:\tZ" not in status


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_worker_fails_the_stage_and_a_rerun_resumes_on_any_count(
    tmp_path: Path,
) -> None:
    write(tmp_path, epochs=4, per_class=1500, distributed={"nproc": 2})  # ~1 s epochs
    ok(kiln("run", "p.yaml", "--stage", "load_data", cwd=tmp_path))
    ok(kiln("run", "p.yaml", "--stage", "build_model", cwd=tmp_path))
    process = subprocess.Popen(
        [str(KILN), "run", "p.yaml", "--stage", "train"],
        cwd=tmp_path,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    workers: list[int] = []
    for line in process.stdout:  # wait on the log: the first epoch's checkpoint is saved
        if line.startswith("epoch 1/4"):  # the next epoch has begun: kill mid-epoch
            workers = [w for w in (_worker_of_rank(process.pid, r) for r in (0, 1)) if w]
            break
    assert len(workers) == 2, "the workers were not found"
    killed_at = time.monotonic()
    os.kill(workers[1], signal.SIGKILL)
    output = process.stdout.read()
    assert process.wait(timeout=60) == 1
    assert time.monotonic() - killed_at < 30
    assert "rank 1 was killed by SIGKILL" in output and "Traceback" not in output
    assert not (tmp_path / "runs/p/train/out").exists()  # nothing looks complete
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers), "a worker outlived the stage"
    assert list(tmp_path.glob(".kiln/scratch/p/train/*.pt"))  # the checkpoint is kept

    # the rerun resumes, here on one process: the checkpoint does not depend on the count
    spec = yaml.safe_load((tmp_path / "p.yaml").read_text())
    spec["stages"]["train"]["distributed"] = {"nproc": 1}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec))
    resumed = ok(kiln("run", "p.yaml", "--stage", "train", cwd=tmp_path))
    assert "resuming from the checkpoint after epoch" in resumed.stderr
    assert (tmp_path / "runs/p/train/out/weights.safetensors").is_file()
