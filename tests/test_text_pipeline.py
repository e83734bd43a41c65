"""End to end, through the real `kiln` CLI in a temporary folder: a tiny text pipeline from a
CSV through export (with pretrained vectors), `kiln predict` on raw text, fine-tuning its
model on a new label set from another pipeline, and torch-free validation of the examples.

The tiny CSV is learnable: each topic has words of its own, mixed with words every topic
uses, so a few epochs take the model far above chance (1/3) and its predictions can be
checked, not only their format. The official test file ends with two mislabelled rows,
which evaluate must list as mistakes.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_tools import ROOT, failed, kiln, ok, shared_folder

from torchkiln.schemas.spec import load_pipeline

pytestmark = pytest.mark.e2e

TOPICS = {
    "sport": "match goal team coach league win score player",
    "money": "bank shares profit market price trade rate stock",
    "music": "album band song singer chart tour concert guitar",
}
COMMON = "the a of and to in is was said new"

SOURCE = """\
name: src
seed: 0
stages:
  load_data:
    dataset:
      {name: text_table, path: data.csv, test_path: test.csv, max_length: 12, vocab: {min_freq: 1}}
    split: {val: 0.2}
  build_model:
    model:
      name: rnn_classifier
      cell: gru
      embedding_dim: 8
      hidden_size: 6
      pretrained: {path: vectors.txt}
  train: {epochs: 8, batch_size: 8, bucket_by_length: true, optimizer: {name: AdamW, lr: 0.03}}
  evaluate: {misclassified: 4}
  export: {formats: [torchscript, onnx, safetensors]}
"""

TUNE = """\
name: tune
seed: 1
stages:
  load_data:
    dataset:
      name: text_table
      path: moods.jsonl
      max_length: 12
      vocab: {source: {pipeline: src, stage: load_data}}
  build_model:
    model: {name: rnn_classifier, cell: gru, embedding_dim: 8, hidden_size: 6}
    weights: {pipeline: src, stage: train, strict: false, exclude: ["head.*"]}
    freeze: [embedding]
  train: {epochs: 1, batch_size: 8}
"""


def _sentence(rng: random.Random, topic: str) -> str:
    words = rng.choices(TOPICS[topic].split(), k=4) + rng.choices(
        COMMON.split(), k=rng.randint(1, 6)
    )
    rng.shuffle(words)
    return " ".join(words).capitalize() + "."


#: The last two rows of test.csv: a music and a money sentence, labelled otherwise.
MISLABELLED = [
    ("Album band song singer tour.", "sport", "music"),  # text, label given, true topic
    ("Bank shares profit market price.", "music", "money"),
]
#: test.csv: 6 sentences per topic, then the mislabelled rows (lines 20 and 21)
TEST_EXAMPLES = 6 * len(TOPICS) + len(MISLABELLED)


def _write_project(root: Path) -> None:
    rng = random.Random(0)
    rows = ["text,label"] + [
        f'"{_sentence(rng, topic)}",{topic}' for _ in range(24) for topic in TOPICS
    ]
    (root / "data.csv").write_text("\n".join(rows) + "\n")
    test = ["text,label"] + [f'"{_sentence(rng, t)}",{t}' for _ in range(6) for t in TOPICS]
    test += [f'"{text}",{label}' for text, label, _ in MISLABELLED]
    (root / "test.csv").write_text("\n".join(test) + "\n")
    moods = [
        {"text": _sentence(rng, topic), "label": "happy" if topic == "music" else "busy"}
        for _ in range(10)
        for topic in TOPICS
    ]
    (root / "moods.jsonl").write_text("".join(json.dumps(m) + "\n" for m in moods))
    vectors = [f"{w} " + " ".join(f"{rng.uniform(-1, 1):.4f}" for _ in range(8)) for w in
               ["match", "Goal", "bank", "song", "unrelated"]]  # fmt: skip
    (root / "vectors.txt").write_text("\n".join(vectors) + "\n")
    (root / "src.yaml").write_text(SOURCE)
    (root / "tune.yaml").write_text(TUNE)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where the `src` pipeline has run through export (once per test run, shared
    by the xdist workers: tests only read it, or copy it)."""

    def build(root: Path) -> None:
        _write_project(root)
        ok(kiln("run", "src.yaml", cwd=root))

    return shared_folder(tmp_path_factory, "textproj", build)


