"""Cross-check of our metrics against torch-uncertainty's implementations on the same tensors.

torch-uncertainty (0.13, in the ``test`` extra) is an independent implementation of the
uncertainty metrics that researchers compare efficient ensembles with. Importing it needs
torchvision, which does not load beside the CPU build of torch; its metrics and OoD criteria
never call torchvision, so, when torchvision is absent, the test imports them with an empty
stand-in ``torchvision`` package written to a temporary directory (never installed), after
importing torchmetrics and lightning so that their own torchvision checks see the real
absence, and removes the stand-in from ``sys.path`` and ``sys.modules`` afterwards.

The tensors are continuous random draws, so no two confidences tie: torch-uncertainty orders
ties arbitrarily (``argsort``), where our risk-coverage curve averages over their orders.

Run ``python tests/metrics/test_metrics_torch_uncertainty_oracle.py`` to print every compared
value and the absolute difference.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from freetickets.metrics import (adaptive_ece, aurc, brier, coverage_at_risk, ece, ensemble_nll, nll, ood_metrics,
                                 ood_scores, risk_at_coverage, risk_coverage_curve)
from freetickets.metrics.diversity import disagreement_matrix, offdiagonal_mean

# torch-uncertainty computes several metrics in float32 whatever the input dtype: its values
# carry float32 round-off (measured up to ~2e-7); everything computed in float64 agrees to 1e-12.
FLOAT32_TOL = 5e-7
EXACT_TOL = 1e-12

_STAND_IN = '''"""Empty stand-in for torchvision (written by a freetickets test, never installed)."""
def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return type(name, (), {})
'''


def _stand_in(root: Path) -> None:
    for sub in ("torchvision", "torchvision/transforms"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        (root / sub / "__init__.py").write_text(_STAND_IN)
    (root / "torchvision/transforms/functional.py").write_text(_STAND_IN)


def import_torch_uncertainty(tmp_dir: Path) -> tuple[ModuleType, ModuleType]:
    """``(torch_uncertainty.metrics, torch_uncertainty.ood_criteria)``, or a pytest skip naming
    what is missing."""
    if importlib.util.find_spec("torch_uncertainty") is None:
        pytest.skip("torch-uncertainty is not installed (it is in the test extra: pip install -e '.[test]')")
    for dep in ("einops", "seaborn", "lightning", "torchmetrics"):
        if importlib.util.find_spec(dep) is None:
            pytest.skip(f"torch-uncertainty needs {dep}, which is not installed")
    if importlib.util.find_spec("torchvision") is not None:  # a real torchvision: use it
        try:
            return (importlib.import_module("torch_uncertainty.metrics"),
                    importlib.import_module("torch_uncertainty.ood_criteria"))
        except Exception as exc:  # noqa: BLE001 - e.g. a torchvision built for another torch
            pytest.skip(f"torch-uncertainty does not import beside this torch: {type(exc).__name__}: {exc}")
    import lightning  # noqa: F401  (their torchvision checks must run before the stand-in exists)
    import torchmetrics  # noqa: F401

    _stand_in(tmp_dir)
    sys.path.insert(0, str(tmp_dir))
    try:
        return (importlib.import_module("torch_uncertainty.metrics"),
                importlib.import_module("torch_uncertainty.ood_criteria"))
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"torch-uncertainty does not import with a stand-in torchvision: {type(exc).__name__}: {exc}")
    finally:
        sys.path.remove(str(tmp_dir))
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]


def ensemble_tensors(seed: int = 0, m: int = 4, n: int = 600, c: int = 10) -> dict[str, torch.Tensor]:
    """Member logits and probabilities (M, N, C) in float64 with informative labels (accuracy
    well above chance, a mix of over- and under-confident bins) and an OoD set of 300 inputs."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % c
    logits = 4.0 * torch.randn(m, n, c, generator=g, dtype=torch.float64)
    logits[:, torch.arange(n), labels] += 2.5
    ood_logits = 2.0 * torch.randn(m, 300, c, generator=g, dtype=torch.float64)
    return {"logits": logits, "probs": torch.softmax(logits, -1), "labels": labels,
            "ood_logits": ood_logits, "ood_probs": torch.softmax(ood_logits, -1)}


def _tu(metric, *args) -> float:
    metric.update(*args)
    return float(metric.compute())


