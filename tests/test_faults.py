"""A CI-sized sample of the fault matrix (tests/faultinject/matrix.py; benchmarks/faults.py
runs all of it): kill -9 at chosen moments of stages of every family (the final move
into place included) and a rerun byte-identical to the uninterrupted run; `dvc.lock`
untouched by a killed stage under a real `dvc repro`; Ctrl-C and SIGTERM with DataLoader
workers; ENOSPC/EIO/EROFS/EACCES on a stage's writes; damaged upstream files; a second
`kiln run` of a running stage.

A read-only runs/ is simulated by injecting EROFS or EACCES: the tests run as root on
some machines, and root writes through `chmod -w`, while a read-only mount needs a
privilege a test should not ask for. The injected error takes the same path through the
product as the real one (an OSError from mkdir, open or rename).

Every case copies one workspace where the tiny pipelines have run once (their outputs
are the references), built once per test run for all xdist workers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cli_tools import digests, make_repo, run, shared_folder
from faultinject import matrix

pytestmark = pytest.mark.e2e

#: what the shared workspace runs: every family, up to the stages the cases below use
PREPARED = {
    "img": ["load_data", "augment", "build_model", "train"],
    "txt": ["load_data", "build_model", "train"],
    "gan": ["load_data", "build_model", "train"],
    "fc": ["load_data", "build_model", "train"],
    "imgdir": ["load_data", "build_model"],
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_folder(
        tmp_path_factory, "faults", lambda root: matrix.build_workspace(root, PREPARED)
    )


@pytest.fixture
def ws(prepared: Path, tmp_path: Path) -> Path:
    """A private copy of the prepared workspace."""
    return matrix.copy_workspace(prepared, tmp_path / "ws")


def reference(ws: Path, pipeline: str, stage: str) -> dict[str, str]:
    return digests(matrix.stage_dir(ws, pipeline, stage))


#: (img/train is killed between its moves into place in the test after this one)
KILLS = [
    ("txt", "load_data", "first write in staging"),
    ("gan", "train", "just before out/ moves into place"),
    ("fc", "build_model", "fsync of a staged file"),
    ("fc", "train", "discarding old outputs"),
]


@pytest.mark.parametrize(("pipeline", "stage", "point"), KILLS)
def test_kill_then_rerun_is_byte_identical(ws: Path, pipeline: str, stage: str, point: str) -> None:
    ref = reference(ws, pipeline, stage)
    fault = matrix.kill_points(pipeline, stage, ref)[point]
    assert matrix.kill_at(ws, pipeline, stage, ref, fault) == []
    assert len(matrix.fired(ws)) == 1


def test_kill_between_moves_leaves_no_out_and_downstream_refuses(ws: Path) -> None:
    """Killed between metrics.json and out/: metrics are there, out/ is not, the next stage
    refuses to start (nothing downstream takes a half-finished train), and the rerun
    matches the uninterrupted run."""
    ref = reference(ws, "img", "train")
    fault = {"op": "replace", "match": r"^runs/img/train/metrics\.json$", "when": "after",
             "action": "kill"}  # fmt: skip
    assert matrix.kiln(ws, "img.yaml", "--stage", "train", fault=fault).returncode == -9
    assert len(matrix.fired(ws)) == 1
    train = matrix.stage_dir(ws, "img", "train")
    assert (train / "metrics.json").exists() and not (train / "out").exists()
    result = matrix.kiln(ws, "img.yaml", "--stage", "evaluate")
    assert result.returncode == 1
    assert "needs the output of stage 'train' (runs/img/train/out)" in result.stderr
    problems: list[str] = []
    matrix.rerun_matches(ws, "img", "train", ref, problems)
    assert problems == []


def test_killed_stage_leaves_dvc_lock_untouched(tmp_path: Path) -> None:
    """Through a real `dvc repro` (no warm worker: KILN_WARM=0, so the stage runs in the
    process the fault is injected into): a stage killed as its out/ moves into place
    leaves dvc.lock as it was, and the next `dvc repro` completes it."""
    repo = tmp_path / "repo"
    spec = matrix.specs(matrix.CI_EXPORT)["img.yaml"].split("  augment:")[0]
    spec += "  build_model:\n    model: {name: mlp, hidden: [8]}\n"
    env = matrix.fault_env(tmp_path / "fault.log")
    make_repo(repo, {"img.yaml": spec})
    assert _dvc_repro(repo, env).returncode == 0
    lock = (repo / "dvc.lock").read_bytes()
    (repo / "pipelines/img.yaml").write_text(spec.replace("hidden: [8]", "hidden: [6]"))
    fault = {"op": "replace", "match": r"^runs/img/build_model/out$", "action": "kill"}
    killed = _dvc_repro(repo, env | {"KILN_TEST_FAULT": json.dumps(fault)})
    assert killed.returncode != 0, killed.stdout + killed.stderr
    assert (tmp_path / "fault.log").read_text().count("replace kill") == 1
    assert (repo / "dvc.lock").read_bytes() == lock
    assert not (repo / "runs/img/build_model/out").exists()
    assert _dvc_repro(repo, env).returncode == 0
    assert (repo / "dvc.lock").read_bytes() != lock
    assert "up to date" in run("dvc", "status", cwd=repo).stdout.lower()
    assert matrix.leftovers(repo) == []


def _dvc_repro(repo: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True, timeout=300
    )


def test_ctrl_c_with_dataloader_workers_and_a_second_run_refused(ws: Path) -> None:
    """Ctrl-C in a train with two DataLoader workers; before it, a second `kiln run` of
    the same stage is refused naming the first's pid."""
    refused = matrix.second_run_refused(ws, "imgdir", "train")
    problems = matrix.interrupt(ws, "imgdir", "train", signal.SIGINT, workers=2, during=refused)
    assert problems == []


