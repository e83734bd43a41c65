"""The `kiln` CLI around validation: examples, no torch, list, --version/--help, the JSON Schema,
and a user's plugin validating exactly like a built-in component."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from cli_tools import ROOT, kiln

import torchkiln

EXAMPLES = sorted((ROOT / "pipelines").glob("*.yaml"))
SCHEMA_LINE = "# yaml-language-server: $schema=../kiln.schema.json"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_validates(example: Path) -> None:
    rel = example.relative_to(ROOT).as_posix()
    result = kiln("validate", rel, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"ok {rel}\n"
    assert result.stderr == ""


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_examples_point_editors_at_the_schema(example: Path) -> None:
    assert example.read_text(encoding="utf-8").splitlines()[0] == SCHEMA_LINE
    assert (example.parent / "../kiln.schema.json").resolve() == ROOT / "kiln.schema.json"


def test_validate_defaults_to_every_example() -> None:
    result = kiln("validate", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"ok {p.relative_to(ROOT).as_posix()}" for p in EXAMPLES]


def _in_process(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `torchkiln.cli.main(argv)` in a fresh interpreter; fail if torch got imported."""
    code = textwrap.dedent(f"""
        import contextlib, io, sys
        from torchkiln.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            rc = main({argv!r})
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))
        assert not heavy, "imported " + ", ".join(heavy[:8])
        sys.exit(rc)
    """)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_validate_imports_no_torch() -> None:
    specs = [p.relative_to(ROOT).as_posix() for p in EXAMPLES]
    result = _in_process(["validate", *specs], ROOT)
    assert result.returncode == 0, result.stderr


def test_validate_of_a_bad_spec_imports_no_torch(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "stages:\n  load_data:\n    dataset: mnist_smaple\n  train:\n"
        "    optimizer: {name: NAdam, lrr: 1}\n    scheduler: ExponentialLR\n"
    )
    result = _in_process(["validate", "bad.yaml"], tmp_path)
    assert result.returncode == 2, result.stderr
    assert "did you mean 'mnist_sample'" in result.stderr


@pytest.mark.parametrize("argv", [["list"], ["schema"]], ids=["list", "schema"])
def test_list_and_schema_import_no_torch(argv: list[str]) -> None:
    result = _in_process(argv, ROOT)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------- kiln list


