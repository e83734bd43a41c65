"""The fault matrix shared by tests/test_faults.py (a CI-sized sample) and
benchmarks/faults.py (all of it).

A workspace where tiny pipelines of every family (image, text, GAN, forecasting) have run
once holds the reference outputs. Each case copies it, injects one fault into one `kiln
run` (through sitecustomize.py beside this file: a kill -9 at a chosen call or moment, a
file-system call failing with an errno, a damaged upstream file, a signal, a second run
of the same stage) and checks what the product promises. A case returns the problems it
found: an empty list means the fault was survived. A fault that never fired is a problem
too, so a case cannot pass by testing nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cli_tools import KILN, TIMEOUT, digests, environment

HARNESS = Path(__file__).resolve().parent
STAGING_PREFIXES = (".staging-", ".discarded-")

# -- the pipelines ------------------------------------------------------------------------

#: CSV of three topics, each with words of its own (the text family's data)
TOPICS = {
    "sport": "match goal team coach league win",
    "money": "bank shares profit market price trade",
    "music": "album band song singer chart tour",
}


COMMON = ["the", "a", "of", "and", "to"]


def _text_rows() -> str:
    import random

    rng = random.Random(0)
    rows = ["text,label"]
    for _ in range(10):
        for topic, words in TOPICS.items():
            chosen = rng.choices(words.split(), k=3) + rng.choices(COMMON, k=2)
            rng.shuffle(chosen)
            rows.append(f'"{" ".join(chosen)}",{topic}')
    return "\n".join(rows) + "\n"


def _image_folder(root: Path, classes: int = 3, per_class: int = 16) -> None:
    """Tiny PNGs, one folder per class, each class a brightness band (so it can learn)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(c * 80, c * 80 + 60, size=(8, 8), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / f"{i}.png")


def specs(export_formats: str) -> dict[str, str]:
    """Spec files by name; `export_formats` is the YAML list every export stage writes."""
    return {
        "img.yaml": f"""\
name: img
task: classification
seed: 0
stages:
  load_data:
    dataset: {{name: synthetic, num_classes: 3, per_class: 12, image_size: 8}}
    split: {{val: 0.2, test: 0.2}}
  augment:
    train: [{{name: RandomHorizontalFlip, p: 0.5}}]
  build_model:
    model: {{name: small_cnn, channels: [4, 8], hidden: 16}}
  train: {{epochs: 2, batch_size: 8, optimizer: {{name: Adam, lr: 0.01}}}}
  evaluate: {{metrics: [accuracy, confusion_matrix]}}
  export: {{formats: {export_formats}}}
""",
        # an image folder read from disk by two DataLoader workers, for a long train to
        # interrupt (the signal and lock cases)
        "imgdir.yaml": """\
name: imgdir
task: classification
seed: 0
stages:
  load_data:
    dataset: {name: image_folder, root: images}
    split: {val: 0.25}
  build_model:
    model: {name: mlp, hidden: [8]}
  train: {epochs: 400, batch_size: 4, num_workers: 2}
""",
        "txt.yaml": f"""\
name: txt
seed: 0
stages:
  load_data:
    dataset: {{name: text_table, path: data.csv, max_length: 8, vocab: {{min_freq: 1}}}}
    split: {{val: 0.2, test: 0.2}}
  build_model:
    model: {{name: rnn_classifier, cell: gru, embedding_dim: 8, hidden_size: 6}}
  train: {{epochs: 2, batch_size: 8}}
  evaluate: {{misclassified: 2}}
  export: {{formats: {export_formats}}}
""",
        "cls.yaml": """\
name: cls
task: classification
seed: 0
stages:
  load_data:
    dataset: {name: synthetic, num_classes: 2, per_class: 16, image_size: 8}
    split: {test: 0.25}
  build_model:
    model: {name: mlp, hidden: [8]}
  train: {epochs: 1, batch_size: 16}
""",
        "gan.yaml": f"""\
name: gan
task: gan
seed: 0
stages:
  load_data:
    dataset: {{name: synthetic, num_classes: 2, per_class: 16, image_size: 8}}
    split: {{test: 0.25}}
  build_model:
    model: {{name: mlp_gan, latent_dim: 8, hidden: [16]}}
  train: {{epochs: 2, batch_size: 8, samples: 4}}
  evaluate: {{classifier: {{pipeline: cls, stage: train}}, grid: 4}}
  export: {{formats: {export_formats}, check_batch: 2}}
""",
        "fc.yaml": f"""\
name: fc
task: forecast
seed: 0
stages:
  load_data:
    dataset: {{name: bundled_series, series: airline}}
    windows: {{lookback: 12, horizon: 3}}
    split: {{val: 6, test: 6}}
    scaling: {{method: standard, log: true}}
  build_model:
    model: {{name: lstm, hidden: 8, quantiles: [0.1, 0.5, 0.9]}}
  train: {{epochs: 2, batch_size: 16}}
  evaluate:
    backtest: {{stride: 3}}
  export:
    formats: {export_formats}
""",
    }


