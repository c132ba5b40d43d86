"""Trained channel runs, compact: correctness on real data and latency against one dense model.

Issue 22's "must show" measured on run directories that ``freetickets train --structure channel``
wrote (not on synthetic members, as ``benchmarks/ensemble.py --structure channel`` does). For
each run:

* **Correctness.** ``Ensemble.load(run, compact=True)`` (slim members, one packed forward) and
  ``Ensemble.load(run)`` (the masked members as trained) on the run's own test split (the
  project's data API, normalised as evaluation does): ``member_probs`` must have shape
  ``(M, B, C)`` and differ from the masked form's by at most 1e-4 (absolute, in probability), on
  the first ``CHECK_ROWS`` test inputs in batches of each timed size (the packing rule picks its
  path by batch size, so every size is checked on the path it times). A larger difference
  fails the script (exit 1) after every row is printed.
* **Latency.** One dense model of the run's architecture (``create_model`` with the manifest's
  model name, ``model_kwargs``, classes and input shape; eval mode, weights as initialised: the
  time does not depend on them) against the compact ensemble, both called the way a user calls
  them: ``ensemble.member_probs(x)`` -> ``(M, B, C)`` and ``softmax(dense(x))``. Minimum of
  single calls over interleaved rounds in one process (``time_interleaved`` and
  ``fixed_malloc_thresholds`` of ``benchmarks/ensemble.py``), on the first B test inputs.

One markdown row per (run, batch): model, M, batch, dense ms, ensemble / dense (goal <= 1.0),
FLOPs ensemble / dense (``FlopCounterMode`` on the slim members, the ``cost.compact`` block of
``freetickets evaluate``), the packed form's path and the packing rule's route for the batch
("packed: graph", "packed: folded", ...), the max difference.

    python benchmarks/compact.py RUN [RUN ...] [--batches 1 256] [--rounds 10] [--threads 2]

Exit status: 0 all rows correct; 1 a compact form disagreed with the masked one; 2 a run that
is missing, incomplete, not a channel run (no compact form) or whose data cannot be read.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from pathlib import Path

import torch

from freetickets.errors import UserError

#: Test inputs on which the compact and masked forms are compared, per timed batch size.
CHECK_ROWS = 512
#: Largest allowed absolute difference of member probabilities (issue 22: "within 1e-4").
TOLERANCE = 1e-4


def _bench_ensemble():
    """``benchmarks/ensemble.py`` as a module (its timer and malloc pinning are reused, not copied)."""
    name = "bench_ensemble"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("ensemble.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def open_run(run: Path) -> tuple[dict, torch.Tensor]:
    """The manifest of a completed channel run and its normalised test inputs ``(N, *input_shape)``.

    Raises :class:`UserError` (one line) for a missing or incomplete run, a run without a compact
    form (not trained with ``--structure channel``, or a model form) and unreadable data.
    """
    from freetickets.data import load_data
    from freetickets.train.config import load_yaml
    from freetickets.train.rundir import RunDir, load_complete_manifest

    manifest = load_complete_manifest(run)
    if manifest.get("structure") != "channel" or manifest.get("model_form"):
        raise UserError(f"{run}: not a channel run (method {manifest.get('method')}, structure "
                        f"{manifest.get('structure') or 'none'}); only runs trained with --structure channel "
                        "have a compact form")
    cfg = load_yaml(RunDir(run).config) if RunDir(run).config.is_file() else {}
    try:
        data = load_data(manifest["data"], cfg.get("data_dir"), num_samples=cfg.get("num_samples"), seed=0)
    except (UserError, ValueError, OSError) as exc:
        raise UserError(f"{run}: cannot read the run's data {manifest['data']!r} ({exc})") from None
    x = getattr(data.test, "x", None)
    if not isinstance(x, torch.Tensor) or x.shape[0] == 0:
        raise UserError(f"{run}: the test split of {manifest['data']!r} holds no input tensor to check and time on")
    return manifest, data.normalize(x) if data.normalize is not None else x


def max_difference(compact, masked, x: torch.Tensor, batch: int) -> tuple[float, str | None]:
    """Max abs difference of ``member_probs`` between the two forms on ``x`` in batches of ``batch``,
    and what was wrong with the outputs (None when every batch gave ``(M, b, C)`` without NaN)."""
    worst = 0.0
    for i in range(0, x.shape[0], batch):
        xb = x[i: i + batch]
        got, ref = compact.member_probs(xb), masked.member_probs(xb)
        expected = (compact.members, xb.shape[0], int(compact.manifest["num_classes"]))
        if tuple(got.shape) != expected:
            return float("nan"), f"member_probs shape {tuple(got.shape)}, expected {expected}"
        diff = (got - ref).abs().max().item()
        if math.isnan(diff):  # max() would skip a NaN: a broken output must not read as a match
            return diff, "member_probs hold NaN"
        worst = max(worst, diff)
    return worst, None


def bench_run(run: Path, manifest: dict, x: torch.Tensor, batches: list[int], rounds: int) -> list[dict]:
    """One result per batch size (see the module docstring); ``problem`` says why a row fails, else None."""
    from freetickets.ensembles.ensemble import Ensemble
    from freetickets.evaluation import compact_cost_block
    from freetickets.models.registry import create_model

    time_interleaved = _bench_ensemble().time_interleaved
    compact, masked = Ensemble.load(run, compact=True), Ensemble.load(run)
    shape = tuple(int(s) for s in manifest["input_shape"])
    torch.manual_seed(0)
    dense = create_model(manifest["model"], num_classes=int(manifest["num_classes"]), input_shape=shape,
                         **(manifest.get("model_kwargs") or {})).eval()
    flops = compact_cost_block(compact.form, dense, manifest)["inference_flops_vs_dense"]
    rows = []
    for batch in batches:
        diff, wrong_shape = max_difference(compact, masked, x[:max(CHECK_ROWS, batch)], batch)
        xb = x[:batch]
        best = time_interleaved({"dense": lambda: torch.softmax(dense(xb), dim=-1),
                                 "ensemble": lambda: compact.member_probs(xb)}, rounds, torch.device("cpu"))
        rows.append({"model": manifest["model"], "members": compact.members, "batch": batch,
                     "dense_ms": best["dense"] * 1e3, "ratio": best["ensemble"] / best["dense"],
                     "flops": flops, "path": _path(compact.form, xb), "diff": diff,
                     "problem": wrong_shape or (None if diff <= TOLERANCE else f"max diff {diff:.3g} > {TOLERANCE:g}")})
    return rows


def _path(form, x: torch.Tensor) -> str:
    """The packed form's path, with the packing rule's route for ``x`` ("packed: folded", say)."""
    path = getattr(form, "path", "—")
    return f"{path}: {form.route(x)}" if path == "packed" else path


def format_row(r: dict) -> str:
    flops = "—" if r["flops"] is None else f"{r['flops']:.2f}"
    diff = f"{r['diff']:.1e}" + (f" (FAIL: {r['problem']})" if r["problem"] else "")
    return (f"| {r['model']} | {r['members']} | {r['batch']} | {r['dense_ms']:.3f} | {r['ratio']:.2f} | "
            f"{flops} | {r['path']} | {diff} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="completed channel run directories")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 256], help="batch sizes (default 1 256)")
    ap.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds (default 10)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    args = ap.parse_args(argv)
    if min(args.batches) < 1 or args.rounds < 1 or args.threads < 1:
        ap.error("--batches, --rounds and --threads must be positive")
    try:
        opened = [(run, *open_run(run)) for run in args.runs]  # every run checked before any timing
        for run, _, x in opened:
            if x.shape[0] < max(args.batches):
                raise UserError(f"{run}: --batches {max(args.batches)}: the test split has only {x.shape[0]} inputs")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    malloc = "glibc malloc thresholds fixed" if _bench_ensemble().fixed_malloc_thresholds() else "malloc as is"
    print(f"torch {torch.__version__}, CPU threads {args.threads}, min over {args.rounds} interleaved rounds, "
          f"{malloc}; max diff: |member_probs compact - masked| on the first {CHECK_ROWS} test inputs")
    print("| model | M | batch | dense ms | ensemble / dense (goal ≤ 1.0) | FLOPs ensemble / dense | path "
          "| max diff |\n|---|---|---|---|---|---|---|---|", flush=True)
    failed = []
    for run, manifest, x in opened:
        try:
            rows = bench_run(run, manifest, x, args.batches, args.rounds)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for r in rows:
            print(format_row(r), flush=True)
            if r["problem"]:
                failed.append(f"{run} batch {r['batch']}: {r['problem']}")
    if failed:
        print("FAIL: the compact form's member_probs are not the masked form's: " + "; ".join(failed),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
