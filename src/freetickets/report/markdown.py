"""The Markdown report (``report.md`` with PNG plots) and ``results.json``.

``write_report`` is what ``freetickets demo`` and ``freetickets report`` call: it turns the
per-seed evaluation objects (docs/evaluation.md) into one self-describing document, with the
evaluation conventions spelled out so that numbers can be compared with other papers'.
Plots whose inputs are missing are skipped with a log line, never an error: a partial
evaluation (no OoD sets, no corruptions, no saved scores) still gives a report.
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from freetickets.report import analysis_plots, pareto, plots
from freetickets.report.claims import claims_table, compute_claims
from freetickets.report.seeds import aggregate_seeds, method_label, order_methods, seed_list
from freetickets.report.tables import comparison_table, corruption_table, member_table, ood_table
from freetickets.report.uncertainty_tables import calibration_table, ood_score_table, selective_table
from freetickets.utils.io import atomic_write_text

__all__ = ["CONVENTIONS", "write_report", "write_results_json"]

logger = logging.getLogger(__name__)

#: The evaluation conventions (docs/evaluation.md, docs/flops.md), printed in every report.
CONVENTIONS: tuple[str, ...] = (
    "Ensemble prediction: the mean of the members' softmax probabilities.",
    "NLL: −mean log p̄(y|x) of the ensemble, computed stably (logsumexp over members of the "
    "member log-probabilities, minus log M).",
    "ECE: top-label, 15 equal-width bins on [0, 1] (confidence 1.0 falls in the last bin), "
    "empty bins skipped, bins weighted by their size.",
    "Brier score: mean over samples of the sum over classes of (p − onehot)².",
    "Adaptive ECE: the same top-label gap on 15 equal-mass bins (samples sorted by confidence, "
    "split into 15 runs of nearly equal size).",
    "Temperature scaling: one temperature T per run for the ensemble's mean log-probabilities, "
    "scaled = softmax(log p̄ / T), fitted by NLL on the validation split; the “(T)” metrics are "
    "on the test set, beside the raw ones (T > 1 softens an over-confident ensemble).",
    "Selective prediction: confidence = the ensemble's maximum softmax probability; risk at "
    "coverage k/N = error rate among the k most confident test inputs (tied confidences "
    "averaged over their orders); AURC = the mean of that risk over k = 1..N; coverage at 5% "
    "risk = the largest coverage whose risk is at most 5% (0 if none).",
    "OoD detection: score = the ensemble's maximum softmax probability, in-distribution is the "
    "positive class; AUROC, AUPR-In, AUPR-Out, and FPR95 = the fraction of OoD inputs accepted "
    "at the threshold that accepts 95% of in-distribution inputs. The per-score table also "
    "ranks by predictive entropy, mutual information (members' disagreement), MaxLogit and "
    "energy (logsumexp), the last two of the mean member logit.",
    "Corruptions: accuracy/NLL/ECE per (type, severity) split; the headline number is the mean "
    "over types and severities, the per-severity numbers the mean over types.",
    "FLOPs: dense per-layer forward FLOPs × layer density (non-sparse operations dense); a "
    "training step costs 3 × the sparse forward (forward + two backward matmuls), and on "
    "gradient-growth update steps the weight gradient is dense (RigL's accounting); evaluation "
    "passes are not included. Inference FLOPs of an ensemble = sum over members.",
    "“× dense”: relative to one dense model of the same architecture trained with the dense "
    "recipe of the same run; non-zero params = non-zero weights / dense parameter count; "
    "tickets size = bytes of the stored tickets / bytes of one dense checkpoint.",
    "Model selection (best checkpoint) uses the validation split (the last 10% of the training "
    "data), never the test set.",
    "Sparsity S is the fraction of zero weights in the sparse (Conv/Linear) layers. Fractions "
    "are stored in [0, 1] in results.json; tables show percentages where marked (%).",
)

#: Explanation above the claims table (the interval and the verdicts, docs/evaluation.md).
CLAIMS_INTRO = (
    "Each claim compares two methods trained with the same seeds. Difference: mean over seeds of "
    "the paired difference (first method minus second; pp = percentage points), for costs the "
    "ratio first / second. Interval: two-sided 95% Student-t interval of the mean paired "
    "difference (few seeds, spread estimated from the same differences). Verdict: *holds* if the "
    "interval lies on the claimed side, *fails* if on the other, *not resolved* if it covers the "
    "threshold; with one seed a quality claim is *not resolvable* (no interval). Costs are counts, "
    "not estimates: their interval is the value itself. *At equal epochs*: against one dense model "
    "trained for as many epochs as EDST (more training FLOPs than EDST); the other EDST-vs-dense "
    "claims use the dense preset's shorter schedule."
)

_REPORT_NAME = "report.md"
_FLOPS_PNG = "accuracy_nll_vs_flops.png"
_DISAGREEMENT_PNG = "disagreement.png"
_CORRUPTION_PNG = "corruption_severity.png"
_RELIABILITY_PNG = "reliability.png"
_OOD_PNG = "ood_histograms.png"
_SIZE_PNG = "ensemble_size.png"
_TSNE_PNG = "tsne_trajectories.png"
_PARETO_PNG = "pareto.png"


def _version() -> str:
    try:
        from freetickets import __version__

        return str(__version__)
    except Exception:  # pragma: no cover - partial installs
        return "unknown"


def _try_plot(
    name: str, draw: Callable[[Path], Path], path: Path, has_inputs: bool, why: str
) -> Path | None:
    """Draw one plot if its inputs exist; log and skip otherwise."""
    if not has_inputs:
        logger.info("report: skipping %s: %s", name, why)
        return None
    return draw(path)


def _has_flops(agg: Mapping[str, Mapping[str, Any]]) -> bool:
    return any("cost.train_flops_vs_dense" in s and ("accuracy" in s or "nll" in s) for s in agg.values())


def _has_disagreement(seed: Mapping[str, Any]) -> bool:
    for ev in seed.values():
        mat = (ev.get("diversity") or {}).get("disagreement_matrix")
        if plots._square_matrix(mat) is not None:
            return True
    return False


def _has_corruption(agg: Mapping[str, Mapping[str, Any]]) -> bool:
    return any(k.startswith("corrupted.severity_") for s in agg.values() for k in s)


def _artifact(artifacts: Mapping[str, Any] | None, key: str) -> dict[str, Any]:
    if not artifacts:
        return {}
    return {m: a[key] for m, a in artifacts.items() if isinstance(a, Mapping) and a.get(key) is not None}


def _section(lines: list[str], title: str, table: str, intro: str | None = None) -> None:
    if not table:
        return
    lines += [f"## {title}", ""]
    if intro:
        lines += [intro, ""]
    lines += [table.rstrip("\n"), ""]


def _chance_warning(seeds: Sequence[Mapping[str, Mapping[str, Any]]]) -> list[str]:
    """A warning section naming the tickets whose validation accuracy was at chance level (the
    run manifest's ``chance_level``, see :func:`freetickets.train.rundir.chance_threshold`)."""
    found = []
    for i, seed in enumerate(seeds):
        for m, ev in seed.items():
            chance = ev.get("chance_level") if isinstance(ev, Mapping) else None
            if chance and chance.get("tickets"):
                where = f"{method_label(m)}" + (f" (seed {i + 1})" if len(seeds) > 1 else "")
                found.append(f"- **{where}**: member(s) {', '.join(map(str, chance['tickets']))} at or below "
                             f"{100 * chance['threshold']:.1f}% validation accuracy (chance "
                             f"{100 * chance['accuracy']:.1f}%).")
    if not found:
        return []
    return ["## Warning: tickets at chance level", "",
            "These tickets predict no better than a guess; their method's numbers below include them.", "",
            *found, ""]


def write_report(
    out_dir: str | os.PathLike,
    per_seed_results: Sequence[Mapping[str, Mapping[str, Any]]],
    *,
    data_name: str,
    artifacts: Mapping[str, Mapping[str, Any]] | None = None,
    command: str | None = None,
    notes: Sequence[str] | None = None,
    latency: Mapping[str, float] | None = None,
) -> Path:
    """Write ``out_dir/report.md`` and its PNG plots; return the path of ``report.md``.

    ``per_seed_results`` is a list (one entry per seed) of ``{method: eval_obj}``
    (docs/evaluation.md). ``artifacts`` optionally holds per method ``"reliability"`` (bins as accepted by
    :func:`freetickets.report.plots.reliability_arrays`) and ``"ood_scores"`` (``{"id": scores,
    ood_name: scores}``) for the plots that need more than the JSON. ``command`` is the command
    line that produced the results (shown so the report can be regenerated); ``notes`` are
    free-form lines added near the end. ``latency`` (``{method: inference latency / one dense
    model's}``, :func:`freetickets.report.pareto.load_latency`) adds latency panels to the
    Pareto plot; without it the report says they were skipped. Every file is written
    atomically; plots lacking their inputs are skipped (logged at INFO).
    """
    seeds = seed_list(per_seed_results)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    agg = aggregate_seeds(seeds)
    methods = list(agg)
    n = len(seeds)

    lines: list[str] = [f"# FreeTickets report: {data_name}", ""]
    lines.append(f"Generated by freetickets {_version()}.")
    lines.append("")
    if command:
        lines += ["Command:", "", "```", command, "```", ""]
    lines.append(
        f"Methods: {', '.join(method_label(m) for m in methods)}. "
        + (f"{n} seeds; cells show mean ± std (sample std over seeds)." if n > 1 else "One seed.")
    )
    lines.append("")

    _section(
        lines,
        "Main comparison",
        comparison_table(seeds, "markdown"),
        "Test-set metrics of the ensemble prediction. Bold: best per quality column (higher is "
        "better for accuracy, OoD AUROC, corrupted accuracy and disagreement; lower for NLL, ECE "
        "and Brier). Cost columns are ratios to one dense model. M is the number of members; "
        "disagreement is the mean pairwise fraction of test points whose predicted classes differ.",
    )
    lines += _chance_warning(seeds)
    _section(lines, "Claims", claims_table(compute_claims(seeds), "markdown"), CLAIMS_INTRO)
    _section(lines, "Out-of-distribution detection", ood_table(seeds, "markdown"),
             "Score: the ensemble's maximum softmax probability (in-distribution positive).")
    _section(lines, "Calibration and temperature scaling", calibration_table(seeds, "markdown"),
             "Raw test-set calibration of the ensemble beside the same metrics after temperature "
             "scaling (“(T)”; T fitted by NLL on each run's validation split, mean over seeds). "
             "Accuracy is unchanged by scaling.")
    _section(lines, "Selective prediction", selective_table(seeds, "markdown"),
             "Answering only the most confident test inputs (confidence = the ensemble's maximum "
             "softmax probability). AURC: area under the risk-coverage curve (lower is better).")
    _section(lines, "OoD detection by score", ood_score_table(seeds, "markdown"),
             "AUROC (%) of each uncertainty score, in-distribution positive.")
    _section(lines, "Corruption robustness", corruption_table(seeds, "markdown"),
             "Accuracy (%) on the clean test set, averaged over all corruptions, and per severity "
             "(averaged over corruption types).")
    _section(lines, "Ensemble members", member_table(seeds, "markdown"),
             "Test accuracy (%) of each member, their mean, the ensemble, and the gain of the "
             "ensemble over the mean member (percentage points).")

    drawn: list[tuple[str, str, str]] = []  # (title, file, caption)
    first = seeds[0]
    p = _try_plot("accuracy/NLL vs FLOPs plot",
                  lambda path: plots.plot_metric_vs_flops(seeds, ("accuracy", "nll"), path),
                  out_dir / _FLOPS_PNG, _has_flops(agg), "no method has training FLOPs and accuracy/NLL")
    if p:
        drawn.append(("Accuracy and NLL against training FLOPs", p.name,
                      "Training cost relative to one dense model (log scale)."))
    pareto_axes = pareto.pareto_points(seeds, latency)
    p = _try_plot("Pareto plot", lambda path: pareto.plot_pareto(seeds, path, latency),
                  out_dir / _PARETO_PNG, bool(pareto_axes), "no method has a cost and accuracy/NLL")
    if p:
        caption = ("Accuracy and NLL against training FLOPs"
                   + (" and measured inference latency" if "latency" in pareto_axes else "")
                   + " (each × one dense model, log scale). Filled points are on the Pareto front "
                     "(no method is cheaper and better), hollow points are dominated.")
        if "latency" not in pareto_axes:
            caption += (" No latency file was given (or it names none of these methods), so the latency "
                        "panels are skipped; `freetickets report --latency FILE.json` adds them.")
        drawn.append(("Pareto front: quality against cost", p.name, caption))
    p = _try_plot("corruption plot", lambda path: plots.plot_corruption_severity(seeds, path),
                  out_dir / _CORRUPTION_PNG, _has_corruption(agg), "no corruption results by severity")
    if p:
        drawn.append(("Accuracy against corruption severity", p.name, "Severity 0 is the clean test set."))
    p = _try_plot("disagreement heatmaps", lambda path: plots.plot_disagreement_heatmaps(first, path),
                  out_dir / _DISAGREEMENT_PNG, _has_disagreement(first), "no ensemble with two or more members")
    if p:
        drawn.append(("Pairwise disagreement between members", p.name,
                      "Fraction of test points on which two members predict different classes"
                      + (" (first seed)." if n > 1 else ".")))
    p = _try_plot("ensemble-size plot", lambda path: analysis_plots.plot_ensemble_size(seeds, path),
                  out_dir / _SIZE_PNG, bool(analysis_plots.ensemble_size_curves(seeds)),
                  "no method has an ensemble_size curve")
    if p:
        drawn.append(("Ensemble size", p.name,
                      "Accuracy, NLL and ECE of the ensemble of the first k members (from the members' "
                      "test probabilities, no retraining); dashed: single models"
                      + (", mean over seeds." if n > 1 else ".")))
    reliability = _artifact(artifacts, "reliability")
    p = _try_plot("reliability diagrams", lambda path: plots.plot_reliability(reliability, path),
                  out_dir / _RELIABILITY_PNG, bool(reliability), "no reliability bins in artifacts")
    if p:
        drawn.append(("Reliability diagrams", p.name, "Ensemble accuracy per confidence bin; the diagonal is perfect calibration."))
    ood_scores = _artifact(artifacts, "ood_scores")
    has_ood = any("id" in s and len(s) > 1 for s in ood_scores.values() if isinstance(s, Mapping))
    p = _try_plot("OoD histograms", lambda path: plots.plot_ood_histograms(ood_scores, path),
                  out_dir / _OOD_PNG, has_ood, "no OoD scores in artifacts")
    if p:
        drawn.append(("OoD score distributions", p.name, "Ensemble max softmax probability, test set vs each OoD set."))

    trajectories = _artifact(artifacts, "trajectories")
    p = _try_plot("t-SNE of trajectories", lambda path: analysis_plots.plot_tsne_trajectories(trajectories, path),
                  out_dir / _TSNE_PNG, any(sum(len(j["probs"]) for j in t.get("jobs") or []) >= 4
                                           for t in trajectories.values()),
                  "no run recorded trajectories (older runs do not)")
    if p:
        drawn.append(("Function-space trajectories (t-SNE)", p.name,
                      "Each member's predicted probabilities on a fixed probe subset of the validation "
                      "split after every epoch, embedded with t-SNE (one panel per run, first seed; "
                      "colour = member, EDST coloured by refinement phase with exploration grey, PF "
                      "parents dashed; circle = first epoch, star = the member's ticket)."))
    if drawn:
        lines += ["## Plots", ""]
        for title, fname, caption in drawn:
            lines += [f"### {title}", "", f"![{title}]({fname})", "", caption, ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    lines += ["## Conventions", ""] + [f"- {c}" for c in CONVENTIONS] + [""]

    report = out_dir / _REPORT_NAME
    atomic_write_text(report, "\n".join(lines))
    logger.info("report: wrote %s (%d plots)", report, len(drawn))
    return report


def _jsonable(obj: Any) -> Any:
    """Plain JSON data: NumPy/tensor values to Python numbers and lists, non-finite floats to
    ``None`` (strict JSON has no NaN; a reader then sees "no value" rather than a parse error)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "detach"):  # torch tensor
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


_RESERVED = ("data", "methods", "seeds", "summary", "claims", "ensemble_size")


def write_results_json(
    path: str | os.PathLike,
    data_name: str,
    per_seed_results: Sequence[Mapping[str, Mapping[str, Any]]],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``results.json`` atomically and return its path.

    Layout: ``{"data": data_name, "methods": {method: eval_obj} (the first seed, the plain
    evaluation objects), "seeds": [{method: eval_obj}, ...] (every seed), "summary": {method: {key:
    {"mean", "std"}}} (flattened keys, see :mod:`freetickets.report.tables`), "claims": [...]
    (:func:`freetickets.report.claims.compute_claims`), "ensemble_size": {method: {"k", "accuracy",
    "nll", "ece"}} (first-k curves, mean over seeds), "num_seeds": N}`` plus the keys of
    ``extra`` (which may not replace the keys above).
    """
    seeds = seed_list(per_seed_results)
    agg = aggregate_seeds(seeds)
    ordered = [{m: seed[m] for m in order_methods(seed)} for seed in seeds]
    obj: dict[str, Any] = {
        "data": data_name,
        "methods": ordered[0],
        "seeds": ordered,
        "summary": {m: {k: {"mean": v[0], "std": v[1]} for k, v in stats.items()} for m, stats in agg.items()},
        "claims": compute_claims(seeds),
        "ensemble_size": analysis_plots.ensemble_size_curves(seeds),
        "num_seeds": len(seeds),
    }
    if extra:
        clash = [k for k in extra if k in _RESERVED or k == "num_seeds"]
        if clash:
            raise ValueError(f"extra: keys {clash} are reserved by results.json")
        obj.update(extra)
    path = Path(path)
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n")
    return path
