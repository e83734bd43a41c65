"""`extends:`: merging rules, positions that name the right file, abstract bases, and
`kiln show` origins."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from torchkiln.errors import SpecError, UsageError
from torchkiln.schemas.spec import load_pipeline

KILN = Path(sys.executable).parent / "kiln"

BASE = """\
abstract: true
task: classification
seed: 3
stages:
  load_data:
    dataset: {name: synthetic, num_classes: 3, per_class: 20, image_size: 8}
  build_model:
    model: {name: mlp, hidden: [16]}
  train:
    epochs: 2
    optimizer: {name: AdamW, lr: 3.0e-3, weight_decay: 1.0e-4}
    scheduler: {name: StepLR, step_size: 5}
"""


def files(root: Path, specs: dict[str, str]) -> None:
    for name, text in specs.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    files(tmp_path, {"pipelines/base/common.yaml": BASE})
    return tmp_path


def kiln(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KILN), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_mappings_merge_lists_and_scalars_are_replaced_and_components_swap_whole(
    repo: Path,
) -> None:
    files(
        repo,
        {
            "pipelines/sgd.yaml": """\
        extends: base/common.yaml
        stages:
          build_model:
            model: {hidden: [32, 8]}
          train:
            epochs: 4
            optimizer: {name: SGD, lr: 0.05}
            scheduler: {step_size: 2}
        """
        },
    )
    pipeline = load_pipeline(Path("pipelines/sgd.yaml"))
    assert pipeline.name == "sgd"  # a base's name (or default name) is never inherited
    assert pipeline.seed == 3  # inherited
    model = pipeline.stages["build_model"].config.model
    assert model.name == "mlp" and model.hidden == [32, 8]  # the list is replaced
    train = pipeline.stages["train"].config
    assert train.epochs == 4
    assert train.optimizer.name == "SGD" and train.optimizer.weight_decay == 0.0  # no leak
    assert train.scheduler.name == "StepLR" and train.scheduler.step_size == 2  # merged
    assert list(pipeline.stages) == ["load_data", "build_model", "train"]  # base order kept
    assert [s.file for s in pipeline.sources()] == [
        "pipelines/sgd.yaml",
        "pipelines/base/common.yaml",
    ]


def test_later_bases_win_and_the_file_itself_wins_last(repo: Path) -> None:
    files(repo, {
        "pipelines/base/fast.yaml": "abstract: true\nseed: 5\nstages:\n  train: {epochs: 1}\n",
        "pipelines/two.yaml": "extends: [base/common.yaml, base/fast.yaml]\nseed: 7\n",
    })  # fmt: skip
    pipeline = load_pipeline(Path("pipelines/two.yaml"))
    assert pipeline.seed == 7 and pipeline.stages["train"].config.epochs == 1


def test_an_error_in_a_base_points_at_the_base_and_says_which_extends(repo: Path) -> None:
    files(repo, {
        "pipelines/base/broken.yaml": "abstract: true\nstages:\n  train: {epochs: 0}\n",
        "pipelines/child.yaml": """\
            extends: [base/common.yaml, base/broken.yaml]
            stages:
              train:
                batch_size: -2
            """,
    })  # fmt: skip
    with pytest.raises(SpecError) as caught:
        load_pipeline(Path("pipelines/child.yaml"))
    shown = sorted(str(i) for i in caught.value.issues)
    assert shown == [
        "pipelines/base/broken.yaml:3:19: stages.train.epochs: Input should be greater than "
        "or equal to 1 (got 0) (via extends at pipelines/child.yaml:1:29)",
        "pipelines/child.yaml:4:17: stages.train.batch_size: Input should be greater than "
        "or equal to 1 (got -2)",
    ]


def test_missing_bases_cycles_and_bases_outside_the_repository_are_refused(
    repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("elsewhere") / "far.yaml"
    outside.write_text(BASE)
    files(repo, {
        "pipelines/a.yaml": "extends: b.yaml\n",
        "pipelines/b.yaml": "extends: a.yaml\n",
        "pipelines/missing.yaml": "extends: base/nope.yaml\n",
        "pipelines/far.yaml": f"extends: {outside}\n",
        "pipelines/typed.yaml": "extends: {a: 1}\n",
    })  # fmt: skip
    messages = {}
    for name in ("a", "missing", "far", "typed"):
        with pytest.raises(SpecError) as caught:
            load_pipeline(Path(f"pipelines/{name}.yaml"))
        messages[name] = str(caught.value)
    assert (
        "extends forms a cycle: pipelines/a.yaml -> pipelines/b.yaml -> pipelines/a.yaml"
        in (messages["a"])
    )
    assert (
        "pipelines/missing.yaml:1:10: extends: 'base/nope.yaml': no such file"
        in messages["missing"]
    )
    assert "is outside the repository" in messages["far"]
    assert "must be a spec file path, or a list of them" in messages["typed"]


def test_an_abstract_base_is_not_a_pipeline(repo: Path) -> None:
    files(repo, {"pipelines/base.yaml": BASE, "pipelines/child.yaml": "extends: base.yaml\n"})
    with pytest.raises(UsageError, match="is an abstract base"):
        load_pipeline(Path("pipelines/base.yaml"))
    assert not load_pipeline(Path("pipelines/child.yaml")).doc.data.get("abstract")  # own key
    result = kiln(repo, "validate")
    assert result.returncode == 0, result.stderr
    assert "skip pipelines/base.yaml (abstract base" in result.stdout
    assert "ok pipelines/child.yaml" in result.stdout
    dvc = kiln(repo, "dvc")
    assert dvc.returncode == 0 and "from 2 spec(s)" in dvc.stdout
    assert "pipelines/base.yaml --stage" not in (repo / "dvc.yaml").read_text()


def test_kiln_show_prints_every_value_with_its_origin(repo: Path) -> None:
    files(
        repo,
        {
            "pipelines/sgd.yaml": """\
        extends: base/common.yaml
        stages:
          train:
            optimizer: SGD
        """
        },
    )
    result = kiln(repo, "show", "pipelines/sgd.yaml")
    assert result.returncode == 0, result.stderr
    line = {
        ln.split("#")[0].strip(): ln.split("#", 1)[1].strip()
        for ln in result.stdout.splitlines()[2:]
        if "#" in ln
    }
    assert line["seed: 3"] == (
        "pipelines/base/common.yaml:3:7 (via extends at pipelines/sgd.yaml:1:10)"
    )
    assert line['name: "SGD"'] == "pipelines/sgd.yaml:4:16"  # the shorthand names it
    assert line["lr: 0.01"] == "default"
    shown = json.loads(kiln(repo, "show", "pipelines/sgd.yaml", "--json").stdout)
    values = {tuple(v["path"]): v for v in shown["values"]}
    assert values[("stages", "train", "epochs")]["origin"] == {
        "file": "pipelines/base/common.yaml",
        "line": 10,
        "col": 13,
        "via": ["pipelines/sgd.yaml:1:10"],
    }
    assert values[("stages", "train", "batch_size")]["origin"] is None
    assert shown["files"] == ["pipelines/sgd.yaml", "pipelines/base/common.yaml"]


def test_the_digest_covers_the_merged_spec(repo: Path) -> None:
    files(repo, {"pipelines/child.yaml": "extends: base/common.yaml\n"})
    before = load_pipeline(Path("pipelines/child.yaml")).digest()
    (repo / "pipelines/base/common.yaml").write_text(BASE.replace("epochs: 2", "epochs: 3"))
    assert load_pipeline(Path("pipelines/child.yaml")).digest() != before
