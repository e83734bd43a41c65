"""The report as one self-contained HTML file.

Images are inlined as `data:` URIs, curves are inline SVG (report/svg.py), the style and
the one small script are inline, and a Content-Security-Policy forbids everything else:
the page cannot fetch anything (no network, no other file), and no script runs but the
report's own (allowed by its hash), so even a value that escaped escaping could not run
code. Every text and attribute goes through `esc()`.

Deterministic: the same files give the same bytes (no timestamps); the git revision
says when it was made.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from torchkiln.report.collect import (
    DvcState,
    GitState,
    Image,
    PipelineData,
    Report,
    RevisionData,
    dotted,
    flatten,
)
from torchkiln.report.svg import Series, line_chart

#: The sections of each pipeline, in order: (id suffix, heading).
SECTIONS = (
    ("state", "State"),
    ("spec", "Spec"),
    ("data", "Data"),
    ("curves", "Learning curves"),
    ("metrics", "Metrics"),
    ("figures", "Figures and examples"),
    ("export", "Export"),
    ("versions", "Library versions"),
)
COMPARE = ("compare", "Comparison")
MAX_TEXT = 300
MAX_ROWS = 200

STYLE = """\
:root{--fg:#1d1d1f;--muted:#666;--line:#ddd;--bg:#fff;--soft:#f5f6f8;--bad:#b00020;
  --ok:#1b7f3b;--diff:#fff5d6}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
  background:var(--bg);margin:0}
header.top{padding:16px 24px;border-bottom:1px solid var(--line);background:var(--soft)}
header.top h1{margin:0 0 4px;font-size:22px}
main{padding:0 24px 48px;max-width:1200px}
nav.toc ul{margin:4px 0;padding-left:18px}
nav.toc li{margin:1px 0}
section.pipeline{border-top:3px solid var(--fg);margin-top:28px}
section.pipeline>h2{font-size:20px;margin:12px 0}
section.part{margin:18px 0 8px}
h3{font-size:16px;margin:18px 0 8px;border-bottom:1px solid var(--line);padding-bottom:2px}
h4{font-size:14px;margin:12px 0 6px}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid var(--line);padding:3px 8px;text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.code,code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
td.hash{font-family:ui-monospace,monospace;font-size:11px;word-break:break-all}
.muted,.note{color:var(--muted)}
.bad{color:var(--bad);font-weight:600}
.ok{color:var(--ok);font-weight:600}
tr.diff td{background:var(--diff)}
tr.default td{color:var(--muted)}
table.only-diff tr.same{display:none}
figure{display:inline-block;margin:6px 12px 12px 0;vertical-align:top}
figure img{max-width:560px;max-height:560px;border:1px solid var(--line)}
figure img.small{image-rendering:pixelated}
figcaption{font-size:12px;color:var(--muted)}
.gallery figure img{max-width:180px}
svg.chart{width:520px;max-width:100%;height:auto;border:1px solid var(--line);
  margin:4px 12px 12px 0;font-family:system-ui,sans-serif}
.charts{display:flex;flex-wrap:wrap}
details{margin:6px 0}
summary{cursor:pointer}
.no-js .js-only{display:none}
"""

SCRIPT = """\
document.documentElement.classList.replace("no-js", "js");
for (const box of document.querySelectorAll("input.only-diff")) {
  const table = document.getElementById(box.dataset.table);
  box.addEventListener("change", () => table.classList.toggle("only-diff", box.checked));
}
"""


def esc(value: Any) -> str:
    """Text (or an attribute value) made safe for HTML."""
    return escape(str(value), quote=True)


def _hash(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()


def content_security_policy() -> str:
    """Nothing may load from anywhere (images only from the page's own data: URIs), and
    only the report's own style and script apply (allowed by hash)."""
    return (
        "default-src 'none'; img-src data:; "
        f"style-src '{_hash(STYLE)}'; script-src '{_hash(SCRIPT)}'; "
        "base-uri 'none'; form-action 'none'"
    )


def render(report: Report, generator: str) -> str:
    names = [p.name for p in report.pipelines]
    title = "kiln report: " + ", ".join(names)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en" class="no-js"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{esc(content_security_policy())}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta name="generator" content="{esc(generator)}">',
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>",
        '<header class="top">',
        f"<h1>{esc(title)}</h1>",
        f'<p class="revision">{_git_line(report.git)}</p>',
        _toc(report),
        "</header><main>",
    ]
    for pipeline in report.pipelines:
        parts.append(_pipeline(pipeline, report))
    parts.append(f"</main><script>{SCRIPT}</script></body></html>\n")
    return "".join(parts)


