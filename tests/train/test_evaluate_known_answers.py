"""Every number of ``evaluate_run`` recomputed independently from the tickets (issue 13).

The tiny DST run (2 members) is evaluated; this file rebuilds each member from its ticket file
with ``create_model`` + ``load_state_dict`` (no Ensemble class), computes the test, OoD and
corruption probabilities itself and every metric by its textbook formula in float64: accuracy,
NLL of the mean, top-label ECE (15 equal-width bins), Brier, the OoD scores (MSP, entropy,
mutual information; higher = more in-distribution after negating the last two), AUROC
(Mann-Whitney), AUPR-In/Out (average precision), FPR at 95% TPR, the corruption aggregates
(plain means over splits and over types per severity) and every cost field.
"""
from __future__ import annotations

import io
import math
import os

import numpy as np
import pytest
import torch

from freetickets.data import corruption_sets, list_ood, load_data, ood_sets
from freetickets.ensembles.tickets import load_ticket
from freetickets.evaluation import evaluate_run
from freetickets.models import create_model

from _train_helpers import TINY

TOL = dict(rel=1e-6, abs=1e-6)


@pytest.fixture(scope="module")
def evaluated(dst_run):
    return evaluate_run(dst_run.root, device="cpu")


@pytest.fixture(scope="module")
def members(dst_run):
    out = []
    for t in dst_run.manifest["tickets"]:
        ticket = load_ticket(dst_run.root / t["file"])
        model = create_model("cnn1d", num_classes=10, input_shape=(1, 40), **TINY["model_kwargs"])
        model.load_state_dict(ticket.state_dict)
        out.append((model.eval(), ticket.masks))
    return out


@pytest.fixture(scope="module")
def data():
    return load_data("mnist1d", None, num_samples=TINY["num_samples"], seed=0, device="cpu")


@torch.no_grad()
def _probs(members, x, normalize=None):
    x = normalize(x) if normalize is not None else x
    return torch.stack([torch.softmax(m(x).double(), dim=1) for m, _ in members])  # (M, N, C)


def _accuracy(p, y):
    return float((p.argmax(1) == y).double().mean())


def _nll(p, y):
    return float(-torch.log(p[torch.arange(len(y)), y]).mean())


def _ece(p, y, bins=15):
    conf, pred = p.max(1)
    total = 0.0
    for k in range(bins):
        lo, hi = k / bins, (k + 1) / bins
        inside = (conf >= lo) & ((conf < hi) if k < bins - 1 else (conf <= 1.0))
        if inside.any():
            acc = (pred[inside] == y[inside]).double().mean()
            total += float(inside.double().mean() * (acc - conf[inside].mean()).abs())
    return total


def _brier(p, y):
    onehot = torch.nn.functional.one_hot(y, p.shape[1]).double()
    return float(((p - onehot) ** 2).sum(1).mean())


def _entropy(p):
    return -(p * torch.log(p.clamp_min(1e-300))).sum(-1)


def _scores(probs):
    mean = probs.mean(0)
    h = _entropy(mean)
    return {"msp": mean.max(1).values, "entropy": -h, "mutual_information": -(h - _entropy(probs).mean(0))}


def _auroc(pos, neg):
    pos, neg = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


def _average_precision(pos, neg):
    scores = np.concatenate([pos, neg])
    labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(labels[order])
    precision = hits / np.arange(1, len(scores) + 1)
    return float((precision * labels[order]).sum() / len(pos))


def _fpr95(ids, oods):
    threshold = np.sort(ids)[::-1][math.ceil(0.95 * len(ids)) - 1]
    return float((np.asarray(oods) >= threshold).mean())


def test_ensemble_and_member_numbers(evaluated, members, data):
    probs = _probs(members, data.test.x, data.normalize)
    y = data.test.y
    mean = probs.mean(0)
    e = evaluated["ensemble"]
    assert e["accuracy"] == pytest.approx(_accuracy(mean, y), **TOL)
    assert e["nll"] == pytest.approx(_nll(mean, y), **TOL)
    assert e["ece"] == pytest.approx(_ece(mean, y), **TOL)
    assert e["brier"] == pytest.approx(_brier(mean, y), **TOL)
    assert len(evaluated["members"]) == 2
    for m, got in zip(probs, evaluated["members"]):
        assert got["accuracy"] == pytest.approx(_accuracy(m, y), **TOL)
        assert got["nll"] == pytest.approx(_nll(m, y), **TOL)
        assert got["ece"] == pytest.approx(_ece(m, y), **TOL)
        assert got["brier"] == pytest.approx(_brier(m, y), **TOL)
    d = evaluated["diversity"]
    disagree = float((probs[0].argmax(1) != probs[1].argmax(1)).double().mean())
    assert d["disagreement"] == pytest.approx(disagree, **TOL)
    masks = [mk for _, mk in members]
    hamming = sum(int((masks[0][k] ^ masks[1][k]).sum()) for k in masks[0]) / sum(v.numel() for v in masks[0].values())
    assert d["mask_hamming"] == pytest.approx(hamming, **TOL)


