"""`dvc repro` reruns exactly what a change touches; failures and stale dvc.yaml are loud."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_tools import EXPORT_BLOCK, TINY_SPEC, make_repo, run, stages_run

pytestmark = pytest.mark.e2e

ALL = {f"tiny-{s}" for s in ("load_data", "augment", "build_model", "train", "evaluate")}


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def test_repro_reruns_exactly_what_changed(tiny_repo: Path) -> None:
    spec = tiny_repo / "pipelines" / "tiny.yaml"
    assert stages_run(run("dvc", "repro", cwd=tiny_repo)) == ALL
    assert stages_run(run("dvc", "repro", cwd=tiny_repo)) == set()
    run("git", "add", "-A", cwd=tiny_repo)
    run("git", "commit", "-qm", "first results", cwd=tiny_repo)

    # A learning-rate edit reruns train; evaluate reruns because the model bytes changed.
    edit(spec, "lr: 0.01", "lr: 0.02")
    result = run("dvc", "repro", cwd=tiny_repo)
    assert stages_run(result) == {"tiny-train", "tiny-evaluate"}

    # An augment edit reruns augment and what depends on it, not load_data or build_model.
    edit(spec, "p: 0.5", "p: 0.3")
    assert stages_run(run("dvc", "repro", cwd=tiny_repo)) == {
        "tiny-augment", "tiny-train", "tiny-evaluate"
    }  # fmt: skip

    # Forcing every stage to rerun reproduces the same bytes, so dvc.lock does not change.
    lock = (tiny_repo / "dvc.lock").read_bytes()
    assert stages_run(run("dvc", "repro", "-f", cwd=tiny_repo)) == ALL
    assert (tiny_repo / "dvc.lock").read_bytes() == lock

    diff = run("dvc", "metrics", "diff", "--json", cwd=tiny_repo)
    changed = json.loads(diff.stdout)
    assert "runs/tiny/evaluate/metrics.json" in changed
    assert "accuracy" in changed["runs/tiny/evaluate/metrics.json"]
    plots = run("dvc", "plots", "show", "--json", cwd=tiny_repo)
    shown = json.loads(plots.stdout)["data"]
    assert "tiny-train: loss" in shown and "tiny-evaluate: confusion matrix" in shown
    assert "runs/tiny/evaluate/plots/confusion.png" in shown


def test_a_failing_stage_leaves_the_lock_and_no_partial_output(tiny_repo: Path) -> None:
    run("dvc", "repro", cwd=tiny_repo)
    lock = (tiny_repo / "dvc.lock").read_bytes()
    edit(tiny_repo / "pipelines" / "tiny.yaml", "{name: Adam, lr: 0.01}",
         "{name: SGD, lr: 1.0e+12, momentum: 0.9}")  # fmt: skip
    result = run("dvc", "repro", cwd=tiny_repo, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "error: the loss became" in output and "epoch 1, step" in output
    assert "Traceback" not in output
    assert (tiny_repo / "dvc.lock").read_bytes() == lock
    assert not (tiny_repo / "runs" / "tiny" / "train" / "out").exists()
    assert not (tiny_repo / "runs" / "tiny" / "train" / "metrics.json").exists()


PLUGIN = """\
from typing import Literal

from torchkiln.registry import ModelConfig, models


@models.register
class Linear(ModelConfig):
    name: Literal["linear"] = "linear"

    def build(self, info):
        import math

        from torch import nn

        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(info.input_shape), info.num_classes))
"""


def test_a_stale_dvc_yaml_never_runs_silently(tiny_repo: Path) -> None:
    # A structural edit: a plugin model. build_model now depends on the plugin's source,
    # which the dvc.yaml entry does not list; running that entry would cache a lie.
    (tiny_repo / "pipelines" / "models.py").write_text(PLUGIN)
    spec = tiny_repo / "pipelines" / "tiny.yaml"
    edit(spec, "seed: 0\n", "seed: 0\nplugins: [models.py]\n")
    edit(spec, "{name: mlp, hidden: [16]}", "{name: linear}")
    check = run("kiln", "dvc", "--check", cwd=tiny_repo, check=False)
    assert check.returncode == 1
    added = [line for line in check.stdout.splitlines() if line.startswith("+")]
    assert any("pipelines/models.py" in line for line in added), check.stdout
    result = run("dvc", "repro", cwd=tiny_repo, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "dvc.yaml is stale: run kiln dvc" in output
    assert "'tiny-build_model' differs in deps" in output
    assert not (tiny_repo / "runs" / "tiny" / "build_model" / "out").exists()
    # `kiln repro` compiles first, then runs.
    assert "tiny-build_model" in stages_run(run("kiln", "repro", cwd=tiny_repo))


TWO_STAGES = """\
name: two
seed: 0
stages:
  load_data:
    dataset: {name: synthetic, num_classes: 2, per_class: 10, image_size: 4}
  augment:
    preview: 0
