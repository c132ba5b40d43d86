"""Per-seed evaluation objects as flat metric keys, their mean ± std over seeds, and the
canonical method order: what every table, plot and claim of the report reads.

Input is what ``freetickets evaluate --json`` produces per method (docs/evaluation.md), one mapping
``{method: eval_obj}`` per seed; ``per_seed`` is the list of those mappings.

Flattened metric keys (the keys of :func:`flatten_metrics` and :func:`aggregate_seeds`):

* ensemble scalars without a prefix: ``accuracy``, ``nll``, ``ece``, ``brier`` (and any other
  scalar the evaluator adds to ``"ensemble"``);
* ``ood.<name>.<metric>`` per OoD set and ``ood_mean.<metric>`` (mean over the OoD sets);
* ``corrupted.<metric>`` and ``corrupted.severity_<s>.<metric>`` (from ``by_severity``);
* ``members.<i>.<metric>`` (``i`` 0-based), ``members_mean.<metric>`` and ``members.count``;
* ``diversity.<metric>`` (scalars only; the matrices are left out);
* ``cost.<key>`` and the derived ``cost.nonzero_params_vs_dense`` (nonzero_params / dense_params).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from freetickets.names import DENSE_EDST_EPOCHS

__all__ = ["METHOD_ORDER", "METHOD_LABELS", "RUN_ONLY_KEYS", "RunResult", "Stats", "method_label", "order_methods",
           "flatten_metrics", "seed_list", "aggregate_seeds", "pair_seeds"]

#: Canonical order of the paper's methods in every table and plot.
METHOD_ORDER: tuple[str, ...] = ("dense", DENSE_EDST_EPOCHS, "deep", "dst", "edst", "pf", "static", "mimo", "batchensemble",
                                 "mcdropout", "packed", "masksembles", "snapshot")

#: Human-readable method names.
METHOD_LABELS: dict[str, str] = {
    "dense": "Dense (single)",
    DENSE_EDST_EPOCHS: "Dense (EDST's epochs)",
    "deep": "Deep ensemble",
    "dst": "DST ensemble",
    "edst": "EDST ensemble",
    "pf": "PF ensemble",
    "static": "Static sparse ensemble",
    "mimo": "MIMO",
    "batchensemble": "BatchEnsemble",
    "mcdropout": "MC dropout",
    "packed": "Packed-Ensembles",
    "masksembles": "Masksembles",
    "snapshot": "Snapshot ensemble",
}

Stats = dict[str, tuple[float, float]]


def method_label(method: str) -> str:
    """The human label of ``method``; unknown names are shown as they are."""
    return METHOD_LABELS.get(method, method)


def order_methods(names: Iterable[str]) -> list[str]:
    """Known methods in :data:`METHOD_ORDER`, then unknown names in first-seen order (no repeats)."""
    seen: list[str] = []
    for n in names:
        if n not in seen:
            seen.append(n)
    known = [m for m in METHOD_ORDER if m in seen]
    return known + [m for m in seen if m not in METHOD_ORDER]


def _as_float(value: Any) -> float | None:
    """``value`` as a float if it is a real scalar (Python, NumPy or 0-d tensor); else ``None``."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # 0-d np array / tensor
        try:
            item = value.item()
        except Exception:  # pragma: no cover - exotic objects
            return None
        return _as_float(item)
    return None


def _flatten_dict(obj: Mapping[str, Any], prefix: str, out: dict[str, float]) -> None:
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            _flatten_dict(value, name + ".", out)
            continue
        v = _as_float(value)
        if v is not None:
            out[name] = v
        # lists (matrices, by_severity, members) are handled by the caller


def flatten_metrics(eval_obj: Mapping[str, Any]) -> dict[str, float]:
    """Flatten one evaluation object into ``{key: float}`` (keys in the module docstring).

    Only scalars are kept; matrices and lists are summarised by the derived keys so that seeds
    can be averaged key by key.
    """
    out: dict[str, float] = {}
    ensemble = eval_obj.get("ensemble") or {}
    _flatten_dict(ensemble, "", out)

    ood = ensemble.get("ood") or {}
    per_metric: dict[str, list[float]] = {}
    for scores in ood.values():
        if isinstance(scores, Mapping):
            for mk, mv in scores.items():
                v = _as_float(mv)
                if v is not None:
                    per_metric.setdefault(mk, []).append(v)
    for mk, values in per_metric.items():
        out[f"ood_mean.{mk}"] = float(np.mean(values))

    corrupted = ensemble.get("corrupted") or {}
    for entry in corrupted.get("by_severity") or []:
        if not isinstance(entry, Mapping) or _as_float(entry.get("severity")) is None:
            continue
        sev = int(_as_float(entry["severity"]))  # type: ignore[arg-type]
        for mk, mv in entry.items():
            v = _as_float(mv)
            if mk != "severity" and v is not None:
                out[f"corrupted.severity_{sev}.{mk}"] = v

    members = eval_obj.get("members") or []
    member_metric: dict[str, list[float]] = {}
    for i, member in enumerate(members):
        if not isinstance(member, Mapping):
            continue
        for mk, mv in member.items():
            v = _as_float(mv)
            if v is not None:
                out[f"members.{i}.{mk}"] = v
                member_metric.setdefault(mk, []).append(v)
    if members:
        out["members.count"] = float(len(members))
    for mk, values in member_metric.items():
        out[f"members_mean.{mk}"] = float(np.mean(values))

    _flatten_dict(eval_obj.get("diversity") or {}, "diversity.", out)

    cost = eval_obj.get("cost") or {}
    _flatten_dict(cost, "cost.", out)
    nonzero, dense = _as_float(cost.get("nonzero_params")), _as_float(cost.get("dense_params"))
    if nonzero is not None and dense:
        out["cost.nonzero_params_vs_dense"] = nonzero / dense
    return out


