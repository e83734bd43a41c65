"""The custom import-linter contract (tools/import_contracts.py) that keeps validation free
of torch: it must see imports that run on import, and only those."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from cli_tools import ROOT

sys.path.insert(0, str(ROOT))
from tools.import_contracts import import_time_lines

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def test_import_time_lines_skip_functions_and_type_checking_blocks() -> None:
    source = textwrap.dedent("""\
        import json
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            import torch
        else:
            import pickle
        try:
            import numpy
        except ImportError:
            numpy = None

        class Config:
            import csv

            def build(self):
                import torch

        def lazy():
            import torch
        handler = lambda: __import__("torch")
        """)
    assert import_time_lines(source) == {1, 2, 6, 8, 13}


def _package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    (root / ".importlinter").write_text(
        textwrap.dedent("""\
            [importlinter]
            root_package = pkg
            include_external_packages = True
            contract_types =
                import_time_forbidden: tools.import_contracts.ImportTimeForbiddenContract

            [importlinter:contract:light]
            name = light never imports json on import
            type = import_time_forbidden
            source_modules = pkg.light
            forbidden_modules = json
            """)
    )


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(ROOT)])}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_lazy_import_keeps_the_contract(tmp_path: Path) -> None:
    _package(
        tmp_path,
        {
            "__init__.py": "",
            "light.py": "def build():\n    import json\n    return json\n",
        },
    )
    result = _lint(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_an_import_time_chain_breaks_it_through_a_package_init(tmp_path: Path) -> None:
    """`from pkg.heavy.inner import x` also runs pkg/heavy/__init__.py, which grimp alone
    does not count; the contract does."""
    _package(
        tmp_path,
        {
            "__init__.py": "",
            "light.py": "from pkg.heavy.inner import VALUE\n",
            "heavy/__init__.py": "import json\n",
            "heavy/inner.py": "VALUE = 1\n",
        },
    )
    result = _lint(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "pkg.light is not allowed to import json" in result.stdout
    assert "pkg.heavy -> json" in result.stdout


def test_the_project_keeps_its_contracts() -> None:
    result = subprocess.run(
        [str(LINT_IMPORTS)], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
