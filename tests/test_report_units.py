"""`kiln report`'s pieces without a repository: escaping, nested metrics as tables, curves,
the spec view and the content-security policy (no torch, no subprocess)."""

from __future__ import annotations

import base64
import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path

from torchkiln.report import html, svg
from torchkiln.report.collect import (
    DvcState,
    GitState,
    Image,
    PipelineData,
    Report,
    SpecRow,
    StageData,
    flatten,
    image_of,
    spaced,
    spec_view,
)

PNG_1x1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)
HOSTILE = '<script>alert("x")</script>'


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text outside tags."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> Elements:
    parser = Elements()
    parser.feed(page)
    return parser


def hostile_report() -> Report:
    stage = StageData(
        name="evaluate",
        kind="evaluate",
        dvc_name="p-evaluate",
        root="runs/p/evaluate",
        metrics={
            HOSTILE: 1.0,
            "test": {
                "windows": 4,
                "model": {"mae": 1.5, "mase": 0.8},
                "naive": {"mae": 2.0, "mase": 1.0},
                "seasonal_naive": {"mae": 1.8, "mase": 0.9},
            },
        },
        history=[{"epoch": 1, "train_loss": 1.0, HOSTILE: 0.5}, {"epoch": 2, "train_loss": 0.5}],
        figures=[Image(f"runs/p/evaluate/plots/{HOSTILE}.png", "image/png", PNG_1x1)],
        misclassified=[{"text": HOSTILE, "actual": "a", "predicted": "b"}],
        misclassified_total=1,
        card={"files": [{"file": HOSTILE, "max_abs_diff": 2.0, "tolerance": 1e-4}]},
    )
    pipeline = PipelineData(
        name="p",
        spec_file="pipelines/p.yaml",
        task="classification",
        spec=[SpecRow("stages.train.note", HOSTILE, "pipelines/p.yaml:3")],
        stages=[stage],
        versions={"torch": HOSTILE},
        versions_source="installed now",
    )
    return Report(
        pipelines=[pipeline],
        git=GitState(True, "0" * 40, HOSTILE, ()),
        dvc=DvcState(True, "", {"p-evaluate": [{"changed deps": {HOSTILE: "modified"}}]}),
        comparisons={},
    )


def test_everything_written_into_the_page_is_escaped() -> None:
    page = html.render(hostile_report(), "torchkiln test")
    parsed = parse(page)
    scripts = [attrs for tag, attrs in parsed.tags if tag == "script"]
    assert len(scripts) == 1  # only the report's own
    assert HOSTILE not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    # the text comes back as written once the browser unescapes it
    assert HOSTILE in "".join(parsed.text)


def test_the_policy_allows_exactly_the_own_script_and_style() -> None:
    page = html.render(hostile_report(), "torchkiln test")
    policy = html.content_security_policy()
    assert "default-src 'none'" in policy and "img-src data:" in policy
    script = re.search(r"<script>(.*?)</script>", page, re.S)
    style = re.search(r"<style>(.*?)</style>", page, re.S)
    assert script and style
    for text in (script[1], style[1]):
        digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy
    assert html.esc(policy) in page


def test_sibling_metric_blocks_are_shown_side_by_side() -> None:
    """A forecaster's metrics beside its baselines: one column per method, the model first."""
    tables = html.metrics_tables(
        {
            "season": 12,
            "test": {
                "windows": 4,
                "naive": {"mae": 2.0, "mase": 1.0},
                "model": {"mae": 1.5, "mase": 0.8},
                "drift": {"mae": 2.5},
            },
        }
    )
    header = re.search(r'<table class="side-by-side"><thead><tr>(.*?)</tr>', tables)
    assert header is not None
    assert re.findall(r"<th>(.*?)</th>", header[1]) == ["metric", "model", "naive", "drift"]
    assert "<h4>test</h4>" in tables
    rows = re.findall(r"<tr>(<td>mase</td>.*?)</tr>", tables)
    assert rows and re.findall(r">([^<]*)</td>", rows[0]) == ["mase", "0.8", "1", ""]


def test_curves_group_train_and_val_and_draw_every_point() -> None:
    history = [
        {"epoch": 1, "train_loss": 1.0, "val_loss": 1.2, "lr": 0.1, "val_accuracy": 0.5},
        {"epoch": 2, "train_loss": 0.5, "val_loss": None, "lr": 0.05, "val_accuracy": 0.7},
    ]
    x_key, groups = html.curve_groups(history)
    assert x_key == "epoch"
    assert groups == {
        "loss": ["train_loss", "val_loss"],
        "accuracy": ["val_accuracy"],
        "lr": ["lr"],
    }
    gan = [{"epoch": 1, "d_loss": 1, "g_loss": 2, "lr_d": 0.1, "lr_g": 0.2}]
    assert html.curve_groups(gan)[1] == {"loss": ["d_loss", "g_loss"], "lr": ["lr_d", "lr_g"]}
    chart = svg.line_chart(
        [
            svg.Series("train_loss", [(1, 1.0), (2, 0.5)]),
            svg.Series("val_loss", [(1, 1.2), (2, None)]),
        ],
        title="train: loss",
    )
    assert chart.startswith("<svg") and chart.endswith("</svg>")
    assert chart.count("<circle") == 3  # the missing value is a gap, not a point
    assert 'data-label="val_loss"' in chart


def test_nice_ticks_cover_the_range_with_round_values() -> None:
    ticks = svg.nice_ticks(0.12, 0.97, 5)
    assert ticks[0] <= 0.12 and ticks[-1] >= 0.97
    step = round(ticks[1] - ticks[0], 12)
    assert step == 0.25  # 1, 2, 2.5 or 5 times a power of ten
    assert all(round(t / step, 9).is_integer() for t in ticks)
    assert svg.nice_ticks(3.0, 3.0) == sorted(svg.nice_ticks(3.0, 3.0))


def test_images_are_recognised_by_their_bytes_and_galleries_spaced() -> None:
    assert image_of("a.png", PNG_1x1) is not None
    assert image_of("a.png", b"<svg onload=alert(1)>") is None
    assert image_of("a.png", None) is None
    img = image_of("a.png", PNG_1x1)
    assert img is not None and img.size == (1, 1)
    items = [f"{i:03d}" for i in range(60)]
    chosen = spaced(items, 24)
    assert len(chosen) == 24 and chosen[0] == "000" and chosen[-1] == "059"


def test_flatten_enters_lists_of_mappings_only() -> None:
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": [{"e": 1}]}) == [
        (("a", "b"), 1),
        (("a", "c"), [1, 2]),
        (("d", 0, "e"), 1),
    ]


def test_spec_view_marks_written_values_and_defaults(tmp_path: Path) -> None:
    from torchkiln.schemas.spec import load_pipeline

    spec = tmp_path / "p.yaml"
    spec.write_text(
        "name: p\n"
        "stages:\n"
        "  load_data:\n"
        "    dataset: {name: synthetic, num_classes: 3, per_class: 20, image_size: 8}\n"
        "  build_model:\n"
        "    model: {name: mlp, hidden: [16]}\n"
        "  train:\n"
        "    epochs: 1\n"
        "    optimizer: Adam\n",
        encoding="utf-8",
    )
    rows = {r.path: r for r in spec_view(load_pipeline(spec))}
    assert rows["stages.train.epochs"].value == 1
    assert rows["stages.train.epochs"].origin == f"{spec.as_posix()}:8:13"
    assert rows["stages.train.optimizer.name"].origin == f"{spec.as_posix()}:9:16"
    assert rows["stages.train.optimizer.lr"].origin == "default"
    assert rows["seed"].origin == "default"
