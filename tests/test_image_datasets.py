"""Datasets users bring, through the real `kiln run`: an image folder (good, corrupt,
empty, missing) and a torchvision dataset whose root is missing. Errors are messages
that name the problem and the fix, never tracebacks, and leave no stage output behind."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from cli_tools import failed, kiln, ok, write_spec

pytestmark = pytest.mark.e2e

CLASSES = ("cat", "dog", "fox")
COLOURS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "fox": (40, 40, 200)}


def make_images(root: Path, per_class: int = 6, seed: int = 0) -> None:
    """PNGs, one subfolder per class: a class colour plus noise; two images per class are
    12x12 (the spec resizes everything to 8x8)."""
    from PIL import Image

    rng = random.Random(seed)
    for name in CLASSES:
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            side = 12 if i < 2 else 8
            image = Image.new("RGB", (side, side))
            image.putdata(
                [
                    tuple(max(0, min(255, c + rng.randint(-40, 40))) for c in COLOURS[name])
                    for _ in range(side * side)
                ]
            )
            image.save(folder / f"{name}_{i:02d}.png")
    (root / "README.txt").write_text("not a class folder")
    (root / "cat" / "notes.txt").write_text("not an image: ignored")


def folder_spec(folder: Path, **dataset: Any) -> Path:
    return write_spec(
        folder,
        "pets",
        {
            "load_data": {
                "dataset": {"name": "image_folder", "root": "images", "image_size": 8, **dataset},
                "split": {"val": 0.2, "test": 0.2},
            },
            "augment": {"train": [{"name": "RandomHorizontalFlip"}], "preview": 4},
            "build_model": {"model": {"name": "mlp", "hidden": [16]}},
            "train": {"epochs": 2, "batch_size": 4, "optimizer": {"name": "Adam", "lr": 0.01}},
        },
    )


def meta(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "runs/pets/load_data/out/meta.json").read_text())


def test_image_folder_through_train(tmp_path: Path) -> None:
    make_images(tmp_path / "images")
    folder_spec(tmp_path)
    ok(kiln("run", "pets.yaml", cwd=tmp_path))
    data = meta(tmp_path)
    assert data["format"] == "image_index"
    assert data["skipped"] == []
    assert data["info"]["classes"] == list(CLASSES)
    assert data["info"]["input_shape"] == [3, 8, 8]
    assert sum(data["info"]["counts"].values()) == 18
    assert data["info"]["extra"]["train_class_counts"] == [4, 4, 4]
    # an index of the user's files, not a copy of the images
    out = tmp_path / "runs/pets/load_data/out"
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "meta.json"]
    index = json.loads((out / "index.json").read_text())
    assert index["root"] == "images"
    listed = sorted(row[0] for rows in index["splits"].values() for row in rows)
    assert listed == sorted(f"{c}/{c}_{i:02d}.png" for c in CLASSES for i in range(6))
    assert (tmp_path / "runs/pets/train/out/weights.safetensors").is_file()
    history = json.loads((tmp_path / "runs/pets/train/plots/history.json").read_text())
    assert len(history) == 2

    # the index records each file's sha256: a training image edited afterwards is caught
    edited = index["splits"]["train"][0][0]
    other = next(row[0] for row in index["splits"]["train"] if row[0] != edited)
    (tmp_path / "images" / edited).write_bytes((tmp_path / "images" / other).read_bytes())
    message = failed(kiln("run", "pets.yaml", "--stage", "train", cwd=tmp_path))
    assert f"images/{edited} changed after load_data indexed it; rerun load_data" in message
    assert not (tmp_path / "runs/pets/train/out").exists()


def add_corrupt_file(tmp_path: Path) -> None:
    make_images(tmp_path / "images")
    (tmp_path / "images/dog/x.png").write_bytes(random.Random(1).randbytes(300))


def test_corrupt_image_is_an_error_naming_it(tmp_path: Path) -> None:
    add_corrupt_file(tmp_path)
    folder_spec(tmp_path)
    message = failed(kiln("run", "pets.yaml", "--stage", "load_data", cwd=tmp_path))
    assert "images/dog/x.png" in message
    assert "skip_corrupt: true" in message
    assert not (tmp_path / "runs/pets/load_data/out").exists()


def test_corrupt_image_is_skipped_and_counted_when_asked(tmp_path: Path) -> None:
    add_corrupt_file(tmp_path)
    folder_spec(tmp_path, skip_corrupt=True)
    result = ok(kiln("run", "pets.yaml", "--stage", "load_data", cwd=tmp_path))
    assert "skipped 1 unreadable image(s): dog/x.png" in result.stderr
    data = meta(tmp_path)
    assert data["skipped"] == ["dog/x.png"]
    assert sum(data["info"]["counts"].values()) == 18
    index = json.loads((tmp_path / "runs/pets/load_data/out/index.json").read_text())
    assert all(row[0] != "dog/x.png" for rows in index["splits"].values() for row in rows)


def test_empty_class_folder_is_an_error_naming_it(tmp_path: Path) -> None:
    make_images(tmp_path / "images")
    (tmp_path / "images/emu").mkdir()
    (tmp_path / "images/emu/readme.txt").write_text("no images yet")
    folder_spec(tmp_path)
    message = failed(kiln("run", "pets.yaml", "--stage", "load_data", cwd=tmp_path))
    assert "images/emu" in message and "no images" in message
    assert not (tmp_path / "runs/pets/load_data/out").exists()


def test_missing_image_folder_is_an_error(tmp_path: Path) -> None:
    folder_spec(tmp_path)  # no images/ folder at all
    message = failed(kiln("run", "pets.yaml", "--stage", "load_data", cwd=tmp_path))
    assert "'images'" in message and "does not exist" in message
    assert not (tmp_path / "runs/pets/load_data/out").exists()


def test_torchvision_dataset_never_downloads(tmp_path: Path) -> None:
    write_spec(
        tmp_path,
        "tv",
        {
            "load_data": {
                "dataset": {"name": "torchvision", "dataset": "MNIST", "root": "data/mnist"}
            }
        },
    )
    message = failed(kiln("run", "tv.yaml", cwd=tmp_path))
    assert "'data/mnist' does not exist" in message
    assert "never downloads" in message
    assert "download=True" in message and "dvc add data/mnist" in message  # how to provide it
    assert not (tmp_path / "data").exists()  # nothing was fetched or created
