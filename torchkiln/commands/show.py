"""`kiln show SPEC [--json]`: the spec as torchkiln runs it, merged through `extends:` and
with every default filled in, each value beside where it came from (file:line:col, or
"default")."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from torchkiln.commands import AddCommand

#: the column the origins are aligned at (longer lines put theirs one space after)
COLUMN = 56


def register(add: AddCommand) -> None:
    p = add(
        "show",
        run,
        "Print a spec merged through `extends:`, defaults included, with each value's origin.",
    )
    p.add_argument("spec", metavar="SPEC", help="the pipeline spec, e.g. pipelines/mnist_cnn.yaml")
    p.add_argument(
        "--json",
        action="store_true",
        help="a JSON object for tools: the merged spec and each value's origin by path",
    )


def _scalar(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def lines(value: Any, doc: Any, loc: tuple[str | int, ...] = (), indent: str = "") -> list[str]:
    """YAML-like lines, each leaf with its origin as a comment."""
    from torchkiln.schemas.view import leaf, origin, origin_text

    out: list[str] = []
    items: list[tuple[str, str | int, Any]]
    if isinstance(value, dict):
        items = [(f"{indent}{k}:", k, v) for k, v in value.items()]
    else:
        items = [(f"{indent}-", i, v) for i, v in enumerate(value)]
    for head, key, child in items:
        at = (*loc, key)
        if leaf(child):
            text = f"{head} {_scalar(child)}"
            pad = " " * max(1, COLUMN - len(text))
            out.append(f"{text}{pad}# {origin_text(origin(doc, at))}")
        else:
            out.append(head)
            out += lines(child, doc, at, indent + "  ")
    return out


def run(args: argparse.Namespace) -> int:
    from torchkiln.schemas.spec import load_pipeline
    from torchkiln.schemas.view import leaves, resolved

    pipeline = load_pipeline(Path(args.spec))
    spec = resolved(pipeline)
    if args.json:
        files = [s.file for s in pipeline.sources()]
        print(
            json.dumps(
                {
                    "file": pipeline.file,
                    "files": files,
                    "spec": spec,
                    "values": leaves(spec, pipeline.doc),
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return 0
    files = ", ".join(s.file for s in pipeline.sources()[1:])
    print(f"# {pipeline.file}" + (f", merged with {files}" if files else ""))
    print("# each value's origin is on its right: file:line:col, or default")
    print("\n".join(lines(spec, pipeline.doc)))
    return 0
