"""Choose the converged dense schedule E of the demo on the *validation* split.

Trains the demo's dense preset (with a regime's overrides from ``freetickets.demo.REGIMES`` and
any ``--set KEY=VALUE``) for every E of a doubling sequence (``--epochs 20 40 80``: each entry
twice the one before) and several seeds (0, 100, 200, ...: the demo's seeds), and measures one
dense model's validation accuracy and NLL. The test split is never read.

For each doubling E -> 2E the paired differences over seeds (seed k at 2E minus seed k at E) of
accuracy and of NLL get a two-sided 95% Student-t interval
(:func:`freetickets.metrics.claims.claim`).

Rule: *E is the shortest schedule of the sequence whose doubling improves neither validation
accuracy nor validation NLL beyond its paired interval*, i.e. the doubling E -> 2E neither has
an accuracy-gain interval wholly above 0 nor an NLL-change interval wholly below 0. The
largest E of the sequence has no doubling measured, so it is never chosen; if every doubling
improves, no E of the sequence is converged and ``selected_epochs`` is ``null``.

Writes ``OUT/rows.jsonl`` (one line per trained run, appended as runs finish; ``--resume``
skips the (seed, E) pairs already there) and ``OUT/select_epochs.json`` (the summary below).
``--summarise ROWS.jsonl`` prints and writes the summary of existing rows without training.

    python benchmarks/select_epochs.py --seeds 5 --epochs 20 40 80 160 320 --out select_epochs_out
    python benchmarks/select_epochs.py --summarise select_epochs_out/rows.jsonl --out select_epochs_out
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import yaml

from freetickets.metrics.claims import HOLDS, claim

ROWS = "rows.jsonl"
SUMMARY = "select_epochs.json"
RULE = ("E is the shortest schedule of the doubling sequence whose doubling E -> 2E improves neither "
        "validation accuracy nor validation NLL beyond its 95% paired Student-t interval over seeds "
        "(accuracy gain interval not wholly above 0 and NLL change interval not wholly below 0)")


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` items (YAML values, as ``freetickets train --set``) as a dict."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set: expected KEY=VALUE, got {item!r}")
        if key.strip() in ("epochs", "seed"):
            raise ValueError(f"--set: {key.strip()} is set by --{key.strip()}s")
        out[key.strip()] = yaml.safe_load(raw)
    return out


def dense_config(seed: int, epochs: int, *, regime: str, overrides: dict[str, Any]):
    """The demo's dense config for ``seed`` in ``regime``, trained for ``epochs``, plus ``overrides``."""
    from freetickets.demo import demo_config
    from freetickets.train.config import merge, validate

    base = demo_config("dense", seed, quick=False, device="cpu", regime=regime)
    return validate(merge(base, {**overrides, "epochs": epochs}, source="select_epochs"))


