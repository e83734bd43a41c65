"""`extends:` through the real DVC: editing a base reruns the affected stages of its
children and nothing else; `dvc exp run -S` sets inherited keys in the child."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_tools import make_repo, run, stages_run

pytestmark = pytest.mark.e2e

BASE = """\
abstract: true
task: classification
seed: 0
stages:
  load_data:
    dataset: {name: synthetic, num_classes: 3, per_class: 20, image_size: 8}
    split: {val: 0.2, test: 0.2}
  build_model:
    model: {name: mlp, hidden: [16]}
  train:
    epochs: 2
    batch_size: 16
    optimizer: {name: Adam, lr: 0.01}
  evaluate:
    metrics: [accuracy]
"""
CHILD = """\
extends: base/common.yaml
stages:
  train:
    optimizer: {name: SGD, lr: 0.1, momentum: 0.9}
"""
ALL = {f"child-{s}" for s in ("load_data", "build_model", "train", "evaluate")}


def test_base_edits_rerun_what_they_touch_and_experiments_set_inherited_keys(
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "repo", {"base/common.yaml": BASE, "child.yaml": CHILD})
    assert stages_run(run("dvc", "repro", cwd=repo)) == ALL
    run("git", "add", "-A", cwd=repo)
    run("git", "commit", "-qm", "baseline", cwd=repo)

    # editing the base's evaluate block reruns the child's evaluate, nothing else
    base = repo / "pipelines/base/common.yaml"
    base.write_text(BASE.replace("metrics: [accuracy]", "metrics: [accuracy, f1_macro]"))
    assert stages_run(run("dvc", "repro", cwd=repo)) == {"child-evaluate"}
    # a base key the child overrides changes nothing the child runs
    base.write_text(base.read_text().replace("lr: 0.01", "lr: 0.02"))
    assert stages_run(run("dvc", "repro", cwd=repo)) == set()
    run("git", "add", "-A", cwd=repo)
    run("git", "commit", "-qm", "base edits", cwd=repo)

    # an inherited key of a stage the child mentions: `++` adds it to the child. The
    # stages the child inherits whole are tracked by its `stages` block, so they rerun too
    # (the price the README states), and come out byte-identical
    split = (repo / "runs/child/load_data/out/data.safetensors").read_bytes()
    result = run(
        "dvc", "exp", "run", "-S", "pipelines/child.yaml:++stages.train.epochs=3", cwd=repo
    )
    assert stages_run(result) == ALL
    assert (repo / "runs/child/load_data/out/data.safetensors").read_bytes() == split
    history = json.loads((repo / "runs/child/train/plots/history.json").read_text())
    assert len(history) == 3
    # an inherited stage the child does not mention at all: covered by the child's `stages`
    result = run(
        "dvc", "exp", "run", "-S", "pipelines/child.yaml:++stages.evaluate.batch_size=7", cwd=repo
    )
    assert "child-evaluate" in stages_run(result)
    assert "dvc.yaml is stale" not in result.stdout + result.stderr
