"""Per-module table of the last mutmut results (the table in docs/testing.md).

mutmut 3 stores one verdict per mutant in ``mutants/<source path>.meta`` (JSON,
``exit_code_by_key``: mutant name -> pytest exit code, ``null`` until the mutant ran). This
script reads those files and prints, per mutated module, the mutants, how many the tests killed,
how many survived, how many are listed as equivalent in docs/testing.md (a line starting with
``- `<mutant name>` ``), and the kill rate over the non-equivalent mutants that ran.

Usage (after ``mutmut run ...`` from the repository root)::

    python benchmarks/mutmut_table.py                   # every module that has a result
    python benchmarks/mutmut_table.py freetickets.metrics  # modules whose name starts with this

Modules whose mutants have not run yet are left out (they are "not run", not "0 % killed").
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants" / "src"
DOC = ROOT / "docs" / "testing.md"

#: mutmut's exit codes (mutmut/stats.py): 1 and 3 kill, 0 survives, 33/5 no test reached the
#: function, 24/36/152/255/-24 time out (counted as killed by mutmut's own summary too).
KILLED = {1, 3}
SURVIVED = {0}
NO_TESTS = {5, 33}
TIMEOUT = {24, 36, 152, 255, -24}


def equivalent_mutants(doc: Path = DOC) -> set[str]:
    """Mutant names listed as equivalent in docs/testing.md (``- `name` reason``)."""
    if not doc.is_file():
        return set()
    return set(re.findall(r"^- `(freetickets\.[\w.]+__mutmut_\d+)`", doc.read_text(), flags=re.M))


def module_rows(prefix: str = "") -> list[dict]:
    equivalent = equivalent_mutants()
    rows = []
    for meta in sorted(MUTANTS.rglob("*.py.meta")):
        module = ".".join(meta.relative_to(MUTANTS).with_suffix("").with_suffix("").parts)
        if not module.startswith(prefix):
            continue
        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        if not codes or all(c is None for c in codes.values()):
            continue
        eq = {k for k in codes if k in equivalent}
        ran = {k: c for k, c in codes.items() if c is not None}
        killed = sum(c in KILLED or c in TIMEOUT for c in ran.values())
        survived = sum(c in SURVIVED and k not in eq for k, c in ran.items())
        rows.append({"module": module, "mutants": len(codes), "ran": len(ran), "killed": killed,
                     "survived": survived, "equivalent": len(eq),
                     "no_tests": sum(c in NO_TESTS for c in ran.values()),
                     "rate": killed / max(1, len(ran) - len(eq))})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prefix", nargs="?", default="", help="only modules whose dotted name starts with this")
    args = ap.parse_args(argv)
    rows = module_rows(args.prefix)
    print("| Module | Mutants | Ran | Killed | Survived | Equivalent | No test | Killed % |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| `{r['module']}` | {r['mutants']} | {r['ran']} | {r['killed']} | {r['survived']} | "
              f"{r['equivalent']} | {r['no_tests']} | {100 * r['rate']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
