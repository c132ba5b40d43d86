"""The recipes sit below the training loop: the loop imports them, they never import it.

``freetickets.train`` asks the recipe registry what a method does; a recipe that imported the loop back
(even inside a function) would make the two packages one tangle. Checked on the source (every import
statement, module level or local) and on a fresh interpreter (importing the recipes loads no module of
the training package).
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import freetickets.methods

METHODS_DIR = Path(freetickets.methods.__file__).parent


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
            out += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return out


def test_no_recipe_imports_the_training_package():
    offending = [f"{path.name}:{line} imports {name}"
                 for path in sorted(METHODS_DIR.glob("*.py"))
                 for line, name in _imported_modules(path)
                 if name == "freetickets.train" or name.startswith("freetickets.train.")]
    assert offending == []


def test_the_check_sees_local_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from freetickets.train.rundir import RunDir\n")
    assert (2, "freetickets.train.rundir") in _imported_modules(probe)


def test_importing_every_recipe_loads_nothing_of_the_loop():
    code = ("import sys, freetickets.methods as m; m.get_recipe('pf'); "
            "print(sorted(k for k in sys.modules if k == 'freetickets.train' or k.startswith('freetickets.train.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
