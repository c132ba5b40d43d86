"""Comparison tables (Markdown and aligned text) built from evaluation objects.

Input everywhere is what ``freetickets evaluate --json`` produces per method (docs/evaluation.md), one
mapping ``{method: eval_obj}`` per seed; ``per_seed`` is the list of those mappings. Every
function tolerates missing optional parts (no ``"ood"``, no ``"corrupted"``, a single member
without diversity): the affected cells show an em dash (``—``) instead of failing, because a
report with a hole is more useful than no report.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from freetickets.report.seeds import (METHOD_LABELS, METHOD_ORDER, Stats, aggregate_seeds, flatten_metrics,
                                     method_label, order_methods, seed_list)

__all__ = [
    "METHOD_ORDER",
    "METHOD_LABELS",
    "MISSING",
    "method_label",
    "order_methods",
    "flatten_metrics",
    "aggregate_seeds",
    "comparison_table",
    "ood_table",
    "corruption_table",
    "member_table",
]

#: Cell shown where a value is missing or meaningless (e.g. disagreement of a single model).
MISSING = "—"

_FORMATS = ("markdown", "text")


# --------------------------------------------------------------------------------------------
# Rendering


@dataclass(frozen=True)
class _Column:
    key: str
    header: str
    scale: float = 1.0
    decimals: int = 2
    better: str | None = None  # "high", "low" or None (not bolded)
    show_std: bool = True


_MAIN_COLUMNS: tuple[_Column, ...] = (
    _Column("members.M", "M", decimals=0, show_std=False),
    _Column("cost.sparsity", "Sparsity", decimals=2, show_std=False),
    _Column("accuracy", "Accuracy (%)", 100.0, 2, "high"),
    _Column("nll", "NLL", 1.0, 3, "low"),
    _Column("ece", "ECE (%)", 100.0, 2, "low"),
    _Column("brier", "Brier", 1.0, 4, "low"),
    _Column("ood_mean.auroc", "OoD AUROC (%)", 100.0, 2, "high"),
    _Column("corrupted.accuracy", "Corrupted acc. (%)", 100.0, 2, "high"),
    # More disagreement = more diverse members, which the paper argues is what an ensemble needs.
    _Column("diversity.disagreement", "Disagreement", 1.0, 3, "high"),
    _Column("cost.train_flops_vs_dense", "Train FLOPs (× dense)", 1.0, 2),
    _Column("cost.inference_flops_vs_dense", "Inference FLOPs (× dense)", 1.0, 2),
    _Column("cost.nonzero_params_vs_dense", "Non-zero params (× dense)", 1.0, 2),
    _Column("cost.checkpoint_bytes_vs_dense", "Tickets size (× dense)", 1.0, 2),
)


def _check_fmt(fmt: str) -> None:
    if fmt not in _FORMATS:
        raise ValueError(f"fmt: expected one of {', '.join(_FORMATS)}, got {fmt!r}")


def _members_count(stats: Stats) -> float | None:
    for key in ("cost.members", "members.count"):
        if key in stats:
            return stats[key][0]
    return None


def _lookup(stats: Stats, col: _Column) -> tuple[float, float] | None:
    if col.key == "members.M":
        m = _members_count(stats)
        return None if m is None else (m, 0.0)
    if col.key.startswith("diversity.") and (_members_count(stats) or 0) <= 1:
        return None  # diversity of a single model is not a measurement
    return stats.get(col.key)


def _fmt_value(mean: float, std: float, decimals: int, with_std: bool) -> str:
    if not math.isfinite(mean):
        return "nan" if math.isnan(mean) else ("inf" if mean > 0 else "-inf")
    if decimals == 0:
        return f"{int(round(mean))}"
    text = f"{mean:.{decimals}f}"
    if with_std:
        text += f" ± {std:.{decimals}f}"
    return text


def _escape_md(text: str) -> str:
    return text.replace("|", "\\|")


def _render(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    fmt: str,
    *,
    align: Sequence[str] | None = None,
    bold: Sequence[Sequence[bool]] | None = None,
) -> str:
    """Render a table. ``align`` holds "l"/"r" per column; ``bold`` applies to Markdown only."""
    _check_fmt(fmt)
    ncol = len(headers)
    align = list(align) if align is not None else ["l"] + ["r"] * (ncol - 1)
    if fmt == "markdown":
        cells = [
            [
                f"**{_escape_md(c)}**" if bold is not None and bold[i][j] and c != MISSING else _escape_md(c)
                for j, c in enumerate(row)
            ]
            for i, row in enumerate(rows)
        ]
        lines = ["| " + " | ".join(_escape_md(h) for h in headers) + " |"]
        lines.append("|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(lines) + "\n"
    widths = [max([len(headers[j])] + [len(r[j]) for r in rows]) for j in range(ncol)]

    def line(cells: Sequence[str]) -> str:
        parts = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, align)]
        return "  ".join(parts).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out) + "\n"


def _best_mask(values: Sequence[float | None], better: str | None, decimals: int, scale: float) -> list[bool]:
    """Which entries tie for the best *displayed* value (rounded as shown, so visible ties all bold)."""
    if better is None:
        return [False] * len(values)
    shown = [None if v is None or not math.isfinite(v) else round(v * scale, decimals) for v in values]
    present = [v for v in shown if v is not None]
    if len(present) < 2:  # nothing to compare against
        return [False] * len(values)
    best = max(present) if better == "high" else min(present)
    if all(v == best for v in present):  # everyone ties: bolding all would say nothing
        return [False] * len(values)
    return [v is not None and v == best for v in shown]


def _table_from_columns(
    row_labels: Sequence[str],
    row_stats: Sequence[Stats],
    columns: Sequence[_Column],
    n_seeds: int,
    fmt: str,
    first_header: str = "Method",
) -> str:
    headers = [first_header] + [c.header for c in columns]
    cells: list[list[str]] = [[label] for label in row_labels]
    bold: list[list[bool]] = [[False] for _ in row_labels]
    for col in columns:
        found = [_lookup(st, col) for st in row_stats]
        mask = _best_mask([f[0] if f else None for f in found], col.better, col.decimals, col.scale)
        for i, f in enumerate(found):
            if f is None:
                cells[i].append(MISSING)
            else:
                mean, std = f
                cells[i].append(
                    _fmt_value(mean * col.scale, std * col.scale, col.decimals, col.show_std and n_seeds > 1)
                )
            bold[i].append(mask[i])
    return _render(headers, cells, fmt, bold=bold)


def comparison_table(per_seed: Sequence[Mapping[str, Mapping[str, Any]]], fmt: str = "markdown") -> str:
    """The main comparison: one row per method, quality then cost columns.

    Columns: M, sparsity, accuracy (%), NLL, ECE (%), Brier, OoD AUROC (% , mean over the OoD
    sets), corrupted accuracy (%), disagreement, and the cost ratios to one dense model (train
    FLOPs, inference FLOPs, non-zero parameters, tickets size on disk). One seed gives plain
    numbers, several give ``mean ± std``. In Markdown the best value of each quality column is
    bold (ties at display precision all bold); cost columns are never bolded because "cheaper"
    is a trade-off, not a win. ``fmt="text"`` gives space-aligned columns for a terminal.
    Disagreement is shown as ``—`` for single models.
    """
    _check_fmt(fmt)
    seeds = seed_list(per_seed)
    agg = aggregate_seeds(seeds)
    methods = list(agg)
    return _table_from_columns(
        [method_label(m) for m in methods], [agg[m] for m in methods], _MAIN_COLUMNS, len(seeds), fmt
    )


_OOD_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("auroc", "AUROC (%)", "high"),
    ("aupr_in", "AUPR-In (%)", "high"),
    ("aupr_out", "AUPR-Out (%)", "high"),
    ("fpr95", "FPR95 (%)", "low"),
)


def _ood_names(seeds: Sequence[Mapping[str, Any]]) -> list[str]:
    names: list[str] = []
    for seed in seeds:
        for ev in seed.values():
            for name in ((ev.get("ensemble") or {}).get("ood") or {}):
                if name not in names:
                    names.append(name)
    return names


def ood_table(per_seed: Sequence[Mapping[str, Mapping[str, Any]]], fmt: str = "markdown") -> str:
    """OoD detection per (OoD set, method): AUROC, AUPR-In, AUPR-Out, FPR95, all in percent.

    The score is the ensemble's maximum softmax probability with in-distribution as the positive
    class. Best per OoD set and column is bold in Markdown (FPR95: lower is better). Returns an
    empty string when no method has OoD results.
    """
    _check_fmt(fmt)
    seeds = seed_list(per_seed)
    agg = aggregate_seeds(seeds)
    names = _ood_names(seeds)
    if not names:
        return ""
    headers = ["OoD set", "Method"] + [h for _, h, _ in _OOD_COLUMNS]
    rows: list[list[str]] = []
    bold: list[list[bool]] = []
    for name in names:
        methods = [m for m in agg if any(k.startswith(f"ood.{name}.") for k in agg[m])]
        block_cells = [[name, method_label(m)] for m in methods]
        block_bold = [[False, False] for _ in methods]
        for mk, _, better in _OOD_COLUMNS:
            found = [agg[m].get(f"ood.{name}.{mk}") for m in methods]
            mask = _best_mask([f[0] if f else None for f in found], better, 2, 100.0)
            for i, f in enumerate(found):
                block_cells[i].append(MISSING if f is None else _fmt_value(f[0] * 100, f[1] * 100, 2, len(seeds) > 1))
                block_bold[i].append(mask[i])
        rows += block_cells
        bold += block_bold
    return _render(headers, rows, fmt, align=["l", "l"] + ["r"] * len(_OOD_COLUMNS), bold=bold)


def _severities(agg: Mapping[str, Stats]) -> list[int]:
    sev: set[int] = set()
    for stats in agg.values():
        for key in stats:
            if key.startswith("corrupted.severity_"):
                sev.add(int(key.split(".")[1][len("severity_"):]))
    return sorted(sev)


def corruption_table(per_seed: Sequence[Mapping[str, Mapping[str, Any]]], fmt: str = "markdown") -> str:
    """Accuracy (%) on corrupted test data per method: clean, mean over corruptions, per severity.

    Best per column is bold in Markdown. Returns an empty string when no method has
    corruption results.
    """
    _check_fmt(fmt)
    seeds = seed_list(per_seed)
    agg = aggregate_seeds(seeds)
    methods = [m for m in agg if any(k.startswith("corrupted.") for k in agg[m])]
    if not methods:
        return ""
    columns = [
        _Column("accuracy", "Clean", 100.0, 2, "high"),
        _Column("corrupted.accuracy", "Corrupted (mean)", 100.0, 2, "high"),
    ] + [
        _Column(f"corrupted.severity_{s}.accuracy", f"Severity {s}", 100.0, 2, "high")
        for s in _severities({m: agg[m] for m in methods})
    ]
    return _table_from_columns(
        [method_label(m) for m in methods], [agg[m] for m in methods], columns, len(seeds), fmt
    )


def member_table(per_seed: Sequence[Mapping[str, Mapping[str, Any]]], fmt: str = "markdown") -> str:
    """Test accuracy (%) of every member, their mean, the ensemble, and the ensemble's gain.

    The gain (ensemble minus mean member, percentage points) is the benefit of ensembling.
    Member ``k`` of different seeds is averaged as the same column. Nothing is bolded: the
    members of different methods are not competitors column by column.
    """
    _check_fmt(fmt)
    seeds = seed_list(per_seed)
    agg = aggregate_seeds(seeds)
    methods = list(agg)
    n_members = 0
    for stats in agg.values():
        while f"members.{n_members}.accuracy" in stats:
            n_members += 1
    row_stats: list[Stats] = []
    for m in methods:
        stats = dict(agg[m])
        if "members_mean.accuracy" in stats and "accuracy" in stats:
            # gain per seed, so its std is the spread of the gain, not of either side
            gains = []
            for seed in seeds:
                if m in seed:
                    flat = flatten_metrics(seed[m])
                    if "members_mean.accuracy" in flat and "accuracy" in flat:
                        gains.append(flat["accuracy"] - flat["members_mean.accuracy"])
            arr = np.asarray(gains, dtype=np.float64)
            stats["gain.accuracy"] = (float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0)
        row_stats.append(stats)
    columns = (
        [_Column("members.M", "M", decimals=0, show_std=False)]
        + [_Column(f"members.{i}.accuracy", f"Member {i + 1}", 100.0, 2) for i in range(n_members)]
        + [
            _Column("members_mean.accuracy", "Member mean", 100.0, 2),
            _Column("accuracy", "Ensemble", 100.0, 2),
            _Column("gain.accuracy", "Gain (pp)", 100.0, 2),
        ]
    )
    return _table_from_columns([method_label(m) for m in methods], row_stats, columns, len(seeds), fmt)
