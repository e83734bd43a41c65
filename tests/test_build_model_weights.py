"""build_model's `weights:` and `freeze:` through the real `kiln run`.

A source pipeline (seed 1, 4 classes) writes initial weights; a second pipeline (seed 0)
builds the same architecture from them strictly, builds a 3-class variant partially
(head excluded) with the features frozen, and fails a strict load of mismatched shapes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_tools import failed, kiln, ok, shared_folder, small_cnn, synthetic, write_spec

pytestmark = pytest.mark.e2e

SOURCE = "runs/source/build_model/out/weights.safetensors"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where `source` ran and `reuse` built every model that should build."""
    return shared_folder(tmp_path_factory, "weights", build_models)


def build_models(folder: Path) -> None:
    write_spec(
        folder,
        "source",
        {
            "load_data": {"dataset": synthetic(num_classes=4, per_class=8)},
            "build_model": {"model": small_cnn()},
        },
        seed=1,
    )
    ok(kiln("run", "source.yaml", cwd=folder))
    write_spec(
        folder,
        "reuse",
        {
            "data4": {"uses": "load_data", "dataset": synthetic(num_classes=4, per_class=8)},
            "data3": {"uses": "load_data", "dataset": synthetic(num_classes=3, per_class=8)},
            "fresh": {"uses": "build_model", "inputs": {"dataset": "data4"}, "model": small_cnn()},
            "same": {
                "uses": "build_model",
                "inputs": {"dataset": "data4"},
                "model": small_cnn(),
                "weights": {"path": SOURCE},
            },
            "partial": {
                "uses": "build_model",
                "inputs": {"dataset": "data3"},
                "model": small_cnn(),
                "weights": {"path": SOURCE, "strict": False, "exclude": ["head.*"]},
                "freeze": ["features.*"],
            },
            "mismatch": {
                "uses": "build_model",
                "inputs": {"dataset": "data3"},
                "model": small_cnn(),
                "weights": {"path": SOURCE},
            },
        },
    )
    good = ("data4", "data3", "fresh", "same", "partial")
    ok(kiln("run", "reuse.yaml", *[a for s in good for a in ("--stage", s)], cwd=folder))


def weights(folder: Path, rel: str) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / rel)


def out(folder: Path, stage: str) -> Path:
    return folder / "runs/reuse" / stage / "out"


def test_strict_load_copies_every_tensor(built: Path) -> None:
    source = weights(built, SOURCE)
    fresh = weights(built, "runs/reuse/fresh/out/weights.safetensors")
    same = weights(built, "runs/reuse/same/out/weights.safetensors")
    assert not all(fresh[k].equal(source[k]) for k in source)  # seeds differ: so would init
    assert sorted(same) == sorted(source)
    assert all(same[k].equal(source[k]) for k in source)
    report = json.loads((out(built, "same") / "model.json").read_text())["weights_report"]
    assert report["loaded"] == sorted(source)
    assert report["missing"] == report["unexpected"] == report["shape_mismatch"] == []


def test_partial_load_with_a_new_head(built: Path) -> None:
    source = weights(built, SOURCE)
    partial = weights(built, "runs/reuse/partial/out/weights.safetensors")
    features = [k for k in source if k.startswith("features.")]
    assert features and all(partial[k].equal(source[k]) for k in features)
    assert partial["head.4.weight"].shape[0] == 3 != source["head.4.weight"].shape[0]
    report = json.loads((out(built, "partial") / "model.json").read_text())["weights_report"]
    head = sorted(k for k in source if k.startswith("head."))
    assert report["excluded"] == head
    # the new head keeps its fresh initialisation: excluded on purpose, so not "missing"
    assert report["missing"] == report["unexpected"] == report["shape_mismatch"] == []
    assert report["loaded"] == sorted(features)


def test_freeze_reduces_trainable_parameters(built: Path) -> None:
    summary = json.loads((out(built, "partial") / "summary.json").read_text())
    fresh = json.loads((out(built, "fresh") / "summary.json").read_text())
    assert fresh["trainable_parameters"] == fresh["parameters"]
    assert 0 < summary["trainable_parameters"] < summary["parameters"]
    frozen = summary["frozen_parameters"]
    assert frozen and all(name.startswith("features.") for name in frozen)
    model = json.loads((out(built, "partial") / "model.json").read_text())
    assert model["frozen"] == frozen  # train sees the same frozen set
    partial = weights(built, "runs/reuse/partial/out/weights.safetensors")
    frozen_count = sum(partial[k].numel() for k in frozen)
    assert summary["parameters"] - summary["trainable_parameters"] == frozen_count


def test_strict_load_of_mismatched_shapes_fails(built: Path) -> None:
    message = failed(kiln("run", "reuse.yaml", "--stage", "mismatch", cwd=built))
    assert "shape mismatch: head.4.bias, head.4.weight" in message
    assert "strict: false" in message and "exclude:" in message
    assert not out(built, "mismatch").exists()
