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
for as many epochs as EDST (1.8x the dense schedule by default, so 1.8x its training FLOPs).
EDST is then compared both with the dense preset (the equal-cost claims) and with this dense
model of its own schedule length (the "at equal epochs" claims), which separates what EDST gains
from ensembling from what it gains from its longer schedule.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

from freetickets.errors import UserError
from freetickets.names import DEMO_METHODS, DENSE_EDST_EPOCHS

log = logging.getLogger(__name__)

METHODS = DEMO_METHODS  # one list for the CLI and the demo

#: The demo's MNIST-1D regimes: overrides applied to every ``mnist1d_*`` preset.
#:
#: ``converged`` (the default): cnn1d of width 16 on 10,000 samples. Its dense model has converged
#: at the presets' schedule E = 20 epochs by the rule of ``benchmarks/select_epochs.py`` (validation
#: split, 5 seeds: doubling 20 -> 40 epochs gains +0.22 accuracy points, interval [-0.11, +0.56],
#: NLL -0.009 [-0.023, +0.005]), and ensembling still matters there: over 8 seeds a dense deep
#: ensemble beats one dense model by +0.66 points ([0.50, 0.81]) and 0.014 NLL ([0.005, 0.023])
#: (``benchmarks/select_regime.py``; docs/benchmarks.md). Every per-member method trains E epochs;
#: EDST trains 0.6 E of exploration plus M x 0.4 E of refinement (1.8 E), the released recipe's
#: proportions. Its S = 0.8 tickets are small (a 16-channel network): in this regime the sparse
#: methods trained from scratch lose to one dense model (README, docs/benchmarks.md); wider CNNs
#: need E = 40 and break the demo's time budget.
#:
#: ``headroom``: the MLP 40-256-256-10 with BatchNorm on 10,000 samples, where ensembles gain
#: more (+1.83 points, [0.96, 2.70]) but the dense model is far from converged at 20 epochs (every
#: doubling up to 320 epochs still gains about 2 points), so its claims mix ensembling with
#: schedule. ``saturated``: the presets' own cnn1d of width 128 (~98% accuracy, where a deep
#: ensemble gained 0.19 points, interval covering 0).
REGIMES: dict[str, dict[str, Any]] = {
    "converged": {"model_kwargs": {"width": 16}},  # cnn1d width 16, 10,000 samples
    "headroom": {"model": "mlp", "model_kwargs": {}},  # MLP 40-256-256-10 with BatchNorm, 10,000 samples
    "saturated": {},
}
DEFAULT_REGIME = "converged"

#: Overrides for ``--quick``: a smoke run of every method in about a minute (fewer samples and
#: epochs). In the saturated regime also width 64: with the presets' width 128 the quick run took
#: about 120 s on a busy 2-core CPU, with 64 about 32 s. EDST keeps the released proportions of
#: the quick dense schedule E = 3: 0.6 E = 2 epochs of exploration and 3 phases of 0.4 E = 1.
QUICK = {"num_samples": 4000, "epochs": 3, "update_interval": 20, "pf_epochs": 1}
QUICK_SATURATED = {"model_kwargs": {"width": 64}}
QUICK_EDST = {"epochs": 5, "explore_epochs": 2}


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
    relative to the demo's dense run, as EDST's are (1.8 for 36 against 20 epochs).
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


def default_jobs(device: str = "auto") -> int:
    """Worker processes of the demo when ``--jobs`` is not given: 2 on a CPU with at least 2
    cores (the demo's runs are independent, and two one-thread processes finish them sooner than
    one two-thread process: small models use one core badly), else 1 (one GPU, or one core)."""
    import torch

    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    return 2 if on_cpu and (os.cpu_count() or 1) >= 2 else 1


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _train_and_evaluate(cfg, run_dir: Path, device: str, progress: bool, keep_plots: bool):
    """One demo entry: train ``cfg`` into ``run_dir`` and evaluate it. Returns (results, the plot
    inputs or None, seconds). Runs in the main process or in a worker."""
    from freetickets.evaluation import evaluate_run, plot_inputs
    from freetickets.train import train

    t0 = time.time()
    train(cfg, run_dir, overwrite=True, progress=progress)
    res, art = evaluate_run(run_dir, device=device, return_artifacts=True)
    return res, (plot_inputs(art) if keep_plots else None), time.time() - t0


