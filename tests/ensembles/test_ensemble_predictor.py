"""Ensemble predictor: combination rule, batched vs sequential, eval mode, loading a run."""
from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from freetickets.ensembles.ensemble import Ensemble, entropy, uncertainty_from_probs
from freetickets.errors import UserError

from _ensemble_helpers import TinyNet, make_run as _make_run, trained_member


def _members(n=3, **kw):
    return [trained_member(seed)[0] for seed in range(n)]


def _one_at_a_time(models, x):
    with torch.no_grad():
        return torch.stack([torch.softmax(m.eval()(x), -1) for m in models])


def test_predict_proba_is_mean_of_members():
    x = torch.randn(9, 2, 12)
    models = _members()
    ref = _one_at_a_time(models, x)
    ens = Ensemble(models, batched=True)
    assert ens.members == 3 and ens.path == "fused"
    probs = ens.member_probs(x)
    assert probs.shape == (3, 9, 5)
    torch.testing.assert_close(probs, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(ens.predict_proba(x), ref.mean(0), atol=1e-6, rtol=0)
    assert ens.batched  # the one-time self-check passed
    assert torch.equal(ens.predict(x), ref.mean(0).argmax(-1))


def test_batched_and_sequential_agree():
    x = torch.randn(7, 2, 12)
    batched = Ensemble(_members(), batched=True)
    sequential = Ensemble(_members(), batched=False)
    assert batched.path == "fused" and sequential.path == "sequential"
    torch.testing.assert_close(batched.member_logits(x), sequential.member_logits(x), atol=1e-6, rtol=0)
    assert batched.path == "fused"


class _WithLayerNorm(nn.Module):
    """No fused form (LayerNorm), so the ensemble uses vmap."""

    def __init__(self):
        super().__init__()
        self.fc1, self.ln, self.fc2 = nn.Linear(24, 8), nn.LayerNorm(8), nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.ln(self.fc1(x.flatten(1)))))


def test_vmap_path_agrees_with_sequential():
    torch.manual_seed(0)
    models = [_WithLayerNorm() for _ in range(3)]
    ens = Ensemble(models, batched=True)
    assert ens.path == "vmap"
    x = torch.randn(6, 2, 12)
    torch.testing.assert_close(ens.member_probs(x), _one_at_a_time(models, x), atol=1e-6, rtol=0)
    assert ens.path == "vmap"
    with torch.no_grad():
        models[1].fc2.bias.add_(1.0)  # members view into the stacked tensors
    torch.testing.assert_close(ens.member_probs(x), _one_at_a_time(models, x), atol=1e-6, rtol=0)


def test_eval_mode_uses_each_members_running_stats():
    models = _members()
    for m in models:
        m.train()
    ens = Ensemble(models, batched=True)
    assert all(not m.training for m in models)
    x = torch.randn(6, 2, 12)
    logits = ens.member_logits(x)
    for k, m in enumerate(models):
        bn = m.bn
        h = m.conv(x)
        manual = (h - bn.running_mean[:, None]) / torch.sqrt(bn.running_var[:, None] + bn.eps)
        manual = manual * bn.weight[:, None] + bn.bias[:, None]
        expected = m.fc(torch.relu(manual).flatten(1))
        torch.testing.assert_close(logits[k], expected.detach(), atol=1e-5, rtol=1e-5)
    # running stats were not updated by prediction
    before = models[0].bn.running_mean.clone()
    ens.member_probs(torch.randn(6, 2, 12) * 10)
    assert torch.equal(models[0].bn.running_mean, before)
    # a member switched back to train mode is evaluated in eval mode anyway
    models[1].train()
    torch.testing.assert_close(ens.member_logits(x), logits, atol=1e-6, rtol=0)


def test_members_share_storage_with_the_stack():
    models = _members()
    ens = Ensemble(models, batched=True)
    x = torch.randn(4, 2, 12)
    with torch.no_grad():
        models[2].fc.bias.add_(1.0)  # an in-place change to a member is seen by the batched path
    torch.testing.assert_close(ens.member_logits(x)[2], models[2](x).detach(), atol=1e-6, rtol=0)


def test_different_architectures_fall_back_to_sequential(caplog):
    models = [trained_member(0)[0], trained_member(1, model_fn=lambda: TinyNet(channels=4))[0]]
    with caplog.at_level(logging.INFO, logger="freetickets.ensembles.ensemble"):
        ens = Ensemble(models, batched=True)
    assert not ens.batched
    assert "sequential" in caplog.text
    x = torch.randn(5, 2, 12)
    torch.testing.assert_close(ens.member_probs(x), _one_at_a_time(models, x), atol=1e-6, rtol=0)


