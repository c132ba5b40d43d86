"""The paper's claims decided from per-seed results: the ``claims`` block and its table.

Each claim compares two methods trained with the same seeds (seed ``k`` of ``per_seed`` is one
pair). Quality claims use the paired difference ``d_k = a_k - b_k`` of an ensemble metric
(e.g. EDST minus dense accuracy); cost claims use ``d_k = a_k / b_k - 1`` of a cost count
(e.g. EDST training FLOPs over dense training FLOPs, minus 1). The interval and the verdict are
those of :mod:`freetickets.metrics.claims` (two-sided 95% Student-t over the paired seeds).

Entries of the block (a list, in :data:`CLAIMS` order)::

    {"name", "methods": [a, b], "metric", "kind": "quality" | "cost", "better": "higher" | "lower",
     "threshold", "difference", "interval": [lo, hi], "verdict", "seeds", "reason"?, "reference"?}

``verdict`` is ``holds`` / ``not resolved`` / ``fails``, or:

* ``not resolvable`` for a quality claim with one seed: the seed-to-seed spread cannot be
  estimated, so there is no interval (``interval`` is ``[None, None]``); the difference is
  still reported;
* ``skipped`` when a method or metric is missing (``reason`` says which; difference and
  interval are ``None``). The demo's method list may grow or shrink: claims use only the
  methods present.

Seeds are paired: only the seeds that both methods were run with count (``seeds`` says how
many). A cost claim against ``dense`` without a dense run uses each run's own dense reference
(its ``cost.<metric>_vs_dense`` ratio; ``"reference"`` is then :data:`OWN_REFERENCE`).

Cost claims are counts (FLOPs, non-zero weights), not estimates: their spread over seeds is
zero by construction, the interval is the point ``[d, d]`` and the verdict is the comparison of
the value with the threshold, with any number of seeds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from freetickets.metrics.claims import claim as _claim
from freetickets.metrics.claims import verdict as _verdict
from freetickets.names import DENSE_EDST_EPOCHS
from freetickets.report.seeds import flatten_metrics, seed_list
from freetickets.report.tables import _render

__all__ = ["CLAIMS", "ClaimSpec", "compute_claims", "claims_table", "NOT_RESOLVABLE", "OWN_REFERENCE", "SKIPPED"]

NOT_RESOLVABLE = "not resolvable"
SKIPPED = "skipped"


@dataclass(frozen=True)
class ClaimSpec:
    """One claim: ``a`` beats ``b`` on ``metric`` (flattened key of :func:`flatten_metrics`).

    ``kind="quality"``: difference ``a - b``, shown ×``scale`` in ``unit``. ``kind="cost"``:
    difference ``a / b - 1`` of the raw cost values, shown as the ratio ``a / b``.
    The claim is ``difference > threshold`` (``better="higher"``) or ``< threshold``
    (``"lower"``); ``inclusive`` turns ``<`` into ``<=``.
    """

    name: str
    a: str
    b: str
    metric: str
    better: str
    kind: str = "quality"
    threshold: float = 0.0
    inclusive: bool = False
    scale: float = 1.0
    unit: str = ""


#: The paper's claims (FreeTickets, Liu et al. 2022, Secs. 4-5) as the issue lists them.
CLAIMS: tuple[ClaimSpec, ...] = (
    ClaimSpec("EDST accuracy > dense", "edst", "dense", "accuracy", "higher", scale=100.0, unit=" pp"),
    ClaimSpec("EDST NLL < dense", "edst", "dense", "nll", "lower"),
    # the equal-epochs control: a dense model trained for EDST's number of epochs (more FLOPs)
    ClaimSpec("EDST accuracy > dense at equal epochs", "edst", DENSE_EDST_EPOCHS, "accuracy", "higher",
              scale=100.0, unit=" pp"),
    ClaimSpec("EDST NLL < dense at equal epochs", "edst", DENSE_EDST_EPOCHS, "nll", "lower"),
    ClaimSpec("EDST training FLOPs < dense at equal epochs", "edst", DENSE_EDST_EPOCHS, "cost.train_flops",
              "lower", kind="cost"),
    ClaimSpec("EDST ECE < dense", "edst", "dense", "ece", "lower", scale=100.0, unit=" pp"),
    ClaimSpec("EDST OoD AUROC > dense", "edst", "dense", "ood_mean.auroc", "higher", scale=100.0, unit=" pp"),
    ClaimSpec("EDST corrupted accuracy > dense", "edst", "dense", "corrupted.accuracy", "higher",
              scale=100.0, unit=" pp"),
    ClaimSpec("DST accuracy within 0.5 pp of deep ensemble", "dst", "deep", "accuracy", "higher",
              threshold=-0.005, scale=100.0, unit=" pp"),
    ClaimSpec("EDST training FLOPs < dense", "edst", "dense", "cost.train_flops", "lower", kind="cost"),
    ClaimSpec("EDST inference FLOPs <= dense", "edst", "dense", "cost.inference_flops", "lower", kind="cost",
              inclusive=True),
    ClaimSpec("EDST non-zero parameters < dense", "edst", "dense", "cost.nonzero_params", "lower", kind="cost"),
    ClaimSpec("DST training FLOPs <= 0.5 x deep ensemble", "dst", "deep", "cost.train_flops", "lower",
              kind="cost", threshold=-0.5, inclusive=True),
    # FreeTickets against the efficient ensembles (the paper's headline): better accuracy and NLL
    # at fewer training FLOPs than each of them.
    *(spec for other, label in (("snapshot", "snapshot"), ("mimo", "MIMO"), ("batchensemble", "BatchEnsemble"),
                                ("mcdropout", "MC dropout"), ("packed", "Packed-Ensembles"),
                                ("masksembles", "Masksembles"))
      for spec in (
          ClaimSpec(f"EDST accuracy > {label}", "edst", other, "accuracy", "higher", scale=100.0, unit=" pp"),
          ClaimSpec(f"EDST NLL < {label}", "edst", other, "nll", "lower"),
          ClaimSpec(f"EDST training FLOPs < {label}", "edst", other, "cost.train_flops", "lower", kind="cost"))),
)


def _entry(spec: ClaimSpec) -> dict[str, Any]:
    return {"name": spec.name, "methods": [spec.a, spec.b], "metric": spec.metric, "kind": spec.kind,
            "better": spec.better, "threshold": spec.threshold, "difference": None,
            "interval": [None, None], "verdict": SKIPPED, "seeds": 0}


#: ``entry["reference"]`` of a cost claim against dense decided without a dense run.
OWN_REFERENCE = "each run's own dense reference"


def _own_reference(spec: ClaimSpec, seeds: Sequence[Mapping[str, Any]]) -> tuple[list[float], list[float]] | str:
    """A cost claim against ``dense`` without a dense run: every run of ``spec.a`` carries the
    ratio of its cost to its own dense reference (``cost.<metric>_vs_dense``: one dense model of
    the architecture, trained the run's reference epochs), so ``a / dense`` is that ratio."""
    key = f"{spec.metric}_vs_dense"
    ratios = []
    for k, seed in enumerate(seeds):
        if spec.a in seed:
            v = flatten_metrics(seed[spec.a]).get(key)
            if v is None or not math.isfinite(v):
                return f"method 'dense' is not in the results and '{key}' of '{spec.a}' is missing in seed {k}"
            ratios.append(v)
    return ratios, [1.0] * len(ratios)


def _pairs(spec: ClaimSpec, seeds: Sequence[Mapping[str, Any]]) -> tuple[list[float], list[float]] | str:
    """Per-seed values of both methods over the seeds that have both, or the reason the claim
    cannot be computed."""
    if not any(spec.a in seed for seed in seeds):
        return f"method '{spec.a}' is not in the results"
    if spec.kind == "cost" and spec.b == "dense" and not any("dense" in seed for seed in seeds):
        return _own_reference(spec, seeds)
    if not any(spec.b in seed for seed in seeds):
        return f"method '{spec.b}' is not in the results"
    a_vals, b_vals = [], []
    for k, seed in enumerate(seeds):
        if spec.a not in seed or spec.b not in seed:
            continue  # a seed only one of them was run with: no pair
        fa, fb = flatten_metrics(seed[spec.a]), flatten_metrics(seed[spec.b])
        for method, flat in ((spec.a, fa), (spec.b, fb)):
            v = flat.get(spec.metric)
            if v is None or not math.isfinite(v):
                return f"'{spec.metric}' of '{method}' is missing in seed {k}"
        if spec.kind == "cost" and fb[spec.metric] == 0:
            return f"'{spec.metric}' of '{spec.b}' is 0 in seed {k}: no ratio"
        a_vals.append(fa[spec.metric])
        b_vals.append(fb[spec.metric])
    if not a_vals:
        return f"'{spec.a}' and '{spec.b}' share no seed: nothing to pair"
    return a_vals, b_vals


def compute_claims(per_seed: Sequence[Mapping[str, Mapping[str, Any]]],
                   specs: Sequence[ClaimSpec] = CLAIMS, confidence: float = 0.95) -> list[dict[str, Any]]:
    """The ``claims`` block (module docstring) from ``per_seed[k] = {method: eval_obj}``."""
    seeds = seed_list(per_seed)
    out = []
    for spec in specs:
        entry = _entry(spec)
        pairs = _pairs(spec, seeds)
        if isinstance(pairs, str):
            entry["reason"] = pairs
            out.append(entry)
            continue
        a_vals, b_vals = pairs
        if spec.kind == "cost" and spec.b == "dense" and not any("dense" in seed for seed in seeds):
            entry["reference"] = OWN_REFERENCE
        higher = spec.better == "higher"
        if spec.kind == "cost":  # ratio - 1 against 0: pass a/b - 1 as "a", 0 as "b"
            a_vals, b_vals = [x / y - 1.0 for x, y in zip(a_vals, b_vals)], [0.0] * len(a_vals)
        res = _claim(spec.name, a_vals, b_vals, higher, confidence, spec.threshold, spec.inclusive)
        entry.update(difference=res["difference"], interval=res["interval"], verdict=res["verdict"],
                     seeds=res["seeds"])
        if res["seeds"] == 1:
            d = res["difference"]
            if spec.kind == "cost":
                entry["interval"] = [d, d]
                entry["verdict"] = _verdict(d, d, higher, spec.threshold, spec.inclusive)
            else:
                entry["verdict"] = NOT_RESOLVABLE
                entry["reason"] = "one seed: the seed-to-seed spread cannot be estimated, so no interval"
        out.append(entry)
    return out


def _spec_of(entry: Mapping[str, Any]) -> ClaimSpec | None:
    return next((s for s in CLAIMS if s.name == entry.get("name")), None)


def _fmt(value: float | None, spec: ClaimSpec | None, kind: str) -> str:
    if value is None:
        return "—"
    if kind == "cost":
        return f"{1.0 + value:.3f}×"
    scale, unit = (spec.scale, spec.unit) if spec else (1.0, "")
    decimals = 2 if scale == 100.0 else 4
    return f"{value * scale:+.{decimals}f}{unit}"


def claims_table(claims: Sequence[Mapping[str, Any]], fmt: str = "markdown") -> str:
    """Claim | Seeds | Difference | 95% interval | Verdict. Empty string for no claims.

    Quality differences are shown in percentage points (accuracy, ECE, AUROC) or raw (NLL);
    cost claims show the ratio ``a / b`` and its interval as ratios.
    """
    if not claims:
        return ""
    rows = []
    for c in claims:
        spec, kind = _spec_of(c), c.get("kind", "quality")
        lo, hi = (c.get("interval") or [None, None])[:2]
        if c.get("difference") is None:
            interval = "—"
        elif lo is None or hi is None:
            interval = "none (1 seed)" if c.get("seeds") == 1 else "unbounded"
        else:
            interval = f"[{_fmt(lo, spec, kind)}, {_fmt(hi, spec, kind)}]"
        verdict = c.get("verdict", "")
        if verdict == SKIPPED and c.get("reason"):
            verdict = f"skipped: {c['reason']}"
        elif c.get("reference"):
            verdict = f"{verdict} (vs {c['reference']})"
        rows.append([str(c.get("name")), str(c.get("seeds", 0)), _fmt(c.get("difference"), spec, kind),
                     interval, verdict])
    return _render(["Claim", "Seeds", "Difference", "95% interval", "Verdict"], rows, fmt,
                   align=["l", "r", "r", "r", "l"])