#: The stages of each family's pipeline, in order (cls only feeds GAN's evaluate).
FAMILIES: dict[str, list[str]] = {
    "img": ["load_data", "augment", "build_model", "train", "evaluate", "export"],
    "txt": ["load_data", "build_model", "train", "evaluate", "export"],
    "gan": ["load_data", "build_model", "train", "evaluate", "export"],
    "fc": ["load_data", "build_model", "train", "evaluate", "export"],
}
FULL_EXPORT = "[torchscript, {name: onnx, tolerance: 1.0e-3}, safetensors]"
CI_EXPORT = "[safetensors]"


def write_workspace(root: Path, export_formats: str = CI_EXPORT) -> None:
    """Specs and data, nothing run yet."""
    root.mkdir(parents=True, exist_ok=True)
    for name, text in specs(export_formats).items():
        (root / name).write_text(text, encoding="utf-8")
    (root / "data.csv").write_text(_text_rows(), encoding="utf-8")
    _image_folder(root / "images")


def build_workspace(root: Path, runs: dict[str, list[str] | None], **kw: Any) -> None:
    """Write the workspace and run each pipeline named in `runs` (its listed stages, or all
    of them for None), in order: these outputs are the references of every case."""
    write_workspace(root, **kw)
    for pipeline, stages in runs.items():
        args = [f"{pipeline}.yaml"] + [a for s in stages or [] for a in ("--stage", s)]
        result = kiln(root, *args)
        if result.returncode != 0:
            raise RuntimeError(f"kiln run {' '.join(args)} failed:\n{result.stderr}")


# -- running kiln with a fault -------------------------------------------------------------


