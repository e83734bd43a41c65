"""Fuzzing specs (the CI budget; `benchmarks/fuzz.py` runs any number of cases).

Each case is a shipped example with its structure and text mutated (keys deleted,
duplicated, renamed, retyped and moved at any depth; values replaced by other types,
extreme numbers, deep nesting, long and unicode strings; anchors, aliases and tags; a
truncated file; flipped bytes), or random bytes. It goes through what `kiln validate`,
`kiln show`, `kiln dvc` and `kiln list` do, each within a CPU-time and memory bound. The
only outcomes allowed: valid, or the product's own SpecError/UsageError whose every issue
has `file:line:col` (see tests/fuzzing.py).

The cases are the same on every run (derandomized), so a red run is reproducible; a
failure prints its minimal case.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzzing import (
    TARGETS,
    CaseFailure,
    SpecCase,
    SpecWorkspace,
    check_spec,
    ci_settings,
    run_one,
    spec_cases,
)
from hypothesis import given

from torchkiln.errors import Issue

#: cases per run of `make test`, sized with the data targets to stay under a minute
SPEC_CASES = 400


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz_specs")
    SpecWorkspace(root)
    return root


def test_mutated_specs(workspace: Path) -> None:
    outcomes: dict[str, int] = {}

    @ci_settings(SPEC_CASES)
    @given(spec_cases())
    def case(spec: SpecCase) -> None:
        outcome = run_one(TARGETS["spec"], spec, workspace)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    case()
    # the mutations must not all stop at the first check: some cases stay valid and go
    # through `kiln dvc`
    assert outcomes.get("valid", 0) >= SPEC_CASES // 50, outcomes
    assert outcomes.get("invalid", 0) >= SPEC_CASES // 2, outcomes


def _case(raw: bytes) -> SpecCase:
    return SpecCase("hand-written", ("regression",), raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff\xfe\x00",
        b"name: x\nstages: {train: {epochs: .nan}}\n",
        b"name: x\nstages: " + b"[" * 5000 + b"]" * 5000 + b"\n",
        b"a: &a [*a]\n",
        b"stages: !!python/object/apply:os.system ['true']\n",
        b"extends: " + "日本".encode() * 2000 + b"\n",
        b"extends: ../../../../etc/passwd\n",
    ],
)
def test_hand_written_hostile_specs(workspace: Path, raw: bytes) -> None:
    """A few hostile specs by hand: each refused with positions, none a traceback."""
    assert check_spec(_case(raw), SpecWorkspace(workspace)) == "invalid"


def test_the_oracle_refuses_an_issue_without_its_position(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fuzz test can fail: an issue printed without `line:col` is a failure."""
    monkeypatch.setattr(Issue, "__str__", lambda self: f"{self.file}: {self.message}")
    with pytest.raises(CaseFailure, match="an issue without file:line:col"):
        check_spec(_case(b"name: x\nstages: 3\n"), SpecWorkspace(workspace))


def test_the_oracle_refuses_a_traceback(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """...and so is any exception that is not the product's own error."""
    from torchkiln.schemas import yaml_source

    def broken(self: object, node: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(yaml_source._Builder, "scalar", broken)
    with pytest.raises(CaseFailure, match="KeyError: 'boom'"):
        check_spec(_case(b"name: x\n"), SpecWorkspace(workspace))


def test_hostile_specs_through_the_cli(tmp_path: Path) -> None:
    """The same outcomes through the real commands: exit 2, one positioned line per problem,
    no traceback; `kiln list` still lists (a broken spec's plugins are its own problem)."""
    from cli_tools import kiln, ok

    from torchkiln.schemas.yaml_source import MAX_BYTES

    def refused(*args: str) -> str:
        result = kiln(*args, cwd=tmp_path)
        assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
        assert "Traceback" not in result.stdout + result.stderr, result.stderr
        return result.stderr

    SpecWorkspace(tmp_path)
    hostile = {
        "deep.yaml": b"name: deep\nstages: " + b"[" * 3000 + b"]" * 3000 + b"\n",
        "big.yaml": b"name: big\n" + b"#" * MAX_BYTES,
        "bytes.yaml": bytes(range(256)),
        "long.yaml": b"name: long\nextends: " + b"x" * 400 + b"\n",
    }
    for name, raw in hostile.items():
        (tmp_path / "pipelines" / name).write_bytes(raw)
    expected = {
        "deep.yaml": "pipelines/deep.yaml:2:109: the document nests deeper than 100 levels",
        "big.yaml": f"pipelines/big.yaml:1:1: the file is {MAX_BYTES + 10:,} bytes, more than",
        "bytes.yaml": "pipelines/bytes.yaml:2:118: the file is not valid UTF-8 (byte 0x80)",
        "long.yaml": "pipelines/long.yaml:2:10: extends: 'xxxx",
    }
    stderr = refused("validate", *(f"pipelines/{name}" for name in hostile))
    assert all(line in stderr for line in expected.values()), stderr
    assert expected["long.yaml"] in refused("show", "pipelines/long.yaml")
    stderr = refused("dvc")
    assert all(line in stderr for line in expected.values()), stderr
    assert "small_cnn" in ok(kiln("list", "models", "--brief", cwd=tmp_path)).stdout
