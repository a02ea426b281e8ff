"""Layering rules: the engine never imports Textual, and `--help` never imports torch."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_never_imports_textual():
    offenders = [str(p) for p in (ROOT / "core").rglob("*.py") if "textual" in _imports(p)]
    assert offenders == []


def test_core_never_imports_screens_or_workbench():
    offenders = [str(p) for p in (ROOT / "core").rglob("*.py") if _imports(p) & {"screens", "workbench"}]
    assert offenders == []


def test_help_does_not_import_torch():
    code = "import sys, workbench.cli as c\ntry:\n    c.app(['--help'])\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