"""


def test_a_stage_removed_from_the_spec_leads_to_kiln_dvc(tmp_path: Path) -> None:
    """DVC reads a stage's params before it runs its command, so for a stage removed from
    the spec it fails with its own "Parameters 'stages.x' are missing" and no kiln code
    runs. Any other stage of that spec DVC starts says to run `kiln dvc` instead; `kiln
    repro` (kiln dvc first) needs nothing more."""
    repo = make_repo(tmp_path / "repo", {"two.yaml": TWO_STAGES})
    spec = repo / "pipelines" / "two.yaml"
    spec.write_text(TWO_STAGES.split("  augment:")[0])
    result = run("dvc", "repro", cwd=repo, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output
    assert (
        "error: dvc.yaml is stale: run kiln dvc (it still has stage(s) 'two-augment', which "
        "pipelines/two.yaml no longer defines; or use `kiln repro`)"
    ) in output
    assert not (repo / "runs/two/load_data/out").exists()

    # once both stages ran, nothing else runs: DVC's own message is all there is
    spec.write_text(TWO_STAGES)
    assert stages_run(run("dvc", "repro", cwd=repo)) == {"two-load_data", "two-augment"}
    spec.write_text(TWO_STAGES.split("  augment:")[0])
    result = run("dvc", "repro", cwd=repo, check=False)
    assert result.returncode != 0
    assert "Parameters 'stages.augment' are missing from 'pipelines/two.yaml'" in result.stderr
    result = run("kiln", "repro", cwd=repo)
    assert "wrote dvc.yaml: 1 kiln stages" in result.stderr and stages_run(result) == set()
    assert "two-augment" not in (repo / "dvc.yaml").read_text()


def test_kiln_dvc_is_deterministic_and_keeps_foreign_stages(tiny_repo: Path) -> None:
    import yaml

    dvc_yaml = tiny_repo / "dvc.yaml"
    assert dvc_yaml.read_text().startswith("# Generated by `kiln dvc`")
    doc = yaml.safe_load(dvc_yaml.read_text())
    doc["stages"]["my-report"] = {"cmd": "echo hello > report.txt", "outs": ["report.txt"]}
    doc["plots"].append("my-plot.png")
    dvc_yaml.write_text(yaml.safe_dump(doc, sort_keys=False))
    run("kiln", "dvc", cwd=tiny_repo)
    text = dvc_yaml.read_text()
    kept = yaml.safe_load(text)
    assert kept["stages"]["my-report"] == {"cmd": "echo hello > report.txt", "outs": ["report.txt"]}
    assert "my-plot.png" in kept["plots"]
    run("kiln", "dvc", cwd=tiny_repo)
    assert dvc_yaml.read_text() == text
    assert run("kiln", "dvc", "--check", cwd=tiny_repo).returncode == 0


def test_params_are_per_stage(tiny_repo: Path) -> None:
    import yaml

    stages = yaml.safe_load((tiny_repo / "dvc.yaml").read_text())["stages"]
    assert stages["tiny-train"]["params"] == [
        {"pipelines/tiny.yaml": ["seed", "task", "stages.train"]}
    ]
    assert stages["tiny-train"]["deps"] == [
        "runs/tiny/augment/out", "runs/tiny/build_model/out", "runs/tiny/load_data/out"
    ]  # fmt: skip
    assert stages["tiny-train"]["metrics"] == [{"runs/tiny/train/metrics.json": {"cache": False}}]


def test_export_artifact_and_whole_spec_params(tmp_path: Path) -> None:
    import yaml

    repo = make_repo(tmp_path / "repo", {"tiny.yaml": TINY_SPEC + EXPORT_BLOCK})
    doc = yaml.safe_load((repo / "dvc.yaml").read_text())
    assert doc["stages"]["tiny-export"]["params"] == [{"pipelines/tiny.yaml": None}]
    assert doc["artifacts"]["tiny"]["path"] == "runs/tiny/export/out"
    assert doc["artifacts"]["tiny"]["type"] == "model"
