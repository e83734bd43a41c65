"""An import-linter contract about import time: what importing a module loads.

import-linter's own contracts see every import statement, including those inside
functions. torchkiln's light modules import torch only inside `build()` or `run()`, so
that validating a spec never pays for it; that is a rule about what `import module`
executes. `import_time_forbidden` is the `forbidden` contract over that graph:

- imports inside functions (and lambdas) are left out: they run when called, not on import;
- imports under `if TYPE_CHECKING:` are left out: they never run;
- everything else at module level counts, in class bodies, `try:` and `if` blocks too;
- importing `a.b.c` also runs `a/__init__.py` and `a/b/__init__.py`, so those edges are added
  (grimp records only the module named).

Configured in pyproject.toml as `[tool.importlinter] contract_types`.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from grimp import ImportGraph
from importlinter.contracts.forbidden import ForbiddenContract
from importlinter.domain.contract import ContractCheck


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_time_lines(source: str, filename: str = "<module>") -> set[int]:
    """Line numbers of the import statements that run when the module is imported."""
    lines: set[int] = set()

    def visit(nodes: Iterable[ast.AST]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                lines.add(node.lineno)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue
            elif isinstance(node, ast.If) and _is_type_checking(node.test):
                visit(node.orelse)
            else:
                visit(ast.iter_child_nodes(node))

    visit(ast.parse(source, filename).body)
    return lines


@cache
def _package_dir(root_package: str) -> Path:
    spec = importlib.util.find_spec(root_package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"cannot find package {root_package!r}")
    return Path(next(iter(spec.submodule_search_locations)))


def module_file(module: str) -> Path | None:
    """The source file of an internal module, found without importing anything."""
    root, *rest = module.split(".")
    base = _package_dir(root).joinpath(*rest)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def keep_import_time_edges(graph: ImportGraph, root_packages: Iterable[str]) -> None:
    """Reduce `graph` (in place) to the imports that run when each module is imported."""
    roots = tuple(root_packages)
    internal = [m for m in graph.modules if m.split(".")[0] in roots]
    for importer in sorted(internal):
        path = module_file(importer)
        if path is None:
            continue
        lines = import_time_lines(path.read_text(encoding="utf-8"), str(path))
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            details = graph.get_import_details(importer=importer, imported=imported)
            if not any(d["line_number"] in lines for d in details):
                graph.remove_import(importer=importer, imported=imported)
                continue
            parts = imported.split(".")
            for i in range(1, len(parts)):
                parent = ".".join(parts[:i])
                if parent in graph.modules and parent != importer:
                    graph.add_import(
                        importer=importer,
                        imported=parent,
                        line_number=details[0]["line_number"],
                        line_contents=f"(runs {parent}/__init__.py) {details[0]['line_contents']}",
                    )


class ImportTimeForbiddenContract(ForbiddenContract):
    """`forbidden`, counting only the imports that run when a module is imported."""

    type_name = "import_time_forbidden"

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        keep_import_time_edges(graph, self.session_options["root_packages"])
        return super().check(graph, verbose)
