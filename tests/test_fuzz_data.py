"""Fuzzing the data readers (the CI budget; `benchmarks/fuzz.py` runs any number of cases).

- the image folder reader (random, truncated, corrupt and 0-byte files, decompression
  bombs, symlinks out of the folder, FIFOs);
- the CSV/TSV/JSONL text table, in any encoding;
- forecasting CSVs (odd timestamps, cells, separators, formats, frequencies);
- `kiln predict` inputs of the image, text and forecast predictors (the exported model is
  a stand-in: what is fuzzed is how inputs are read and encoded).

Allowed outcomes: success, or the product's RunError/UsageError with a message naming the
file (see tests/fuzzing.py). Deterministic: the same cases on every run. The plain tests
at the end are the regressions the fuzzing found, and the pixel limit.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest
from fuzzing import TARGETS, ci_settings, gif_bomb, png_bomb, run_one
from hypothesis import given

from torchkiln.errors import RunError, UsageError

#: cases per target in `make test`: with tests/test_fuzz_specs.py, under a minute of CPU
BUDGET = {
    "image_folder": 80,
    "text_table": 200,
    "series_table": 200,
    "predict_image": 400,
    "predict_text": 400,
    "predict_series": 250,
}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz_data")


@pytest.mark.parametrize("name", list(BUDGET))
def test_fuzz_reader(name: str, scratch: Path) -> None:
    target = TARGETS[name]
    root = scratch / name
    root.mkdir(exist_ok=True)

    @ci_settings(BUDGET[name])
    @given(target.strategy())
    def case(generated: object) -> None:
        run_one(target, generated, root)

    case()


# --- regressions found by the fuzzing, and the limits ------------------------------------------


def _series(tmp_path: Path, text: str, **dataset: object) -> None:
    """load_series on `series.csv` holding `text` (in tmp_path, the working directory)."""
    from torchkiln.forecast.stages import LoadSeriesConfig

    (tmp_path / "series.csv").write_text(text, encoding="utf-8")
    block = {
        "dataset": {
            "name": "csv_series",
            "path": "series.csv",
            "time_column": "time",
            "targets": ["sales"],
            **dataset,
        },
        "windows": {"lookback": 2, "horizon": 1},
        "split": {"val": 1, "test": 1},
    }
    cfg = LoadSeriesConfig.model_validate(block)
    raw = cfg.dataset.load(0)
    out = tmp_path / "out"
    out.mkdir()
    raw.write_series(
        out, windows=cfg.windows, split=cfg.split, scaling=cfg.scaling, task="forecast", source={}
    )


MONTHS = "time,sales\n" + "".join(f"2000-{m:02d}-01,{m}\n" for m in range(1, 13))


def test_series_bad_time_format_names_the_file(tmp_path: Path, monkeypatch) -> None:
    # was: ValueError "'Q' is a bad directive in format '%Q'" from pandas, a traceback
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RunError, match=r"series.csv: time_format '%Q' is not a valid strftime"):
        _series(tmp_path, MONTHS, time_format="%Q")


@pytest.mark.parametrize(
    ("freq", "why"),
    [
        ("0D", "is not a positive step"),  # was: ZeroDivisionError in pandas' date_range
        ("-1D", "is not a positive step"),
        ("1000000000D", "is too large a step for timestamps"),  # was: ValueError from pandas
    ],
)
def test_series_unusable_freq_is_refused(tmp_path: Path, monkeypatch, freq: str, why: str):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RunError, match=f"freq '{freq}' {why}"):
        _series(tmp_path, MONTHS, freq=freq)


def test_series_freq_far_finer_than_the_data_is_refused(tmp_path: Path, monkeypatch) -> None:
    # was: MemoryError (1.2 PiB for a nanosecond grid over days of rows)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        RunError, match=r"^series.csv: freq 'ns' puts about 28,944,000,000,000,000 steps between"
    ):
        _series(tmp_path, MONTHS, freq="ns")


def test_series_extra_cell_on_the_first_row_names_the_line(tmp_path: Path, monkeypatch) -> None:
    # was: TypeError (pandas made the first column the index, then `index + 2` failed)
    monkeypatch.chdir(tmp_path)
    text = "time,sales\n2000-01-01,1,9\n" + MONTHS.split("\n", 2)[2]
    with pytest.raises(RunError, match=r"series.csv:2: the line has more cells than the header"):
        _series(tmp_path, text)


def test_series_too_short_names_the_file(tmp_path: Path, monkeypatch) -> None:
    # was: "the series has 3 steps, too few ..." with no file named
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RunError, match=r"^series.csv: the series has 3 steps, too few"):
        _series(tmp_path, "time,sales\n" + "".join(f"2000-0{m}-01,{m}\n" for m in (1, 2, 3)))


def _predict_args(**given: object) -> argparse.Namespace:
    base = {"inputs": [], "file": None, "top": 1, "json": False, "format": "onnx"}
    return argparse.Namespace(**{**base, **given})


def test_predict_text_file_not_utf8_names_the_file_and_line(tmp_path: Path) -> None:
    # was: UnicodeDecodeError, a traceback
    from torchkiln.text.predict import _inputs

    texts = tmp_path / "texts.txt"
    texts.write_bytes("first line\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(UsageError, match=r"texts.txt:2: not UTF-8 text \(byte 0xe9\)"):
        _inputs(_predict_args(file=str(texts)))
    texts.write_bytes(b"\xef\xbb\xbfone\n\ntwo\n")  # a BOM is fine
    assert _inputs(_predict_args(file=str(texts))) == ["one", "two"]


@pytest.mark.parametrize("entry", ["x" * 300, "a\x00b"])
def test_extends_unusable_path_is_a_positioned_error(tmp_path: Path, monkeypatch, entry) -> None:
    # was: OSError "File name too long" (and ValueError for a NUL byte), a traceback
    from torchkiln.errors import SpecError
    from torchkiln.schemas.spec import load_pipeline

    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text(f'name: p\nextends: "{entry}"\n'.replace("\x00", "\\0"))
    with pytest.raises(SpecError) as info:
        load_pipeline(Path("p.yaml"))
    (issue,) = info.value.issues
    assert str(issue).startswith("p.yaml:2:10: extends: ")
    assert "is not a usable file path" in issue.message


#: kiln's own check (64M) below PIL's warning (89M), and past PIL's error (179M pixels)
BOMBS = [
    (png_bomb, 9_000, "9000x9000 pixels"),
    (gif_bomb, 9_000, "9000x9000 pixels"),
    (png_bomb, 20_000, "400,000,000 pixels"),
    (gif_bomb, 65_535, "4,294,836,225 pixels"),
]


@pytest.mark.parametrize(("bomb", "side", "claimed"), BOMBS)
def test_image_folder_refuses_images_over_the_pixel_limit(
    tmp_path: Path, monkeypatch, bomb, side: int, claimed: str
) -> None:
    """A small file claiming a huge size is refused before decoding, naming it, in kiln's
    words whichever check (kiln's or PIL's) sees it first."""
    from PIL import Image

    from torchkiln.vision.datasets import ImageFolder

    monkeypatch.chdir(tmp_path)
    for label in ("a", "b"):
        (tmp_path / "data" / label).mkdir(parents=True)
        Image.new("L", (4, 4)).save(tmp_path / "data" / label / "ok.png")
    name = "bomb.png" if bomb is png_bomb else "bomb.gif"
    (tmp_path / "data" / "b" / name).write_bytes(bomb(side, side))
    cfg = ImageFolder.model_validate({"name": "image_folder", "root": "data"})
    with pytest.raises(RunError) as info:
        cfg.load(0)
    assert str(info.value).startswith(
        f"cannot read image data/b/{name}: {claimed} is more than the 64,000,000 kiln reads "
        "(a decompression bomb?). Fix or remove the file"
    )


@pytest.mark.parametrize(("bomb", "side", "claimed"), BOMBS[1:3])
def test_predict_refuses_images_over_the_pixel_limit(
    tmp_path: Path, capsys, monkeypatch, bomb, side: int, claimed: str
) -> None:
    import numpy as np
    from PIL import Image

    from torchkiln.vision import predict

    Image.new("RGB", (4, 4)).save(tmp_path / "ok.png")
    (tmp_path / "bomb.png").write_bytes(bomb(side, side))
    card = {"classes": ["a", "b"], "input": {"modality": "image", "shape": [3, 4, 4]}}
    args = _predict_args(inputs=[str(tmp_path / "ok.png"), str(tmp_path / "bomb.png")])
    monkeypatch.setattr(
        predict, "runner", lambda fmt, path: lambda images: np.zeros((len(images), 2))
    )
    with pytest.raises(RunError, match=r"1 of 2 file\(s\) could not be read as images"):
        predict.predict_images(args, tmp_path, card, "onnx", tmp_path / "m.onnx")
    out, err = capsys.readouterr()
    assert "ok.png" in out
    assert f"cannot read image {tmp_path.as_posix()}/bomb.png: {claimed} is more than" in err


def test_harness_bombs_are_small() -> None:
    """The bombs really are decompression bombs: tiny files, huge claims."""
    from PIL import Image

    for make in (png_bomb, gif_bomb):
        data = make(9_000, 9_000)
        assert len(data) < 200
        with Image.open(io.BytesIO(data)) as img:
            assert img.size == (9_000, 9_000)
