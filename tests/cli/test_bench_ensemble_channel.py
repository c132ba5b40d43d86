"""benchmarks/ensemble.py --structure channel end to end at tiny settings: one row per case and batch,
the route the packing rule took, every ratio a positive number (no timing is asserted)."""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

_ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("bench_ensemble", _ROOT / "benchmarks" / "ensemble.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("case,routes", [("mlp", ("graph", "graph")), ("cnn1d", ("graph", "folded"))])
def test_channel_table_rows(case, routes, capsys):
    bench = _load()
    args = argparse.Namespace(cases=[case], members=2, sparsity=0.8, distribution="erk", batches=[1, 9], rounds=1)
    bench.channel_main(args, torch.device("cpu"))
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("case | batch | dense eager ms")
    rows = [line.split(" | ") for line in lines[1:]]
    assert [(r[0], r[1], r[4]) for r in rows] == [(case, "1", routes[0]), (case, "9", routes[1])]
    for r in rows:
        numbers = [float(r[i]) for i in (2, 3, 5, 6, 8, 9)]
        assert all(v > 0 for v in numbers)
        assert 0.3 < float(r[6]) < 1.0  # two members at S = 0.8 cost less than one dense model
