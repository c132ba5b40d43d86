"""Sparsity sweep (issue 9, item 5): DST and EDST ensembles at S in {0.5, 0.8, 0.9, 0.95} on the
demo's MNIST-1D setting, against one dense model and the dense deep ensemble.

    python benchmarks/sparsity.py --seeds 1 --out sparsity_out [--quick]

Trains, per seed, dense and deep once and DST and EDST at every sparsity (the demo presets,
``--quick`` the demo's smoke settings), evaluates the test split (no OoD, no corruptions: only
accuracy and NLL are plotted), and writes ``OUT/sparsity.json`` (per method and sparsity the
per-seed accuracy, NLL and train FLOPs vs dense) and ``OUT/sparsity.png`` (accuracy and NLL
against S, mean ± std over seeds, dense and deep ensemble as horizontal levels).
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

from freetickets.demo import demo_config
from freetickets.evaluation import evaluate_run
from freetickets.train import train
from freetickets.train.config import validate
from freetickets.utils.io import atomic_write_bytes, atomic_write_text

SPARSITIES = (0.5, 0.8, 0.9, 0.95)


def _eval(run_dir: Path, device: str) -> dict:
    res = evaluate_run(run_dir, ood=["none"], corruptions=None, device=device)
    return {"accuracy": res["ensemble"]["accuracy"], "nll": res["ensemble"]["nll"],
            "train_flops": res["cost"]["train_flops"], "members": res["cost"]["members"]}


def sweep(out: Path, seeds: int, quick: bool, device: str, sparsities=SPARSITIES) -> dict:
    """``{"levels": {method: [per-seed dict]}, "sweep": {method: {S: [per-seed dict]}}}``."""
    result: dict = {"levels": {"dense": [], "deep": []}, "sweep": {"dst": {}, "edst": {}},
                    "sparsities": list(sparsities), "quick": quick}
    for s in range(seeds):
        seed = 100 * s
        for method in ("dense", "deep"):
            run = out / f"seed{s}" / method
            train(demo_config(method, seed, quick=quick, device=device), run, overwrite=True)
            result["levels"][method].append(_eval(run, device))
            print(f"[seed {s}] {method:<5} accuracy {100 * result['levels'][method][-1]['accuracy']:.2f}%", flush=True)
        dense_flops = result["levels"]["dense"][-1]["train_flops"]
        for method in ("dst", "edst"):
            for sp in sparsities:
                cfg = validate(dataclasses.replace(demo_config(method, seed, quick=quick, device=device), sparsity=sp))
                run = out / f"seed{s}" / f"{method}_s{sp}"
                t0 = time.time()
                train(cfg, run, overwrite=True)
                r = _eval(run, device)
                r["train_flops_vs_dense"] = r["train_flops"] / dense_flops
                result["sweep"][method].setdefault(str(sp), []).append(r)
                print(f"[seed {s}] {method:<5} S={sp:<4} accuracy {100 * r['accuracy']:.2f}%  NLL {r['nll']:.4f}  "
                      f"train FLOPs {r['train_flops_vs_dense']:.2f}x dense  ({time.time() - t0:.0f} s)", flush=True)
    return result


def _ms(values):
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def plot(result: dict, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 3.6), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    colours = {"dense": "tab:blue", "deep": "tab:orange", "dst": "tab:green", "edst": "tab:red"}
    labels = {"dense": "Dense (single)", "deep": "Deep ensemble", "dst": "DST ensemble", "edst": "EDST ensemble"}
    for ax, (key, ylabel, scale) in zip(axes, (("accuracy", "Test accuracy (%)", 100.0), ("nll", "Test NLL", 1.0))):
        for method, runs in result["levels"].items():
            if runs:
                m, sd = _ms([r[key] for r in runs])
                ax.axhline(m * scale, color=colours[method], linestyle="--", label=labels[method])
                if sd:
                    ax.axhspan((m - sd) * scale, (m + sd) * scale, color=colours[method], alpha=0.12)
        for method, by_s in result["sweep"].items():
            xs = sorted(float(s) for s in by_s)
            stats = [_ms([r[key] for r in by_s[str(x)]]) for x in xs]
            ax.errorbar(xs, [m * scale for m, _ in stats], yerr=[sd * scale for _, sd in stats], marker="o",
                        capsize=3, color=colours[method], label=labels[method])
        ax.set_xlabel("Sparsity S")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="DST/EDST accuracy and NLL against sparsity on MNIST-1D")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--out", default="sparsity_out")
    p.add_argument("--quick", action="store_true", help="the demo's smoke settings (not meaningful numbers)")
    p.add_argument("--device", default="auto")
    p.add_argument("--sparsities", type=float, nargs="+", default=list(SPARSITIES))
    args = p.parse_args(argv)
    if args.seeds < 1 or not all(0.0 < s < 1.0 for s in args.sparsities):
        p.error("--seeds must be >= 1 and every sparsity in (0, 1)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = sweep(out, args.seeds, args.quick, args.device, tuple(args.sparsities))
    atomic_write_text(out / "sparsity.json", json.dumps(result, indent=2) + "\n")
    plot(result, out / "sparsity.png")
    print(f"wrote {out / 'sparsity.json'} and {out / 'sparsity.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
