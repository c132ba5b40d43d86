"""Choose the demo's MNIST-1D regime (sample count, model width, epochs) on the *validation* split.

The demo should have *headroom*: a dense deep ensemble must beat one dense model clearly on
accuracy and NLL, or no ensemble method can show anything. For each candidate regime this
trains the dense and deep presets with the regime's overrides for several seeds and prints the
validation accuracy and NLL of one dense model and of the deep ensemble, their paired
difference over seeds with a 95% Student-t interval, and the seconds per dense run (the demo's
time budget). The test split is never read.

    python benchmarks/select_regime.py --out regime_out --seeds 3
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from freetickets.data import load_data
from freetickets.ensembles.ensemble import Ensemble
from freetickets.metrics import summarize
from freetickets.metrics.claims import paired_interval
from freetickets.train import train
from freetickets.train.config import resolve

# name -> overrides applied to every demo preset
REGIMES = {
    "n10000-w128": {},  # the demo's setting before this selection (saturated: ~98% accuracy)
    "n10000-w32": {"model_kwargs": {"width": 32}},
    "n10000-w16": {"model_kwargs": {"width": 16}},
    "n10000-w8": {"model_kwargs": {"width": 8}},
    "n4000-w128": {"num_samples": 4000},
    "n4000-w32": {"num_samples": 4000, "model_kwargs": {"width": 32}},
    "n4000-w16": {"num_samples": 4000, "model_kwargs": {"width": 16}},
    "n4000-w8": {"num_samples": 4000, "model_kwargs": {"width": 8}},
    "n10000-mlp": {"model": "mlp", "model_kwargs": {}},  # MLP 40-256-256-10 with BatchNorm
    "n4000-mlp": {"num_samples": 4000, "model": "mlp", "model_kwargs": {}},
    # the MLP with longer dense schedules (lr milestones are fractions of the epochs): is the
    # headroom still there when one dense model is trained longer?
    "n10000-mlp-e40": {"model": "mlp", "model_kwargs": {}, "epochs": 40},
    "n10000-mlp-e80": {"model": "mlp", "model_kwargs": {}, "epochs": 80},
}


def _val(run: Path, cfg) -> dict:
    data = load_data(cfg.data, num_samples=cfg.num_samples)
    with torch.no_grad():
        probs = Ensemble.load(run).member_probs(data.normalize(data.val.x))
    return summarize(probs, data.val.y)["ensemble"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=list(REGIMES))
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args()
    for name in args.regimes:
        rows = []
        for seed in range(args.seeds):
            row = {}
            for method in ("dense", "deep"):
                cfg = resolve(f"mnist1d_{method}", {**REGIMES[name], "seed": 100 * seed, "device": "cpu"})
                t0 = time.time()
                run = Path(args.out) / name / f"seed{seed}" / method
                train(cfg, run, overwrite=True)
                row[f"{method}_seconds"] = round(time.time() - t0, 1)
                val = _val(run, cfg)
                row[f"{method}_accuracy"], row[f"{method}_nll"] = val["accuracy"], val["nll"]
            rows.append(row)
        gain_acc = [r["deep_accuracy"] - r["dense_accuracy"] for r in rows]
        gain_nll = [r["dense_nll"] - r["deep_nll"] for r in rows]
        summary = {"regime": name, "overrides": REGIMES[name], "seeds": args.seeds,
                   "dense_accuracy": [round(r["dense_accuracy"], 4) for r in rows],
                   "deep_accuracy": [round(r["deep_accuracy"], 4) for r in rows],
                   "deep_minus_dense_accuracy": paired_interval(gain_acc),
                   "dense_minus_deep_nll": paired_interval(gain_nll),
                   "dense_seconds": [r["dense_seconds"] for r in rows]}
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