def validation_metrics(run_dir: Path, cfg) -> dict[str, float]:
    """Ensemble accuracy and NLL of a finished run on the validation split of its data."""
    from freetickets.data import load_data
    from freetickets.ensembles.ensemble import Ensemble
    from freetickets.evaluation import member_probs_of
    from freetickets.metrics import summarize

    data = load_data(cfg.data, cfg.data_dir, num_samples=cfg.num_samples, seed=0)
    probs = member_probs_of(Ensemble.load(run_dir, device="cpu"), data.val.x, normalize=data.normalize)
    s = summarize(probs, data.val.y)["ensemble"]
    return {"val_accuracy": float(s["accuracy"]), "val_nll": float(s["nll"])}


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``rows.jsonl`` file (blank lines ignored)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-E means, the paired doubling comparisons and the selected E (module docstring's rule).

    Only seeds present at every E are used, so that every comparison is paired.
    """
    epochs = sorted({int(r["epochs"]) for r in rows})
    by = {(int(r["seed"]), int(r["epochs"])): r for r in rows}
    seeds = sorted(s for s in {int(r["seed"]) for r in rows} if all((s, e) in by for e in epochs))
    if len(seeds) < 2:
        raise ValueError(f"need at least 2 seeds measured at every E ({epochs}); have {seeds}")
    per_e = []
    for e in epochs:
        rs = [by[(s, e)] for s in seeds]
        per_e.append({"epochs": e, "val_accuracy": _mean([r["val_accuracy"] for r in rs]),
                      "val_nll": _mean([r["val_nll"] for r in rs]),
                      "seconds_per_run": _mean([r["seconds"] for r in rs])})
    doublings, selected = [], None
    for e, e2 in zip(epochs, epochs[1:]):
        acc = claim("accuracy", [by[(s, e2)]["val_accuracy"] for s in seeds],
                    [by[(s, e)]["val_accuracy"] for s in seeds], higher_is_better=True)
        nll = claim("nll", [by[(s, e2)]["val_nll"] for s in seeds], [by[(s, e)]["val_nll"] for s in seeds],
                    higher_is_better=False)
        improves = acc["verdict"] == HOLDS or nll["verdict"] == HOLDS
        doublings.append({"from_epochs": e, "to_epochs": e2, "improves": improves,
                          "accuracy_gain": {k: acc[k] for k in ("difference", "interval")},
                          "nll_change": {k: nll[k] for k in ("difference", "interval")}})
        if not improves and selected is None:
            selected = e
    first = rows[0]
    return {"regime": first.get("regime"), "overrides": first.get("overrides", {}), "seeds": seeds,
            "epochs": epochs, "per_epochs": per_e, "doublings": doublings, "selected_epochs": selected,
            "rule": RULE}


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a Markdown table per E, one per doubling, and the verdict."""
    n = len(summary["seeds"])
    lines = [f"Dense model, validation split, {n} seeds ({', '.join(map(str, summary['seeds']))})", "",
             "| E | accuracy | NLL | seconds per run |", "|---:|---:|---:|---:|"]
    for p in summary["per_epochs"]:
        lines.append(f"| {p['epochs']} | {100 * p['val_accuracy']:.2f}% | {p['val_nll']:.3f} | "
                     f"{p['seconds_per_run']:.1f} |")
    lines += ["", "| doubling | accuracy gain (pp) [95% interval] | NLL change [95% interval] | improves |",
              "|---|---:|---:|:---:|"]
    for d in summary["doublings"]:
        a, v = d["accuracy_gain"], d["nll_change"]
        lines.append(f"| {d['from_epochs']} -> {d['to_epochs']} | {100 * a['difference']:+.2f} "
                     f"[{100 * a['interval'][0]:+.2f}, {100 * a['interval'][1]:+.2f}] | {v['difference']:+.3f} "
                     f"[{v['interval'][0]:+.3f}, {v['interval'][1]:+.3f}] | {'yes' if d['improves'] else 'no'} |")
    e = summary["selected_epochs"]
    lines += ["", f"selected E = {e}" if e is not None else
              f"no E <= {summary['epochs'][-1]} is converged: every doubling still improves"]
    return "\n".join(lines)


def _train_rows(args: argparse.Namespace, overrides: dict[str, Any], rows_path: Path) -> None:
    """Train every (seed, E) not yet in ``rows_path``, appending one row per run."""
    from freetickets.train import train

    done = set()
    if rows_path.is_file():
        for r in read_rows(rows_path):
            if r.get("regime") != args.regime or r.get("overrides", {}) != overrides:
                raise ValueError(f"--resume: {rows_path} holds runs of another regime or --set "
                                 f"({r.get('regime')}, {r.get('overrides')}); use another --out")
            done.add((int(r["seed"]), int(r["epochs"])))
    for s in range(args.seeds):
        seed = 100 * s
        for e in args.epochs:
            if (seed, e) in done:
                continue
            cfg = dense_config(seed, e, regime=args.regime, overrides=overrides)
            run = Path(args.out) / f"e{e}_seed{seed}"
            t0 = time.perf_counter()
            train(cfg, run, overwrite=True)
            metrics = validation_metrics(run, cfg)
            seconds = time.perf_counter() - t0  # training and the validation pass
            row = {"regime": args.regime, "overrides": overrides, "seed": seed, "epochs": e, **metrics,
                   "seconds": round(seconds, 2)}
            with rows_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"E={e:>4} seed {seed:>4}: val accuracy {100 * row['val_accuracy']:.2f}%  "
                  f"NLL {row['val_nll']:.4f}  ({seconds:.1f} s)", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    from freetickets.demo import DEFAULT_REGIME, REGIMES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, nargs="+", default=[20, 40, 80, 160, 320],
                   help="the doubling sequence of dense epochs E")
    p.add_argument("--seeds", type=int, default=5, help="seeds 0, 100, ... (at least 2)")
    p.add_argument("--regime", choices=list(REGIMES), default=DEFAULT_REGIME, help="the demo regime's overrides")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra configuration override (YAML value), e.g. --set num_samples=4000")
    p.add_argument("--out", default="select_epochs_out")
    p.add_argument("--resume", action="store_true", help="append to OUT/rows.jsonl, skipping runs already there")
    p.add_argument("--summarise", metavar="ROWS.jsonl", help="summarise existing rows; train nothing")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.summarise:
        if not Path(args.summarise).is_file():
            p.error(f"--summarise: {args.summarise} not found")
        rows = read_rows(Path(args.summarise))
    else:
        if args.seeds < 2:
            p.error("--seeds: at least 2 (a paired interval needs two seeds)")
        if len(args.epochs) < 2 or any(e < 1 for e in args.epochs) or any(
                b != 2 * a for a, b in zip(args.epochs, args.epochs[1:])):
            p.error("--epochs: at least two values >= 1, each twice the one before (e.g. 20 40 80)")
        try:
            overrides = _parse_set(args.set)
            dense_config(0, args.epochs[0], regime=args.regime, overrides=overrides)  # refuse bad keys early
        except ValueError as exc:
            p.error(str(exc))
        rows_path = out / ROWS
        if rows_path.is_file() and not args.resume:
            p.error(f"--out: {rows_path} exists; pass --resume to continue it or choose another --out")
        out.mkdir(parents=True, exist_ok=True)
        try:
            _train_rows(args, overrides, rows_path)
        except ValueError as exc:
            p.error(str(exc))
        rows = [r for r in read_rows(rows_path) if r["epochs"] in args.epochs and r["seed"] < 100 * args.seeds]
    try:
        summary = summarise(rows)
    except ValueError as exc:
        p.error(str(exc))
    out.mkdir(parents=True, exist_ok=True)
    (out / SUMMARY).write_text(json.dumps(summary, indent=1))
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