def seed_list(per_seed: Any) -> list[Mapping[str, Any]]:
    """Accept one ``{method: eval}`` mapping or a list of them; always return a non-empty list."""
    if isinstance(per_seed, Mapping):
        per_seed = [per_seed]
    per_seed = list(per_seed)
    if not per_seed:
        raise ValueError("per_seed: expected at least one {method: evaluation} mapping, got none")
    for i, seed in enumerate(per_seed):
        if not isinstance(seed, Mapping):
            raise ValueError(f"per_seed[{i}]: expected a mapping method -> evaluation object")
    return per_seed


def aggregate_seeds(per_seed: Sequence[Mapping[str, Mapping[str, Any]]]) -> dict[str, Stats]:
    """Mean and standard deviation over seeds of every scalar metric of every method.

    ``per_seed[k][method]`` is the evaluation object of ``method`` for seed ``k``. Returns
    ``{method: {key: (mean, std)}}`` with the flattened keys of :func:`flatten_metrics`, methods
    in canonical order. The std is the sample standard deviation (ddof=1, the usual "mean ± std
    over runs"); it is 0.0 when only one seed carries the key. A key missing from some seeds is
    averaged over the seeds that have it.
    """
    seeds = seed_list(per_seed)
    methods = order_methods(m for seed in seeds for m in seed)
    result: dict[str, Stats] = {}
    for method in methods:
        values: dict[str, list[float]] = {}
        for seed in seeds:
            if method in seed:
                for key, v in flatten_metrics(seed[method]).items():
                    values.setdefault(key, []).append(v)
        stats: Stats = {}
        for key, vs in values.items():
            arr = np.asarray(vs, dtype=np.float64)
            std = float(np.std(arr, ddof=1)) if arr.size > 1 else 0.0
            stats[key] = (float(np.mean(arr)), std)
        result[method] = stats
    return result


#: Configuration keys that do not define a method's settings: the seed, and where or how a run
#: ran (data folder, device, workers, checkpoint cadence, the PF parent run, which is one per seed).
RUN_ONLY_KEYS: frozenset[str] = frozenset({
    "seed", "data_dir", "device", "num_workers", "eval_batch_size", "checkpoint_every_steps", "dist_backend",
    "check_consistency", "from_run"})


@dataclass(frozen=True)
class RunResult:
    """One evaluated run: where it is (for messages), its method, its resolved configuration
    (``config.yaml``; may be empty) and its evaluation object."""

    source: str
    method: str
    config: Mapping[str, Any]
    result: Mapping[str, Any] = field(repr=False)


def _settings(run: RunResult) -> str:
    """The run's settings as a canonical string: every configuration key but :data:`RUN_ONLY_KEYS`."""
    import json

    kept = {k: v for k, v in run.config.items() if k not in RUN_ONLY_KEYS}
    return json.dumps({"method": run.method, **kept}, sort_keys=True, default=str)


def pair_seeds(runs: Sequence[RunResult]) -> tuple[list[dict[str, Mapping[str, Any]]], dict[str, list[str]]]:
    """Group runs that differ only in their seed into one method, and pair methods by seed.

    Runs with the same method and the same settings (configuration without
    :data:`RUN_ONLY_KEYS`) are seeds of one entry named after the method; a later group of the
    same method with other settings is ``<method>_2``, ``_3``, ... Returns ``(per_seed, sources)``:
    ``per_seed[k]`` is ``{name: evaluation}`` of each entry's run with its k-th smallest seed (an
    entry with fewer runs is absent from the later slots, so claims pair only the slots both
    methods have), and ``sources[name]`` lists that entry's runs in seed order. When every
    method was run with the same seeds (the usual case, and the demo's), slot k pairs runs of
    equal seed, which share data order; otherwise the pairs are independent replicates, for
    which the paired interval is still valid. Runs without a recorded seed count as seed 0. Two
    runs of one entry with the same seed raise ``ValueError`` (a run given twice, or a repeat
    that is not another seed).
    """
    if not runs:
        raise ValueError("pair_seeds: no runs")
    groups: dict[str, dict[int, RunResult]] = {}
    names: dict[str, str] = {}  # settings -> entry name
    taken: dict[str, int] = {}  # method -> entries named so far
    for run in runs:
        key = _settings(run)
        if key not in names:
            taken[run.method] = taken.get(run.method, 0) + 1
            names[key] = run.method if taken[run.method] == 1 else f"{run.method}_{taken[run.method]}"
            groups[names[key]] = {}
        seed = int(run.config.get("seed") or 0)
        group = groups[names[key]]
        if seed in group:
            raise ValueError(f"report: {group[seed].source} and {run.source} are the same method, settings and seed "
                             f"({seed}); give each run once, or train the second with another --seed")
        group[seed] = run
    ordered = {name: [group[seed] for seed in sorted(group)] for name, group in groups.items()}
    slots = max(len(r) for r in ordered.values())
    per_seed = [{name: r[k].result for name, r in ordered.items() if k < len(r)} for k in range(slots)]
    sources = {name: [run.source for run in r] for name, r in ordered.items()}
    return per_seed, sources
