"""Start a stage's worker processes, as `torchrun --standalone` does: torch's elastic agent,
a c10d rendezvous on a free local port (two queued experiments never collide), no restarts.

Each worker runs the same `kiln run SPEC --stage S` and learns its rank from the
environment the agent sets; the launching process only waits. If a worker dies, the
agent stops the others within seconds and the stage fails naming the rank. Workers also
die with the launcher (Linux: a parent-death signal), so none is left behind.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import uuid
from typing import TYPE_CHECKING

from torchkiln.errors import PeerLost, RunError, Terminated

if TYPE_CHECKING:  # pragma: no cover
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

#: Set in each worker's environment: the launcher's pid, so a worker can follow it out.
LAUNCHER_ENV = "KILN_LAUNCHER_PID"
#: How often the agent checks on its workers (seconds): a dead worker is noticed this fast.
MONITOR_INTERVAL = 0.2


def threads_per_worker(nproc: int) -> int:
    """Split this machine's cores among the workers (unless OMP_NUM_THREADS says otherwise)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // nproc)


def run_workers(command: list[str], nproc: int, *, stage: str) -> None:
    """Run `command` as `nproc` workers of one process group; return when all succeeded."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    _quiet_elastic_logs()  # kiln reports a failure or an interruption itself, in one line
    os.environ.setdefault("OMP_NUM_THREADS", str(threads_per_worker(nproc)))
    os.environ[LAUNCHER_ENV] = str(os.getpid())
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=MONITOR_INTERVAL,
    )
    try:
        elastic_launch(config, command[0])(*command[1:])
    except SignalException as exc:  # Ctrl-C or a kill reached the launcher
        if exc.sigval == signal.SIGINT:
            raise KeyboardInterrupt from exc
        if exc.sigval == signal.SIGTERM:
            raise Terminated from exc
        raise RunError(f"stage {stage!r} was stopped by {exc.sigval.name}") from exc
    except ChildFailedError as exc:
        raise RunError(failure_message(stage, exc.failures)) from exc
    finally:
        os.environ.pop(LAUNCHER_ENV, None)


def _quiet_elastic_logs() -> None:
    """torch's elastic agent gives each of its modules' loggers a level of its own
    (WARNING), so quieting their parent is not enough: every one is set."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def root_cause(failures: dict[int, ProcessFailure]) -> tuple[int, int]:
    """(rank, exit code) of the failure that started it: a worker killed by a signal
    other than the SIGTERM the agent stops the others with, else one that reported an
    error of its own, else the earliest. Workers that only lost contact (`PeerLost`'s exit
    code) or were stopped by the agent are consequences."""
    stopped, lost = -int(signal.SIGTERM), PeerLost.exit_code

    def weight(rank: int) -> tuple[int, float, int]:
        code = int(failures[rank].exitcode)
        kind = 0 if code < 0 and code != stopped else 1 if code not in (stopped, lost) else 2
        return kind, failures[rank].timestamp, rank

    rank = min(failures, key=weight)
    return rank, int(failures[rank].exitcode)


def failure_message(stage: str, failures: dict[int, ProcessFailure]) -> str:
    rank, code = root_cause(failures)
    if code < 0:
        return (
            f"training stage {stage!r} failed: rank {rank} was killed by "
            f"{signal.Signals(-code).name}; the other workers were stopped. The last epoch "
            "checkpoint is kept: run the stage again to resume"
        )
    return f"training stage {stage!r} failed on rank {rank} (exit code {code}): see its error above"


def follow_launcher() -> None:
    """In a worker kiln launched: die with the launcher, so no worker outlives it (Linux)."""
    launcher = os.environ.get(LAUNCHER_ENV)
    if launcher is None or not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except OSError:
        return
    # the launcher's agent is the parent; if it is already gone, so is our reason to run
    if os.getppid() != int(launcher):
        os._exit(1)