def test_ood_scores_and_metrics(evaluated, members, data):
    names = list_ood("mnist1d")
    assert names and set(evaluated["ensemble"]["ood"]) == set(names)
    id_scores = _scores(_probs(members, data.test.x, data.normalize))
    for name, x in ood_sets("mnist1d", None, names=names, seed=0, num_samples=TINY["num_samples"]).items():
        ood_scores = _scores(_probs(members, x))
        got = evaluated["ensemble"]["ood"][name]
        for score, entry in (("msp", got), ("entropy", got["entropy"]), ("mutual_information", got["mutual_information"])):
            ids, oods = id_scores[score].numpy(), ood_scores[score].numpy()
            assert entry["auroc"] == pytest.approx(_auroc(ids, oods), **TOL), (name, score)
            assert entry["aupr_in"] == pytest.approx(_average_precision(ids, oods), **TOL), (name, score)
            assert entry["aupr_out"] == pytest.approx(_average_precision(-oods, -ids), **TOL), (name, score)
            assert entry["fpr95"] == pytest.approx(_fpr95(ids, oods), **TOL), (name, score)


def test_corruption_aggregates(evaluated, members):
    got = evaluated["ensemble"]["corrupted"]
    records = []
    for split in corruption_sets("mnist1d", "builtin", seed=0, num_samples=TINY["num_samples"]):
        x, y = split.load()
        p = _probs(members, x)
        records.append((split.type, split.severity, _accuracy(p.mean(0), y), _nll(p.mean(0), y), _ece(p.mean(0), y)))
    assert len(got["by_split"]) == len(records) > 1
    for key, i in (("accuracy", 2), ("nll", 3), ("ece", 4)):
        assert got[key] == pytest.approx(sum(r[i] for r in records) / len(records), **TOL), key
        for row in got["by_severity"]:
            same = [r[i] for r in records if r[1] == row["severity"]]
            assert row[key] == pytest.approx(sum(same) / len(same), **TOL), (key, row["severity"])
    assert sorted(r["severity"] for r in got["by_severity"]) == sorted({r[1] for r in records})


def test_cost_fields(evaluated, members, dst_run, layer_flops):
    cost = evaluated["cost"]
    dense = create_model("cnn1d", num_classes=10, input_shape=(1, 40), **TINY["model_kwargs"])
    dense_params = sum(p.numel() for p in dense.parameters())
    nonzero = 0
    for model, masks in members:
        for name, p in model.named_parameters():
            nonzero += int(masks[name].sum()) if name in masks else p.numel()
    buf = io.BytesIO()
    torch.save(dense.state_dict(), buf)
    files = sum(os.path.getsize(dst_run.root / t["file"]) for t in dst_run.manifest["tickets"])
    flops = dst_run.manifest["flops"]
    assert cost["members"] == 2
    assert cost["dense_params"] == dense_params
    assert cost["nonzero_params"] == nonzero
    assert cost["nonzero_params_vs_dense"] == pytest.approx(nonzero / dense_params, **TOL)
    assert cost["sparsity"] == pytest.approx(sum(t["sparsity"] for t in dst_run.manifest["tickets"]) / 2, **TOL)
    assert cost["checkpoint_bytes"] == files
    assert cost["checkpoint_bytes_vs_dense"] == pytest.approx(files / buf.getbuffer().nbytes, **TOL)
    assert cost["train_flops"] == flops["train_total"]
    assert cost["train_flops_vs_dense"] == pytest.approx(flops["train_total"] / flops["dense_train_reference"], **TOL)
    # inference: each member's sparse forward (its layers at their mask densities), summed
    per_member = [layer_flops.other + sum(dense_f * (float(masks[n].double().mean()) if n in masks else 1.0)
                                          for n, dense_f in layer_flops.per_layer.items()) for _, masks in members]
    assert cost["inference_flops"] == pytest.approx(sum(per_member), rel=1e-9)
    assert flops["dense_inference_per_sample"] == layer_flops.total
    assert cost["inference_flops_vs_dense"] == pytest.approx(
        flops["inference_per_sample"] / flops["dense_inference_per_sample"], **TOL)