def _plan(out: Path, seeds: int, methods: tuple[str, ...], *, quick: bool, device: str, regime: str):
    """Every (seed index, entry, config, run dir) the demo trains, in report order."""
    if "pf" in methods and "deep" not in methods:
        raise UserError("the PF demo fine-tunes the deep ensemble's models: include 'deep'")
    plan = []
    for s in range(seeds):
        for method in demo_entries(methods):
            if method == DENSE_EDST_EPOCHS:
                cfg = equal_epochs_config(100 * s, quick=quick, device=device, regime=regime)
            else:
                cfg = demo_config(method, 100 * s, quick=quick, device=device, regime=regime)
            if method == "pf":
                cfg.from_run = str(out / f"seed{s}" / "deep")
            plan.append((s, method, cfg, out / f"seed{s}" / method))
    return plan


def _describe(cfg) -> str:
    return (f"{cfg.num_members} member(s), {cfg.epochs} epochs"
            f"{', sparsity %.2f' % cfg.sparsity if cfg.is_sparse else ''}")


def _keeps_plots(s: int, method: str) -> bool:
    """Plot inputs come from the first seed; the equal-epochs control is in the tables, not the plots."""
    return s == 0 and method != DENSE_EDST_EPOCHS


def _run_plan(plan, *, jobs: int, device: str, progress: bool, print_fn) -> dict[tuple[int, str], tuple]:
    """Run every entry of ``plan``: one after another (``jobs`` = 1, with progress bars), or in
    ``jobs`` worker processes of ``cpu_count // jobs`` threads each, a PF entry starting once
    the deep ensemble it fine-tunes has finished. Returns {(seed index, entry): (results, plot
    inputs, seconds)}; one line is printed per finished entry."""
    out: dict[tuple[int, str], tuple] = {}

    def finish(s, method, result):
        out[s, method] = result
        res, _, seconds = result
        print_fn(f"[seed {s}]   {method:<17} test accuracy {100 * res['ensemble']['accuracy']:.2f}%  "
                 f"NLL {res['ensemble']['nll']:.4f}  ({seconds:.0f} s)")

    if jobs <= 1:
        for s, method, cfg, run_dir in plan:
            print_fn(f"[seed {s}] training {method:<17} ({_describe(cfg)}) ...")
            finish(s, method, _train_and_evaluate(cfg, run_dir, device, progress, _keeps_plots(s, method)))
        return out
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    print_fn(f"training {len(plan)} runs in {jobs} processes (one line per finished run) ...")
    threads = max(1, (os.cpu_count() or 1) // jobs)
    pf_of_seed = {entry[0]: entry for entry in plan if entry[1] == "pf"}  # waits for its seed's deep
    running: dict = {}  # future -> plan entry
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(threads,)) as pool:
        def submit(entry):
            s, method, cfg, run_dir = entry
            running[pool.submit(_train_and_evaluate, cfg, run_dir, device, False, _keeps_plots(s, method))] = entry

        for entry in plan:
            if entry[1] != "pf":
                submit(entry)
        try:
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    s, method, _, _ = running.pop(fut)
                    finish(s, method, fut.result())
                    if method == "deep" and s in pf_of_seed:
                        submit(pf_of_seed.pop(s))
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return out


def run_demo(out_dir: str | Path, *, quick: bool = False, seeds: int = 1, progress: bool = False,
             print_fn: Callable[[str], None] = lambda s: None, device: str = "auto",
             methods: tuple[str, ...] = METHODS, regime: str = DEFAULT_REGIME,
             jobs: int | None = None) -> dict[str, Any]:
    """Train and evaluate every method for ``seeds`` seeds; write the report. Returns results.

    ``jobs``: worker processes for the independent runs (``None``: :func:`default_jobs`). The
    results do not depend on it beyond floating-point summation order (threads per process)."""
    from freetickets.report import claims_table, comparison_table, compute_claims, write_report, write_results_json

    if seeds < 1:
        raise UserError(f"--seeds: must be >= 1, got {seeds}")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise UserError(f"--jobs: must be an integer >= 1, got {jobs!r}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UserError(f"methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out: cannot create {out}: {exc.strerror}") from None
    t_start = time.time()
    plan = _plan(out, seeds, methods, quick=quick, device=device, regime=regime)
    done = _run_plan(plan, jobs=default_jobs(device) if jobs is None else jobs, device=device,
                     progress=progress, print_fn=print_fn)
    artifacts = {m: done[s, m][1] for s, m, _, _ in plan if done[s, m][1] is not None}
    per_seed: list[dict[str, Any]] = []
    for s in range(seeds):
        results = {m: done[s, m][0] for s2, m, _, _ in plan if s2 == s}
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
