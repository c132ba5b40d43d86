"""Channel-structured tickets against unstructured ones (issue 22, item 6), in the demo's regime.

    python benchmarks/structure.py --seeds 5 --out structure_out [--quick]
    # or split over processes: --only 0 1 2 & --only 3 4, then the plain command summarises
    python benchmarks/structure.py --seeds 5 --out structure_uniform --distribution uniform \
        --compare structure_out/structure.json   # uniform channel allocation, paired with ERK

Per seed (0, 100, 200, ... as the demo) trains with the demo's presets and regime: one dense
model, the dense deep ensemble, the unstructured EDST ensemble, and the EDST and DST ensembles
with ``structure: channel`` (same presets; only the structure changed, and the prune fraction, see
``CHANNEL_PRUNE_FRACTION``, the update interval, ``CHANNEL_UPDATE_INTERVAL``, and EDST's jump,
``CHANNEL_JUMP_FRACTION``), plus ``static`` with channel structure (the same slim architecture with
channels that never move). Evaluates the test split (accuracy, NLL, ECE; no OoD, no corruptions),
and decides paired claims over the seeds with :func:`freetickets.metrics.claims.claim` (mean
difference, two-sided 95% Student-t interval, verdict). Writes ``OUT/structure.json`` and prints two markdown tables (per method mean ± std;
paired differences; with ``--compare`` a third). Exit status 0 whatever the verdicts: it measures, it does not gate.

``--distribution`` sets the layer-density distribution of the channel methods only (from which
:func:`freetickets.sparse.channels.allocate_channels` derives each layer's channel count; dense,
deep and unstructured EDST keep the presets' ERK, so they are the same runs whatever it is).
Without it the channel runs keep the presets' distribution (today's numbers). Every row records
the settings it was trained with (:data:`RECORDED`: distribution, prune and jump fraction, update
interval), and a rerun into an ``OUT`` whose rows were trained with other ones is refused rather
than mixed. The summarising command reuses every row already in ``OUT`` and trains only the
missing ones (``--only`` retrains every method of its seeds): to re-measure after changing a
channel constant, delete the rows (``seed*/NAME.json``) of the methods it changes and rerun.

``--compare OTHER/structure.json`` pairs this run with another one of the same seeds, method by
method (this run − the other, Student-t over the seeds as above): e.g. uniform − ERK channel
allocation of each channel method.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

from freetickets.demo import demo_config
from freetickets.evaluation import evaluate_run
from freetickets.metrics.claims import claim
from freetickets.train import train
from freetickets.train.config import DISTRIBUTIONS, validate
from freetickets.utils.io import atomic_write_text

#: name -> (demo method, structure)
METHODS = {
    "dense": ("dense", None),
    "deep": ("deep", None),
    "edst": ("edst", None),
    "edst-channel": ("edst", "channel"),
    "dst-channel": ("dst", "channel"),
    "static-channel": ("static", "channel"),  # the same slim architecture, channels never move
}

#: the methods whose tickets are channel-structured (``--distribution`` applies to these only)
CHANNEL = tuple(name for name, (_, structure) in METHODS.items() if structure == "channel")

#: distribution recorded for rows written before rows recorded one (the script then always used
#: the presets' ERK)
LEGACY_DISTRIBUTION = "erk"

#: the settings every row records; a summarising rerun reuses a row only when they equal what this
#: invocation would train (and refuses to mix otherwise)
RECORDED = ("distribution", "prune_fraction", "jump_fraction", "update_interval")

#: prune fraction of the channel rows written before rows recorded their settings (their jump
#: fraction and update interval were the preset's, and every setting of the other rows too)
LEGACY_CHANNEL_PRUNE_FRACTION = 0.1

#: (a, b): the claim "a - b" for accuracy (higher is better) and NLL (lower is better)
PAIRS = [("edst-channel", "edst"), ("edst-channel", "dense"), ("edst-channel", "deep"),
         ("dst-channel", "dense"), ("dst-channel", "deep"), ("static-channel", "dense"), ("static-channel", "deep"),
         ("edst-channel", "dst-channel"), ("edst-channel", "static-channel")]


#: prune fraction of the channel runs (the presets' 0.5 moves half the channels every update;
#: 0.1 was best of 0.05 / 0.1 / 0.2 / 0.5 on the validation split of seed 0, docs/benchmarks.md;
#: re-checked for channel-DST in the converged regime, validation split, seeds 0-300: 0.1 best of
#: 0.05 / 0.1 / 0.2, benchmarks/select_presets.py, docs/benchmarks.md "Channel settings on validation")
CHANNEL_PRUNE_FRACTION = 0.1

#: EDST's jump fraction of the channel run (the share of each layer's kept channels regrown between
#: refinement phases): chosen of 0.5 / 0.2 / 0.1 / 0.05 on the validation split (converged regime,
#: seeds 0-300, update interval 100): their mean accuracies lie within 0.44 pp (87.28 / 86.84 / 87.06
#: / 87.22%), so the tie-break of the rule fixed before the runs, the lower mean NLL, decides: 0.1
#: (0.368, against 0.510 for 0.5; docs/benchmarks.md "Channel settings on validation")
CHANNEL_JUMP_FRACTION = 0.1

#: optimizer steps between the topology updates of channel-EDST and channel-DST (the presets' 100
#: moves one of the 4 channels of a layer keeping 4 every 100 steps): 1000 had the best mean
#: validation accuracy of 100 / 200 / 400 / 1000 for both (converged regime, seeds 0-300; EDST at jump
#: 0.1: 92.94% against 87.06% for 100; DST: 95.06% against 91.56%; docs/benchmarks.md "Update
#: interval on validation"). With 57 steps per epoch that is 2 updates in EDST's 36 epochs and 1 in
#: each DST member's 20 (at step 1000 of 1140, after the members' best-validation epochs on those
#: seeds: nearly static channel tickets). Not applied with ``--quick`` (its short runs keep the demo's
#: quick interval, so the smoke run still updates); ``static`` never updates, whatever the interval.
CHANNEL_UPDATE_INTERVAL = 1000

#: the demo methods whose channel runs update their topology (``CHANNEL_UPDATE_INTERVAL`` applies)
UPDATING = ("edst", "dst")


def _config(name: str, seed: int, quick: bool, device: str, distribution: str | None = None):
    """The run config of method ``name``: the demo's preset; for the channel methods
    ``structure: channel``, ``CHANNEL_PRUNE_FRACTION`` (for EDST also ``CHANNEL_JUMP_FRACTION``; for
    EDST and DST, without ``quick``, ``CHANNEL_UPDATE_INTERVAL``) and ``distribution`` (None: the
    preset's)."""
    method, structure = METHODS[name]
    cfg = demo_config(method, seed, quick=quick, device=device)
    if structure is None:
        return cfg
    changes = {"structure": structure, "prune_fraction": CHANNEL_PRUNE_FRACTION}
    if method == "edst":
        changes["jump_fraction"] = CHANNEL_JUMP_FRACTION
    if method in UPDATING and not quick:
        changes["update_interval"] = CHANNEL_UPDATE_INTERVAL
    if distribution is not None:
        changes["distribution"] = distribution
    return validate(dataclasses.replace(cfg, **changes))


def _row_distribution(row: dict) -> str:
    return row.get("distribution", LEGACY_DISTRIBUTION)


def _row_settings(name: str, row: dict, preset) -> dict:
    """The :data:`RECORDED` settings ``row`` of method ``name`` was trained with; a setting the row
    does not record is the legacy one (``preset``: the method's demo config, without this
    script's channel changes)."""
    legacy = {"distribution": LEGACY_DISTRIBUTION, "jump_fraction": preset.jump_fraction,
              "update_interval": preset.update_interval,
              "prune_fraction": LEGACY_CHANNEL_PRUNE_FRACTION if name in CHANNEL else preset.prune_fraction}
    return {key: row.get(key, legacy[key]) for key in RECORDED}


def stale_rows(out: Path, seeds: list[int], quick: bool, device: str, distribution: str | None) -> list[str]:
    """``seed{s}/NAME.json`` rows under ``out`` trained with other :data:`RECORDED` settings than
    this invocation would use (reusing them would mix two settings in one table)."""
    stale = []
    for s in seeds:
        for name in METHODS:
            path = out / f"seed{s}" / f"{name}.json"
            if path.exists():
                cfg = _config(name, 100 * s, quick, device, distribution)
                want = {key: getattr(cfg, key) for key in RECORDED}
                got = _row_settings(name, json.loads(path.read_text()), demo_config(METHODS[name][0], 100 * s,
                                                                                    quick=quick, device=device))
                diff = ", ".join(f"{key} {got[key]}, not {want[key]}" for key in RECORDED if got[key] != want[key])
                if diff:
                    stale.append(f"seed{s}/{name} ({diff})")
    return stale


def run_seed(out: Path, s: int, quick: bool, device: str, distribution: str | None = None,
             names: list[str] | None = None) -> None:
    """Train and evaluate the methods ``names`` (default: all) for seed index ``s`` (seed
    ``100 * s``); one JSON row per method in ``OUT/seed{s}/NAME.json`` (so seeds may run in
    parallel processes). Without ``dense`` in ``names`` the FLOPs ratios use the dense row already
    in ``OUT``. Rows record their :data:`RECORDED` settings.

    ``slim_inference_flops_vs_dense`` is the evaluation's ``cost.compact`` ratio (FLOPs counted on
    the slim members; channel runs only, None otherwise)."""
    names = list(METHODS) if names is None else names
    rows: dict[str, dict] = {}
    for name in names:
        run_dir = out / f"seed{s}" / name
        t0 = time.time()
        cfg = _config(name, 100 * s, quick, device, distribution)
        train(cfg, run_dir, overwrite=True)
        res = evaluate_run(run_dir, ood=["none"], corruptions=None, device=device)
        compact = res["cost"].get("compact") or {}
        rows[name] = {"accuracy": res["ensemble"]["accuracy"], "nll": res["ensemble"]["nll"],
                      "ece": res["ensemble"]["ece"], "train_flops": res["cost"]["train_flops"],
                      "inference_flops": res["cost"]["inference_flops"], "sparsity": res["cost"]["sparsity"],
                      **{key: getattr(cfg, key) for key in RECORDED},
                      "slim_inference_flops_vs_dense": compact.get("inference_flops_vs_dense")}
        print(f"[seed {s}] {name:<14} accuracy {100 * rows[name]['accuracy']:.2f}%  NLL {rows[name]['nll']:.4f}  "
              f"({time.time() - t0:.0f} s)", flush=True)
    dense = rows["dense"] if "dense" in rows else json.loads((out / f"seed{s}" / "dense.json").read_text())
    for name, row in rows.items():
        row["train_flops_vs_dense"] = row["train_flops"] / dense["train_flops"]
        row["inference_flops_vs_dense"] = row["inference_flops"] / dense["inference_flops"]
        atomic_write_text(out / f"seed{s}" / f"{name}.json", json.dumps(row))


def _pair(name: str, a: list[dict], b: list[dict]) -> list[dict]:
    """The accuracy (pp, higher is better) and NLL (lower is better) claims of ``a - b``, per seed."""
    return [claim(f"{name}, accuracy (pp)", [100 * r["accuracy"] for r in a], [100 * r["accuracy"] for r in b]),
            claim(f"{name}, NLL", [r["nll"] for r in a], [r["nll"] for r in b], higher_is_better=False)]


def channel_distribution(result: dict) -> str:
    """The one distribution the channel rows of a summary were trained with (``ValueError`` if mixed)."""
    found = {_row_distribution(r) for name in CHANNEL for r in result["per_seed"].get(name, [])}
    if len(found) != 1:
        raise ValueError(f"channel rows trained with {sorted(found) or 'no'} distributions, expected exactly one")
    return found.pop()


def summarize(out: Path, seeds: list[int], quick: bool) -> dict:
    """``{"per_seed": {name: [per-seed dict]}, "claims": [...], "distribution": ...}`` from the seeds' JSON rows."""
    per = {name: [json.loads((out / f"seed{s}" / f"{name}.json").read_text()) for s in seeds] for name in METHODS}
    claims = [c for a, b in PAIRS for c in _pair(f"{a} - {b}", per[a], per[b])]
    result = {"seeds": [100 * s for s in seeds], "quick": quick, "per_seed": per, "claims": claims}
    result["distribution"] = channel_distribution(result)
    return result


def check_pairable(other, seeds: list[int], quick: bool) -> None:
    """``ValueError`` unless ``other`` is a summary of the same ``seeds`` (0, 100, ...) and
    ``quick`` with every method's per-seed rows."""
    if not isinstance(other, dict) or not isinstance(other.get("per_seed"), dict):
        raise ValueError("--compare: not a structure.json summary")
    if other.get("seeds") != seeds or bool(other.get("quick")) != bool(quick):
        raise ValueError(f"--compare: seeds {other.get('seeds')} (quick={bool(other.get('quick'))}) cannot be paired "
                         f"with seeds {seeds} (quick={bool(quick)})")
    missing = [name for name in METHODS if len(other["per_seed"].get(name) or []) != len(seeds)]
    if missing:
        raise ValueError(f"--compare: no per-seed rows for {', '.join(missing)}")


def compare(result: dict, other: dict) -> dict:
    """Paired claims of this run's channel methods against another run's (same seeds, same
    ``quick``): ``{"other_distribution", "claims", "unchanged_max_abs_diff"}``; the last is the
    largest per-seed |difference| of accuracy (pp) and NLL over the methods ``--distribution``
    does not touch, which are the same runs in both (0 when training is reproducible).
    ``ValueError`` when the two cannot be paired."""
    check_pairable(other, result["seeds"], result["quick"])
    this, that = result["distribution"], channel_distribution(other)
    claims = [c for name in CHANNEL
              for c in _pair(f"{name}: {this} - {that}", result["per_seed"][name], other["per_seed"][name])]
    unchanged = [name for name in METHODS if name not in CHANNEL]
    diffs = [(abs(100 * (a["accuracy"] - b["accuracy"])), abs(a["nll"] - b["nll"]))
             for name in unchanged for a, b in zip(result["per_seed"][name], other["per_seed"][name])]
    return {"other_distribution": that, "claims": claims,
            "unchanged_max_abs_diff": {"accuracy_pp": max(d[0] for d in diffs), "nll": max(d[1] for d in diffs)}}


def _ms(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    mean = statistics.fmean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _slim(rows: list[dict]) -> str:
    values = [r.get("slim_inference_flops_vs_dense") for r in rows]
    return "—" if any(v is None for v in values) else f"{statistics.fmean(values):.2f}"


def _claim_rows(claims: list[dict]) -> list[str]:
    lines = ["| paired difference | mean | 95% interval | verdict |", "|---|---|---|---|"]
    for c in claims:
        lo, hi = c["interval"]
        interval = "unbounded" if lo is None else f"[{lo:+.3f}, {hi:+.3f}]"
        lines.append(f"| {c['name']} | {c['difference']:+.3f} | {interval} | {c['verdict']} |")
    return lines


def tables(result: dict) -> str:
    """Markdown: per method mean ± std over the seeds, the paired claims, and (with ``--compare``)
    the paired claims against the other run. "slim" FLOPs are ``cost.compact``'s (— for masked runs)."""
    lines = ["| method | distribution | accuracy (%) | NLL | ECE | train FLOPs (× dense) | inference FLOPs (× dense) "
             "| slim inference FLOPs (× dense) |", "|---|---|---|---|---|---|---|---|"]
    for name, rows in result["per_seed"].items():
        dist = "/".join(sorted({_row_distribution(r) for r in rows}))
        train_flops = statistics.fmean(r["train_flops_vs_dense"] for r in rows)
        inference_flops = statistics.fmean(r["inference_flops_vs_dense"] for r in rows)
        lines.append(f"| {name} | {dist} | {_ms([r['accuracy'] for r in rows], 100)} "
                     f"| {_ms([r['nll'] for r in rows], 1, 3)} | {_ms([r['ece'] for r in rows], 1, 3)} "
                     f"| {train_flops:.2f} | {inference_flops:.2f} | {_slim(rows)} |")
    lines += ["", *_claim_rows(result["claims"])]
    if "compare" in result:
        cmp = result["compare"]
        lines += ["", f"Against {cmp['path']} (channel rows: {cmp['other_distribution']}):", "",
                  *_claim_rows(cmp["claims"]), "",
                  f"Runs that --distribution does not touch ({', '.join(n for n in METHODS if n not in CHANNEL)}) "
                  f"differ by at most {cmp['unchanged_max_abs_diff']['accuracy_pp']:.3f} pp accuracy and "
                  f"{cmp['unchanged_max_abs_diff']['nll']:.4f} NLL per seed."]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="channel-structured vs unstructured sparse ensembles on MNIST-1D")
    p.add_argument("--seeds", type=int, default=5, help="seed indices 0..N-1 (seeds 0, 100, ...)")
    p.add_argument("--only", type=int, nargs="+", metavar="S",
                   help="train only these seed indices (to split the work over processes), no summary")
    p.add_argument("--out", default="structure_out")
    p.add_argument("--quick", action="store_true", help="the demo's smoke settings (not meaningful numbers)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--distribution", choices=DISTRIBUTIONS,
                   help="layer-density distribution of the channel methods only, from which each layer's channel "
                        "count follows (default: the presets', erk); uniform keeps the same fraction of every "
                        "layer's channels")
    p.add_argument("--compare", metavar="OTHER_JSON",
                   help="another run's structure.json with the same seeds: pair each channel method with it "
                        "(this run - the other, e.g. uniform - erk)")
    args = p.parse_args(argv)
    if args.seeds < 2:
        p.error("--seeds: at least 2 (one seed gives no interval)")
    if args.compare is not None and args.only is not None:
        p.error("--compare: only with the summarising command (without --only)")
    other = None
    if args.compare is not None:
        try:
            other = json.loads(Path(args.compare).read_text())
        except (OSError, ValueError) as exc:
            p.error(f"--compare: cannot read {args.compare}: {exc}")
    out = Path(args.out)
    seeds = list(range(args.seeds))
    if other is not None:
        try:  # before training, not after it
            check_pairable(other, [100 * s for s in seeds], args.quick)
        except ValueError as exc:
            p.error(str(exc))
    stale = [] if args.only is not None else stale_rows(out, seeds, args.quick, args.device, args.distribution)
    if stale:  # (--only retrains its seeds whatever they hold; the summarising command checks them all)
        more = f" and {len(stale) - 1} more" if len(stale) > 1 else ""
        p.error(f"--out {out} holds runs trained with other settings (another --distribution, or this script's "
                f"channel constants changed): {stale[0]}{more}; choose another --out or delete those rows")
    out.mkdir(parents=True, exist_ok=True)
    for s in (args.only if args.only is not None else seeds):
        # --only retrains every method of its seeds; the summarising command trains only the missing rows
        missing = [n for n in METHODS if args.only is not None or not (out / f"seed{s}" / f"{n}.json").exists()]
        if missing:
            run_seed(out, s, args.quick, args.device, args.distribution, missing)
    if args.only is not None:
        return 0
    try:
        result = summarize(out, seeds, args.quick)
        if other is not None:
            result["compare"] = {"path": args.compare, **compare(result, other)}
    except ValueError as exc:
        p.error(str(exc))
    atomic_write_text(out / "structure.json", json.dumps(result, indent=2))
    print()
    print(tables(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
