"""EDST ticket diversity at equal training cost, on the *validation* split (FreeTickets' Sec. 5 analysis).

Every candidate changes one knob of the paper's method while the epochs, sparsity and members
stay those of the demo's EDST preset (so the training FLOPs stay within a few per cent): the
jump fraction, the learning rate each refinement phase restarts at, the exploration length, the
prune fraction and update interval, the regrowth policy. For each candidate and seed it reports,
on the validation split only: the tickets' mean pairwise prediction disagreement and mask
Hamming distance, and the ensemble's accuracy, NLL and OoD AUROC (maximum softmax probability)
against the package's three MNIST-1D OoD sets (shuffled, noise, class_mix) built from the
*validation* inputs instead of the test set, so no test data is touched. The plot puts one point
per candidate: disagreement against accuracy, NLL and OoD AUROC.

Every candidate starts from the study's baseline, the MNIST-1D EDST preset as it was when the
study was made (refinement phases at lr x 0.1 then x 0.01), so the tables in docs/benchmarks.md
stay reproducible after the preset adopted ``restart-lr-x1`` (now the preset itself).
Each candidate is also compared with the baseline seed by seed: the paired difference of every
measure with its 95% Student-t interval (``freetickets.metrics.claims``), so a choice is adopted
only where its interval excludes 0, not because a mean is larger.

    python benchmarks/diversity.py --out diversity_out --seeds 3   [--quick: smoke settings]
    python benchmarks/diversity.py --seeds 5 --first-seed 3 --regime saturated \
        --candidates baseline restart-lr-x1   # confirm a choice on seeds not used to find it
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from freetickets.data import load_data
from freetickets.demo import DEFAULT_REGIME, REGIMES, demo_config
from freetickets.ensembles.ensemble import Ensemble
from freetickets.metrics import ood_metrics, ood_scores, summarize
from freetickets.metrics.claims import claim
from freetickets.metrics.diversity import mask_hamming_matrix, offdiagonal_mean
from freetickets.train import train
from freetickets.train.config import merge, validate

#: The study's baseline: the MNIST-1D EDST preset before this study (the package's default refine_lr_factors).
BASELINE = {"refine_lr_factors": [0.1, 0.01]}

# name -> overrides of the demo's EDST config, on top of BASELINE ("restart-lr-x1" = today's preset)
CANDIDATES = {
    "baseline": {},
    "jump-0.5": {"jump_fraction": 0.5},
    "jump-0.95": {"jump_fraction": 0.95},
    "restart-lr-x1": {"refine_lr_factors": [1.0, 0.1]},
    "restart-lr-x0.5": {"refine_lr_factors": [0.5, 0.05]},
    "jump-0.95+restart-lr-x1": {"jump_fraction": 0.95, "refine_lr_factors": [1.0, 0.1]},
    "explore-10": {"explore_epochs": 10},
    "explore-40": {"explore_epochs": 40},
    "prune-0.3": {"prune_fraction": 0.3},
    "interval-50": {"update_interval": 50},
    "no-regrow-pruned": {"regrow_pruned": False},
}


def _ood_inputs(data) -> dict[str, torch.Tensor]:
    """The package's MNIST-1D OoD sets (``freetickets.data.mnist1d_shift``), built from the
    validation inputs instead of the test set."""
    from freetickets.data.mnist1d_shift import MNIST1D_OOD, mnist1d_ood

    shape = data.val.x.shape
    flat = lambda t: t.reshape(t.shape[0], -1).numpy()
    return {name: torch.from_numpy(mnist1d_ood(name, flat(data.train.x), flat(data.val.x), data.val.y.numpy(), 0))
            .reshape(shape) for name in MNIST1D_OOD}


def measure(run: Path, cfg) -> dict:
    data = load_data(cfg.data, num_samples=cfg.num_samples)
    ens = Ensemble.load(run)
    x = data.normalize(data.val.x) if data.normalize else data.val.x
    with torch.no_grad():
        probs = ens.member_probs(x)
        s = summarize(probs, data.val.y)
        id_msp = ood_scores(probs)["msp"]
        aurocs = [ood_metrics(id_msp, ood_scores(ens.member_probs(o))["msp"])["auroc"]
                  for o in _ood_inputs(data).values()]
    return {"accuracy": s["ensemble"]["accuracy"], "nll": s["ensemble"]["nll"],
            "disagreement": s["diversity"]["disagreement"],
            "mask_hamming": offdiagonal_mean(mask_hamming_matrix(ens.masks)),
            "ood_auroc": statistics.fmean(aurocs)}


MEASURES = ("accuracy", "nll", "disagreement", "mask_hamming", "ood_auroc")


def paired_vs(per_seed: list[dict], base: list[dict]) -> dict:
    """Per measure: the mean of ``candidate - baseline`` over the shared seeds and its 95% interval
    (an unbounded end, one seed, is ``None``)."""
    out = {}
    for k in MEASURES:
        c = claim(k, [r[k] for r in per_seed], [b[k] for b in base])
        out[k] = {"difference": c["difference"], "interval": c["interval"]}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="diversity_out")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    p.add_argument("--first-seed", type=int, default=0,
                   help="seed index to start at (seeds are 100 x index; default 0: seeds 0, 100, ...)")
    p.add_argument("--regime", default=DEFAULT_REGIME, choices=list(REGIMES), help="the demo regime")
    p.add_argument("--quick", action="store_true", help="the demo's smoke settings (not meaningful numbers)")
    args = p.parse_args(argv)
    if args.seeds < 1 or args.first_seed < 0:
        p.error("--seeds must be >= 1 and --first-seed >= 0")
    out = Path(args.out)
    seeds = [100 * i for i in range(args.first_seed, args.first_seed + args.seeds)]
    rows, base = [], None
    for name in args.candidates:
        per_seed = []
        for s in seeds:
            cfg = validate(merge(demo_config("edst", s, quick=args.quick, device="cpu", regime=args.regime),
                                 {**BASELINE, **CANDIDATES[name]}, source=name))
            t0 = time.time()
            manifest = train(cfg, out / name / f"seed{s}", overwrite=True)
            m = measure(out / name / f"seed{s}", cfg)
            m["seed"] = s
            m["train_flops"] = manifest["flops"]["train_total"]
            m["seconds"] = round(time.time() - t0, 1)
            per_seed.append(m)
        row = {"candidate": name, "overrides": CANDIDATES[name], "regime": args.regime, "seeds": seeds,
               **{k: statistics.fmean(r[k] for r in per_seed) for k in per_seed[0] if k != "seed"}, "per_seed": per_seed}
        if name == "baseline":
            base = per_seed
        elif base is not None:
            row["vs_baseline"] = paired_vs(per_seed, base)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "per_seed"}), flush=True)
    (out / "diversity.json").write_text(json.dumps(rows, indent=1))
    _plot(rows, out / "diversity.png")
    return 0


def _plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, key, label in zip(axes, ("accuracy", "nll", "ood_auroc"),
                              ("ensemble accuracy (val)", "ensemble NLL (val)", "OoD AUROC, MSP (val-built sets)")):
        for r in rows:
            ax.scatter(r["disagreement"], r[key])
            ax.annotate(r["candidate"], (r["disagreement"], r[key]), fontsize=7)
        ax.set_xlabel("ticket disagreement (val)")
        ax.set_ylabel(label)
    fig.suptitle(f"EDST at equal training cost ({rows[0]['regime']} regime): one point per setting, "
                 "mean over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
