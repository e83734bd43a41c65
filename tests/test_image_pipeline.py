"""The six image-classification stages end to end through the real `kiln run`.

One tiny pipeline (synthetic 8x8 images, 4 classes x 24) runs once per test run; the tests
then check its files and metrics, that rerunning it gives the same bytes, and that the
exported TorchScript and ONNX files work on their own and agree with the eager model.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import sysconfig
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_tools import (
    TIMEOUT,
    digests,
    environment,
    kiln,
    ok,
    shared_folder,
    small_cnn,
    synthetic,
    write_spec,
)

pytestmark = pytest.mark.e2e

CLASSES = [f"class_{i}" for i in range(4)]

STAGES = {
    "load_data": {
        "dataset": synthetic(num_classes=4, per_class=24, size=8),
        "split": {"val": 0.25, "test": 0.25, "stratify": True},
    },
    "augment": {"train": [{"name": "RandomHorizontalFlip", "p": 0.5}], "preview": 8},
    "build_model": {"model": small_cnn()},
    "train": {
        "epochs": 4,
        "batch_size": 16,
        "optimizer": {"name": "Adam", "lr": 0.01},
        "monitor": "val_accuracy",
    },
    "evaluate": {
        "metrics": [
            "accuracy",
            "f1_macro",
            "precision_recall",
            {"name": "top_k", "k": 2},
            "confusion_matrix",
        ],
        "misclassified": 8,
    },
    "export": {"formats": ["torchscript", "onnx", "safetensors"]},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where the whole tiny pipeline has run once."""

    def build(folder: Path) -> None:
        write_spec(folder, "tiny", STAGES)
        ok(kiln("run", "tiny.yaml", cwd=folder))

    return shared_folder(tmp_path_factory, "tiny", build)


def stage(folder: Path, name: str) -> Path:
    return folder / "runs" / "tiny" / name


def read(path: Path) -> object:
    return json.loads(path.read_text(encoding="utf-8"))


