"""`kiln report` end to end: a tiny pipeline run by `dvc repro` in a temporary git + DVC
repository, committed twice with different params; the report's sections, its comparison
of the two commits (and of a DVC experiment), that it is self-contained, its errors, and
that it renders in a real headless browser without script errors.

The repository is built once per test run (also across pytest-xdist workers) and copied
into each test that runs `kiln report`, so concurrent `dvc status` calls never share one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from importlib import metadata
from pathlib import Path

import pytest
from cli_tools import run
from filelock import FileLock

pytestmark = pytest.mark.e2e

TIMEOUT = 600

SPEC = """\
name: tiny
task: classification
seed: 0
stages:
  load_data:
    dataset: {name: synthetic, num_classes: 3, per_class: 20, image_size: 8}
    split: {val: 0.2, test: 0.2}
  augment:
    train: [{name: RandomHorizontalFlip, p: 0.5}]
  build_model:
    model: {name: mlp, hidden: [16]}
  train:
    epochs: 2
    batch_size: 16
    optimizer: {name: Adam, lr: 0.01}
  evaluate:
    metrics: [accuracy, f1_macro, confusion_matrix]
  export:
    formats: [safetensors]
"""
#: `kiln report ARGS`, then which heavy modules the command loaded.
NO_TORCH = """\
import sys
from torchkiln.cli import main
code = main(sys.argv[1:])
heavy = ("torch", "numpy", "PIL", "pandas", "torchkiln.runtime")
print("heavy modules loaded:", sorted(m for m in heavy if m in sys.modules))
sys.exit(code)
"""
SECTIONS = ("state", "spec", "data", "curves", "metrics", "figures", "export", "versions")


def sh(*args: str | Path, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`cli_tools.run` (the venv's tools first on PATH) with this file's longer timeout."""
    return run(*args, cwd=cwd, check=check, timeout=TIMEOUT)


def build_repo(root: Path) -> None:
    """git + DVC, the tiny spec run and committed (tag v1), lr changed, rerun, committed
    (tag v2), and an experiment ref `tuned` at v1, as `dvc exp run -n tuned` would leave."""
    (root / "pipelines").mkdir(parents=True)
    spec = root / "pipelines" / "tiny.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    (root / ".gitignore").write_text("/.kiln/\n/dvc_plots/\n")
    sh("git", "init", "-q", "-b", "main", cwd=root)
    sh("dvc", "init", "-q", cwd=root)
    sh("dvc", "config", "core.analytics", "false", cwd=root)
    sh("kiln", "dvc", cwd=root)
    sh("dvc", "repro", cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "lr 0.01", cwd=root)
    sh("git", "tag", "v1", cwd=root)
    spec.write_text(SPEC.replace("lr: 0.01", "lr: 0.05"), encoding="utf-8")
    sh("dvc", "repro", cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "lr 0.05", cwd=root)
    sh("git", "tag", "v2", cwd=root)
    v1 = sh("git", "rev-parse", "v1", cwd=root).stdout.strip()
    head = sh("git", "rev-parse", "HEAD", cwd=root).stdout.strip()
    sh("git", "update-ref", f"refs/exps/{head[:2]}/{head[2:]}/tuned", v1, cwd=root)


@pytest.fixture(scope="session")
def built_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers
    repo, done = root / "report-repo", root / "report-repo.built"
    with FileLock(str(root / "report-repo.lock")):
        if not done.exists():
            shutil.rmtree(repo, ignore_errors=True)
            build_repo(repo)
            done.touch()
    return repo


