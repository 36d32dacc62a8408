"""The packages split by module (learning/cycles/, simulator/) keep the shape they were split
for: short functions, and a simulator that runs without Django."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 60


def long_functions(package: Path) -> list[str]:
    """``path:line name (n lines)`` of every function or method longer than the limit."""
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines})")
    return found


@pytest.mark.parametrize("package", ["learning/cycles", "simulator"])
def test_no_function_is_longer_than_sixty_lines(package):
    """A function that needs a table of contents is several functions."""
    assert (ROOT / package / "__init__.py").exists()
    assert long_functions(ROOT / package) == []


def test_the_simulator_imports_no_django():
    """``python -m simulator`` runs standalone: none of its modules pulls in Django."""
    modules = [f"simulator.{p.stem}" for p in (ROOT / "simulator").glob("*.py")]
    check = (
        "import importlib, sys\n"
        f"for name in {sorted(modules)!r}: importlib.import_module(name)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith('django')}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
