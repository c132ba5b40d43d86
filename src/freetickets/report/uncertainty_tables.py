"""Tables of the uncertainty toolbox: calibration with temperature scaling, selective
prediction, and OoD detection by every score.

Same inputs, rendering and conventions as :mod:`freetickets.report.tables` (one
``{method: eval_obj}`` mapping per seed; ``mean ± std`` over several seeds; best value per
quality column bold in Markdown; ``—`` where a method lacks a value). Each function returns ""
when no method carries the block it shows, so evaluations from before these blocks existed
still give a report.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from freetickets.report.seeds import aggregate_seeds, method_label, seed_list
from freetickets.report.tables import (MISSING, _best_mask, _check_fmt, _Column, _fmt_value, _ood_names, _render,
                                       _table_from_columns)

__all__ = ["OOD_SCORES", "calibration_table", "selective_table", "ood_score_table"]

_CALIBRATION_COLUMNS: tuple[_Column, ...] = (
    _Column("nll", "NLL", 1.0, 3, "low"),
    _Column("ece", "ECE (%)", 100.0, 2, "low"),
    _Column("ece_adaptive", "Adaptive ECE (%)", 100.0, 2, "low"),
    _Column("brier", "Brier", 1.0, 4, "low"),
    _Column("temperature_scaled.temperature", "T", 1.0, 3),
    _Column("temperature_scaled.nll", "NLL (T)", 1.0, 3, "low"),
    _Column("temperature_scaled.ece", "ECE (T) (%)", 100.0, 2, "low"),
    _Column("temperature_scaled.brier", "Brier (T)", 1.0, 4, "low"),
)

_SELECTIVE_COLUMNS: tuple[_Column, ...] = (
    _Column("selective.aurc", "AURC (%)", 100.0, 2, "low"),
    _Column("selective.risk_at_80_coverage", "Risk at 80% coverage (%)", 100.0, 2, "low"),
    _Column("selective.coverage_at_5_risk", "Coverage at 5% risk (%)", 100.0, 2, "high"),
)

#: OoD scores of the evaluation: (key in the JSON, column header).
OOD_SCORES: tuple[tuple[str, str], ...] = (("msp", "MSP"), ("entropy", "Entropy"),
                                           ("mutual_information", "Mutual inf."), ("max_logit", "MaxLogit"),
                                           ("energy", "Energy"))


def _table_of_methods_with(per_seed: Any, prefix: str, columns: Sequence[_Column], fmt: str) -> str:
    """One row per method that has a flattened key starting with ``prefix``; "" when none has."""
    _check_fmt(fmt)
    seeds = seed_list(per_seed)
    agg = aggregate_seeds(seeds)
    methods = [m for m in agg if any(k.startswith(prefix) for k in agg[m])]
    if not methods:
        return ""
    return _table_from_columns([method_label(m) for m in methods], [agg[m] for m in methods], columns,
                               len(seeds), fmt)


def calibration_table(per_seed: Sequence[Mapping[str, Mapping[str, Any]]], fmt: str = "markdown") -> str:
    """Raw calibration (NLL, 15-bin ECE, adaptive ECE, Brier) beside the same metrics after
    temperature scaling ("(T)" columns; T fitted on each run's validation split)."""
    return _table_of_methods_with(per_seed, "temperature_scaled.", _CALIBRATION_COLUMNS, fmt)


def selective_table(per_seed: Sequence[Mapping[str, Mapping[str, Any]]], fmt: str = "markdown") -> str:
    """Selective prediction by the ensemble's MSP: AURC, risk at 80% coverage, coverage at 5%
    risk, all in percent."""
    return _table_of_methods_with(per_seed, "selective.", _SELECTIVE_COLUMNS, fmt)


def ood_score_table(per_seed: Sequence[Mapping[str, Mapping[str, Any]]], fmt: str = "markdown") -> str:
    """OoD AUROC (%) per (OoD set, method) for every score (MSP, entropy, mutual information,
    MaxLogit, energy); the best method per set and score is bold."""
    _check_fmt(fmt)
    seeds = seed_list(per_seed)
    agg = aggregate_seeds(seeds)
    rows: list[list[str]] = []
    bold: list[list[bool]] = []
    for name in _ood_names(seeds):
        methods = [m for m in agg if any(f"ood.{name}.{s}.auroc" in agg[m] for s, _ in OOD_SCORES)]
        for m in methods:
            rows.append([name, method_label(m)])
            bold.append([False, False])
        block = slice(len(rows) - len(methods), len(rows))
        for score, _ in OOD_SCORES:
            found = [agg[m].get(f"ood.{name}.{score}.auroc") for m in methods]
            mask = _best_mask([f[0] if f else None for f in found], "high", 2, 100.0)
            for row, row_bold, f, b in zip(rows[block], bold[block], found, mask):
                row.append(MISSING if f is None else _fmt_value(f[0] * 100, f[1] * 100, 2, len(seeds) > 1))
                row_bold.append(b)
    if not rows:
        return ""
    headers = ["OoD set", "Method"] + [f"{h} AUROC (%)" for _, h in OOD_SCORES]
    return _render(headers, rows, fmt, align=["l", "l"] + ["r"] * len(OOD_SCORES), bold=bold)