def test_predict_before_export_says_what_to_run(tmp_path: Path) -> None:
    _write_project(tmp_path)
    result = kiln("predict", "src.yaml", "a goal", cwd=tmp_path)
    assert result.returncode == 1
    assert "no exported model in runs/src/export/out: run the pipeline" in result.stderr


def test_tiny_text_pipeline_runs_through_export(project: Path) -> None:
    runs = project / "runs" / "src"
    meta = json.loads((runs / "load_data/out/meta.json").read_text())
    assert meta["format"] == "text_tokens" and meta["info"]["modality"] == "text"
    extra = meta["info"]["extra"]
    assert extra["pad_index"] == 0 and extra["max_length"] == 12 and extra["vocab_size"] > 20
    summary = json.loads((runs / "build_model/out/summary.json").read_text())
    init = summary["initialization"]
    # match, bank, song exactly; Goal fills "goal" through the lowercase fallback
    assert init["found"] == 4 and 0 < init["coverage"] < 1 and init["frozen"] is False
    metrics = json.loads((runs / "evaluate/metrics.json").read_text())
    assert metrics["examples"] == TEST_EXAMPLES
    # chance is 1/3; the topic words were learnt. The two mislabelled rows cannot be right.
    assert 0.8 <= metrics["accuracy"] <= (TEST_EXAMPLES - 2) / TEST_EXAMPLES
    # the misclassified examples (at most `misclassified: 4`) are the wrong rows of
    # predictions.csv, with the line of the file each came from; the mislabelled rows are
    # among them, predicted as the topic their words belong to
    rows = _predictions(runs)
    wrong = [r for r in rows if r["actual"] != r["predicted"]]
    assert len(rows) == TEST_EXAMPLES
    assert len(wrong) == round(TEST_EXAMPLES * (1 - metrics["accuracy"]))
    mistakes = [json.loads(x) for x in (runs / "evaluate/out/misclassified.jsonl").open()]
    assert len(mistakes) == min(4, len(wrong))
    lines = (project / "test.csv").read_text().splitlines()
    for record in mistakes:
        row = rows[record["index"]]
        assert (record["actual"], record["predicted"]) == (row["actual"], row["predicted"])
        number = int(record["source"].removeprefix("test.csv:"))
        assert lines[number - 1].endswith("," + record["actual"])
    found = {r["source"]: (r["actual"], r["predicted"]) for r in mistakes}
    for line, (_, label, topic) in enumerate(MISLABELLED, start=TEST_EXAMPLES):
        assert found.get(f"test.csv:{line}") == (label, topic), found
    # evaluate's plot_specs declares exactly the plot files written (no image grid for text)
    pipeline = load_pipeline(project / "src.yaml")
    declared = {p.file for p in pipeline.stages["evaluate"].plot_specs()}
    assert declared == {p.name for p in (runs / "evaluate/plots").iterdir()}
    export = runs / "export/out"
    for name in ("model.onnx", "model.pt", "model.safetensors", "tokenizer.json", "vocab.json"):
        assert (export / name).is_file(), name
    card = json.loads((export / "model_card.json").read_text())
    assert card["input"]["modality"] == "text" and card["input"]["max_length"] == 12
    assert {f["file"] for f in card["files"] if f["format"] == "preprocessing"} == {
        "tokenizer.json",
        "vocab.json",
    }
    assert "TextEncoder.from_folder" in (export / "model_card.md").read_text()


def _predictions(runs: Path) -> list[dict[str, str]]:
    """evaluate's predictions.csv, one dict per test example in split order."""
    lines = (runs / "evaluate/out/predictions.csv").read_text().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]


def _test_split(project: Path) -> tuple[Any, Any]:
    """The test split's (tokens, lengths), padded to its longest text, as stored."""
    import torch

    from torchkiln.runtime.datasets import open_dataset

    split = open_dataset(project / "runs/src/load_data/out").split("test")
    (tokens, lengths), _ = split.batch(torch.arange(len(split)))
    return tokens, lengths