def test_sigterm_with_dataloader_workers(ws: Path) -> None:
    assert matrix.interrupt(ws, "imgdir", "train", signal.SIGTERM, workers=2) == []


WRITES = [
    ("img", "build_model", "first staged file", "ENOSPC"),
    ("txt", "train", "flush of a staged file", "EIO"),
    # a read-only runs/ refuses the staging folder first: it used to be made after the old
    # outputs were removed, so "nothing was changed" was said with them gone
    ("gan", "load_data", "making the staging folder", "EROFS"),
    ("fc", "build_model", "moving out/ into place", "EACCES"),
    ("img", "augment", "discarding old outputs", "EROFS"),
]


@pytest.mark.parametrize(("pipeline", "stage", "point", "errno"), WRITES)
def test_write_failure_names_the_path_and_leaves_nothing_partial(
    ws: Path, pipeline: str, stage: str, point: str, errno: str
) -> None:
    ref = reference(ws, pipeline, stage)
    fault = {**matrix.write_points(pipeline, stage)[point], "action": errno}
    # the rerun after it is left to benchmarks/faults.py (the kill cases here rerun)
    assert matrix.write_fails(ws, pipeline, stage, ref, fault, rerun=False) == []


#: one damage of each sort, spread over the families (benchmarks/faults.py does them all)
CORRUPT = {
    ("img", "truncated initial weights"),  # was a safetensors traceback
    ("img", "model.json missing"),  # named the folder, not the stage to rerun
    ("fc", "meta.json: format edited"),  # the same
    ("txt", "meta.json: counts edited"),  # was silently ignored
    ("txt", "vocabulary missing"),
    ("txt", "vocabulary truncated"),  # was a JSONDecodeError traceback
}


@pytest.mark.parametrize(
    "damage",
    [d for d in matrix.damages() if (d.pipeline, d.label) in CORRUPT],
    ids=lambda d: f"{d.pipeline}-{d.label}",
)
def test_corrupt_input_names_the_file_and_the_stage_to_rerun(
    ws: Path, damage: matrix.Damage
) -> None:
    assert matrix.corrupt_input(ws, damage) == []


def test_corrupt_checkpoint_stops_the_resume(ws: Path) -> None:
    assert matrix.corrupt_checkpoint(ws, "gan") == []


def test_failed_discard_puts_back_what_it_moved(ws: Path) -> None:
    """The second rename of the old outputs fails (metrics.json, after out/): out/ is put
    back, so the run changes nothing, as it says."""
    ref = reference(ws, "img", "train")
    fault = {**matrix.write_points("img", "train")["discarding old outputs"], "nth": 2,
             "action": "EIO"}  # fmt: skip
    result = matrix.kiln(ws, "img.yaml", "--stage", "train", fault=fault)
    assert matrix.fired(ws)[0].endswith("metrics.json"), matrix.fired(ws)
    assert result.returncode == 1 and "nothing was changed" in result.stderr, result.stderr
    assert digests(matrix.stage_dir(ws, "img", "train")) == ref
    assert matrix.leftovers(ws) == []


def test_a_stop_signal_in_a_held_block_is_raised_after_it() -> None:
    """Regression: a Ctrl-C landing while DataLoader workers were forked (logging's
    at-fork hook) or stopped (the iterator's __del__) was dropped by Python, and the run
    went on training. The loop holds it over those moments; it is raised right after."""
    from torchkiln.errors import Terminated
    from torchkiln.runtime import stopping

    with stopping.handling():
        for number, raised in ((signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated)):
            reached_end = False
            with pytest.raises(raised), stopping.held():
                os.kill(os.getpid(), number)
                time.sleep(0.05)  # the handler has run: nothing raised in here
                reached_end = True
            assert reached_end
        with pytest.raises(KeyboardInterrupt):  # outside held(): at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
