"""Quality benchmark: the demo over several seeds, mean ± std per method, and the paper's claims
checked against the numbers (design §3, the evaluation issue's goals).

    python benchmarks/quality.py --seeds 3 --out quality_out

Prints the comparison table (mean ± std over seeds) and one line per goal: met or missed, by how
much. The goals: the EDST ensemble beats the dense model on accuracy, NLL, ECE, OoD AUROC
(mean over the OoD sets) and corrupted accuracy, with train_flops_vs_dense <= 1.0,
inference_flops_vs_dense <= 1.05 and non-zero parameters <= 0.6x dense; the DST ensemble is
within 0.5 points of the deep ensemble's accuracy at <= 0.5x its training FLOPs.
"""
from __future__ import annotations

import argparse
import statistics
import sys

from freetickets.demo import run_demo
from freetickets.report.tables import aggregate_seeds, comparison_table


def _mean(agg, method, key):
    value = agg.get(method, {}).get(key)
    return None if value is None else value[0]


def check_goals(per_seed) -> list[tuple[bool, str]]:
    agg = aggregate_seeds(per_seed)
    out = []

    def cmp(name, a, b, higher_better, unit=""):
        if a is None or b is None:
            out.append((False, f"{name}: not measured"))
            return
        ok = a > b if higher_better else a < b
        out.append((ok, f"{name}: EDST {a:.4f} vs dense {b:.4f} ({'met' if ok else 'missed'}, margin {a - b:+.4f}{unit})"))

    cmp("accuracy", _mean(agg, "edst", "accuracy"), _mean(agg, "dense", "accuracy"), True)
    cmp("NLL", _mean(agg, "edst", "nll"), _mean(agg, "dense", "nll"), False)
    cmp("ECE", _mean(agg, "edst", "ece"), _mean(agg, "dense", "ece"), False)
    cmp("OoD AUROC (mean over sets)", _mean(agg, "edst", "ood_mean.auroc"), _mean(agg, "dense", "ood_mean.auroc"), True)
    cmp("corrupted accuracy", _mean(agg, "edst", "corrupted.accuracy"), _mean(agg, "dense", "corrupted.accuracy"), True)
    for key, limit in (("cost.train_flops_vs_dense", 1.0), ("cost.inference_flops_vs_dense", 1.05),
                       ("cost.nonzero_params_vs_dense", 0.6)):
        v = _mean(agg, "edst", key)
        ok = v is not None and v <= limit
        out.append((ok, f"EDST {key} = {v:.4f} (goal <= {limit}: {'met' if ok else 'missed'})"))
    dst, deep = _mean(agg, "dst", "accuracy"), _mean(agg, "deep", "accuracy")
    if dst is not None and deep is not None:
        ok = dst >= deep - 0.005
        out.append((ok, f"DST accuracy {dst:.4f} vs deep {deep:.4f}: gap {100 * (deep - dst):+.2f} points (goal <= 0.5: {'met' if ok else 'missed'})"))
        ratio = statistics.fmean(r["dst"]["cost"]["train_flops"] / r["deep"]["cost"]["train_flops"] for r in per_seed)
        out.append((ratio <= 0.5, f"DST training FLOPs / deep = {ratio:.3f} (goal <= 0.5: {'met' if ratio <= 0.5 else 'missed'})"))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="FreeTickets quality benchmark on MNIST-1D")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", default="quality_out")
    p.add_argument("--quick", action="store_true", help="smoke settings (not meaningful numbers)")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    result = run_demo(args.out, quick=args.quick, seeds=args.seeds, print_fn=lambda s: print(s, flush=True),
                      device=args.device)
    per_seed = result["seeds"]
    print()
    print(comparison_table(per_seed, fmt="markdown"))
    print()
    goals = check_goals(per_seed)
    for ok, line in goals:
        print(("MET    " if ok else "MISSED ") + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
