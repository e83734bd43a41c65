"""The warm worker (torchkiln.warm) through the real `kiln` and `dvc repro`: runs it serves
are cold runs (same bytes, exit codes, messages), it starts by itself under DVC and is
detached from it, it is private and fork-safe, and it survives its faults: a stale socket,
a worker of another key, two clients at once, Ctrl-C, Ctrl-Z, a worker killed mid-stage,
its repository removed. Every worker a test starts is stopped when the test ends."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_tools import (
    BIN,
    KILN,
    TIMEOUT,
    alive,
    digests,
    environment,
    make_repo,
    ok,
    served,
    stages_run,
    stop_warm_workers,
    workers,
)

from torchkiln.warm import protocol

pytestmark = pytest.mark.e2e

DIGITS = (Path(__file__).resolve().parents[1] / "pipelines" / "digits_mlp.yaml").read_text()
#: a train stage that runs until it is stopped: the faults happen during it
ENDLESS = """\
name: endless
task: classification
seed: 0
stages:
  load_data:
    dataset: {name: synthetic, num_classes: 3, per_class: 20, image_size: 8}
    split: {val: 0.2, test: 0.2}
  augment:
    train: []
  build_model:
    model: {name: mlp, hidden: [16]}
  train:
    epochs: 100000
    batch_size: 16
    optimizer: {name: Adam, lr: 0.01}
"""


def warm_environment(**more: str) -> dict[str, str]:
    """The tests' environment with the worker as a user gets it (on by default), quick to
    leave when idle."""
    env = environment()
    env.pop("KILN_WARM", None)
    env.pop("DVC_STAGE", None)
    env["KILN_WARM_IDLE"] = "30"
    env.update(more)
    return env


def command(*args: str | Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=warm_environment(**env), capture_output=True,
        text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip


def start(*args: str | Path, cwd: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(a) for a in args], cwd=cwd, env=warm_environment(**env), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def wait_for(condition: Callable[[], object], what: str, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def log(repo: Path) -> str:
    """The workers' logs (what a test shows when a worker is not there)."""
    return "".join(p.read_text() for p in sorted((repo / protocol.WARM_DIR).glob("*.log")))


def sockets(repo: Path) -> list[Path]:
    return sorted((repo / protocol.WARM_DIR).glob("*.sock"))