@pytest.fixture
def repo(built_repo: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(built_repo, copy, symlinks=True)
    return copy


@pytest.fixture(scope="module")
def report(built_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The workspace report of the repository at v2: (its path, the HTML)."""
    work = tmp_path_factory.mktemp("report")
    repo = work / "repo"
    shutil.copytree(built_repo, repo, symlinks=True)
    out = work / "report.html"
    result = sh(sys.executable, "-c", NO_TORCH, "report", "tiny", "-o", out, cwd=repo)
    assert f"wrote {out.as_posix()}" in result.stdout
    assert "heavy modules loaded: []" in result.stdout  # JSON and images only
    return out, out.read_text(encoding="utf-8")


# -- reading the page ------------------------------------------------------------------------


class Page(HTMLParser):
    """Tags with their attributes, and the text of each section (by its id)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.sections: dict[str, list[str]] = {}
        self._open: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.tags.append((tag, values))
        if tag == "section":
            self._open.append(values.get("id"))
            self.sections.setdefault(values.get("id", ""), [])

    def handle_endtag(self, tag: str) -> None:
        if tag == "section" and self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for section in self._open:
            if section:
                self.sections[section].append(data)

    def text(self, section: str) -> str:
        return " ".join(" ".join(self.sections[section]).split())


def page(html: str) -> Page:
    parsed = Page()
    parsed.feed(html)
    return parsed


def section_html(html: str, section_id: str) -> str:
    start = html.index(f'id="{section_id}"')
    return html[start : html.index("</section>", start)]


def git_json(repo: Path, rev: str, path: str) -> dict:
    return json.loads(sh("git", "show", f"{rev}:{path}", cwd=repo).stdout)


# -- the tests -------------------------------------------------------------------------------


def test_report_shows_every_section_of_the_pipeline(report: tuple[Path, str], built_repo: Path):
    _, html = report
    parsed = page(html)
    for key in SECTIONS:
        assert f"tiny-{key}" in parsed.sections, f"no {key} section"
    head = sh("git", "rev-parse", "HEAD", cwd=built_repo).stdout.strip()
    state = parsed.text("tiny-state")
    assert f"revision {head} on main, clean" in state
    assert "6 of 6 stage(s) up to date" in state
    spec = parsed.text("tiny-spec")
    assert "stages.train.optimizer.lr 0.05 pipelines/tiny.yaml:15" in spec
    assert "stages.train.optimizer.weight_decay 0 default" in spec
    data = parsed.text("tiny-data")
    assert "test 12 train 36 val 12 total 60" in data
    assert "class_0 12 class_1 12 class_2 12" in data
    preview = section_html(html, "tiny-data")
    assert 'src="data:image/png;base64,' in preview and "augment/out/preview.png" in preview
    curves = section_html(html, "tiny-curves")
    assert curves.count('<svg xmlns="http://www.w3.org/2000/svg" class="chart"') == 3
    for label in ("train_loss", "val_loss", "train_accuracy", "val_accuracy", "lr"):
        assert f'data-label="{label}"' in curves
    metrics = parsed.text("tiny-metrics")
    accuracy = git_json(built_repo, "HEAD", "runs/tiny/evaluate/metrics.json")["accuracy"]
    assert f"accuracy {accuracy:.6g}" in metrics
    assert "safetensors_max_abs_diff 0" in metrics
    figures = section_html(html, "tiny-figures")
    for name in ("confusion.png", "misclassified.png"):
        assert f'alt="evaluate: {name}"' in figures
    export = parsed.text("tiny-export")
    weights = (built_repo / "runs/tiny/export/out/model.safetensors").read_bytes()
    assert hashlib.sha256(weights).hexdigest() in export
    assert "model.safetensors safetensors" in export and "within tolerance" in export
    for digest in ("spec_sha256", "data_sha256", "weights_sha256"):
        assert digest in export
    versions = parsed.text("tiny-versions")
    assert "recorded in runs/tiny/export/out/model_card.json" in versions
    assert f"torch {metadata.version('torch')}" in versions  # what trained the model


def test_report_is_self_contained(report: tuple[Path, str]) -> None:
    _, html = report
    parsed = page(html)
    for tag, attrs in parsed.tags:
        for name in ("src", "href", "action", "data", "poster", "xlink:href"):
            value = attrs.get(name)
            if value is None:
                continue
            assert not re.match(r"\s*(https?:)?//", value, re.I), f"<{tag} {name}={value!r}>"
            assert value.startswith(("data:image/", "#")), f"<{tag} {name}={value[:60]!r}>"
    assert not [t for t, a in parsed.tags if t == "link" or (t == "script" and "src" in a)]
    policy = next(
        a["content"] for t, a in parsed.tags if a.get("http-equiv") == "Content-Security-Policy"
    )
    assert "default-src 'none'" in policy and "img-src data:" in policy


def test_report_compares_two_commits_and_an_experiment(repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "compare.html"
    sh("kiln", "report", "--rev", "v1", "--rev", "HEAD", "--rev", "tuned", "-o", out, cwd=repo)
    html = out.read_text(encoding="utf-8")
    v1 = sh("git", "rev-parse", "v1", cwd=repo).stdout.strip()
    head = sh("git", "rev-parse", "HEAD", cwd=repo).stdout.strip()
    compare = section_html(html, "tiny-compare")
    columns = re.findall(r"<th>([^<]*)</th>", compare.split('id="tiny-params"')[1])[:5]
    assert columns == [
        "params", "workspace", f"v1 ({v1[:7]})", f"HEAD ({head[:7]})", f"tuned ({v1[:7]})"
    ]  # fmt: skip
    assert f"<td>experiment</td><td>{v1}</td>" in compare

    def row(table: str, key: str) -> tuple[str, list[str]]:
        body = compare.split(f'id="tiny-{table}"')[1]
        match = re.search(rf'<tr class="(\w+)"><th>{re.escape(key)}</th>(.*?)</tr>', body)
        assert match, f"no row {key} in {table}"
        return match[1], [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td.*?</td>", match[2])]

    assert row("params", "stages.train.optimizer.lr") == ("diff", ["0.05", "0.01", "0.05", "0.01"])
    assert row("params", "stages.train.epochs") == ("same", ["2", "2", "2", "2"])
    loss = {
        rev: git_json(repo, rev, "runs/tiny/train/metrics.json")["train_loss"]
        for rev in ("v1", "HEAD")
    }
    assert loss["v1"] != loss["HEAD"]
    shown = [f"{loss[r]:.6g}" for r in ("HEAD", "v1", "HEAD", "v1")]
    assert row("metrics", "train: train_loss") == ("diff", shown)
    # learning curves overlaid: each revision's train and val loss in one chart
    chart = re.search(r'<svg[^>]*aria-label="train: loss".*?</svg>', compare, re.S)
    assert chart is not None
    labels = re.findall(r'data-label="([^"]+)"', chart[0])
    assert labels == [
        f"{c}: {k}"
        for c in ("workspace", f"v1 ({v1[:7]})", f"HEAD ({head[:7]})", f"tuned ({v1[:7]})")
        for k in ("train_loss", "val_loss")
    ]


def test_user_mistakes_exit_2_with_a_suggestion(repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    for args, message in (
        (["tiyn"], "unknown pipeline 'tiyn'; did you mean 'tiny'? pipelines: tiny"),
        (["--rev", "tunde"], "unknown revision 'tunde': not a commit, branch, tag or DVC "
                             "experiment; did you mean 'tuned'?"),
        (["--rev=--all"], "unknown revision '--all'"),
    ):  # fmt: skip
        result = sh("kiln", "report", *args, "-o", out, cwd=repo, check=False)
        assert result.returncode == 2, result.stdout + result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
        assert not out.exists()
    (tmp_path / "folder.html").mkdir()
    result = sh("kiln", "report", "-o", tmp_path / "folder.html", cwd=repo, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "error: cannot write" in result.stderr and "Traceback" not in result.stderr


def test_outside_git_and_dvc_the_report_says_so(repo: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copytree(repo / "pipelines", plain / "pipelines")
    shutil.copytree(repo / "runs", plain / "runs", ignore=shutil.ignore_patterns("out"))
    out = tmp_path / "plain.html"
    sh("kiln", "report", "-o", out, cwd=plain)
    parsed = page(out.read_text(encoding="utf-8"))
    state = parsed.text("tiny-state")
    assert "not a git repository" in state and "not a DVC repository" in state
    assert "no dataset artifact on disk" in parsed.text("tiny-data")
    assert "installed now" in parsed.text("tiny-versions")
    assert "train_loss" in section_html(out.read_text(encoding="utf-8"), "tiny-curves")
    result = sh("kiln", "report", "--rev", "HEAD", "-o", out, cwd=plain, check=False)
    assert result.returncode == 2 and "--rev needs a git repository" in result.stderr


# -- in a real browser -----------------------------------------------------------------------

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def browser() -> str | None:
    return next((found for b in BROWSERS if (found := shutil.which(b))), None)


def test_report_renders_in_a_headless_browser_without_script_errors(
    report: tuple[Path, str], tmp_path: Path
) -> None:
    """Chromium loads the file with no network: every console message (a script error, a
    blocked fetch, a content-security-policy violation) fails the test; the rendered DOM
    shows the report's script ran and every section is there."""
    found = browser()
    if found is None:
        pytest.skip(
            "no Chromium on PATH (apt-get install chromium; `make test` installs it when it "
            "can): the headless-browser test of kiln report needs it"
        )
    path, _ = report
    result = subprocess.run(
        [
            found, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-extensions", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path}",
            "--enable-logging=stderr", "--v=0", "--virtual-time-budget=2000",
            "--dump-dom", path.resolve().as_uri(),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, "\n".join(console)
    dom = result.stdout
    assert re.search(r'<html[^>]*class="js"', dom), "the report's script did not run"
    parsed = page(dom)
    for key in SECTIONS:
        assert parsed.text(f"tiny-{key}"), f"section {key} is empty in the browser"
    assert "within tolerance" in parsed.text("tiny-export")