class _NotVmappable(nn.Module):
    """Data-dependent Python scalar in forward: vmap raises, plain evaluation works."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(24, 3)

    def forward(self, x):
        scale = float(self.fc.weight.abs().max().item())
        return self.fc(x.flatten(1)) * scale


def test_unvmappable_module_falls_back_once(caplog):
    torch.manual_seed(0)
    models = [_NotVmappable() for _ in range(3)]
    ens = Ensemble(models, batched=True)
    assert ens.batched
    x = torch.randn(4, 2, 12)
    with caplog.at_level(logging.INFO, logger="freetickets.ensembles.ensemble"):
        probs = ens.member_probs(x)
    assert not ens.batched and ens.path == "sequential"
    assert caplog.text.count("using the sequential path") == 1
    ens.member_probs(x)
    assert caplog.text.count("using the sequential path") == 1
    torch.testing.assert_close(probs, _one_at_a_time(models, x), atol=1e-6, rtol=0)


def test_bad_input_does_not_disable_batching():
    ens = Ensemble(_members(), batched=True)
    with pytest.raises(RuntimeError):
        ens.member_probs(torch.randn(3, 5, 12))  # wrong channel count fails in both paths
    assert ens.batched


def test_uncertainty_known_answers():
    # Two members, two inputs, two classes.
    probs = torch.tensor([[[1.0, 0.0], [0.5, 0.5]],
                          [[0.0, 1.0], [0.5, 0.5]]])
    u = uncertainty_from_probs(probs)
    ln2 = torch.log(torch.tensor(2.0))
    torch.testing.assert_close(u["entropy"], torch.stack([ln2, ln2]))
    torch.testing.assert_close(u["mutual_information"], torch.stack([ln2, torch.tensor(0.0)]))
    # input 0: ensemble argmax is class 0 (tie -> first), member 1 disagrees -> 1/2
    torch.testing.assert_close(u["disagreement"], torch.tensor([0.5, 0.0]))
    torch.testing.assert_close(u["msp"], torch.tensor([0.5, 0.5]))
    assert entropy(torch.tensor([1.0, 0.0])).item() == 0.0


def test_uncertainty_of_identical_members_has_no_epistemic_part():
    clones = [trained_member(0)[0] for _ in range(3)]
    ens = Ensemble(clones, batched=True)
    u = ens.uncertainty(torch.randn(8, 2, 12))
    assert set(u) >= {"entropy", "mutual_information", "disagreement"}
    assert all(v.shape == (8,) for v in u.values())
    assert torch.all(u["mutual_information"] < 1e-6)
    assert torch.all(u["disagreement"] == 0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="models"):
        Ensemble([])
    with pytest.raises(ValueError, match="batched"):
        Ensemble(_members(1), batched="yes")


# ---------------------------------------------------------------- run directories
def test_load_from_hand_made_run_dir(tmp_path):
    run, models = _make_run(tmp_path)
    ens = Ensemble.load(run, batched=True)
    assert ens.members == 3 and ens.manifest["model"] == "cnn1d"
    assert len(ens.masks) == 3 and all(m.dtype == torch.bool for m in ens.masks[0].values())
    x = torch.randn(5, 1, 40)
    torch.testing.assert_close(ens.predict_proba(x), _one_at_a_time(models, x).mean(0), atol=1e-6, rtol=0)
    seq = Ensemble.load(run, batched=False)
    torch.testing.assert_close(seq.member_probs(x), ens.member_probs(x), atol=1e-6, rtol=0)
    assert ens.to("cpu") is ens and ens.batched


def test_running_run_is_refused(tmp_path):
    run, _ = _make_run(tmp_path, status="running", members=1)
    with pytest.raises(UserError, match="run directory is not a completed run"):
        Ensemble.load(run)


def test_missing_manifest_and_ticket(tmp_path):
    with pytest.raises(UserError, match="not found"):
        Ensemble.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="manifest.json"):
        Ensemble.load(tmp_path / "empty")
    run, _ = _make_run(tmp_path, members=2)
    (run / "tickets" / "member_1.pt").unlink()
    with pytest.raises(UserError, match="member_1.pt"):
        Ensemble.load(run)


def test_auto_is_sequential_on_cpu_and_agrees_with_batched():
    """On the CPU, "auto" runs members one after another (measured faster there); same answer."""
    x = torch.randn(7, 2, 12)
    auto = Ensemble(_members(), batched="auto")
    forced = Ensemble(_members(), batched=True)
    assert auto.path == "sequential" and forced.path == "fused"
    torch.testing.assert_close(auto.predict_proba(x), forced.predict_proba(x), rtol=1e-5, atol=1e-6)
