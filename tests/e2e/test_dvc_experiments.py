"""Experiments, sweeps, versioned model artifacts, cross-pipeline dependencies, `kiln init`."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
import yaml
from cli_tools import EXPORT_BLOCK, TINY_SPEC, make_repo, run, stages_run

pytestmark = pytest.mark.e2e

LR = "pipelines/tiny.yaml:stages.train.optimizer.lr"


def _exp_rows(repo: Path) -> list[dict]:
    shown = json.loads(run("dvc", "exp", "show", "--json", cwd=repo).stdout)
    rows = []
    for baseline in shown:
        rows.append(baseline)
        for experiment in baseline.get("experiments") or []:
            rows.extend(experiment.get("revs") or [])
    return rows


def _param(row: dict, key: str) -> object:
    params = ((row.get("data") or {}).get("params") or {}).get("pipelines/tiny.yaml", {})
    value: object = params.get("data", {})
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def test_experiments_and_queued_sweep(tiny_repo: Path) -> None:
    run("dvc", "repro", cwd=tiny_repo)
    run("git", "add", "-A", cwd=tiny_repo)
    run("git", "commit", "-qm", "baseline", cwd=tiny_repo)

    result = run("dvc", "exp", "run", "-S", f"{LR}=0.05", cwd=tiny_repo)
    assert stages_run(result) == {"tiny-train", "tiny-evaluate"}
    table = run("dvc", "exp", "show", "--csv", cwd=tiny_repo).stdout
    assert "stages.train.optimizer.lr" in table and "accuracy" in table
    rows = _exp_rows(tiny_repo)
    assert 0.05 in [_param(r, "stages.train.optimizer.lr") for r in rows]
    with_metrics = [r for r in rows if _param(r, "stages.train.optimizer.lr") == 0.05]
    metrics = with_metrics[0]["data"]["metrics"]["runs/tiny/evaluate/metrics.json"]["data"]
    # the table shows what the experiment's evaluate wrote (left in the workspace)
    written = json.loads((tiny_repo / "runs/tiny/evaluate/metrics.json").read_text())
    assert metrics == written

    for lr in ("0.002", "0.003"):
        run("dvc", "exp", "run", "--queue", "-S", f"{LR}={lr}", cwd=tiny_repo)
    run("dvc", "queue", "start", "-j", "1", cwd=tiny_repo)
    deadline = time.time() + 400
    while time.time() < deadline:
        status = run("dvc", "queue", "status", cwd=tiny_repo).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    else:
        run("dvc", "queue", "kill", "--all", cwd=tiny_repo, check=False)
        pytest.fail(f"the queued sweep did not finish:\n{status}")
    run("dvc", "queue", "stop", cwd=tiny_repo, check=False)
    assert "Failed" not in status, run("dvc", "queue", "logs", "--all", cwd=tiny_repo, check=False)
    swept = {_param(r, "stages.train.optimizer.lr") for r in _exp_rows(tiny_repo)}
    assert {0.002, 0.003} <= swept


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_versioned_model_from_a_fresh_clone(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"tiny.yaml": TINY_SPEC + EXPORT_BLOCK},
                     remote=tmp_path / "storage")  # fmt: skip
    run("dvc", "repro", cwd=repo)
    run("git", "add", "-A", cwd=repo)
    run("git", "commit", "-qm", "model v1", cwd=repo)
    run("dvc", "push", cwd=repo)
    run("gto", "register", "tiny", "--version", "v1.0.0", cwd=repo)
    first = _sha(repo / "runs/tiny/export/out/model.onnx")

    spec = repo / "pipelines/tiny.yaml"
    spec.write_text(spec.read_text().replace("hidden: [16]", "hidden: [24]"))
    run("dvc", "repro", cwd=repo)
    run("git", "add", "-A", cwd=repo)
    run("git", "commit", "-qm", "model v2", cwd=repo)
    run("dvc", "push", cwd=repo)
    run("gto", "register", "tiny", "--version", "v2.0.0", cwd=repo)
    assert _sha(repo / "runs/tiny/export/out/model.onnx") != first
    assert "tiny@v1.0.0" in run("git", "tag", cwd=repo).stdout

    clone = tmp_path / "clone"
    run("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path)
    run("dvc", "artifacts", "get", ".", "tiny", "--rev", "v1.0.0", "-o", "v1", cwd=clone)
    assert _sha(clone / "v1" / "model.onnx") == first
    card = json.loads((clone / "v1" / "model_card.json").read_text())
    assert card["pipeline"] == "tiny" and card["classes"] == ["class_0", "class_1", "class_2"]


PRE = TINY_SPEC.replace("name: tiny", "name: pre")
FINE = (
    TINY_SPEC.replace("name: tiny", "name: fine")
    .replace("per_class: 20", "per_class: 12")
    .replace(
        "    model: {name: mlp, hidden: [16]}\n",
        "    model: {name: mlp, hidden: [16]}\n"
        "    weights: {pipeline: pre, stage: train, exclude: ['3.*']}\n"
        "    freeze: ['1.*']\n",
    )
)


def test_a_pipeline_built_on_another_reruns_when_it_changes(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"pre.yaml": PRE, "fine.yaml": FINE})
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    assert "runs/pre/train/out" in stages["fine-build_model"]["deps"]
    first = run("dvc", "repro", cwd=repo)
    assert (
        "loaded 2 weight tensors from runs/pre/train/out; 2 excluded" in first.stderr + first.stdout
    )
    spec = repo / "pipelines" / "pre.yaml"
    spec.write_text(spec.read_text().replace("lr: 0.01", "lr: 0.02"))
    rerun = stages_run(run("dvc", "repro", cwd=repo))
    assert {"pre-train", "fine-build_model", "fine-train", "fine-evaluate"} <= rerun
    assert not {"fine-load_data", "fine-augment", "pre-load_data"} & rerun


def test_kiln_init_workspace_runs_with_dvc_repro(tmp_path: Path) -> None:
    run("kiln", "init", "ws", cwd=tmp_path)
    ws = tmp_path / "ws"
    assert run("git", "status", "--porcelain", cwd=ws).stdout == ""
    assert "local" in run("dvc", "remote", "list", cwd=ws).stdout
    spec = ws / "pipelines" / "digits.yaml"
    assert "plugins: [../plugins/my_models.py]" in spec.read_text()
    assert "plugins/my_models.py" in (ws / "dvc.yaml").read_text()
    run("kiln", "dvc", "--check", cwd=ws)
    run("dvc", "repro", cwd=ws)
    metrics = json.loads((ws / "runs/digits/evaluate/metrics.json").read_text())
    assert metrics["accuracy"] > 0.5
    assert (ws / "runs/digits/export/out/model.onnx").exists()
    again = run("kiln", "init", "ws", cwd=tmp_path, check=False)
    assert again.returncode == 2 and "exists and is not empty" in again.stderr