def test_every_export_predicts_like_the_eager_model(project: Path) -> None:
    """On the test split's texts, as one padded batch and as two batches of other sizes and
    lengths: ONNX through onnxruntime, the TorchScript file and the model rebuilt from
    model.json + model.safetensors give the trained model's logits and evaluate's classes."""
    import onnxruntime as ort
    import torch
    from safetensors.torch import load_file

    from torchkiln.runtime.model_artifact import open_model

    runs = project / "runs/src"
    out = runs / "export/out"
    eager = open_model(runs / "train/out").build().eval()
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated upstream
        script = torch.jit.load(str(out / "model.pt"), map_location="cpu")
    rebuilt = open_model(out).build(load_weights=False)
    rebuilt.load_state_dict(load_file(out / "model.safetensors"))
    rebuilt.eval()
    classes = json.loads((out / "model_card.json").read_text())["classes"]

    tokens, lengths = _test_split(project)
    assert tokens.shape[0] == TEST_EXAMPLES
    half = int(lengths[:7].max())
    batches = [(tokens, lengths), (tokens[:7, :half], lengths[:7]), (tokens[7:], lengths[7:])]
    for batch_tokens, batch_lengths in batches:
        with torch.no_grad():
            expected = eager(batch_tokens, batch_lengths).numpy()
            scripted = script(batch_tokens, batch_lengths).numpy()
            again = rebuilt(batch_tokens, batch_lengths).numpy()
        feeds = {"tokens": batch_tokens.numpy(), "lengths": batch_lengths.numpy()}
        (onnx,) = session.run(None, feeds)
        for name, got, atol in [("onnx", onnx, 1e-4), ("torchscript", scripted, 1e-5),
                                ("safetensors", again, 1e-6)]:  # fmt: skip
            assert got.shape == expected.shape == (len(batch_lengths), len(TOPICS)), name
            np.testing.assert_allclose(got, expected, atol=atol, rtol=0, err_msg=name)
    (onnx,) = session.run(None, {"tokens": tokens.numpy(), "lengths": lengths.numpy()})
    assert [classes[i] for i in onnx.argmax(1)] == [r["predicted"] for r in _predictions(runs)]


def test_kiln_predict_classifies_raw_text(project: Path, tmp_path: Path) -> None:
    lines_file = tmp_path / "lines.txt"
    lines_file.write_text("The band played a song\n\nBank shares fell\n")
    sport = "The coach said the team would win the league match"
    result = ok(kiln("predict", "src.yaml", sport, "", cwd=project))
    lines = result.stdout.splitlines()
    assert len(lines) == 2  # the empty text is classified too (as <unk>)
    label, probability, text = lines[0].split("\t", 2)
    assert (label, text) == ("sport", sport)
    assert 1 / 3 < float(probability) <= 1
    onnx = ok(kiln("predict", "src.yaml", "--file", lines_file, "--json", cwd=project))
    script = ok(
        kiln(
            "predict",
            "src.yaml",
            "--file",
            lines_file,
            "--json",
            "--format",
            "torchscript",
            cwd=project,
        )
    )
    a = [json.loads(x) for x in onnx.stdout.splitlines()]
    b = [json.loads(x) for x in script.stdout.splitlines()]
    assert [x["text"] for x in a] == ["The band played a song", "Bank shares fell"]
    assert [x["label"] for x in a] == ["music", "money"]
    for x, y in zip(a, b, strict=True):
        assert x["label"] == y["label"] and abs(x["probability"] - y["probability"]) < 1e-4


def test_kiln_predict_takes_its_options_in_any_position(project: Path) -> None:
    sport = "The coach said the team would win the league match"
    orders = [
        ["src.yaml", sport, "--format", "onnx", "--top", "2"],
        ["--format", "onnx", "src.yaml", sport, "--top", "2"],
        ["src.yaml", "--format", "onnx", sport, "--top", "2"],
        ["src.yaml", "--top", "2", sport, "--format", "onnx"],
        ["--top", "2", "src.yaml", "--format", "onnx", "--", sport],  # after `--`: all text
    ]
    outputs = {ok(kiln("predict", *order, cwd=project)).stdout for order in orders}
    assert len(outputs) == 1, outputs
    (line,) = outputs.pop().splitlines()
    assert line.startswith("sport\t") and line.endswith(f"\t{sport}")
    # text that starts with a dash goes after `--`
    for args in (["--", "-goal", sport], ["--json", "--", "-goal", sport]):
        result = ok(kiln("predict", "src.yaml", "--format", "onnx", *args, cwd=project))
        assert len(result.stdout.splitlines()) == 2 and "-goal" in result.stdout
    message = failed(kiln("predict", "src.yaml", sport, "--fromat", "onnx", cwd=project), code=2)
    assert "unrecognized arguments: --fromat onnx" in message


