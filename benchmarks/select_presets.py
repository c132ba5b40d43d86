"""Choose the MNIST-1D demo presets on the *validation* split (never the test set).

Trains candidate settings for each method and prints the ensemble's validation accuracy and NLL
and the training FLOPs relative to the dense candidate, so the presets in
``src/freetickets/configs/mnist1d_*.yaml`` can be justified by numbers measured here.

    python benchmarks/select_presets.py --out select_out --candidates dense edst-q0.5 edst-q0.8
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
from freetickets.train import train
from freetickets.train.config import resolve

# name -> (preset, overrides)
CANDIDATES = {
    "dense": ("mnist1d_dense", {}),
    "deep": ("mnist1d_deep", {}),
    "dst": ("mnist1d_dst", {}),
    "static": ("mnist1d_static", {}),
    "edst-q0.5": ("mnist1d_edst", {"jump_fraction": 0.5}),
    "edst-q0.8": ("mnist1d_edst", {"jump_fraction": 0.8}),
    "edst-random": ("mnist1d_edst", {"grow": "random"}),
    "edst-long": ("mnist1d_edst", {"epochs": 120, "explore_epochs": 30}),
    # EDST at the released proportions for a dense schedule E = 20: 0.6 E exploration + 3 x 0.4 E
    # refinement; the refinement learning-rate factors (first half, second half of each phase)
    "edst-f1-0.1": ("mnist1d_edst", {"epochs": 36, "explore_epochs": 12, "refine_lr_factors": [1.0, 0.1]}),
    "edst-f0.5-0.05": ("mnist1d_edst", {"epochs": 36, "explore_epochs": 12, "refine_lr_factors": [0.5, 0.05]}),
    "edst-f0.1-0.01": ("mnist1d_edst", {"epochs": 36, "explore_epochs": 12, "refine_lr_factors": [0.1, 0.01]}),
    # ... and the jump (share of each layer's active weights pruned and regrown between phases)
    "edst-f1-0.1-q0.5": ("mnist1d_edst", {"epochs": 36, "explore_epochs": 12, "refine_lr_factors": [1.0, 0.1],
                                          "jump_fraction": 0.5}),
    "edst-f1-0.1-q0.3": ("mnist1d_edst", {"epochs": 36, "explore_epochs": 12, "refine_lr_factors": [1.0, 0.1],
                                          "jump_fraction": 0.3}),
    # efficient ensembles, each on the dense preset's 20 epochs (the demo's budget rule)
    "mimo-r1": ("mnist1d_mimo", {"mimo_batch_repetitions": 1}),
    "mimo-r2": ("mnist1d_mimo", {"mimo_batch_repetitions": 2}),
    "mimo-r2-rho0.5": ("mnist1d_mimo", {"mimo_batch_repetitions": 2, "mimo_input_repetition": 0.5}),
    "mimo-rho0.75": ("mnist1d_mimo", {"mimo_batch_repetitions": 1, "mimo_input_repetition": 0.75}),
    "mimo-r2-rho0.75": ("mnist1d_mimo", {"mimo_batch_repetitions": 2, "mimo_input_repetition": 0.75}),
    "be-sign": ("mnist1d_batchensemble", {"batchensemble_init": "random_sign"}),
    "be-normal": ("mnist1d_batchensemble", {"batchensemble_init": "normal"}),
    "mcd-0.02": ("mnist1d_mcdropout", {"dropout_rate": 0.02}),
    "mcd-0.05": ("mnist1d_mcdropout", {"dropout_rate": 0.05}),
    "mcd-0.1": ("mnist1d_mcdropout", {"dropout_rate": 0.1}),
    "mcd-0.2": ("mnist1d_mcdropout", {"dropout_rate": 0.2}),
    "packed-a2-g1": ("mnist1d_packed", {"packed_alpha": 2.0, "packed_gamma": 1}),
    "packed-a3-g1": ("mnist1d_packed", {"packed_alpha": 3.0, "packed_gamma": 1}),
    "packed-a2-g2": ("mnist1d_packed", {"packed_alpha": 2.0, "packed_gamma": 2}),
    "mse-s1.2": ("mnist1d_masksembles", {"masksembles_scale": 1.2}),
    "mse-s1.5": ("mnist1d_masksembles", {"masksembles_scale": 1.5}),
    "mse-s2": ("mnist1d_masksembles", {"masksembles_scale": 2.0}),
    "mse-s3": ("mnist1d_masksembles", {"masksembles_scale": 3.0}),
    # channel-structured tickets (issue 22): EDST's jump at benchmarks/structure.py's prune fraction
    # 0.1, and channel-DST's prune fraction (a layer keeping c channels moves ceil(fraction * c))
    **{f"edst-channel-q{q}": ("mnist1d_edst", {"structure": "channel", "prune_fraction": 0.1, "jump_fraction": q})
       for q in (0.5, 0.2, 0.1, 0.05)},
    **{f"dst-channel-p{p}": ("mnist1d_dst", {"structure": "channel", "prune_fraction": p}) for p in (0.1, 0.05, 0.2)},
    # references for the above: channels that never move, and EDST with the jumps but without the
    # updates every update_interval steps (which, at prune fraction 0.1, still move a channel of a
    # layer keeping 4 every update)
    "static-channel": ("mnist1d_static", {"structure": "channel", "prune_fraction": 0.1}),
    **{f"edst-channel-q{q}-jumps-only": ("mnist1d_edst", {"structure": "channel", "prune_fraction": 0.1,
                                                          "jump_fraction": q, "update_interval": None})
       for q in (0.5, 0.1)},
    # ... and both at today's fractions with rarer updates (optimizer steps between updates; the
    # converged regime has 57 steps per epoch)
    **{f"edst-channel-q0.5-u{u}": ("mnist1d_edst", {"structure": "channel", "prune_fraction": 0.1,
                                                    "jump_fraction": 0.5, "update_interval": u}) for u in (400, 1000)},
    **{f"dst-channel-p0.1-u{u}": ("mnist1d_dst", {"structure": "channel", "prune_fraction": 0.1,
                                                  "update_interval": u}) for u in (200, 400, 1000)},
    # the update interval of the channel runs, channel-EDST at the jump 0.1 (its u100 is edst-channel-q0.1)
    **{f"edst-channel-q0.1-u{u}": ("mnist1d_edst", {"structure": "channel", "prune_fraction": 0.1,
                                                    "jump_fraction": 0.1, "update_interval": u})
       for u in (200, 400, 1000)},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--candidates", nargs="+", default=["dense", "edst-q0.5", "edst-q0.8"])
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every candidate")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    import yaml

    common = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    rows = []
    dense_flops = None
    for name in args.candidates:
        preset, overrides = CANDIDATES[name]
        cfg = resolve(preset, {**overrides, **common, "seed": args.seed, "device": "cpu"})
        if cfg.method == "pf":
            raise SystemExit("pf needs a deep run; not a candidate here")
        t0 = time.time()
        manifest = train(cfg, Path(args.out) / name, overwrite=True)
        data = load_data(cfg.data, num_samples=cfg.num_samples)
        ens = Ensemble.load(Path(args.out) / name)
        with torch.no_grad():
            probs = ens.member_probs(data.normalize(data.val.x))
        s = summarize(probs, data.val.y)
        flops = manifest["flops"]["train_total"]
        if name == "dense":
            dense_flops = flops
        rows.append({"candidate": name, "val_accuracy": s["ensemble"]["accuracy"], "val_nll": s["ensemble"]["nll"],
                     "val_ece": s["ensemble"]["ece"],
                     "members_val_accuracy": [round(m["accuracy"], 4) for m in s["members"]],
                     "train_flops_vs_dense": flops / dense_flops if dense_flops else None,
                     "seconds": round(time.time() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
