"""Quality benchmark: the demo over several seeds, mean ± std per method, and the paper's claims
decided from paired differences over the seeds (docs/evaluation.md; issue 9, item 2).

    python benchmarks/quality.py --seeds 5 --out quality_out

Prints the comparison table (mean ± std over seeds) and the claims table: per claim the mean
paired difference (EDST minus dense, seed by seed; DST minus deep ensemble; cost ratios), its
two-sided 95% Student-t interval over the seeds and the verdict (holds / not resolved / fails;
see :mod:`freetickets.report.claims` and docs/evaluation.md). The same ``claims`` block is in
``OUT/results.json`` and in ``OUT/report.md``. Exit status 0 whatever the verdicts: the
benchmark measures, it does not gate.
"""
from __future__ import annotations

import argparse
import sys

from freetickets.demo import run_demo
from freetickets.report.claims import claims_table, compute_claims
from freetickets.report.tables import comparison_table
from freetickets.demo import DEFAULT_REGIME, REGIMES


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="FreeTickets quality benchmark on MNIST-1D")
    p.add_argument("--seeds", type=int, default=5, help="seeds (>= 2 for intervals; the README uses 5)")
    p.add_argument("--out", default="quality_out")
    p.add_argument("--quick", action="store_true", help="smoke settings (not meaningful numbers)")
    p.add_argument("--device", default="auto")
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: as freetickets demo)")
    p.add_argument("--regime", default=DEFAULT_REGIME, choices=list(REGIMES),
                   help="the demo's MNIST-1D regime (see freetickets demo --help)")
    args = p.parse_args(argv)
    if args.seeds < 2:
        p.error("--seeds: at least 2 (one seed gives no interval, so no claim can be decided)")
    result = run_demo(args.out, quick=args.quick, seeds=args.seeds, print_fn=lambda s: print(s, flush=True),
                      device=args.device, regime=args.regime, jobs=args.jobs)
    per_seed = result["seeds"]
    print()
    print(comparison_table(per_seed, fmt="markdown"))
    print()
    print(claims_table(compute_claims(per_seed), fmt="markdown"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