def test_list_every_kind() -> None:
    result = kiln("list", "--brief", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    for kind in (
        "stage", "dataset", "transform", "model", "loss", "optimizer", "scheduler", "metric",
        "exporter", "task",
    ):  # fmt: skip
        assert f"\n{kind}: " in f"\n{result.stdout}", kind
    assert "mnist_sample" in result.stdout and "small_cnn" in result.stdout


def test_list_one_kind_with_parameters() -> None:
    result = kiln("list", "optimizer", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("optimizer: ")
    assert "AdamW" in out and "Adam with decoupled weight decay." in out
    assert "lr: float > 0 = 0.001" in out  # type, bound and default
    assert "Learning rate." in out  # the field's docstring
    assert "any other by name, through the generic adapter:" in out and "NAdam" in out
    assert "\nmodel: " not in out  # only the kind asked for


def test_list_accepts_a_plural() -> None:
    result = kiln("list", "schedulers", "--brief", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("scheduler: ")


@pytest.mark.parametrize(
    ("kind", "hint"), [("nosuchkind", ""), ("optimzer", "did you mean 'optimizer'? ")]
)
def test_list_unknown_kind(kind: str, hint: str) -> None:
    result = kiln("list", kind, cwd=ROOT)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: no kind {kind!r}; {hint}kinds: dataset, exporter,")
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------- --version, --help


def test_version() -> None:
    result = kiln("--version", cwd=ROOT)
    assert result.returncode == 0
    assert result.stdout.strip() == f"torchkiln {torchkiln.__version__}"
    assert torchkiln.__version__ == importlib.metadata.version("torchkiln")


def test_help_teaches_the_commands() -> None:
    result = kiln("--help", cwd=ROOT)
    assert result.returncode == 0
    for command in ("validate", "list", "schema"):
        assert f"\n    {command} " in result.stdout, command
        assert f"kiln {command}" in result.stdout, command  # shown in the day-to-day loop
    assert "Exit codes" in result.stdout


def test_no_command_prints_help_and_fails() -> None:
    result = kiln(cwd=ROOT)
    assert result.returncode == 2
    assert result.stdout.startswith("usage: kiln")


def test_validate_help() -> None:
    result = kiln("validate", "--help", cwd=ROOT)
    assert result.returncode == 0
    assert "never imports torch" in result.stdout
    assert "pipelines/*.yaml" in result.stdout


# ---------------------------------------------------------------------- kiln schema


@pytest.fixture(scope="module")
def schema_text() -> str:
    result = kiln("schema", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def schema(schema_text: str) -> dict[str, Any]:
    return json.loads(schema_text)


@pytest.fixture(scope="module")
def validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema)


def _example(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_schema_is_a_valid_json_schema(schema: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == ["stages"]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_schema_accepts_every_example(
    example: Path, validator: jsonschema.Draft202012Validator
) -> None:
    errors = [e.message for e in validator.iter_errors(_example(example))]
    assert errors == []


def _errors(validator: jsonschema.Draft202012Validator, data: dict[str, Any]) -> list[str]:
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(data)]


def _mutated(change) -> dict[str, Any]:
    data = _example(ROOT / "pipelines" / "mnist_cnn.yaml")
    change(data)
    return data


@pytest.mark.parametrize(
    ("where", "change"),
    [
        ("top level", lambda d: d.update(sead=1)),
        ("stage", lambda d: d["stages"]["train"].update(epoch=3)),
        ("component", lambda d: d["stages"]["train"]["optimizer"].update(lrr=0.1)),
        ("nested", lambda d: d["stages"]["load_data"]["split"].update(tset=0.2)),
        ("list item", lambda d: d["stages"]["augment"]["train"][0].update(degree=3)),
        ("custom-named stage", lambda d: d["stages"].update(extra={"uses": "evaluate", "x": 1})),
    ],
)
def test_schema_rejects_unknown_keys(
    where: str, change, validator: jsonschema.Draft202012Validator
) -> None:
    assert _errors(validator, _mutated(change)), f"an unknown key at {where} was accepted"


@pytest.mark.parametrize(
    ("what", "change"),
    [
        ("bad type", lambda d: d["stages"]["train"].update(epochs="10")),
        ("out of range", lambda d: d["stages"]["train"]["optimizer"].update(lr=-0.1)),
        ("unknown component", lambda d: d["stages"]["build_model"]["model"].update(name="nope")),
        ("stage without a kind", lambda d: d["stages"].update(fit={"epochs": 3})),
        ("bad stage name", lambda d: d["stages"].update({"Fit-1": {"uses": "train"}})),
        ("bad pipeline name", lambda d: d.update(name="My-Pipe")),
    ],
)
def test_schema_rejects_other_mistakes(
    what: str, change, validator: jsonschema.Draft202012Validator
) -> None:
    assert _errors(validator, _mutated(change)), f"{what} was accepted"


def test_schema_accepts_what_validation_accepts(validator: jsonschema.Draft202012Validator) -> None:
    data = _mutated(
        lambda d: d["stages"].update(
            fit={"uses": "train", "epochs": 1, "inputs": {"model": "build_model"}},
            evaluate=None,  # `evaluate:` with nothing under it means all defaults
        )
    )
    data["stages"]["train"]["optimizer"] = "NAdam"  # a shorthand generic-adapter name
    assert _errors(validator, data) == []


def test_committed_schema_is_up_to_date(schema_text: str) -> None:
    committed = (ROOT / "kiln.schema.json").read_text(encoding="utf-8")
    assert committed == schema_text, (
        "kiln.schema.json is stale: run `kiln schema -o kiln.schema.json` and commit it"
    )


def test_schema_output_file(tmp_path: Path, schema_text: str) -> None:
    out = tmp_path / "s.json"
    result = kiln("schema", "-o", str(out), cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert out.read_text(encoding="utf-8") == schema_text


# ---------------------------------------------------------------------- a user's plugin

PLUGIN = '''\
"""A user's model, registered exactly as the built-ins are."""

from typing import Annotated, Literal

from pydantic import Field

from torchkiln.registry import ModelConfig, models


@models.register
class TinyNet(ModelConfig):
    """Two linear layers, for tests."""

    name: Literal["tiny_net"] = "tiny_net"
    hidden: Annotated[int, Field(ge=1)] = 32
    """Width of the hidden layer."""

    def build(self, info):
        import torch.nn as nn  # inside build: validation never imports torch

        return nn.Sequential(nn.Flatten(), nn.LazyLinear(self.hidden), nn.ReLU())
'''

PLUGGED_SPEC = """\
name: custom
plugins: [../models/tiny_net.py]
stages:
  load_data:
    dataset: sklearn_digits
  build_model:
    model: {{name: tiny_net, {params}}}
  train:
    epochs: 1
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny_net.py").write_text(PLUGIN, encoding="utf-8")
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "custom.yaml").write_text(
        PLUGGED_SPEC.format(params="hidden: 16"), encoding="utf-8"
    )
    return tmp_path


def test_plugin_component_validates_like_a_built_in(project: Path) -> None:
    result = kiln("validate", cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok pipelines/custom.yaml\n"

    (project / "pipelines" / "custom.yaml").write_text(
        PLUGGED_SPEC.format(params="hiden: 16, hidden: 0"), encoding="utf-8"
    )
    result = kiln("validate", "pipelines/custom.yaml", cwd=project)
    assert result.returncode == 2
    assert result.stderr.splitlines()[:2] == [
        "pipelines/custom.yaml:7:29: stages.build_model.model.hiden: unknown key 'hiden'; "
        "did you mean 'hidden'? valid keys: hidden, name",
        "pipelines/custom.yaml:7:48: stages.build_model.model.hidden: Input should be greater "
        "than or equal to 1 (got 0)",
    ]


def test_plugin_component_in_list_and_schema(project: Path) -> None:
    listed = kiln("list", "model", cwd=project)
    assert listed.returncode == 0, listed.stderr
    assert "tiny_net" in listed.stdout and "Two linear layers, for tests." in listed.stdout
    assert "hidden: int >= 1 = 32" in listed.stdout

    result = kiln("schema", cwd=project)
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert "tiny_net" in result.stdout
    validator = jsonschema.Draft202012Validator(schema)
    spec = yaml.safe_load((project / "pipelines" / "custom.yaml").read_text())
    assert _errors(validator, spec) == []
    spec["stages"]["build_model"]["model"]["hiden"] = 3
    assert _errors(validator, spec)


# ---------------------------------------------------------------------- valid variations

GOOD_SPECS = {
    "ambiguity_resolved_by_inputs": """\
stages:
  load_data:
    dataset: mnist_sample
  build_model:
    model: mlp
  small:
    uses: build_model
    model: small_cnn
  train:
    inputs: {model: small}
""",
    "defaults_everywhere": """\
stages:
  load_data:
    dataset: sklearn_digits
  build_model:
    model: mlp
  train:
  evaluate:
  export:
""",
    "aliases_and_merge_keys": """\
stages:
  load_data:
    dataset: {name: synthetic}
  build_model:
    model: small_cnn
  train:
    optimizer: &opt {name: SGD, lr: 0.1}
  train_momentum:
    uses: train
    optimizer:
      <<: *opt
      momentum: 0.9
""",
    "yaml_1_2_scalars": """\
name: yaml12
seed: 010
stages:
  load_data:
    dataset: mnist_sample
    split: {val: 1e-1, test: 2e-1}
  build_model:
    model: mlp
  train:
    optimizer: {name: AdamW, lr: 3e-4}
""",
    "generic_components": """\
stages:
  load_data:
    dataset: mnist_sample
  augment:
    train: [RandomInvert, {name: Pad, padding: 2}]
  build_model:
    model: mlp
  train:
    optimizer: {name: NAdam, lr: 0.002}
    scheduler: {name: ExponentialLR, gamma: 0.9}
    loss: {name: NLLLoss}
""",
}


@pytest.mark.parametrize("name", sorted(GOOD_SPECS))
def test_valid_variations(name: str, tmp_path: Path) -> None:
    (tmp_path / f"{name}.yaml").write_text(GOOD_SPECS[name], encoding="utf-8")
    result = kiln("validate", f"{name}.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"ok {name}.yaml\n"
