"""Hostile and careless inputs, through the real `kiln` (and `dvc`): a spec file name made of
shell syntax runs nothing but kiln, and a plugin file outside the repository is refused
before any of its code runs.

Model files from strangers (`kiln predict`/`kiln sample` never load TorchScript unless
asked) are tested beside their trained fixtures, in test_text_pipeline.py and
test_gan_pipeline.py; bad specs in test_spec_errors.py.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from cli_tools import failed, kiln, make_repo, ok, run, stages_run

#: File names a shell would run commands from: pasted into the command unquoted, and
#: wrapped in single quotes (the apostrophe ends the quote).
HOSTILE = "$(touch pwned1) `touch pwned2`; touch pwned3 & x.yaml"
QUOTED = "it'; touch pwned4; '.yaml"
#: One cheap stage: 20 synthetic 4x4 images.
ONE_STAGE = """\
name: odd
seed: 0
stages:
  load_data:
    dataset: {name: synthetic, num_classes: 2, per_class: 10, image_size: 4}
"""


def refused(result: subprocess.CompletedProcess[str]) -> str:
    """Assert a spec was refused as invalid (exit 2, no traceback); returns stderr."""
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in output, output
    return result.stderr


def _pwned(root: Path) -> list[str]:
    return sorted(p.name for p in root.parent.rglob("pwned*"))


@pytest.mark.e2e
def test_a_spec_file_named_with_shell_syntax_runs_only_kiln(tmp_path: Path) -> None:
    quoted = ONE_STAGE.replace("name: odd", "name: quote")
    repo = make_repo(tmp_path / "repo", {HOSTILE: ONE_STAGE, QUOTED: quoted})  # + `kiln dvc`
    spec = f"pipelines/{HOSTILE}"
    entry = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["odd-load_data"]
    assert entry["params"] == [{spec: ["seed", "stages.load_data"]}]
    result = run("dvc", "repro", cwd=repo, check=False)  # DVC runs each cmd in a shell
    assert _pwned(repo) == [], "a command hidden in a spec's file name ran"
    assert stages_run(ok(result)) == {"odd-load_data", "quote-load_data"}
    assert (repo / "runs/odd/load_data/out/meta.json").exists()
    assert (repo / "runs/quote/load_data/out/meta.json").exists()
    # DVC read the parameters from that file: editing one reruns the stage
    (repo / spec).write_text(ONE_STAGE.replace("seed: 0", "seed: 1"))
    assert "odd-load_data" in run("dvc", "status", cwd=repo).stdout
    assert _pwned(repo) == []


def test_a_spec_path_dvc_would_fold_in_dvc_lock_is_refused(tmp_path: Path) -> None:
    """DVC writes the params file's path into dvc.lock as a key and folds a long one at a
    space, leaving a dvc.lock it cannot read ("'./dvc.lock' is invalid"): refused first."""
    name = "a spec whose file name is long and has spaces in it.yaml"  # 10 + 56 characters
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / name).write_text(ONE_STAGE)
    ok(kiln("dvc", cwd=tmp_path))  # short enough
    longer = name.replace("long", "long, very long,")
    os.replace(tmp_path / "pipelines" / name, tmp_path / "pipelines" / longer)
    message = failed(kiln("dvc", cwd=tmp_path), code=2)
    assert message == (
        f"error: pipelines/{longer}: DVC cannot track this spec: it writes the path into "
        "dvc.lock, and one holding a space and longer than 74 characters (78) leaves a "
        "dvc.lock DVC cannot read back; shorten the path or take the spaces out of it\n"
    )


def test_a_pipeline_name_taken_from_such_a_file_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / HOSTILE).write_text(ONE_STAGE.replace("name: odd\n", ""))
    message = refused(kiln("dvc", cwd=tmp_path))
    assert f"pipelines/{HOSTILE}:1:1: name: pipeline name" in message
    assert "may only use a-z, 0-9 and _" in message and "rename the file or set name:" in message
    assert not (tmp_path / "dvc.yaml").exists()
    assert _pwned(tmp_path) == []


#: A plugin that leaves a mark when imported: refusing it must not run it.
MARKING_PLUGIN = """\
from pathlib import Path

Path(__file__).with_name("imported").touch()
"""
PLUGGED = "plugins: [{}]\nstages:\n  load_data:\n    dataset: mnist_sample\n"


@pytest.mark.parametrize("how", ["relative", "absolute", "symlink"])
def test_a_plugin_file_outside_the_repository_is_refused_unrun(how: str, tmp_path: Path) -> None:
    repo, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    repo.mkdir()
    elsewhere.mkdir()
    plugin = elsewhere / "models.py"
    plugin.write_text(MARKING_PLUGIN)
    entry = {"relative": "../elsewhere/models.py", "absolute": str(plugin), "symlink": "link.py"}
    if how == "symlink":  # inside by name, outside in fact: DVC would hash the target
        (repo / "link.py").symlink_to(plugin)
    (repo / "spec.yaml").write_text(PLUGGED.format(entry[how]))
    message = refused(kiln("validate", "spec.yaml", cwd=repo))
    assert message.startswith(
        f"spec.yaml:1:11: plugins[0]: plugin file '{entry[how]}' is outside the repository "
        f"({plugin.resolve().as_posix()} is not under {repo.resolve().as_posix()}): "
        "DVC cannot track it"
    ), message
    assert "move it into the repository" in message
    assert not (elsewhere / "imported").exists(), "the refused plugin was imported"

    # the same file inside the repository loads (and so runs)
    os.replace(plugin, repo / "models.py")
    (repo / "spec.yaml").write_text(PLUGGED.format("models.py"))
    ok(kiln("validate", "spec.yaml", cwd=repo))
    assert (repo / "imported").exists()