def test_every_stage_writes_its_files(tiny: Path) -> None:
    expected = {
        "load_data": ["out/meta.json", "out/data.safetensors"],
        "augment": ["out/transforms.json", "out/preview.png"],
        "build_model": ["out/model.json", "out/weights.safetensors", "out/summary.json"],
        "train": [
            "out/model.json",
            "out/weights.safetensors",
            "metrics.json",
            "plots/history.json",
        ],
        "evaluate": [
            "metrics.json",
            "plots/confusion.json",
            "plots/confusion.png",
            "plots/misclassified.png",
        ],
        "export": [
            "out/model.pt",
            "out/model.onnx",
            "out/model.safetensors",
            "out/model_card.md",
            "out/model_card.json",
            "metrics.json",
        ],
    }
    for name, files in expected.items():
        for rel in files:
            path = stage(tiny, name) / rel
            assert path.is_file() and path.stat().st_size > 0, path
    for png in ("augment/out/preview.png", "evaluate/plots/confusion.png"):
        assert (stage(tiny, "") / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # nothing half-built is left behind, and the scratch checkpoint is gone after success
    leftovers = [p for p in (tiny / "runs").rglob("*") if ".staging" in p.name or ".tmp" in p.name]
    assert leftovers == []
    assert not list((tiny / ".kiln").rglob("*.pt"))


def test_dataset_and_model_metadata(tiny: Path) -> None:
    meta = read(stage(tiny, "load_data") / "out/meta.json")
    info = meta["info"]
    assert meta["artifact"] == "dataset"
    assert info["classes"] == CLASSES
    assert info["input_shape"] == [1, 8, 8]
    assert info["counts"] == {"train": 48, "val": 24, "test": 24}
    assert info["extra"]["train_class_counts"] == [12, 12, 12, 12]  # stratified
    assert len(info["mean"]) == len(info["std"]) == 1
    assert 0 < info["mean"][0] < 1 and 0 < info["std"][0] < 1

    transforms = read(stage(tiny, "augment") / "out/transforms.json")
    assert transforms["normalize"] == {"mean": info["mean"], "std": info["std"]}
    assert transforms["train"][0]["name"] == "RandomHorizontalFlip"

    summary = read(stage(tiny, "build_model") / "out/summary.json")
    assert summary["parameters"] == summary["trainable_parameters"] > 0
    assert summary["frozen_parameters"] == []


def test_metrics_are_present_and_sane(tiny: Path) -> None:
    train = read(stage(tiny, "train") / "metrics.json")
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
        assert math.isfinite(train[key]), key
    assert train["epochs_run"] == 4 and 1 <= train["best_epoch"] <= 4
    assert "epoch" not in train  # the best epoch's values, named best_epoch
    history = read(stage(tiny, "train") / "plots/history.json")
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    assert history[-1]["train_loss"] < history[0]["train_loss"]  # it learns
    best = max(row["val_accuracy"] for row in history)
    assert train["val_accuracy"] == best  # monitor: val_accuracy picks the best epoch

    metrics = read(stage(tiny, "evaluate") / "metrics.json")
    assert metrics["split"] == "test" and metrics["examples"] == 24
    assert 0.5 <= metrics["accuracy"] <= 1  # chance is 0.25
    assert metrics["accuracy"] <= metrics["top_2_accuracy"] <= 1
    detailed = read(stage(tiny, "evaluate") / "out/metrics.json")
    # dvc metrics gets the headline numbers; the artifact keeps the per-class detail too
    assert metrics == {k: v for k, v in detailed.items() if not isinstance(v, dict)}

    # every number agrees with the (actual, predicted) pairs evaluate plotted, counted here
    confusion = read(stage(tiny, "evaluate") / "plots/confusion.json")
    assert len(confusion) == 24
    assert all(set(row) == {"actual", "predicted"} for row in confusion)
    pairs = [(row["actual"], row["predicted"]) for row in confusion]
    assert [a for a, _ in pairs] == [a for a, _ in evaluated_rows(tiny)]
    assert [p for _, p in pairs] == evaluated_predictions(tiny)
    right = sum(a == p for a, p in pairs)
    assert metrics["accuracy"] == pytest.approx(right / 24)
    f1 = []
    assert sorted(detailed["per_class"]) == CLASSES
    for name in CLASSES:
        hits = sum(a == p == name for a, p in pairs)
        predicted = sum(p == name for _, p in pairs)
        actual = sum(a == name for a, _ in pairs)
        precision = hits / predicted if predicted else 0.0
        recall = hits / actual
        scores = detailed["per_class"][name]
        assert scores["precision"] == pytest.approx(precision, abs=1e-6), name
        assert scores["recall"] == pytest.approx(recall, abs=1e-6), name
        f1.append(2 * precision * recall / (precision + recall) if hits else 0.0)
    assert metrics["f1_macro"] == pytest.approx(sum(f1) / len(f1), abs=1e-6)

    # what the exporter measured on its own check batch; the exports are compared with
    # the eager model independently below
    export = read(stage(tiny, "export") / "metrics.json")
    assert set(export) == {
        "torchscript_max_abs_diff",
        "onnx_max_abs_diff",
        "safetensors_max_abs_diff",
    }
    assert all(math.isfinite(v) for v in export.values())


def test_model_card_describes_the_files(tiny: Path) -> None:
    out = stage(tiny, "export") / "out"
    card = read(out / "model_card.json")
    assert card["pipeline"] == "tiny" and card["task"] == "classification"
    assert card["classes"] == CLASSES
    assert card["input"]["shape"] == [1, 8, 8]
    assert len(card["spec_sha256"]) == len(card["data_sha256"]) == 64
    assert card["metrics"]["accuracy"] == read(stage(tiny, "evaluate") / "metrics.json")["accuracy"]
    files = {f["file"]: f for f in card["files"]}
    assert {"model.pt", "model.onnx", "model.safetensors"} <= set(files)
    current = digests(out)
    for name, entry in files.items():
        assert entry["sha256"] == current[name], name
    assert {"torch", "python", "torchkiln"} <= set(card["versions"])
    text = (out / "model_card.md").read_text(encoding="utf-8")
    assert "# Model card: tiny" in text and "model.onnx" in text


def test_outputs_do_not_depend_on_where_things_are_installed(tiny: Path) -> None:
    """Exports must not embed source paths (TorchScript debug records, ONNX stack traces):
    a clone in another folder, or another venv, must produce the same bytes."""
    import torch

    import torchkiln

    places = {
        str(Path(torchkiln.__file__).resolve().parent.parent).encode(),
        str(Path(torch.__file__).resolve().parent.parent).encode(),
        str(tiny.resolve()).encode(),
    }
    for path in sorted((tiny / "runs").rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            leaked = [p.decode() for p in places if p in data]
            assert not leaked, f"{path.relative_to(tiny)} embeds {leaked}"


def test_running_again_gives_identical_bytes(tiny: Path, tmp_path: Path) -> None:
    """Same spec, same machine: every file under runs/ is byte-identical on a rerun
    (here in a copy of the folder, so absolute paths cannot leak into outputs either)."""
    copy = tmp_path / "again"
    shutil.copytree(tiny, copy, ignore=shutil.ignore_patterns(".kiln"))
    before = digests(copy / "runs")
    ok(kiln("run", "tiny.yaml", cwd=copy))
    after = digests(copy / "runs")
    assert sorted(after) == sorted(before)
    changed = [name for name in before if before[name] != after[name]]
    assert changed == []


def stored_test_split(folder: Path) -> tuple[Any, Any]:
    """The test split as the dataset artifact stores it (uint8), and its dataset info."""
    import torch

    from torchkiln.runtime.datasets import open_dataset

    data = open_dataset(stage(folder, "load_data") / "out")
    split = data.split("test")
    (stored,), _ = split.batch(torch.arange(len(split)))
    return stored, data.info


def eager_logits(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Float images in [0, 1] of the test split and the eager model's logits for them,
    computed the way evaluate computes them (not through the export code)."""
    import torch

    from torchkiln.runtime.model_artifact import open_model
    from torchkiln.runtime.preprocess import preprocessor_for

    stored, info = stored_test_split(folder)
    model = open_model(stage(folder, "train") / "out").build().eval()
    prepare = preprocessor_for(info, stage(folder, "augment") / "out")
    with torch.no_grad():
        logits = model(*prepare.eval_inputs((stored,)))
    return (stored.float() / 255.0).numpy(), logits.numpy()


def evaluated_rows(folder: Path) -> list[tuple[str, str]]:
    """(actual, predicted) of each test image, from evaluate's predictions.csv."""
    rows = (stage(folder, "evaluate") / "out/predictions.csv").read_text().splitlines()[1:]
    return [(row.split(",")[1], row.split(",")[2]) for row in rows]


def evaluated_predictions(folder: Path) -> list[str]:
    return [predicted for _, predicted in evaluated_rows(folder)]


def test_every_export_predicts_like_the_eager_model(tiny: Path) -> None:
    """On every test image: ONNX through onnxruntime, the TorchScript file, and the network
    rebuilt from model.json + model.safetensors give the eager model's logits, and the
    classes evaluate scored."""
    import onnxruntime as ort
    import torch
    from safetensors.torch import load_file

    from torchkiln.runtime.model_artifact import open_model
    from torchkiln.runtime.preprocess import preprocessor_for

    out = stage(tiny, "export") / "out"
    images, expected = eager_logits(tiny)
    assert images.shape == (24, 1, 8, 8) and expected.shape == (24, 4)

    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (onnx,) = session.run(None, {"images": images})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated upstream
        script = torch.jit.load(str(out / "model.pt"), map_location="cpu")
    # safetensors holds the network; the preprocessing in front of it is rebuilt here
    network = open_model(out).build(load_weights=False)
    network.load_state_dict(load_file(out / "model.safetensors"))
    stored, info = stored_test_split(tiny)
    prepare = preprocessor_for(info, stage(tiny, "augment") / "out")
    with torch.no_grad():
        scripted = script(torch.from_numpy(images)).numpy()
        rebuilt = network.eval()(*prepare.eval_inputs((stored,))).numpy()

    for name, got, atol in [("onnx", onnx, 1e-4), ("torchscript", scripted, 1e-5),
                            ("safetensors", rebuilt, 1e-6)]:  # fmt: skip
        assert got.shape == expected.shape, name
        np.testing.assert_allclose(got, expected, atol=atol, rtol=0, err_msg=name)
        assert [CLASSES[i] for i in got.argmax(1)] == evaluated_predictions(tiny), name


#: Runs in `python -I -S` with only site-packages on sys.path: no .pth file is processed,
#: so the editable install of torchkiln (a .pth finder) is invisible, as on a machine
#: that has torch but not torchkiln.
ISOLATED = """
import importlib.util
import sys

sys.path.extend(sys.argv[4:])
if importlib.util.find_spec("torchkiln") is not None:
    raise SystemExit(f"torchkiln is importable here: {importlib.util.find_spec('torchkiln')}")
import numpy as np
import torch

model = torch.jit.load(sys.argv[1], map_location="cpu")
with torch.no_grad():
    logits = model(torch.from_numpy(np.load(sys.argv[2])))
np.save(sys.argv[3], logits.numpy())
print("torchkiln modules:", sorted(m for m in sys.modules if m.split(".")[0] == "torchkiln"))
"""


def test_torchscript_predicts_without_torchkiln(tiny: Path, tmp_path: Path) -> None:
    images, expected = eager_logits(tiny)
    np.save(tmp_path / "images.npy", images)
    paths = sysconfig.get_paths()
    site_packages = sorted({paths["purelib"], paths["platlib"]})
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            ISOLATED,
            str(stage(tiny, "export") / "out/model.pt"),
            str(tmp_path / "images.npy"),
            str(tmp_path / "logits.npy"),
            *site_packages,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=environment(),
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "torchkiln modules: []" in result.stdout
    got = np.load(tmp_path / "logits.npy")
    assert got.shape == expected.shape == (24, 4)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    # and these are the predictions evaluate scored
    assert [CLASSES[i] for i in got.argmax(1)] == evaluated_predictions(tiny)


def test_onnx_runs_in_onnxruntime_with_a_dynamic_batch(tiny: Path) -> None:
    import onnxruntime as ort

    images, expected = eager_logits(tiny)
    session = ort.InferenceSession(
        str(stage(tiny, "export") / "out/model.onnx"), providers=["CPUExecutionProvider"]
    )
    (meta,) = session.get_inputs()
    assert meta.name == "images"
    assert isinstance(meta.shape[0], str), f"batch axis is fixed: {meta.shape}"
    assert meta.shape[1:] == [1, 8, 8]
    for batch in (1, 3, 24):  # none is the export's own check batch (8, 4)
        (got,) = session.run(None, {"images": images[:batch]})
        assert got.shape == (batch, 4)
        np.testing.assert_allclose(got, expected[:batch], atol=1e-4, rtol=0)


def write_test_images(folder: Path, target: Path) -> list[Path]:
    """The test split as PNG files, as a user would have them."""
    from PIL import Image

    stored, _ = stored_test_split(folder)
    target.mkdir()
    paths = []
    for i, image in enumerate(stored):
        path = target / f"{i:03d}.png"
        Image.fromarray(image[0].numpy()).save(path)
        paths.append(path)
    return paths


def test_predict_classifies_image_files_as_evaluate_did(tiny: Path, tmp_path: Path) -> None:
    """PNGs of the test split, given as a folder: the same classes evaluate predicted, with
    ONNX (the default) and TorchScript; --json and --top for tools."""
    write_test_images(tiny, tmp_path / "images")
    expected = evaluated_predictions(tiny)
    for fmt in ("auto", "torchscript"):
        result = ok(
            kiln("predict", "tiny.yaml", str(tmp_path / "images"), "--format", fmt, cwd=tiny)
        )
        labels = [line.split("\t")[0] for line in result.stdout.splitlines()]
        assert labels == expected, fmt
    result = ok(
        kiln(
            "predict",
            "tiny.yaml",
            "--json",
            str(tmp_path / "images/000.png"),
            "--top",
            "2",
            cwd=tiny,
        )
    )
    record = json.loads(result.stdout)
    assert record["label"] == expected[0] and len(record["top"]) == 2
    assert record["file"] == (tmp_path / "images/000.png").as_posix()
    assert 0.0 <= record["top"][1]["probability"] <= record["probability"] <= 1.0


def test_predict_converts_and_resizes_like_the_dataset(tiny: Path, tmp_path: Path) -> None:
    """An RGB image four times the size becomes grayscale 8x8, as load_data would make it."""
    from PIL import Image

    (path,) = write_test_images(tiny, tmp_path / "images")[:1]
    small = ok(kiln("predict", "tiny.yaml", str(path), "--json", cwd=tiny))
    big = tmp_path / "big.png"
    Image.open(path).convert("RGB").resize((32, 32), Image.Resampling.NEAREST).save(big)
    large = ok(kiln("predict", "tiny.yaml", str(big), "--json", cwd=tiny))
    assert json.loads(large.stdout)["label"] == json.loads(small.stdout)["label"]


def test_predict_reports_unreadable_files_and_keeps_the_others(tiny: Path, tmp_path: Path) -> None:
    paths = write_test_images(tiny, tmp_path / "images")
    (tmp_path / "images" / "broken.png").write_bytes(b"not a png")
    result = kiln("predict", "tiny.yaml", str(tmp_path / "images"), cwd=tiny)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot read image" in result.stderr and "broken.png" in result.stderr
    assert "1 of 25 file(s) could not be read as images" in result.stderr
    assert len(result.stdout.splitlines()) == len(paths)
    missing = kiln("predict", "tiny.yaml", str(tmp_path / "nope.png"), cwd=tiny)
    assert missing.returncode == 2 and "nope.png: no such file or folder" in missing.stderr
