"""End to end, through the real `kiln` CLI in a temporary folder: a tiny text pipeline from a
CSV through export (with pretrained vectors), `kiln predict` on raw text, fine-tuning its
model on a new label set from another pipeline, and torch-free validation of the examples."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cli_tools import ROOT, run_kiln

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
    dataset: {name: text_table, path: data.csv, max_length: 12, vocab: {min_freq: 1}}
    split: {val: 0.2, test: 0.25}
  build_model:
    model:
      name: rnn_classifier
      cell: gru
      embedding_dim: 8
      hidden_size: 6
      pretrained: {path: vectors.txt}
  train: {epochs: 2, batch_size: 8, bucket_by_length: true, optimizer: {name: AdamW, lr: 0.01}}
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


def _write_project(root: Path) -> None:
    rng = random.Random(0)
    rows = ["text,label"] + [
        f'"{_sentence(rng, topic)}",{topic}' for _ in range(16) for topic in TOPICS
    ]
    (root / "data.csv").write_text("\n".join(rows) + "\n")
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


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where the `src` pipeline has run through export (once per test process)."""
    root = tmp_path_factory.mktemp("textproj")
    _write_project(root)
    _ok(run_kiln("run", "src.yaml", cwd=root, timeout=300))
    return root


def test_predict_before_export_says_what_to_run(tmp_path: Path) -> None:
    _write_project(tmp_path)
    result = run_kiln("predict", "src.yaml", "a goal", cwd=tmp_path)
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
    assert 0 <= metrics["accuracy"] <= 1
    mistakes = (runs / "evaluate/out/misclassified.jsonl").read_text().splitlines()
    for line in mistakes:
        record = json.loads(line)
        assert record["source"].startswith("data.csv:") and record["actual"] != record["predicted"]
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
    for f in card["files"]:
        assert f.get("max_abs_diff", 0) <= 1e-4
    assert "TextEncoder.from_folder" in (export / "model_card.md").read_text()


def test_kiln_predict_classifies_raw_text(project: Path) -> None:
    (project / "lines.txt").write_text("The band played a song\n\nBank shares fell\n")
    result = _ok(run_kiln("predict", "src.yaml", "Goal for the team!", "", cwd=project))
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    for line in lines:
        label, probability, _ = line.split("\t", 2)
        assert label in TOPICS and 0 < float(probability) <= 1
    onnx = _ok(run_kiln("predict", "src.yaml", "--file", "lines.txt", "--json", cwd=project))
    script = _ok(
        run_kiln(
            "predict",
            "src.yaml",
            "--file",
            "lines.txt",
            "--json",
            "--format",
            "torchscript",
            cwd=project,
        )
    )
    a = [json.loads(x) for x in onnx.stdout.splitlines()]
    b = [json.loads(x) for x in script.stdout.splitlines()]
    assert [x["text"] for x in a] == ["The band played a song", "Bank shares fell"]
    for x, y in zip(a, b, strict=True):
        assert x["label"] == y["label"] and abs(x["probability"] - y["probability"]) < 1e-4


def test_fine_tuning_takes_the_encoder_with_a_new_head(project: Path) -> None:
    from safetensors.torch import load_file

    _ok(run_kiln("run", "tune.yaml", cwd=project, timeout=300))
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
    bad = run_kiln("validate", "bad.yaml", cwd=tmp_path)
    assert bad.returncode == 2
    assert "unknown tokenizer 'wrod'; did you mean 'word'?" in bad.stderr
    assert "stages.load_data.dataset.max_length" in bad.stderr
    assert "heads (4) must divide embedding_dim (10)" in bad.stderr
    mixed = run_kiln("validate", "mixed.yaml", cwd=tmp_path)
    assert mixed.returncode == 2
    assert "model 'rnn_classifier' takes text inputs, but the dataset is image" in mixed.stderr
