"""Is EDST's margin over one dense model the ensemble, or its longer schedule? A control.

EDST trains for ``explore + M x refine`` epochs (the demo: 20 + 3 x 20 = 80, sparse) where one
dense model trains for 20, so each ticket has seen 40 epochs. This trains one dense model of the
demo (same seeds, same data, same lr schedule shape) for each of ``--epochs`` and compares it,
seed by seed, with the EDST ensemble of a finished ``benchmarks/quality.py`` output: the paired
difference of test accuracy and NLL with its 95% Student-t interval, and the training FLOPs of
each. A longer dense run costs more FLOPs than EDST; the point is what the margin is made of.

    python benchmarks/quality.py --seeds 5 --out quality_out
    python benchmarks/schedule_control.py --quality quality_out --epochs 20 40 80 --out schedule_out
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from freetickets.demo import DEFAULT_REGIME, demo_config
from freetickets.evaluation import evaluate_run
from freetickets.metrics.claims import claim
from freetickets.train import train
from freetickets.train.config import merge, validate


def _fmt(c: dict, scale: float, digits: int) -> str:
    """``+d [+lo, +hi]`` of a :func:`~freetickets.metrics.claims.claim` entry (one seed: no interval)."""
    lo, hi = c["interval"]
    bounds = "none (1 seed)" if lo is None else f"[{lo * scale:+.{digits}f}, {hi * scale:+.{digits}f}]"
    return f"{c['difference'] * scale:+.{digits}f} {bounds}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quality", required=True, help="a benchmarks/quality.py --out directory (its results.json)")
    p.add_argument("--epochs", type=int, nargs="+", default=[20, 40, 80], help="dense epochs to train")
    p.add_argument("--out", default="schedule_out")
    p.add_argument("--quick", action="store_true", help="the demo's smoke settings, against a --quick quality run")
    args = p.parse_args(argv)
    results_path = Path(args.quality) / "results.json"
    if not results_path.is_file():
        p.error(f"--quality: {results_path} not found (run benchmarks/quality.py first)")
    if any(e < 1 for e in args.epochs):
        p.error("--epochs: each must be >= 1")
    quality = json.loads(results_path.read_text())
    if bool(quality.get("quick")) != args.quick or "edst" not in quality["seeds"][0]:
        p.error("--quality: needs a run that includes edst, --quick exactly when this is --quick")
    regime = quality.get("regime", DEFAULT_REGIME)
    edst = [s["edst"]["ensemble"] for s in quality["seeds"]]
    edst_flops = quality["seeds"][0]["edst"]["cost"]["train_flops_vs_dense"]
    rows = []
    for epochs in args.epochs:
        dense, flops = [], []
        for i in range(len(edst)):
            base = demo_config("dense", 100 * i, quick=args.quick, device="cpu", regime=regime)
            # costs stay relative to the demo's own dense run (its epochs), as EDST's are
            cfg = validate(merge(base, {"epochs": epochs, "reference_epochs": base.epochs}, source="schedule_control"))
            run = Path(args.out) / f"dense_e{epochs}" / f"seed{i}"
            train(cfg, run, overwrite=True)
            res = evaluate_run(run, device="cpu", corruptions=None, ood=[])
            dense.append(res["ensemble"])
            flops.append(res["cost"]["train_flops_vs_dense"])
        acc = claim("accuracy", [e["accuracy"] for e in edst], [d["accuracy"] for d in dense])
        nll = claim("nll", [e["nll"] for e in edst], [d["nll"] for d in dense], higher_is_better=False)
        row = {"dense_epochs": epochs, "seeds": len(edst), "train_flops_vs_demo_dense": sum(flops) / len(flops),
               "edst_train_flops_vs_demo_dense": edst_flops,
               "dense_accuracy": sum(d["accuracy"] for d in dense) / len(dense),
               "dense_nll": sum(d["nll"] for d in dense) / len(dense),
               "edst_minus_dense_accuracy": {k: acc[k] for k in ("difference", "interval")},
               "edst_minus_dense_nll": {k: nll[k] for k in ("difference", "interval")}}
        rows.append(row)
        print(f"dense {epochs:>3} epochs ({row['train_flops_vs_demo_dense']:.2f}x FLOPs; EDST {edst_flops:.2f}x): "
              f"accuracy {100 * row['dense_accuracy']:.2f}%, NLL {row['dense_nll']:.3f}; EDST minus it: "
              f"accuracy {_fmt(acc, 100, 2)} pp, NLL {_fmt(nll, 1, 4)}", flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "schedule_control.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