def comparisons(tum: ModuleType, crit: ModuleType, t: dict[str, torch.Tensor]) -> dict[str, tuple[float, float, float]]:
    """``{name: (ours, theirs, tolerance)}``; per-sample scores compare as (0, max |difference|)."""
    from torchmetrics.functional.classification import binary_auroc, binary_average_precision

    probs, labels = t["probs"], t["labels"]
    mean, per_sample = probs.mean(0), probs.transpose(0, 1)  # torch-uncertainty wants (N, M, C)
    c = probs.shape[2]
    out = {
        "brier": (float(brier(mean, labels)), _tu(tum.BrierScore(num_classes=c), mean, labels), FLOAT32_TOL),
        "brier (mean over members)": (float(brier(probs, labels).mean()),
                                      _tu(tum.BrierScore(num_classes=c), per_sample, labels), FLOAT32_TOL),
        "nll": (float(ensemble_nll(probs, labels)), _tu(tum.CategoricalNLL(), mean, labels), FLOAT32_TOL),
        "ece (15 bins)": (float(ece(mean, labels)), _tu(tum.CalibrationError(
            task="multiclass", num_classes=c, num_bins=15), mean, labels), FLOAT32_TOL),
        "adaptive ece (15 bins)": (float(adaptive_ece(mean, labels)), _tu(tum.AdaptiveCalibrationError(
            task="multiclass", num_classes=c, num_bins=15), mean, labels), FLOAT32_TOL),
        "disagreement": (offdiagonal_mean(disagreement_matrix(probs)), _tu(tum.Disagreement(), per_sample),
                         FLOAT32_TOL),
        "risk at 80% coverage": (float(risk_at_coverage(probs, labels, 0.8)), _tu(tum.RiskAt80Cov(), mean, labels),
                                 FLOAT32_TOL),
        "coverage at 5% risk": (float(coverage_at_risk(probs, labels, 0.05)), _tu(tum.CovAt5Risk(), mean, labels),
                                FLOAT32_TOL),
    }
    # AURC: torch-uncertainty integrates the same curve r(k) with the trapezoid rule over coverages
    # 1/N..1 and divides by (1 - 1/N): (sum_k r(k) - (r(1) + r(N)) / 2) / (N - 1). That formula on
    # our curve must equal theirs; our mean_k r(k) differs from it by |mean r - (r(1)+r(N))/2| / (N-1).
    curve = risk_coverage_curve(probs, labels)
    n = curve.numel()
    theirs_aurc = _tu(tum.AURC(), mean, labels)
    out["aurc curve (trapezoid form)"] = (float((curve.sum() - (curve[0] + curve[-1]) / 2) / (n - 1)), theirs_aurc,
                                          FLOAT32_TOL)
    out["aurc"] = (float(aurc(probs, labels)), theirs_aurc,
                   float(abs(curve.mean() - (curve[0] + curve[-1]) / 2) / (n - 1)) + FLOAT32_TOL)

    # OoD scores per sample: ours vs torch-uncertainty's criteria (which return "higher = more OoD").
    ours = ood_scores(probs, t["logits"])
    logits_nmc = t["logits"].transpose(0, 1)
    mi = tum.MutualInformation(reduction="none")
    mi.update(per_sample)
    entropy = tum.Entropy(reduction="none")
    entropy.update(mean)
    theirs = {"msp": -crit.MaxSoftmaxCriterion()(mean), "max_logit": -crit.MaxLogitCriterion()(logits_nmc),
              "energy": crit.EnergyCriterion()(logits_nmc), "mutual_information": mi.compute(),
              "entropy": entropy.compute()}
    for key, value in theirs.items():
        out[f"{key} scores (max abs diff)"] = (0.0, float((ours[key] - value).abs().max()), EXACT_TOL)

    # Detection metrics on the MaxLogit score (ID positive): torchmetrics (what torch-uncertainty's
    # routines use) for AUROC/AUPR, torch-uncertainty's FPR95.
    ood = ood_scores(t["ood_probs"], t["ood_logits"])
    ours_det = ood_metrics(ours["max_logit"], ood["max_logit"])
    scores = torch.cat([ours["max_logit"], ood["max_logit"]])
    is_id = torch.cat([torch.ones(n, dtype=torch.long), torch.zeros(ood["max_logit"].numel(), dtype=torch.long)])
    out["auroc"] = (ours_det["auroc"], float(binary_auroc(scores, is_id)), FLOAT32_TOL)
    out["aupr_in"] = (ours_det["aupr_in"], float(binary_average_precision(scores, is_id)), FLOAT32_TOL)
    out["aupr_out"] = (ours_det["aupr_out"], float(binary_average_precision(-scores, 1 - is_id)), FLOAT32_TOL)
    out["fpr95"] = (ours_det["fpr95"], _tu(tum.FPR95(pos_label=1), scores, is_id), FLOAT32_TOL)
    return out


@pytest.fixture(scope="module")
def torch_uncertainty(tmp_path_factory):
    return import_torch_uncertainty(tmp_path_factory.mktemp("standin"))


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_equal_torch_uncertainty(torch_uncertainty, seed):
    tum, crit = torch_uncertainty
    t = ensemble_tensors(seed)
    assert 0.2 < float((t["probs"].mean(0).argmax(1) == t["labels"]).double().mean()) < 0.9  # informative
    # The two ECEs differ on these tensors, so the check can tell the binnings apart.
    assert abs(float(ece(t["probs"].mean(0), t["labels"])) - float(adaptive_ece(t["probs"].mean(0), t["labels"]))) > 1e-3
    failures = {name: (ours, theirs, tol) for name, (ours, theirs, tol) in comparisons(tum, crit, t).items()
                if not abs(ours - theirs) <= tol}
    assert not failures


def test_the_stand_in_is_gone_afterwards(torch_uncertainty):
    assert "torchvision" not in sys.modules
    assert importlib.util.find_spec("torchvision") is None or "stand-in" not in (
        Path(importlib.util.find_spec("torchvision").origin or "").read_text(errors="ignore"))


def test_single_model_nll_matches_as_well(torch_uncertainty):
    tum, _ = torch_uncertainty
    t = ensemble_tensors(2, m=1)
    member = t["probs"][0]
    assert abs(float(nll(member, t["labels"])) - _tu(tum.CategoricalNLL(), member, t["labels"])) <= FLOAT32_TOL


if __name__ == "__main__":  # print the cross-check table
    import tempfile
    import warnings

    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        tum_, crit_ = import_torch_uncertainty(Path(tmp))
    for seed_ in (0, 1):
        for name, (ours_, theirs_, tol_) in comparisons(tum_, crit_, ensemble_tensors(seed_)).items():
            print(f"seed {seed_}  {name:<30} ours {ours_:.9f}  torch-uncertainty {theirs_:.9f}  "
                  f"|diff| {abs(ours_ - theirs_):.2e}  (tolerance {tol_:.1e})")
