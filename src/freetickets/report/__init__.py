"""freetickets.report: comparison tables, plots and the Markdown report.

Inputs are the evaluation objects of docs/evaluation.md, one ``{method: eval_obj}`` mapping per seed.

* :mod:`~freetickets.report.seeds`: ``flatten_metrics`` (flat metric keys), ``aggregate_seeds``
  (mean ± std over seeds), the canonical method order.
* :mod:`~freetickets.report.tables`: ``comparison_table``, ``ood_table``, ``corruption_table``,
  ``member_table`` (Markdown or aligned text).
* :mod:`~freetickets.report.uncertainty_tables`: ``calibration_table`` (raw and
  temperature-scaled), ``selective_table`` (AURC), ``ood_score_table`` (AUROC per OoD score).
* :mod:`~freetickets.report.plots`: PNG plots (matplotlib, Agg canvas, no pyplot state).
* :mod:`~freetickets.report.pareto`: ``plot_pareto`` (accuracy and NLL against training FLOPs
  and measured latency, Pareto front marked), ``load_latency``.
* :mod:`~freetickets.report.claims`: ``compute_claims`` (the ``claims`` block: paired
  differences over seeds, 95% Student-t interval, verdict) and ``claims_table``.
* :mod:`~freetickets.report.markdown`: ``write_report`` (``report.md`` + plots) and
  ``write_results_json``.

The plotting modules are imported lazily so that table-only users (e.g. ``evaluate`` printing
a table) do not pay for importing matplotlib.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from freetickets.report.tables import (
    METHOD_LABELS,
    METHOD_ORDER,
    aggregate_seeds,
    comparison_table,
    corruption_table,
    flatten_metrics,
    member_table,
    method_label,
    ood_table,
    order_methods,
)

_LAZY = {
    "write_report": "freetickets.report.markdown",
    "write_results_json": "freetickets.report.markdown",
    "CONVENTIONS": "freetickets.report.markdown",
    "compute_claims": "freetickets.report.claims",
    "claims_table": "freetickets.report.claims",
    "reliability_arrays": "freetickets.report.plots",
    "plot_reliability": "freetickets.report.plots",
    "plot_metric_vs_flops": "freetickets.report.plots",
    "plot_disagreement_heatmaps": "freetickets.report.plots",
    "plot_ood_histograms": "freetickets.report.plots",
    "plot_corruption_severity": "freetickets.report.plots",
    "plot_pareto": "freetickets.report.pareto",
    "pareto_front": "freetickets.report.pareto",
    "load_latency": "freetickets.report.pareto",
    "calibration_table": "freetickets.report.uncertainty_tables",
    "selective_table": "freetickets.report.uncertainty_tables",
    "ood_score_table": "freetickets.report.uncertainty_tables",
}

__all__ = [
    "METHOD_LABELS",
    "METHOD_ORDER",
    "aggregate_seeds",
    "comparison_table",
    "corruption_table",
    "flatten_metrics",
    "member_table",
    "method_label",
    "ood_table",
    "order_methods",
    *_LAZY,
]

if TYPE_CHECKING:  # pragma: no cover
    from freetickets.report.claims import claims_table, compute_claims
    from freetickets.report.markdown import CONVENTIONS, write_report, write_results_json
    from freetickets.report.pareto import load_latency, pareto_front, plot_pareto
    from freetickets.report.uncertainty_tables import calibration_table, ood_score_table, selective_table
    from freetickets.report.plots import (
        plot_corruption_severity,
        plot_disagreement_heatmaps,
        plot_metric_vs_flops,
        plot_ood_histograms,
        plot_reliability,
        reliability_arrays,
    )


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'freetickets.report' has no attribute {name!r}")