def fault_env(log: Path, fault: dict[str, Any] | None = None, **more: str) -> dict[str, str]:
    """The environment of a `kiln` (or `dvc`) under test: the harness on PYTHONPATH, the
    fault (if any), its log, and no warm worker (torchkiln.warm), which would run the
    stage in a process that never saw the fault."""
    env = environment()
    env.update(
        PYTHONPATH=os.pathsep.join([str(HARNESS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        KILN_TEST_FAULT_LOG=str(log),
        KILN_WARM="0",
        **more,
    )
    env.pop("KILN_TEST_FAULT", None)
    if fault is not None:
        env["KILN_TEST_FAULT"] = json.dumps(fault)
    return env


def kiln(
    cwd: Path, *args: str, fault: dict[str, Any] | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """`kiln run ARGS` in `cwd`, with a fault when given (logged to cwd/fault.log)."""
    return subprocess.run(
        [str(KILN), "run", *args], cwd=cwd, capture_output=True, text=True,
        env=fault_env(cwd / "fault.log", fault, **env), timeout=TIMEOUT, check=False,
    )  # fmt: skip


def fired(cwd: Path) -> list[str]:
    """The lines the harness logged: one per fault injected."""
    log = cwd / "fault.log"
    return log.read_text().splitlines() if log.exists() else []


def stage_dir(cwd: Path, pipeline: str, stage: str) -> Path:
    return cwd / "runs" / pipeline / stage


def leftovers(cwd: Path) -> list[str]:
    """Staging and discard folders anywhere under runs/ (a finished run leaves none)."""
    runs = cwd / "runs"
    if not runs.exists():
        return []
    return sorted(
        p.relative_to(cwd).as_posix()
        for p in runs.glob("*/*/*")
        if p.name.startswith(STAGING_PREFIXES)
    )


def copy_workspace(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns("locks"))
    (target / "fault.log").unlink(missing_ok=True)
    return target


@dataclass
class Case:
    """One fault injected into one stage; `problems` empty when it was survived."""

    kind: str
    pipeline: str
    stage: str
    detail: str
    problems: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        verdict = "ok" if not self.problems else "FAILED: " + "; ".join(self.problems)
        return f"{self.kind:<10} {self.pipeline}/{self.stage:<12} {self.detail}: {verdict}"


def _output(result: subprocess.CompletedProcess[str]) -> str:
    return f"\n--- stdout\n{result.stdout[-2000:]}\n--- stderr\n{result.stderr[-3000:]}"


def _no_traceback(result: subprocess.CompletedProcess[str], problems: list[str]) -> None:
    if "Traceback" in result.stdout + result.stderr:
        problems.append("a traceback was printed" + _output(result))


def rerun_matches(
    cwd: Path, pipeline: str, stage: str, reference: dict[str, str], problems: list[str]
) -> None:
    """Run the stage again without a fault: it succeeds, and its folder holds exactly the
    uninterrupted run's bytes, with no staging left anywhere."""
    result = kiln(cwd, f"{pipeline}.yaml", "--stage", stage)
    if result.returncode != 0:
        problems.append(f"the rerun failed (exit {result.returncode})" + _output(result))
        return
    got = digests(stage_dir(cwd, pipeline, stage))
    if got != reference:
        differ = sorted(k for k in got.keys() | reference.keys() if got.get(k) != reference.get(k))
        problems.append(f"the rerun's outputs differ from the uninterrupted run's: {differ}")
    if leftovers(cwd):
        problems.append(f"staging left after the rerun: {leftovers(cwd)}")


def _complete_or_absent(
    cwd: Path, pipeline: str, stage: str, reference: dict[str, str], problems: list[str]
) -> None:
    """No output looks complete while it is not: out/ is either absent or the finished one."""
    out = stage_dir(cwd, pipeline, stage) / "out"
    if out.exists():
        want = {k[4:]: v for k, v in reference.items() if k.startswith("out/")}
        if digests(out) != want:
            problems.append("out/ is in place but is not the complete output")


# -- the cases -----------------------------------------------------------------------------


def kill_at(
    cwd: Path, pipeline: str, stage: str, reference: dict[str, str], fault: dict[str, Any]
) -> list[str]:
    """kill -9 at the fault's call; then no output looks complete, and a rerun matches."""
    problems: list[str] = []
    result = kiln(cwd, f"{pipeline}.yaml", "--stage", stage, fault={**fault, "action": "kill"})
    if not fired(cwd):
        return [f"the fault never fired (exit {result.returncode})" + _output(result)]
    if result.returncode != -signal.SIGKILL:
        problems.append(f"expected death by SIGKILL, got exit {result.returncode}")
    _complete_or_absent(cwd, pipeline, stage, reference, problems)
    rerun_matches(cwd, pipeline, stage, reference, problems)
    return problems


def kill_after(
    cwd: Path, pipeline: str, stage: str, reference: dict[str, str], seconds: float
) -> list[str]:
    """kill -9 `seconds` after the start (a random moment); the same promises. A run that
    finished first is no fault injected: it returns ["finished before the kill"]."""
    problems: list[str] = []
    process = subprocess.Popen(
        [str(KILN), "run", f"{pipeline}.yaml", "--stage", stage], cwd=cwd,
        env=fault_env(cwd / "fault.log"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        process.wait(timeout=seconds)
        return ["finished before the kill"]
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    _complete_or_absent(cwd, pipeline, stage, reference, problems)
    rerun_matches(cwd, pipeline, stage, reference, problems)
    return problems


#: The moments of a stage's life a kill -9 is aimed at (ops and matches of sitecustomize):
#: while the old outputs are renamed away, at the first file written in staging, between
#: the renames into place (plots/, metrics.json, out/), and right after out/ arrives.
def kill_points(pipeline: str, stage: str, stage_files: dict[str, str]) -> dict[str, dict]:
    root = f"runs/{pipeline}/{stage}"
    points: dict[str, dict] = {
        "discarding old outputs": {"op": "replace", "match": rf"^{root}/\.discarded-[^/]+/out$"},
        "first write in staging": {"op": "open", "match": rf"^{root}/\.staging-[^/]+/"},
        "fsync of a staged file": {"op": "fsync", "match": rf"^{root}/\.staging-[^/]+/"},
    }
    moves = [n for n in ("plots", "metrics.json") if any(k.startswith(n) for k in stage_files)]
    for name in moves:
        points[f"after moving {name} into place"] = {
            "op": "replace", "match": rf"^{root}/{re.escape(name)}$", "when": "after",
        }  # fmt: skip
    points["just before out/ moves into place"] = {"op": "replace", "match": rf"^{root}/out$"}
    points["just after out/ moves into place"] = {
        "op": "replace", "match": rf"^{root}/out$", "when": "after",
    }  # fmt: skip
    return points


#: errnos injected into a stage's writes, and the text the message must carry for each
WRITE_ERRORS = {
    "ENOSPC": "No space left on device",
    "EIO": "Input/output error",
    "EROFS": "Read-only file system",
    "EACCES": "Permission denied",
}


def write_points(pipeline: str, stage: str) -> dict[str, dict]:
    """Where a write fails: the first file staged, its flush, the staging folder itself
    (a read-only runs/ refuses that first), the discard of old outputs, moving out/ in."""
    root = f"runs/{pipeline}/{stage}"
    return {
        "first staged file": {"op": "open", "match": rf"^{root}/\.staging-[^/]+/"},
        "flush of a staged file": {"op": "fsync", "match": rf"^{root}/\.staging-[^/]+/"},
        "making the staging folder": {"op": "mkdir", "match": rf"^{root}/\.staging-"},
        "discarding old outputs": {"op": "replace", "match": rf"^{root}/\.discarded-"},
        "moving out/ into place": {"op": "replace", "match": rf"^{root}/out$"},
    }


def write_fails(
    cwd: Path,
    pipeline: str,
    stage: str,
    reference: dict[str, str],
    fault: dict[str, Any],
    *,
    rerun: bool = True,
) -> list[str]:
    """A write fails with the fault's errno: exit 1, one `error:` line naming a path of
    the stage and the reason, nothing partial, the old outputs intact (when the message
    says nothing was changed) or gone; then (with `rerun`) a rerun matches."""
    problems: list[str] = []
    result = kiln(cwd, f"{pipeline}.yaml", "--stage", stage, fault=fault)
    if not fired(cwd):
        return [f"the fault never fired (exit {result.returncode})" + _output(result)]
    _no_traceback(result, problems)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    if result.returncode != 1 or len(lines) != 1:
        problems.append(
            f"expected exit 1 and one error line, got {result.returncode}" + _output(result)
        )
        return problems
    message = lines[0]
    root = f"runs/{pipeline}/{stage}"
    if root not in message or WRITE_ERRORS[fault["action"]] not in message:
        problems.append(f"the message does not name {root}/... and the reason: {message}")
    if ".staging-" in message or ".discarded-" in message:
        problems.append(f"the message names a staging folder, not the output: {message}")
    if leftovers(cwd):
        problems.append(f"staging left behind: {leftovers(cwd)}")
    folder = stage_dir(cwd, pipeline, stage)
    if "nothing was changed" in message:
        if digests(folder) != reference:
            problems.append("the message says nothing was changed, but the old outputs were")
    elif any((folder / n).exists() for n in ("out", "metrics.json", "plots")):
        problems.append(f"outputs left in {root} after a failed write: {sorted(digests(folder))}")
    if rerun:
        rerun_matches(cwd, pipeline, stage, reference, problems)
    return problems


@dataclass(frozen=True)
class Damage:
    """An upstream file damaged by hand; the run of `stage` must fail naming `names` and
    the stage to run again (`rerun`), and write nothing."""

    label: str
    pipeline: str
    stage: str
    path: str  # relative to the workspace
    how: Callable[[Path], None]
    rerun: str


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garbage(path: Path) -> None:
    path.write_bytes(b"\x00not what was written\xff" * 4)


def remove(path: Path) -> None:
    path.unlink()


def edit_json(key: str, value: object) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        data = json.loads(path.read_text())
        target = data
        parts = key.split(".")
        for part in parts[:-1]:
            target = target[part]
        target[parts[-1]] = value
        path.write_text(json.dumps(data))

    return edit


def corrupt_input(cwd: Path, damage: Damage) -> list[str]:
    damage.how(cwd / damage.path)
    problems: list[str] = []
    result = kiln(cwd, f"{damage.pipeline}.yaml", "--stage", damage.stage)
    _no_traceback(result, problems)
    if result.returncode != 1 or "error:" not in result.stderr:
        problems.append(
            f"expected the stage to fail with an error line (exit 1), got exit "
            f"{result.returncode}" + _output(result)
        )
        return problems
    message = result.stderr
    if damage.path not in message:
        problems.append(f"the message does not name {damage.path}: {message.strip()}")
    if f"--stage {damage.rerun}" not in message and f"stage {damage.rerun!r}" not in message:
        problems.append(
            f"the message does not say to run {damage.rerun!r} again: {message.strip()}"
        )
    out = stage_dir(cwd, damage.pipeline, damage.stage) / "out"
    if out.exists():
        problems.append(f"{out.relative_to(cwd)} exists after the failed run")
    if leftovers(cwd):
        problems.append(f"staging left behind: {leftovers(cwd)}")
    return problems


def damages() -> list[Damage]:
    """Every kind of upstream artifact a stage reads, damaged the ways a user or a disk
    does, each checked at the first stage that reads it."""
    found: list[Damage] = []
    for p in FAMILIES:
        data = {"img": "data", "gan": "data", "txt": "tokens", "fc": "series"}[p]
        meta, weights = f"runs/{p}/load_data/out/meta.json", "weights.safetensors"
        found += [
            Damage("truncated data", p, "train", f"runs/{p}/load_data/out/{data}.safetensors",
                   truncate, "load_data"),
            Damage("meta.json: format edited", p, "train", meta, edit_json("format", "edited"),
                   "load_data"),
            Damage("meta.json: counts edited", p, "train", meta,
                   edit_json("info.counts.train", 5), "load_data"),
            Damage("meta.json: not JSON", p, "build_model", meta, garbage, "load_data"),
            Damage("truncated initial weights", p, "train",
                   f"runs/{p}/build_model/out/{weights}", truncate, "build_model"),
            Damage("garbage trained weights", p, "evaluate", f"runs/{p}/train/out/{weights}",
                   garbage, "train"),
            Damage("model.json missing", p, "evaluate", f"runs/{p}/train/out/model.json",
                   remove, "train"),
        ]  # fmt: skip
    found += [
        Damage("vocabulary missing", "txt", "evaluate", "runs/txt/load_data/out/vocab.json",
               remove, "load_data"),
        Damage("vocabulary truncated", "txt", "evaluate", "runs/txt/load_data/out/vocab.json",
               truncate, "load_data"),
    ]  # fmt: skip
    return found


def corrupt_checkpoint(cwd: Path, pipeline: str) -> list[str]:
    """A train killed after its first epoch checkpoint, the checkpoint then damaged: the
    next run stops naming it (never trains again from the start without saying so)."""
    fault = {"op": "replace", "match": rf"^\.kiln/scratch/{pipeline}/train/[^/]+\.pt$",
             "when": "after", "action": "kill"}  # fmt: skip
    result = kiln(cwd, f"{pipeline}.yaml", "--stage", "train", fault=fault)
    if not fired(cwd):
        return ["no checkpoint was written" + _output(result)]
    checkpoints = list((cwd / ".kiln" / "scratch" / pipeline / "train").glob("*.pt"))
    if len(checkpoints) != 1:
        return [f"expected one checkpoint, found {checkpoints}"]
    truncate(checkpoints[0])
    problems: list[str] = []
    result = kiln(cwd, f"{pipeline}.yaml", "--stage", "train")
    _no_traceback(result, problems)
    name = checkpoints[0].relative_to(cwd).as_posix()
    if result.returncode != 1 or name not in result.stderr:
        problems.append(f"expected exit 1 naming {name}" + _output(result))
    if stage_dir(cwd, pipeline, "train").joinpath("out").exists():
        problems.append("train wrote out/ from a damaged checkpoint")
    return problems


# -- signals and a second run --------------------------------------------------------------


def children(pid: int) -> set[int]:
    """Every descendant of a process (from /proc)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = (task / "children").read_text().split()
            except OSError:
                continue
            for kid in map(int, kids):
                if kid not in found:
                    found.add(kid)
                    todo.append(kid)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start(cwd: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(KILN), "run", *args], cwd=cwd, env=fault_env(cwd / "fault.log", **env),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_for(condition: Callable[[], bool], timeout: float = 120, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f}s for {what}")
        time.sleep(0.1)


def interrupt(
    cwd: Path, pipeline: str, stage: str, sig: signal.Signals, *, workers: int = 0,
    during: Callable[[subprocess.Popen[str]], list[str]] | None = None,
) -> list[str]:  # fmt: skip
    """Send `sig` to a running stage (once its `workers` child processes exist, and once
    `during` has checked what it wants with the run going): exit 128 + sig, one line saying
    what was interrupted, no traceback, no staging, every child process gone."""
    problems: list[str] = []
    process = start(cwd, f"{pipeline}.yaml", "--stage", stage, KILN_TEST_FROM_DISK="1")

    def running(condition: Callable[[], bool], what: str) -> None:
        wait_for(lambda: condition() or process.poll() is not None, what=what)

    try:
        running(lambda: any(stage_dir(cwd, pipeline, stage).glob(".staging-*")), "staging")
        if during is not None:
            problems += during(process)
        # the workers are started anew each epoch: wait for a moment they all run
        running(lambda: len(children(process.pid)) >= workers, f"{workers} workers")
        kids = children(process.pid)
        if process.poll() is not None:
            return [*problems, f"the stage ended (exit {process.returncode}) before the signal"]
        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    want = 128 + sig
    if process.returncode != want:
        problems.append(f"expected exit {want}, got {process.returncode}\n{stderr[-3000:]}")
    if "Traceback" in stdout + stderr:
        problems.append(f"a traceback was printed:\n{stderr[-3000:]}")
    verb = "interrupted" if sig == signal.SIGINT else "terminated"
    said = [line for line in stderr.splitlines() if verb in line]
    if len(said) != 1 or f"{verb} stage {stage!r} of {pipeline}" not in said[0]:
        problems.append(f"expected one line '{verb} stage {stage!r} of {pipeline}...':\n{stderr}")
    if leftovers(cwd):
        problems.append(f"staging left behind: {leftovers(cwd)}")
    if len(kids) < workers:
        problems.append(f"expected {workers} child processes, saw {sorted(kids)}")
    try:
        wait_for(lambda: not any(alive(k) for k in kids), timeout=10, what="the children")
    except TimeoutError:
        problems.append(f"child processes still running: {[k for k in kids if alive(k)]}")
    if stage_dir(cwd, pipeline, stage).joinpath("out").exists():
        problems.append("out/ exists after an interrupted run")
    return problems


def second_run_refused(cwd: Path, pipeline: str, stage: str) -> Callable:
    """For `interrupt(during=...)`: a second `kiln run` of the same stage, started while
    the first runs, is refused at once naming the first's pid, and leaves it alone."""

    def check(first: subprocess.Popen[str]) -> list[str]:
        second = kiln(cwd, f"{pipeline}.yaml", "--stage", stage)
        problems: list[str] = []
        _no_traceback(second, problems)
        expected = f"stage {stage!r} of {pipeline} is already running here (pid {first.pid})"
        if second.returncode != 1 or expected not in second.stderr:
            problems.append(
                f"the second run was not refused: {expected!r} missing" + _output(second)
            )
        if first.poll() is not None:
            problems.append("the first run ended when the second started")
        return problems

    return check