def worker_key(repo: Path, **env: str) -> str:
    """The key `kiln` computes in `repo` with this environment (its interpreter, its env)."""
    code = "from torchkiln.warm import protocol; print(protocol.key())"
    out = subprocess.run(
        [str(BIN / "python"), "-c", code], cwd=repo, env=warm_environment(**env),
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return out.stdout.strip()


def staging(repo: Path) -> list[Path]:
    """Staging and discard folders under runs/ (a finished or interrupted run leaves none)."""
    prefixes = (".staging-", ".discarded-")
    return [p for p in (repo / "runs").glob("*/*/*") if p.name.startswith(prefixes)]


def state(pid: int) -> str | None:
    """The process's state letter (R, S, T for stopped...), None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def cpu_ticks(pid: int) -> int:
    """User + system CPU time of a process so far, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    """A git + DVC repository; its workers (and anything they forked) are stopped after."""
    root = tmp_path / "repo"
    try:
        yield root
    finally:
        stop_warm_workers(root)


def test_key_separates_versions_environments_and_venvs(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"PATH": "/bin", "OMP_NUM_THREADS": "1"}
    base = protocol.key(env)
    assert protocol.key(env) == base
    assert protocol.key({**env, "DVC_STAGE": "x", "HOME": "/elsewhere"}) == base
    assert protocol.key({**env, "OMP_NUM_THREADS": "2"}) != base
    assert protocol.key({**env, "CUDA_VISIBLE_DEVICES": "0"}) != base
    monkeypatch.setattr(protocol, "source_digest", lambda: "an edited torchkiln")
    assert protocol.key(env) != base
    monkeypatch.undo()
    monkeypatch.setattr(sys, "prefix", "/another/venv")
    assert protocol.key(env) != base


def test_warm_runs_are_cold_runs(repo: Path) -> None:
    make_repo(repo, {"digits_mlp.yaml": DIGITS.replace("epochs: 30", "epochs: 1")})
    # KILN_WARM=0: a plain run, even under DVC; its bytes are the reference
    ok(command(KILN, "run", "pipelines/digits_mlp.yaml", cwd=repo, KILN_WARM="0", DVC_STAGE="x"))
    assert not (repo / protocol.WARM_DIR).exists()
    cold = {p: d for p, d in digests(repo / "runs").items() if not p.endswith(".gitignore")}
    shutil.rmtree(repo / "runs")

    # the first stage under DVC runs cold and starts a worker, detached: dvc returns
    # (its pipes closed) while the worker lives on
    first = ok(command(BIN / "dvc", "repro", "digits_mlp-load_data", cwd=repo))
    assert stages_run(first) == {"digits_mlp-load_data"}
    assert workers(repo), "no worker started under dvc repro"
    wait_for(lambda: sockets(repo) or not workers(repo), "the worker's socket")
    (sock,) = sockets(repo) or [log(repo)]
    (pid,) = workers(repo)

    # private: the folder and every file in it are the owner's only
    assert stat.S_IMODE((repo / protocol.WARM_DIR).stat().st_mode) == 0o700
    for path in (repo / protocol.WARM_DIR).iterdir():
        assert stat.S_IMODE(path.lstat().st_mode) == 0o600, path
    # fork-safe: no OpenMP pool, no other thread, no CUDA in the process children come from
    assert len(list(Path(f"/proc/{pid}/task").iterdir())) == 1
    assert "libcuda.so" not in Path(f"/proc/{pid}/maps").read_text()
    assert "1 thread(s), CUDA initialised: False" in protocol.log_path(sock).read_text()

    rest = ok(command(BIN / "dvc", "repro", cwd=repo))
    assert len(stages_run(rest)) == 5
    assert len(served(repo)) == 5, protocol.log_path(sock).read_text()
    assert "Traceback" not in rest.stdout + rest.stderr
    warm = {p: d for p, d in digests(repo / "runs").items() if not p.endswith(".gitignore")}
    assert warm == cold

    # two clients at once: two children, both fine, same bytes
    both = [
        start(KILN, "run", "pipelines/digits_mlp.yaml", "--stage", s, cwd=repo)
        for s in ("augment", "build_model")  # neither reads what the other writes
    ]
    for process in both:
        out, err = process.communicate(timeout=TIMEOUT)
        assert process.returncode == 0, out + err
    assert len(set(served(repo))) == 7
    assert {p: d for p, d in digests(repo / "runs").items() if not p.endswith(".gitignore")} == cold

    # another key (here another thread count; a new torchkiln or venv alike) is never
    # served by this worker: the run is cold, and nothing else starts outside DVC
    ok(command(KILN, "run", "pipelines/digits_mlp.yaml", "--stage", "augment", cwd=repo,
               OMP_NUM_THREADS="2"))  # fmt: skip
    assert len(served(repo)) == 7 and sockets(repo) == [sock] and workers(repo) == [pid]


def test_worker_faults(repo: Path) -> None:
    make_repo(repo, {"endless.yaml": ENDLESS})
    # a socket left by a crash: removed, the run goes cold (and starts a new worker)
    stale = protocol.socket_path(repo, worker_key(repo))
    stale.parent.mkdir(parents=True, mode=0o700)
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(stale))
    ok(command(KILN, "run", "pipelines/endless.yaml", "--stage", "load_data", cwd=repo,
               KILN_WARM="1"))  # fmt: skip
    wait_for(lambda: sockets(repo) or not workers(repo), "a new worker")
    assert sockets(repo) == [stale] and not served(repo), log(repo)

    # Ctrl-C reaches the child: exit 130, one line, no traceback, nothing half-written
    process = start(KILN, "run", "pipelines/endless.yaml", cwd=repo)
    wait_for(lambda: list((repo / "runs/endless/train").glob(".staging-*")), "the train stage")
    (child,) = served(repo)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, out + err
    assert "Traceback" not in out + err
    said = [line for line in err.splitlines() if "interrupted" in line]
    assert len(said) == 1 and "interrupted stage 'train' of endless" in said[0], err
    wait_for(lambda: not alive(child), "the child to end", timeout=10)
    assert not staging(repo)

    # Ctrl-Z stops the child with its client (the child is not in the terminal's group),
    # and `fg` (SIGCONT) lets both go on. A group of its own, as a shell's job: SIGTSTP is
    # not acted on in an orphaned one.
    process = subprocess.Popen(
        [str(KILN), "run", "pipelines/endless.yaml", "--stage", "train"], cwd=repo,
        env=warm_environment(), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        process_group=0,
    )  # fmt: skip
    wait_for(lambda: staging(repo), "the train stage")
    child = served(repo)[-1]
    process.send_signal(signal.SIGTSTP)
    wait_for(lambda: state(process.pid) == "T" and state(child) == "T", "both to stop", 10)
    stopped_at = cpu_ticks(child)
    time.sleep(1.0)
    assert cpu_ticks(child) == stopped_at, "the child trained on while its client was stopped"
    process.send_signal(signal.SIGCONT)
    wait_for(lambda: cpu_ticks(child) > stopped_at, "the child to train again", 10)
    assert state(process.pid) != "T" and state(child) != "T"
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, out + err
    wait_for(lambda: not alive(child), "the child to end", timeout=10)

    # the client killed (DVC killed): the worker stops its child, which cleans up
    process = start(KILN, "run", "pipelines/endless.yaml", "--stage", "train", cwd=repo)
    wait_for(lambda: staging(repo), "the train stage")
    child = served(repo)[-1]
    process.kill()
    process.communicate(timeout=30)
    wait_for(lambda: not alive(child), "the child of a killed client to end", timeout=15)
    wait_for(lambda: not staging(repo), "its staging to go", timeout=10)

    # the worker killed mid-stage: the client says so and exits 1 (no hang), its child
    # does not run on unseen, and the next run works
    process = start(KILN, "run", "pipelines/endless.yaml", "--stage", "train", cwd=repo)
    wait_for(lambda: staging(repo), "the train stage")
    child = served(repo)[-1]
    (pid,) = workers(repo)
    os.kill(pid, signal.SIGKILL)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 1, out + err
    assert "error: the warm worker stopped before the stage finished" in err
    assert "Traceback" not in out + err
    wait_for(lambda: not alive(child), "the orphaned child to end", timeout=10)
    wait_for(lambda: not staging(repo), "its staging to go", timeout=10)
    ok(command(KILN, "run", "pipelines/endless.yaml", "--stage", "build_model", cwd=repo,
               KILN_WARM="1"))  # fmt: skip

    # a worker whose repository disappears leaves (temporary folders deleted)
    wait_for(lambda: sockets(repo) or not workers(repo), "a new worker")
    (pid,) = workers(repo) or [log(repo)]
    shutil.rmtree(repo / protocol.WARM_DIR)
    wait_for(lambda: not alive(pid), "the worker to leave", timeout=10)
