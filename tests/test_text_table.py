"""text_table: CSV/TSV/JSONL reading, and a clear, positioned error for each bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_tools import kiln

from torchkiln.errors import RunError
from torchkiln.text.datasets import TextTable
from torchkiln.text.loading import RawText, load_text_table


def _load(tmp_path: Path, **fields: object) -> RawText:
    cfg = TextTable.model_validate({"name": "text_table", **fields})
    return load_text_table(cfg, seed=0)


def test_csv_tsv_and_jsonl_read_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("a.csv").write_text('label,text\nb,"one, two"\na,"multi\nline"\n\nb,three\n')
    Path("a.tsv").write_text("text\tlabel\none, two\tb\nmulti line\ta\nthree\tb\n")
    rows = [{"text": "one, two", "label": "b"}, {"text": "x", "label": "a"}]
    Path("a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    csv = _load(tmp_path, path="a.csv")
    assert csv.texts == ["one, two", "multi\nline", "three"]
    assert csv.classes == ["a", "b"] and csv.labels == [1, 0, 1]
    assert csv.sources == ["a.csv:2", "a.csv:3", "a.csv:6"]  # line numbers survive quoting
    assert _load(tmp_path, path="a.tsv").labels == [1, 0, 1]
    assert _load(tmp_path, path="a.jsonl").texts == ["one, two", "x"]
    Path("n.jsonl").write_text('{"text": "a", "y": 10}\n{"text": "b", "y": 9}\n')
    assert _load(tmp_path, path="n.jsonl", label_column="y").classes == ["9", "10"]


def test_bad_encoding_names_file_line_and_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("data.csv").write_bytes("text,label\nfine,a\ncaf\xe9 au lait,b\n".encode("latin-1"))
    with pytest.raises(RunError) as err:
        _load(tmp_path, path="data.csv")
    message = str(err.value)
    assert message.startswith("data.csv:3:4: cannot decode byte 0xe9 as utf-8")
    assert "`encoding:`" in message
    assert _load(tmp_path, path="data.csv", encoding="latin-1").texts[1] == "café au lait"


def test_missing_column_suggests_the_right_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("data.csv").write_text("txt,label\nhello,a\n")
    with pytest.raises(RunError, match=r"data.csv:1: no column 'text' in the header; did you mean "
                                       r"'txt'\? columns: txt, label. Set the dataset's "
                                       r"`text_column:`"):  # fmt: skip
        _load(tmp_path, path="data.csv")
    Path("data.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b", "lable": "y"}\n')
    with pytest.raises(RunError, match=r"data.jsonl:2: no key 'label' .*did you mean 'lable'"):
        _load(tmp_path, path="data.jsonl")


def test_empty_files_and_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("empty.csv").write_text("")
    with pytest.raises(RunError, match=r"^empty.csv is empty; it needs a header row"):
        _load(tmp_path, path="empty.csv")
    Path("header.csv").write_text("text,label\n\n")
    with pytest.raises(RunError, match=r"^header.csv has no examples"):
        _load(tmp_path, path="header.csv")
    Path("short.csv").write_text("text,label\nok,a\nmissing\n")
    with pytest.raises(RunError, match=r"^short.csv:3: the row has 1 field\(s\)"):
        _load(tmp_path, path="short.csv")
    Path("nolabel.csv").write_text("text,label\nok,a\nhm, \n")
    with pytest.raises(RunError, match=r"^nolabel.csv:3: column 'label' is empty"):
        _load(tmp_path, path="nolabel.csv")
    Path("bad.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b",\n')
    with pytest.raises(RunError, match=r"^bad.jsonl:2:\d+: not valid JSON"):
        _load(tmp_path, path="bad.jsonl")
    Path("data.txt").write_text("text,label\n")
    with pytest.raises(RunError, match=r"cannot tell the format of data.txt.*`format:`"):
        _load(tmp_path, path="data.txt")


def test_a_label_seen_only_in_test_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("train.csv").write_text("text,label\na,x\nb,y\nc,x\n")
    Path("test.csv").write_text("text,label\nd,x\ne,z\n")
    with pytest.raises(RunError) as err:
        _load(tmp_path, path="train.csv", test_path="test.csv")
    assert str(err.value).startswith(
        "test.csv:3: label 'z' (column 'label') appears only in the test data, never in "
        "train.csv; the model cannot learn it. Known labels: x, y"
    )
    Path("ok.csv").write_text("text,label\nd,x\ne,y\n")
    raw = _load(tmp_path, path="train.csv", test_path="ok.csv")
    assert raw.predefined == {"test": [3, 4]} and raw.sources[3] == "ok.csv:2"


def test_a_label_the_split_leaves_out_of_train_is_refused() -> None:
    raw = RawText(
        texts=["a", "b", "c", "d"],
        labels=[0, 0, 0, 1],
        classes=["x", "y"],
        sources=["t.csv:2", "t.csv:3", "t.csv:4", "t.csv:5"],
    )
    splits = {"train": torch.tensor([0, 1]), "val": torch.tensor([2]), "test": torch.tensor([3])}
    with pytest.raises(RunError, match=r"label 'y' has no training example.*first: t.csv:5"):
        raw._check_train_covers_labels(torch.tensor(raw.labels), splits)


def test_bad_input_through_kiln_run(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_bytes(b"text,label\n\xff\xfe,a\n")
    (tmp_path / "p.yaml").write_text(
        "stages:\n  load_data:\n    dataset: {name: text_table, path: data.csv}\n"
    )
    result = kiln("run", "p.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert "error: data.csv:2:1: cannot decode byte 0xff as utf-8" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_encodings_are_validation_errors() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unknown text encoding 'utf-9'"):
        TextTable(path="x.csv", encoding="utf-9")
