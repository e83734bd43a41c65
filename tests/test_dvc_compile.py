"""The DVC compiler's pure parts: the stage command is one shell-safe argument list, and
it parses back to the spec that wrote it."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from torchkiln.dvc import _kiln_spec, check_not_stale, compile_stage, dvc_yaml_text, stage_command
from torchkiln.errors import RunError
from torchkiln.schemas.spec import load_pipeline

SPEC = """\
name: odd
stages:
  load_data:
    dataset: {name: synthetic, num_classes: 2, per_class: 4, image_size: 4}
  build_model:
    model: mlp
"""


@pytest.mark.parametrize(
    "path",
    [
        "pipelines/x.yaml",
        "my specs/x.yaml",
        "a;touch INJECTED/x.yaml",
        "$(id)/x.yaml",
        "it's/x.yaml",
    ],
)
def test_the_stage_command_keeps_any_spec_path_one_argument(path: str) -> None:
    cmd = stage_command(path, "train")
    assert shlex.split(cmd) == ["kiln", "run", path, "--stage", "train"]
    assert _kiln_spec({"cmd": cmd}) == path


def test_commands_kiln_did_not_write_are_not_taken_for_kiln_stages() -> None:
    assert _kiln_spec({"cmd": "python train.py"}) is None
    assert _kiln_spec({"cmd": "kiln run 'unbalanced --stage x"}) is None
    assert _kiln_spec("not a mapping") is None


def test_a_spec_in_a_folder_with_shell_characters_compiles_to_a_quoted_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "my specs; touch INJECTED"
    folder.mkdir()
    (folder / "odd.yaml").write_text(SPEC)
    monkeypatch.chdir(tmp_path)
    pipeline = load_pipeline(Path("my specs; touch INJECTED/odd.yaml"))
    entry = compile_stage(pipeline, pipeline.stages["build_model"])
    assert entry["cmd"] == "kiln run 'my specs; touch INJECTED/odd.yaml' --stage build_model"
    assert entry["params"] == [{"my specs; touch INJECTED/odd.yaml": ["stages.build_model"]}]


def test_the_stale_guard_runs_only_for_the_dvc_stage_being_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "odd.yaml").write_text(SPEC)
    monkeypatch.chdir(tmp_path)
    pipeline = load_pipeline(Path("odd.yaml"))
    monkeypatch.delenv("DVC_STAGE", raising=False)
    check_not_stale(pipeline, ["build_model"])  # outside DVC: nothing to check
    monkeypatch.setenv("DVC_STAGE", "odd-load_data")
    check_not_stale(pipeline, ["build_model"])  # DVC runs another stage
    monkeypatch.setenv("DVC_STAGE", "odd-build_model")
    with pytest.raises(RunError, match=r"dvc.yaml is stale: run kiln dvc \(dvc.yaml has no stage"):
        check_not_stale(pipeline, ["build_model"], root=tmp_path)


def test_a_stage_still_in_dvc_yaml_but_gone_from_the_spec_stops_its_siblings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DVC never runs a removed stage's command (its params are missing first), so the
    stages of the same spec that DVC does start are where kiln says `kiln dvc`."""
    (tmp_path / "odd.yaml").write_text(SPEC)
    monkeypatch.chdir(tmp_path)
    pipeline = load_pipeline(Path("odd.yaml"))
    (tmp_path / "dvc.yaml").write_text(dvc_yaml_text({"odd": pipeline}, tmp_path / "dvc.yaml")[1])
    (tmp_path / "odd.yaml").write_text(SPEC.split("  build_model:")[0])
    pipeline = load_pipeline(Path("odd.yaml"))
    monkeypatch.setenv("DVC_STAGE", "odd-load_data")
    with pytest.raises(RunError) as raised:
        check_not_stale(pipeline, ["load_data"], root=tmp_path)
    assert str(raised.value) == (
        "dvc.yaml is stale: run kiln dvc (it still has stage(s) 'odd-build_model', which "
        "odd.yaml no longer defines; or use `kiln repro`)"
    )
    monkeypatch.delenv("DVC_STAGE")
    check_not_stale(pipeline, ["load_data"], root=tmp_path)  # `kiln run` outside DVC: fine