def test_kiln_predict_loads_torchscript_only_when_asked(project: Path, tmp_path: Path) -> None:
    """An export folder may come from anyone (`dvc artifacts get`), and loading TorchScript
    runs the program it holds: the default runs ONNX, and never falls back on its own."""
    project = Path(shutil.copytree(project, tmp_path / "project"))  # the shared one stays as is
    out = project / "runs/src/export/out"
    text = "The band played a song"
    onnx = ok(kiln("predict", "src.yaml", text, cwd=project)).stdout
    (out / "model.onnx").rename(tmp_path / "model.onnx")
    message = failed(kiln("predict", "src.yaml", text, cwd=project))
    assert message == (
        "error: runs/src/export/out/model.onnx does not exist, and kiln does not fall back to "
        "runs/src/export/out/model.pt on its own: TorchScript runs the code it holds when "
        "loaded, so use it only from someone you trust, with --format torchscript (or add onnx "
        "to the export stage's formats and rerun the export)\n"
    )
    script = ok(kiln("predict", "src.yaml", text, "--format", "torchscript", cwd=project))
    assert script.stdout.split("\t")[0] == onnx.split("\t")[0] == "music"
    # with model.onnx back, a model.pt that is not even TorchScript is never opened
    (tmp_path / "model.onnx").rename(out / "model.onnx")
    (out / "model.pt").write_bytes(b"not a TorchScript archive")
    assert ok(kiln("predict", "src.yaml", text, "--format", "auto", cwd=project)).stdout == onnx


def test_fine_tuning_takes_the_encoder_with_a_new_head(project: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    project = Path(shutil.copytree(project, tmp_path / "project"))  # the shared one stays as is
    ok(kiln("run", "tune.yaml", cwd=project))
    src = project / "runs/src"
    tune = project / "runs/tune"
    vocab = json.loads((tune / "load_data/out/vocab.json").read_text())
    assert vocab == json.loads((src / "load_data/out/vocab.json").read_text())
    built = json.loads((tune / "build_model/out/model.json").read_text())
    report = built["weights_report"]
    assert "encoder.0.weight_ih_l0" in report["loaded"] and "embedding.weight" in report["loaded"]
    assert report["excluded"] == ["head.bias", "head.weight"] and report["missing"] == []
    assert built["frozen"] == ["embedding.weight"]
    assert built["info"]["classes"] == ["busy", "happy"]
    before = load_file(src / "train/out/weights.safetensors")
    after = load_file(tune / "train/out/weights.safetensors")
    assert after["head.weight"].shape == (2, 12)  # a new head for the new label set
    assert before["head.weight"].shape == (3, 12)
    assert (after["embedding.weight"] == before["embedding.weight"]).all()  # frozen
    assert not (after["encoder.0.weight_hh_l0"] == before["encoder.0.weight_hh_l0"]).all()


def test_validating_the_text_examples_imports_no_torch() -> None:
    specs = ["pipelines/bbc_lstm.yaml", "pipelines/bbc_transformer.yaml"]
    code = textwrap.dedent(f"""
        import contextlib, io, sys
        from torchkiln.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            rc = main(["validate", *{specs!r}])
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))
        assert not heavy, "imported " + ", ".join(heavy[:8])
        sys.exit(rc)
    """)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_validation_catches_text_mistakes_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "stages:\n"
        "  load_data:\n"
        "    dataset: {name: bbc_news, tokenizer: wrod, max_length: 0}\n"
        "  build_model:\n"
        "    model: {name: transformer_classifier, embedding_dim: 10, heads: 4}\n"
    )
    (tmp_path / "mixed.yaml").write_text(
        "stages:\n"
        "  load_data:\n"
        "    dataset: mnist_sample\n"
        "  build_model:\n"
        "    model: rnn_classifier\n"
    )
    bad = kiln("validate", "bad.yaml", cwd=tmp_path)
    assert bad.returncode == 2
    assert "unknown tokenizer 'wrod'; did you mean 'word'?" in bad.stderr
    assert "stages.load_data.dataset.max_length" in bad.stderr
    assert "heads (4) must divide embedding_dim (10)" in bad.stderr
    mixed = kiln("validate", "mixed.yaml", cwd=tmp_path)
    assert mixed.returncode == 2
    assert "model 'rnn_classifier' takes text inputs, but the dataset is image" in mixed.stderr
