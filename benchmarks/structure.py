"""Channel-structured tickets against unstructured ones (issue 22, item 6), in the demo's regime.

    python benchmarks/structure.py --seeds 5 --out structure_out [--quick]
    # or split over processes: --only 0 1 2 & --only 3 4, then the plain command summarises

Per seed (0, 100, 200, ... as the demo) trains with the demo's presets and regime: one dense
model, the dense deep ensemble, the unstructured EDST ensemble, and the EDST and DST ensembles
with ``structure: channel`` (same presets; only the structure changed, and the prune fraction, see
``CHANNEL_PRUNE_FRACTION``), plus ``static`` with channel structure (the same slim
architecture with channels that never move). Evaluates the test split
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
    "static-channel": ("static", "channel"),  # the same slim architecture, channels never move
}

#: (a, b): the claim "a - b" for accuracy (higher is better) and NLL (lower is better)
PAIRS = [("edst-channel", "edst"), ("edst-channel", "dense"), ("edst-channel", "deep"),
         ("dst-channel", "dense"), ("dst-channel", "deep"), ("edst-channel", "dst-channel"),
         ("edst-channel", "static-channel")]


#: prune fraction of the channel runs (the presets' 0.5 moves half the channels every update;
#: 0.1 was best of 0.05 / 0.1 / 0.2 / 0.5 on the validation split of seed 0, docs/benchmarks.md)
CHANNEL_PRUNE_FRACTION = 0.1


def _config(name: str, seed: int, quick: bool, device: str):
    method, structure = METHODS[name]
    cfg = demo_config(method, seed, quick=quick, device=device)
    if structure is None:
        return cfg
    return validate(dataclasses.replace(cfg, structure=structure, prune_fraction=CHANNEL_PRUNE_FRACTION))


def run_seed(out: Path, s: int, quick: bool, device: str) -> None:
    """Train and evaluate every method for seed index ``s`` (seed ``100 * s``); one JSON row per
    method in ``OUT/seed{s}/NAME.json`` (so seeds may run in parallel processes)."""
    rows: dict[str, dict] = {}
    for name in METHODS:
        run_dir = out / f"seed{s}" / name
        t0 = time.time()
        train(_config(name, 100 * s, quick, device), run_dir, overwrite=True)
        res = evaluate_run(run_dir, ood=["none"], corruptions=None, device=device)
        rows[name] = {"accuracy": res["ensemble"]["accuracy"], "nll": res["ensemble"]["nll"],
                      "ece": res["ensemble"]["ece"], "train_flops": res["cost"]["train_flops"],
                      "inference_flops": res["cost"]["inference_flops"], "sparsity": res["cost"]["sparsity"]}
        print(f"[seed {s}] {name:<14} accuracy {100 * rows[name]['accuracy']:.2f}%  NLL {rows[name]['nll']:.4f}  "
              f"({time.time() - t0:.0f} s)", flush=True)
    for name, row in rows.items():
        row["train_flops_vs_dense"] = row["train_flops"] / rows["dense"]["train_flops"]
        row["inference_flops_vs_dense"] = row["inference_flops"] / rows["dense"]["inference_flops"]
        atomic_write_text(out / f"seed{s}" / f"{name}.json", json.dumps(row))


def summarize(out: Path, seeds: list[int], quick: bool) -> dict:
    """``{"per_seed": {name: [per-seed dict]}, "claims": [...]}`` from the seeds' JSON rows."""
    per = {name: [json.loads((out / f"seed{s}" / f"{name}.json").read_text()) for s in seeds] for name in METHODS}
    claims = []
    for a, b in PAIRS:
        claims.append(claim(f"{a} - {b}, accuracy (pp)", [100 * r["accuracy"] for r in per[a]],
                            [100 * r["accuracy"] for r in per[b]]))
        claims.append(claim(f"{a} - {b}, NLL", [r["nll"] for r in per[a]], [r["nll"] for r in per[b]],
                            higher_is_better=False))
    return {"seeds": [100 * s for s in seeds], "quick": quick, "per_seed": per, "claims": claims}


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
    p.add_argument("--seeds", type=int, default=5, help="seed indices 0..N-1 (seeds 0, 100, ...)")
    p.add_argument("--only", type=int, nargs="+", metavar="S",
                   help="train only these seed indices (to split the work over processes), no summary")
    p.add_argument("--out", default="structure_out")
    p.add_argument("--quick", action="store_true", help="the demo's smoke settings (not meaningful numbers)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if args.seeds < 2:
        p.error("--seeds: at least 2 (one seed gives no interval)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(args.seeds))
    for s in (args.only if args.only is not None else seeds):
        if args.only is not None or not all((out / f"seed{s}" / f"{n}.json").exists() for n in METHODS):
            run_seed(out, s, args.quick, args.device)
    if args.only is not None:
        return 0
    result = summarize(out, seeds, args.quick)
    atomic_write_text(out / "structure.json", json.dumps(result, indent=2))
    print()
    print(tables(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
