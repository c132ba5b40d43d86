"""``freetickets demo``: the paper's comparison on MNIST-1D, on a laptop CPU, in minutes.

Trains every method (dense, deep, DST, EDST, static, PF, and the efficient ensembles snapshot,
MIMO, BatchEnsemble, MC dropout, Packed-Ensembles and Masksembles) with the shipped ``mnist1d_*``
presets (``--methods``: a subset),
evaluates them (accuracy, NLL, ECE, Brier, OoD, MNIST-1D-C, diversity, cost), and writes
``report.md``, ``results.json`` and plots, with the paper's claims decided over the seeds
(:mod:`freetickets.report.claims`: paired differences, 95% Student-t interval, verdict; with
one seed the quality claims are not resolvable) and the ensemble-size and trajectory analyses.
Claims use only the methods in ``methods``. ``vs_dense`` ratios are relative to the dense run of
the same seed. PF fine-tunes the dense models of the deep ensemble (``--from``), so its training
cost includes theirs, as in the paper.

With both ``dense`` and ``edst`` in ``methods`` the demo also trains the *equal-epochs control*
(:data:`~freetickets.names.DENSE_EDST_EPOCHS`, "Dense (EDST's epochs)"): the dense preset trained
for as many epochs as EDST (4x the dense schedule by default, so about 4x its training FLOPs).
EDST is then compared both with the dense preset (the equal-cost claims) and with this dense
model of its own schedule length (the "at equal epochs" claims), which separates what EDST gains
from ensembling from what it gains from its longer schedule.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

from freetickets.errors import UserError
from freetickets.names import DEMO_METHODS, DENSE_EDST_EPOCHS

log = logging.getLogger(__name__)

METHODS = DEMO_METHODS  # one list for the CLI and the demo

#: The demo's MNIST-1D regime: overrides applied to every ``mnist1d_*`` preset. Chosen on the
#: validation split (``benchmarks/select_regime.py``; numbers in docs/benchmarks.md) so that
#: ensembling matters: over 8 seeds a dense deep ensemble of the MLP beats one dense MLP by
#: +1.83 accuracy points (95% interval [0.96, 2.70]) and 0.045 NLL ([0.032, 0.059]). The
#: presets' own setting (cnn1d width 128: ~98% accuracy, where a deep ensemble gained 0.19
#: points, interval covering 0) is kept as the ``saturated`` regime.
REGIMES: dict[str, dict[str, Any]] = {
    "headroom": {"model": "mlp", "model_kwargs": {}},  # MLP 40-256-256-10 with BatchNorm, 10,000 samples
    "saturated": {},
}
DEFAULT_REGIME = "headroom"

#: Overrides for ``--quick``: a smoke run of every method in about a minute (fewer samples and
#: epochs). In the saturated regime also width 64: with the presets' width 128 the quick run took
#: about 120 s on a busy 2-core CPU, with 64 about 32 s.
QUICK = {"num_samples": 4000, "epochs": 3, "update_interval": 20, "pf_epochs": 1}
QUICK_SATURATED = {"model_kwargs": {"width": 64}}
QUICK_EDST = {"epochs": 7, "explore_epochs": 1}


def demo_config(method: str, seed: int, *, quick: bool, device: str = "auto", regime: str = DEFAULT_REGIME):
    """The resolved :class:`TrainConfig` of one demo method: its preset, the regime, ``--quick``."""
    from freetickets.train.config import resolve

    if regime not in REGIMES:
        raise UserError(f"--regime: {regime!r} is not one of {', '.join(REGIMES)}")
    overrides: dict[str, Any] = {"seed": seed, "device": device, **REGIMES[regime]}
    if quick:
        overrides.update(QUICK)
        if regime == "saturated":
            overrides.update(QUICK_SATURATED)
        if method == "edst":
            overrides.update(QUICK_EDST)
    return resolve(f"mnist1d_{method}", overrides)


def equal_epochs_config(seed: int, *, quick: bool, device: str = "auto", regime: str = DEFAULT_REGIME):
    """The equal-epochs control: the demo's dense config trained for EDST's number of epochs.

    ``reference_epochs`` stays the dense preset's epochs, so that its ``*_vs_dense`` costs are
    relative to the demo's dense run, as EDST's are (4.0 for 80 against 20 epochs).
    """
    from freetickets.train.config import merge, validate

    dense = demo_config("dense", seed, quick=quick, device=device, regime=regime)
    edst = demo_config("edst", seed, quick=quick, device=device, regime=regime)
    return validate(merge(dense, {"epochs": edst.epochs, "reference_epochs": dense.epochs}, source="demo"))


def demo_entries(methods: tuple[str, ...]) -> list[str]:
    """What the demo trains, in order: ``methods``, plus the equal-epochs control right after
    ``edst`` when both ``dense`` and ``edst`` are there."""
    entries = list(methods)
    if "dense" in methods and "edst" in methods:
        entries.insert(entries.index("edst") + 1, DENSE_EDST_EPOCHS)
    return entries


def run_demo(out_dir: str | Path, *, quick: bool = False, seeds: int = 1, progress: bool = False,
             print_fn: Callable[[str], None] = lambda s: None, device: str = "auto",
             methods: tuple[str, ...] = METHODS, regime: str = DEFAULT_REGIME) -> dict[str, Any]:
    """Train and evaluate every method for ``seeds`` seeds; write the report. Returns results."""
    from freetickets.evaluation import evaluate_run, plot_inputs
    from freetickets.report import claims_table, comparison_table, compute_claims, write_report, write_results_json
    from freetickets.train import train

    if seeds < 1:
        raise UserError(f"--seeds: must be >= 1, got {seeds}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UserError(f"methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out: cannot create {out}: {exc.strerror}") from None
    per_seed: list[dict[str, Any]] = []
    artifacts: dict[str, Any] = {}
    t_start = time.time()
    for s in range(seeds):
        seed = 100 * s
        results: dict[str, Any] = {}
        runs: dict[str, Path] = {}
        for method in demo_entries(methods):
            if method == DENSE_EDST_EPOCHS:
                cfg = equal_epochs_config(seed, quick=quick, device=device, regime=regime)
            else:
                cfg = demo_config(method, seed, quick=quick, device=device, regime=regime)
            if method == "pf":
                if "deep" not in runs:
                    raise UserError("the PF demo fine-tunes the deep ensemble's models: include 'deep'")
                cfg.from_run = str(runs["deep"])
            run_dir = out / f"seed{s}" / method
            t0 = time.time()
            print_fn(f"[seed {s}] training {method:<17} ({cfg.num_members} member(s), {cfg.epochs} epochs"
                     f"{', sparsity %.2f' % cfg.sparsity if cfg.is_sparse else ''}) ...")
            train(cfg, run_dir, overwrite=True, progress=progress)
            runs[method] = run_dir
            res, art = evaluate_run(run_dir, device=device, return_artifacts=True)
            results[method] = res
            if s == 0 and method != DENSE_EDST_EPOCHS:  # a control: in the tables, not the per-method plots
                artifacts[method] = plot_inputs(art)
            print_fn(f"[seed {s}]   {method:<17} test accuracy {100 * res['ensemble']['accuracy']:.2f}%  "
                     f"NLL {res['ensemble']['nll']:.4f}  ({time.time() - t0:.0f} s)")
        if "dense" in results:  # vs_dense relative to the dense run of this seed (docs/evaluation.md)
            ref = results["dense"]["cost"]["train_flops"]
            for res in results.values():
                res["cost"]["train_flops_vs_dense"] = res["cost"]["train_flops"] / ref
        per_seed.append(results)
    data_name = "mnist1d"
    write_results_json(out / "results.json", data_name, per_seed,
                       extra={"quick": quick, "regime": regime, "wall_time_s": round(time.time() - t_start, 1)})
    command = ("freetickets demo" + (" --quick" if quick else "") + (f" --seeds {seeds}" if seeds > 1 else "")
               + (f" --regime {regime}" if regime != DEFAULT_REGIME else ""))
    report = write_report(out, per_seed, data_name=data_name, artifacts=artifacts, command=command)
    print_fn("")
    print_fn(comparison_table(per_seed, fmt="text"))
    print_fn("")
    print_fn(claims_table(compute_claims(per_seed), fmt="text"))
    print_fn(f"report: {report}   results: {out / 'results.json'}   ({time.time() - t_start:.0f} s)")
    return {"data": data_name, "methods": per_seed[0], "seeds": per_seed}
