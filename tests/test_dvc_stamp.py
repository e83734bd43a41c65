"""`kiln repro` skips compiling dvc.yaml only when nothing the last compile read changed
(torchkiln/dvc_stamp.py): the specs and what they extend, the list of specs, the
installation and dvc.yaml itself. Anything else, or any doubt, compiles again."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from cli_tools import synthetic, write_spec

from torchkiln import dvc_stamp
from torchkiln.cli import main
from torchkiln.commands.common import default_specs

STAGES = {"load_data": {"dataset": synthetic(), "split": {"val": 0.2, "test": 0.2}}}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pipelines/a.yaml and pipelines/b.yaml (which extends base/common.yaml), compiled by
    `kiln dvc`."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pipelines" / "base").mkdir(parents=True)
    write_spec(tmp_path / "pipelines", "a", STAGES)
    (tmp_path / "pipelines" / "base" / "common.yaml").write_text(
        "abstract: true\ntask: classification\nseed: 0\nstages:\n"
        "  load_data:\n    dataset: {name: synthetic, num_classes: 3}\n"
    )
    (tmp_path / "pipelines" / "b.yaml").write_text("extends: base/common.yaml\nname: b\n")
    assert main(["dvc"]) == 0
    return tmp_path


def fresh() -> bool:
    return dvc_stamp.fresh(default_specs())


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_a_compile_that_left_dvc_yaml_up_to_date_is_remembered(project: Path) -> None:
    assert fresh()
    recorded = json.loads(dvc_stamp.STAMP.read_text())
    assert sorted(recorded["inputs"]) == [
        "pipelines/a.yaml", "pipelines/b.yaml", "pipelines/base/common.yaml"
    ]  # fmt: skip
    assert main(["dvc"]) == 0 and fresh()  # an up-to-date dvc.yaml is remembered as well


@pytest.mark.parametrize(
    "change",
    [
        "a spec",
        "a base it extends",
        "a spec added",
        "a spec removed",
        "dvc.yaml edited",
        "dvc.yaml removed",
        "another installation",
        "a broken stamp",
    ],
)
def test_any_change_to_what_the_compile_read_compiles_again(
    project: Path, change: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipelines = project / "pipelines"
    if change == "a spec":  # same size, other content: contents are compared, not sizes
        edit(pipelines / "a.yaml", "per_class: 24", "per_class: 25")
    elif change == "a base it extends":
        edit(pipelines / "base" / "common.yaml", "num_classes: 3", "num_classes: 4")
    elif change == "a spec added":
        write_spec(pipelines, "c", STAGES)
    elif change == "a spec removed":
        (pipelines / "a.yaml").unlink()
    elif change == "dvc.yaml edited":
        edit(project / "dvc.yaml", "stages:", "stages:\n  mine:\n    cmd: 'true'")
    elif change == "dvc.yaml removed":
        (project / "dvc.yaml").unlink()
    elif change == "another installation":  # a package installed, torchkiln edited...
        monkeypatch.setattr(dvc_stamp, "installation", lambda: "another")
    else:
        dvc_stamp.STAMP.write_text('{"format": 1, "inputs": ')
    assert not fresh()


def test_the_same_content_again_is_fresh_again(project: Path) -> None:
    spec = project / "pipelines" / "a.yaml"
    text = spec.read_text()
    spec.write_text(text.replace("per_class: 24", "per_class: 30"))
    assert not fresh()
    spec.write_text(text)
    assert fresh()


def test_specs_with_plugins_are_never_skipped(project: Path) -> None:
    (project / "pipelines" / "models.py").write_text("")
    edit(project / "pipelines" / "a.yaml", "seed: 0\n", "seed: 0\nplugins: [models.py]\n")
    assert main(["dvc"]) == 0
    assert not dvc_stamp.STAMP.exists() and not fresh()


def test_a_spec_edited_while_the_compile_ran_is_not_remembered(project: Path) -> None:
    dvc_stamp.STAMP.unlink()
    began = time.time()
    later = began + 5
    os.utime(project / "pipelines" / "b.yaml", (later, later))
    files = ["pipelines/base/common.yaml"]
    dvc_stamp.record(default_specs(), files, plugins=False, began=began)
    assert not dvc_stamp.STAMP.exists()
    dvc_stamp.record(default_specs(), files, plugins=False, began=later + 1)
    assert fresh()


def test_kiln_dvc_check_changes_nothing(project: Path) -> None:
    dvc_stamp.STAMP.unlink()
    assert main(["dvc", "--check"]) == 0
    assert not dvc_stamp.STAMP.exists()
