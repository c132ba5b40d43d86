"""Channel-structured tickets against unstructured ones (issue 22, item 6), in the demo's regime.

    python benchmarks/structure.py --seeds 5 --out structure_out [--quick]

Per seed (0, 100, 200, ... as the demo) trains with the demo's presets and regime: one dense
model, the dense deep ensemble, the unstructured EDST ensemble, and the EDST and DST ensembles
with ``structure: channel`` (same presets, only the structure changed). Evaluates the test split
(accuracy, NLL, ECE; no OoD, no corruptions), and decides paired claims over the seeds with
:func:`freetickets.metrics.claims.claim` (mean difference, two-sided 95% Student-t interval,
verdict). Writes ``OUT/structure.json`` and prints two markdown tables (per method mean ± std;
paired differences). Exit status 0 whatever the verdicts: it measures, it does not gate.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

from freetickets.demo import demo_config
from freetickets.evaluation import evaluate_run
from freetickets.metrics.claims import claim
from freetickets.train import train
from freetickets.train.config import validate
from freetickets.utils.io import atomic_write_text

#: name -> (demo method, structure)
METHODS = {
    "dense": ("dense", None),
    "deep": ("deep", None),
    "edst": ("edst", None),
    "edst-channel": ("edst", "channel"),
    "dst-channel": ("dst", "channel"),
}

#: (a, b): the claim "a - b" for accuracy (higher is better) and NLL (lower is better)
PAIRS = [("edst-channel", "edst"), ("edst-channel", "dense"), ("edst-channel", "deep"),
         ("dst-channel", "dense"), ("dst-channel", "deep"), ("edst-channel", "dst-channel")]


def _config(name: str, seed: int, quick: bool, device: str):
    method, structure = METHODS[name]
    cfg = demo_config(method, seed, quick=quick, device=device)
    return validate(dataclasses.replace(cfg, structure=structure)) if structure else cfg


def run(out: Path, seeds: int, quick: bool, device: str) -> dict:
    """``{"per_seed": {name: [per-seed dict]}, "claims": [...]}``."""
    per: dict[str, list[dict]] = {name: [] for name in METHODS}
    for s in range(seeds):
        for name in METHODS:
            run_dir = out / f"seed{s}" / name
            t0 = time.time()
            train(_config(name, 100 * s, quick, device), run_dir, overwrite=True)
            res = evaluate_run(run_dir, ood=["none"], corruptions=None, device=device)
            row = {"accuracy": res["ensemble"]["accuracy"], "nll": res["ensemble"]["nll"],
                   "ece": res["ensemble"]["ece"], "train_flops": res["cost"]["train_flops"],
                   "inference_flops": res["cost"]["inference_flops"], "sparsity": res["cost"]["sparsity"]}
            per[name].append(row)
            print(f"[seed {s}] {name:<13} accuracy {100 * row['accuracy']:.2f}%  NLL {row['nll']:.4f}  "
                  f"({time.time() - t0:.0f} s)", flush=True)
        dense = per["dense"][-1]
        for name in METHODS:
            per[name][-1]["train_flops_vs_dense"] = per[name][-1]["train_flops"] / dense["train_flops"]
            per[name][-1]["inference_flops_vs_dense"] = per[name][-1]["inference_flops"] / dense["inference_flops"]
    claims = []
    for a, b in PAIRS:
        claims.append(claim(f"{a} - {b}, accuracy (pp)", [100 * r["accuracy"] for r in per[a]],
                            [100 * r["accuracy"] for r in per[b]]))
        claims.append(claim(f"{a} - {b}, NLL", [r["nll"] for r in per[a]], [r["nll"] for r in per[b]],
                            higher_is_better=False))
    return {"seeds": seeds, "quick": quick, "per_seed": per, "claims": claims}


def _ms(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    mean = statistics.fmean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def tables(result: dict) -> str:
    lines = ["| method | accuracy (%) | NLL | ECE | train FLOPs (× dense) | inference FLOPs (× dense) |",
             "|---|---|---|---|---|---|"]
    for name, rows in result["per_seed"].items():
        lines.append(f"| {name} | {_ms([r['accuracy'] for r in rows], 100)} | {_ms([r['nll'] for r in rows], 1, 3)} "
                     f"| {_ms([r['ece'] for r in rows], 1, 3)} | {statistics.fmean(r['train_flops_vs_dense'] for r in rows):.2f} "
                     f"| {statistics.fmean(r['inference_flops_vs_dense'] for r in rows):.2f} |")
    lines += ["", "| paired difference | mean | 95% interval | verdict |", "|---|---|---|---|"]
    for c in result["claims"]:
        lo, hi = c["interval"]
        interval = "unbounded" if lo is None else f"[{lo:+.3f}, {hi:+.3f}]"
        lines.append(f"| {c['name']} | {c['difference']:+.3f} | {interval} | {c['verdict']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="channel-structured vs unstructured sparse ensembles on MNIST-1D")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--out", default="structure_out")
    p.add_argument("--quick", action="store_true", help="the demo's smoke settings (not meaningful numbers)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if args.seeds < 2:
        p.error("--seeds: at least 2 (one seed gives no interval)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = run(out, args.seeds, args.quick, args.device)
    atomic_write_text(out / "structure.json", json.dumps(result, indent=2))
    print()
    print(tables(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