# -- small pieces --------------------------------------------------------------------------


def fmt(value: Any) -> str:
    """A value as text: floats to 6 significant digits, containers as compact JSON."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


def _cell(value: Any, cls: str = "") -> str:
    text = fmt(value)
    if len(text) > MAX_TEXT:
        text = text[: MAX_TEXT - 1] + "\u2026"
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    classes = " ".join(c for c in (cls, "num" if numeric else "") if c)
    return f'<td class="{classes}">{esc(text)}</td>' if classes else f"<td>{esc(text)}</td>"


def _table(
    header: Sequence[str], rows: Iterable[Sequence[Any]], *, cls: str = "", id: str = ""
) -> str:
    attrs = (f' class="{esc(cls)}"' if cls else "") + (f' id="{esc(id)}"' if id else "")
    out = [f"<table{attrs}><thead><tr>"]
    out.extend(f"<th>{esc(h)}</th>" for h in header)
    out.append("</tr></thead><tbody>")
    for shown, row in enumerate(rows):
        if shown == MAX_ROWS:
            out.append(
                f'<tr><td colspan="{len(header)}" class="note">(more rows not shown)</td></tr>'
            )
            break
        out.append("<tr>" + "".join(_cell(v) for v in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _kv(data: dict[str, Any], header: tuple[str, str] = ("key", "value")) -> str:
    return _table(header, data.items())


def _note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def _img(image: Image, caption: str, alt: str = "") -> str:
    """An inlined image; a small one (a few pixels a side) is scaled up, pixels kept sharp."""
    data = base64.b64encode(image.data).decode("ascii")
    size = ""
    if image.size is not None and max(image.size) < 128:
        scale = max(1, 192 // max(image.size))
        size = f' class="small" width="{image.size[0] * scale}" height="{image.size[1] * scale}"'
    return (
        f'<figure><img src="data:{esc(image.mime)};base64,{data}"{size} '
        f'alt="{esc(alt or caption)}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def _git_line(git: GitState) -> str:
    if not git.repository or git.head is None:
        return f'revision: <span class="muted">{esc(git.note)}</span>'
    branch = f" on {esc(git.branch)}" if git.branch else ""
    state = (
        f'<span class="bad">dirty</span> ({len(git.changed)} tracked file(s) changed)'
        if git.dirty
        else '<span class="ok">clean</span>'
    )
    return f"revision <code>{esc(git.head)}</code>{branch}, {state}"


def _toc(report: Report) -> str:
    out = ['<nav class="toc"><ul>']
    for p in report.pipelines:
        sections = list(SECTIONS) + ([COMPARE] if p.name in report.comparisons else [])
        links = " \u00b7 ".join(
            f'<a href="#{esc(p.name)}-{key}">{esc(title)}</a>' for key, title in sections
        )
        out.append(f'<li><a href="#{esc(p.name)}"><b>{esc(p.name)}</b></a>: {links}</li>')
    out.append("</ul></nav>")
    return "".join(out)


def _section(pipeline: str, key: str, title: str, body: str) -> str:
    return (
        f'<section class="part" id="{esc(pipeline)}-{esc(key)}" data-section="{esc(key)}">'
        f"<h3>{esc(title)}</h3>{body}</section>"
    )


# -- one pipeline ----------------------------------------------------------------------------


def _pipeline(p: PipelineData, report: Report) -> str:
    bodies = {
        "state": _state(p, report.git, report.dvc),
        "spec": _spec(p),
        "data": _data(p),
        "curves": _curves(p),
        "metrics": _metrics(p),
        "figures": _figures(p),
        "export": _export(p),
        "versions": _versions(p),
    }
    out = [
        f'<section class="pipeline" id="{esc(p.name)}" data-pipeline="{esc(p.name)}">',
        f'<h2>{esc(p.name)} <span class="muted">({esc(p.task)}, {esc(p.spec_file)})</span></h2>',
    ]
    out.extend(_section(p.name, key, title, bodies[key]) for key, title in SECTIONS)
    if p.name in report.comparisons:
        out.append(_section(p.name, *COMPARE, _compare(p.name, report.comparisons[p.name])))
    out.append("</section>")
    return "".join(out)


def _state(p: PipelineData, git: GitState, dvc: DvcState) -> str:
    out = [f"<p>{_git_line(git)}</p>"]
    if git.dirty:
        mine = [f for f in git.changed if f == p.spec_file or f.startswith(f"runs/{p.name}/")]
        if mine:
            out.append(_note("changed since the commit: " + ", ".join(mine[:20])))
    if not dvc.available:
        out.append(_note(f"DVC: {dvc.note}"))
        return "".join(out)
    rows = []
    for stage in p.stages:
        if stage.dvc_name in dvc.missing:
            rows.append((stage.name, stage.dvc_name, "not in dvc.yaml (run kiln dvc)"))
            continue
        changes = dvc.changes.get(stage.dvc_name)
        rows.append(
            (stage.name, stage.dvc_name, "up to date" if not changes else _changes(changes))
        )
    table = _table(("stage", "DVC stage", "dvc status"), rows)
    up = sum(1 for r in rows if r[2] == "up to date")
    out.append(f"<p>{up} of {len(rows)} stage(s) up to date (<code>dvc status</code>)</p>{table}")
    return "".join(out)


def _changes(entries: list[Any]) -> str:
    """dvc status entries as one line: `changed deps: pipelines/x.yaml (stages.train: modified)`."""
    parts = []
    for entry in entries:
        if isinstance(entry, dict):
            for what, detail in entry.items():
                if isinstance(detail, dict):
                    items = ", ".join(f"{k} ({_changes_detail(v)})" for k, v in detail.items())
                    parts.append(f"{what}: {items}")
                else:
                    parts.append(f"{what}: {fmt(detail)}")
        else:
            parts.append(str(entry))
    return "; ".join(parts)


def _changes_detail(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {fmt(v)}" for k, v in value.items())
    return fmt(value)


def _spec(p: PipelineData) -> str:
    written = sum(1 for r in p.spec if r.origin != "default")
    rows = [
        f'<tr class="{"default" if r.origin == "default" else "written"}">'
        f"<td>{esc(r.path)}</td>{_cell(r.value)}<td>{esc(r.origin)}</td></tr>"
        for r in p.spec
    ]
    return (
        f"<details open><summary>The validated spec, every default filled in: {written} of "
        f"{len(rows)} value(s) written in the file, the rest (greyed) from the schema."
        '</summary><table class="spec"><thead><tr><th>key</th><th>value</th><th>from</th>'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table></details>"
    )


def _data(p: PipelineData) -> str:
    out = []
    for stage in p.stages:
        meta = stage.dataset
        if meta is None:
            continue
        info = meta.get("info") if isinstance(meta.get("info"), dict) else {}
        out.append(f'<h4>{esc(stage.name)} <span class="muted">{esc(stage.root)}/out</span></h4>')
        counts = info.get("counts")
        if isinstance(counts, dict) and counts:
            total = sum(v for v in counts.values() if isinstance(v, int))
            out.append(_table(("split", "examples"), [*counts.items(), ("total", total)]))
        classes = info.get("classes")
        extra = info.get("extra") if isinstance(info.get("extra"), dict) else {}
        if isinstance(classes, list) and classes:
            columns = {
                k.removesuffix("_class_counts"): v
                for k, v in sorted(extra.items())
                if k.endswith("class_counts") and isinstance(v, list) and len(v) == len(classes)
            }
            header = ("class", *(f"{k} examples" for k in columns))
            rows = [(c, *(v[i] for v in columns.values())) for i, c in enumerate(classes)]
            out.append(_table(header, rows))
        facts = {
            k: info[k] for k in ("modality", "task", "input_shape", "mean", "std") if k in info
        }
        facts.update({"format": meta.get("format")})
        facts.update(
            {f"extra.{k}": v for k, v in sorted(extra.items()) if not k.endswith("class_counts")}
        )
        source = meta.get("source")
        if isinstance(source, dict):
            facts.update({f"source.{dotted(loc)}": v for loc, v in flatten(source) if loc})
        out.append(_kv(facts))
    for stage in p.stages:
        if stage.preview is not None:
            out.append(
                _img(
                    stage.preview,
                    f"{stage.name}: augmented training samples ({stage.preview.path})",
                )
            )
    if not out:
        return _note(
            "no dataset artifact on disk (out/meta.json of the data stage): "
            "run `dvc repro` (or `dvc pull`)"
        )
    return "".join(out)


def curve_groups(history: list[dict[str, Any]]) -> tuple[str, dict[str, list[str]]]:
    """(x key, {group: keys}): keys that differ only by a train_/val_ (or GAN d_/g_)
    prefix or a _d/_g suffix share a chart (train_loss with val_loss, lr_d with lr_g)."""
    keys: list[str] = []
    for record in history:
        for k, v in record.items():
            if k not in keys and isinstance(v, (int, float)) and not isinstance(v, bool):
                keys.append(k)
    x_key = "epoch" if "epoch" in keys else ""
    groups: dict[str, list[str]] = {}
    for k in keys:
        if k == x_key:
            continue
        group = k
        for prefix in ("train_", "val_", "test_", "d_", "g_"):
            if group.startswith(prefix) and len(group) > len(prefix):
                group = group[len(prefix) :]
                break
        for suffix in ("_d", "_g"):
            if group.endswith(suffix) and len(group) > len(suffix):
                group = group[: -len(suffix)]
        groups.setdefault(group, []).append(k)
    # losses first, learning rates last, the rest as they come
    order = sorted(groups, key=lambda g: 0 if "loss" in g else 2 if g.startswith("lr") else 1)
    return x_key, {g: groups[g] for g in order}


def _points(
    history: list[dict[str, Any]], x_key: str, key: str
) -> list[tuple[float, float | None]]:
    points = []
    for i, record in enumerate(history):
        x = record.get(x_key) if x_key else i + 1
        if not isinstance(x, (int, float)) or isinstance(x, bool):
            x = i + 1
        y = record.get(key)
        ok = isinstance(y, (int, float)) and not isinstance(y, bool)
        points.append((float(x), float(y) if ok else None))
    return points


def _curves(p: PipelineData) -> str:
    out = []
    for stage in p.stages:
        if not stage.history:
            continue
        x_key, groups = curve_groups(stage.history)
        out.append(
            f'<h4>{esc(stage.name)} <span class="muted">{esc(stage.root)}/plots/history.json, '
            f'{len(stage.history)} epoch(s)</span></h4><div class="charts">'
        )
        for group, keys in groups.items():
            series = [
                Series(k, _points(stage.history, x_key, k), colour=i) for i, k in enumerate(keys)
            ]
            out.append(
                line_chart(series, title=f"{stage.name}: {group}", x_label=x_key or "record")
            )
        out.append("</div>")
    return "".join(out) or _note("no learning curves on disk (plots/history.json of a train stage)")


def metrics_tables(data: dict[str, Any], path: str = "") -> str:
    """Nested metrics as tables: plain values as key/value rows; sibling mappings of plain
    values side by side (a model beside its baselines: one column each); deeper mappings
    under their own heading; lists of records as tables."""
    scalars: dict[str, Any] = {}
    leaves: dict[str, dict[str, Any]] = {}
    nested: dict[str, dict[str, Any]] = {}
    records: dict[str, list[dict[str, Any]]] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            if all(not isinstance(v, dict) for v in value.values()):
                leaves[key] = value
            else:
                nested[key] = value
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            records[key] = value
        else:
            scalars[key] = value
    out = []
    if path:
        out.append(f"<h4>{esc(path)}</h4>")
    if scalars:
        out.append(_kv(scalars, ("metric", "value")))
    if len(leaves) > 1:
        columns = sorted(leaves, key=lambda c: c != "model")  # the model, then its baselines
        names: list[str] = []
        for values in leaves.values():
            names.extend(k for k in values if k not in names)
        rows = [(n, *(leaves[c].get(n, "") for c in columns)) for n in names]
        out.append(_table(("metric", *columns), rows, cls="side-by-side"))
    elif leaves:
        ((key, values),) = leaves.items()
        out.append(f"<h4>{esc(f'{path}.{key}' if path else key)}</h4>")
        out.append(_kv(values, ("metric", "value")))
    for key, value in nested.items():
        out.append(metrics_tables(value, f"{path}.{key}" if path else key))
    for key, rows in records.items():
        header: list[str] = []
        for row in rows:
            header.extend(k for k in row if k not in header)
        out.append(f"<h4>{esc(f'{path}.{key}' if path else key)}</h4>")
        out.append(_table(header, [[row.get(h, "") for h in header] for row in rows]))
    return "".join(out)


def _metrics(p: PipelineData) -> str:
    out = []
    for stage in p.stages:
        if stage.metrics is None:
            continue
        out.append(
            f'<div class="stage-metrics" data-stage="{esc(stage.name)}"><h4>{esc(stage.name)} '
            f'<span class="muted">{esc(stage.root)}/metrics.json</span></h4>'
            + metrics_tables(stage.metrics)
            + "</div>"
        )
    return "".join(out) or _note("no metrics on disk (metrics.json): run `dvc repro`")


def _figures(p: PipelineData) -> str:
    out = []
    for stage in p.stages:
        if not (stage.figures or stage.galleries or stage.misclassified is not None):
            continue
        out.append(f'<h4>{esc(stage.name)} <span class="muted">{esc(stage.root)}/plots</span></h4>')
        for image in stage.figures:
            out.append(_img(image, image.path, alt=f"{stage.name}: {image.name}"))
        for gallery in stage.galleries:
            shown = len(gallery.images)
            note = (
                f"{shown} of {gallery.total}, evenly spaced"
                if shown < gallery.total
                else str(shown)
            )
            out.append(
                f'<details class="gallery"><summary>{esc(gallery.folder)} ({esc(note)})</summary>'
            )
            out.extend(_img(i, i.name) for i in gallery.images)
            out.append("</details>")
        for path in stage.skipped:
            out.append(_note(f"{path}: not shown (not a PNG/JPEG/GIF, or over 4 MB)"))
        if stage.misclassified is not None:
            rows = stage.misclassified
            header: list[str] = []
            for row in rows:
                header.extend(k for k in row if k not in header)
            out.append(
                f'<h4>misclassified examples <span class="muted">{esc(stage.root)}/out/'
                f"misclassified.jsonl: {len(rows)} of {stage.misclassified_total}</span></h4>"
            )
            out.append(
                _table(header, [[row.get(h, "") for h in header] for row in rows], cls="examples")
                if rows
                else _note("none: every example was classified correctly")
            )
    return "".join(out) or _note("no figures on disk (plots/*.png of evaluate or train stages)")


DIGESTS = ("spec_sha256", "data_sha256", "weights_sha256")


def _export(p: PipelineData) -> str:
    out = []
    for stage in p.stages:
        card = stage.card
        if card is None:
            continue
        out.append(
            f'<h4>{esc(stage.name)} <span class="muted">{esc(stage.root)}/out/model_card.json'
            "</span></h4>"
        )
        files = card.get("files") if isinstance(card.get("files"), list) else []
        rows = []
        for f in files:
            if not isinstance(f, dict):
                continue
            diff, tol = f.get("max_abs_diff"), f.get("tolerance")
            parity = ""
            if isinstance(diff, (int, float)) and isinstance(tol, (int, float)):
                parity = "within tolerance" if diff <= tol else "OVER TOLERANCE"
            row = [f.get(k, "") for k in ("file", "format", "bytes", "max_abs_diff", "tolerance")]
            rows.append((*row, parity, f.get("sha256", "")))
        if rows:
            check = card.get("check") if isinstance(card.get("check"), dict) else {}
            against = (
                f" on {check.get('examples')} {check.get('split')} example(s)" if check else ""
            )
            out.append(f"<p>Each exported file against the eager model{esc(against)}:</p>")
            out.append(
                _table(
                    ("file", "format", "bytes", "max |diff|", "tolerance", "parity", "sha256"),
                    rows,
                    cls="parity",
                )
            )
        digests = {k: card[k] for k in DIGESTS if k in card}
        facts = {k: card[k] for k in ("pipeline", "task") if k in card}
        if isinstance(card.get("training"), dict):
            facts.update({f"training.{k}": v for k, v in card["training"].items()})
        out.append(_kv({**facts, **digests}))
        warnings = card.get("warnings")
        if isinstance(warnings, list) and warnings:
            out.append(
                "<ul>" + "".join(f'<li class="bad">{esc(w)}</li>' for w in warnings) + "</ul>"
            )
    if out:
        return "".join(out)
    exports = [f"{s.root}/out/model_card.json" for s in p.stages if "export" in s.kind]
    return _note(
        "no model card on disk ("
        + (", ".join(exports) or "no export stage")
        + "): run `dvc repro` or `dvc pull`; the export stage's parity figures, if any, "
        "are under Metrics"
    )


def _versions(p: PipelineData) -> str:
    return _note(f"libraries {p.versions_source}") + _kv(p.versions, ("library", "version"))


# -- comparing revisions ---------------------------------------------------------------------


def _column(r: RevisionData) -> str:
    rev = r.revision
    if rev.kind == "workspace":
        return "workspace"
    return f"{rev.label} ({rev.sha[:7]})" if rev.label != rev.sha else rev.sha[:10]


def _compare_table(
    table_id: str, runs: list[RevisionData], values: list[dict[str, Any] | None], what: str
) -> str:
    keys: list[str] = []
    for v in values:
        keys.extend(k for k in (v or {}) if k not in keys)
    out = [
        f'<p class="js-only"><label><input type="checkbox" class="only-diff" '
        f'data-table="{esc(table_id)}"> only the {esc(what)} that differ</label></p>',
        f'<table class="compare" id="{esc(table_id)}"><thead><tr><th>{esc(what)}</th>',
    ]
    out.extend(f"<th>{esc(_column(r))}</th>" for r in runs)
    out.append("</tr></thead><tbody>")
    missing = object()
    for key in keys:
        cells = [missing if v is None else v.get(key, missing) for v in values]
        texts = {fmt(c) for c in cells if c is not missing}
        same = len(texts) <= 1 and all(c is not missing for c in cells)
        out.append(f'<tr class="{"same" if same else "diff"}"><th>{esc(key)}</th>')
        out.extend('<td class="muted">\u2014</td>' if c is missing else _cell(c) for c in cells)
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _compare(name: str, runs: list[RevisionData]) -> str:
    out = [
        _table(
            ("column", "revision", "commit"),
            [(_column(r), r.revision.kind, r.revision.sha or "(none)") for r in runs],
            cls="revisions",
        ),
        '<h4>Params <span class="muted">(the spec as written at each revision)</span></h4>',
    ]
    absent = [_column(r) for r in runs if r.params is None]
    if absent:
        out.append(_note("no spec at: " + ", ".join(absent)))
    out.append(_compare_table(f"{name}-params", runs, [r.params for r in runs], "params"))
    out.append('<h4>Metrics <span class="muted">(metrics.json of each stage)</span></h4>')
    out.append(_compare_table(f"{name}-metrics", runs, [r.metrics for r in runs], "metrics"))
    stages: list[str] = []
    for r in runs:
        stages.extend(s for s in r.histories if s not in stages)
    for stage in stages:
        out.append(f'<h4>Learning curves: {esc(stage)}</h4><div class="charts">')
        merged: dict[str, list[str]] = {}
        x_key = ""
        for r in runs:
            history = r.histories.get(stage)
            if history:
                x, groups = curve_groups(history)
                x_key = x_key or x
                for group, keys in groups.items():
                    merged.setdefault(group, [])
                    merged[group].extend(k for k in keys if k not in merged[group])
        for group, keys in merged.items():
            series = []
            for colour, r in enumerate(runs):
                history = r.histories.get(stage)
                if not history:
                    continue
                x, _ = curve_groups(history)
                for dash, k in enumerate(keys):
                    if any(k in rec for rec in history):
                        series.append(
                            Series(f"{_column(r)}: {k}", _points(history, x, k), colour, dash)
                        )
            out.append(line_chart(series, title=f"{stage}: {group}", x_label=x_key or "record"))
        out.append("</div>")
    return "".join(out)
