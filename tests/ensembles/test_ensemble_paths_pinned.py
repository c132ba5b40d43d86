"""``Ensemble`` pinned at its edges: the one-time batched-vs-sequential check (tolerance, probe,
once only), the fall-back order fused -> vmap -> sequential with its log lines, ``to()``,
input preparation (numpy, dtype casts, integer inputs, parameter-free members), model forms,
the argument checks, and every one-line error of ``Ensemble.load``.

Member networks here are tiny (a few hundred weights) so the whole file runs in seconds.
"""
from __future__ import annotations

import json
import logging
import types

import numpy as np
import pytest
import torch
from torch import nn

from freetickets.ensembles import ensemble as ens_mod
from freetickets.ensembles.ensemble import Ensemble, uncertainty_from_probs
from freetickets.ensembles.tickets import save_ticket
from freetickets.errors import UserError

from _ensemble_helpers import TinyNet, make_run, trained_member

LOGGER = "freetickets.ensembles.ensemble"


def _members(n=3, model_fn=TinyNet):
    return [trained_member(seed, model_fn=model_fn)[0] for seed in range(n)]


def _reference(models, x):
    with torch.no_grad():
        return torch.stack([m.eval()(x) for m in models])


def _messages(caplog, level=None):
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and (level is None or r.levelno == level)]


# ---------------------------------------------------------------- the one-time agreement check
class _OnAccelerator:
    """A reference tensor seen as if it lived on an accelerator (what ``_outputs_agree`` reads)."""

    def __init__(self, t: torch.Tensor) -> None:
        self._t, self.shape, self.device = t, t.shape, types.SimpleNamespace(type="cuda")

    def float(self) -> torch.Tensor:
        return self._t.float()


def test_outputs_of_another_shape_never_agree_and_have_no_difference():
    agree, diff = ens_mod._outputs_agree(torch.zeros(2, 3), torch.zeros(3, 3))
    assert agree is False and np.isnan(diff)


def test_agreement_tolerance_is_relative_to_the_largest_reference_logit_but_at_least_one():
    zeros = torch.zeros(3)
    # |ref| <= 1: the CPU tolerance is 1e-4 absolute
    assert ens_mod._outputs_agree(torch.tensor([0.9e-4, 0.0, 0.0]), zeros)[0] is True
    assert ens_mod._outputs_agree(torch.tensor([1.5e-4, 0.0, 0.0]), zeros)[0] is False
    # |ref| = 100: 1e-4 * 100 = 1e-2
    ref = torch.tensor([100.0, 0.0])
    agree, diff = ens_mod._outputs_agree(torch.tensor([100.0, 5e-3]), ref)
    assert agree is True and diff == pytest.approx(5e-3)
    assert ens_mod._outputs_agree(torch.tensor([100.0, 2e-2]), ref)[0] is False
    # a difference exactly at the tolerance agrees: 1e-4 * 10000 == 1.0
    assert 1e-4 * 10000.0 == 1.0
    assert ens_mod._outputs_agree(torch.tensor([10000.0, 1.0]), torch.tensor([10000.0, 0.0])) == (True, 1.0)


def test_accelerators_get_the_wider_tolerance_2e_2():
    got, ref = torch.tensor([1e-3, 0.0]), torch.zeros(2)
    assert ens_mod._outputs_agree(got, ref)[0] is False  # CPU: 1e-4
    assert ens_mod._outputs_agree(got, _OnAccelerator(ref))[0] is True
    assert ens_mod._outputs_agree(torch.tensor([3e-2, 0.0]), _OnAccelerator(ref))[0] is False


def test_the_check_runs_the_members_sequentially_once_on_the_first_four_inputs():
    """Cost of the guard: the first batched call also runs each member alone on min(4, B) rows;
    later calls do not run the members at all (the fused network is used)."""
    models = _members()
    ens = Ensemble(models, batched=True)
    assert ens.path == "fused"
    x = torch.randn(10, 2, 12)
    want = _reference(models, x)
    seen: list[tuple[int, int]] = []
    # member 0's module object is shallow-copied into the fused network; watch the others
    for k in (1, 2):
        models[k].register_forward_pre_hook(lambda mod, args, k=k: seen.append((k, args[0].shape[0])))
    out = ens.member_logits(x)
    assert seen == [(1, 4), (2, 4)]
    torch.testing.assert_close(out, want, atol=1e-5, rtol=0)
    ens.member_logits(x)
    assert seen == [(1, 4), (2, 4)] and ens.path == "fused"
    small = Ensemble(_members(), batched=True)
    seen2: list[int] = []
    small.models[1].register_forward_pre_hook(lambda mod, args: seen2.append(args[0].shape[0]))
    small.member_logits(torch.randn(3, 2, 12))
    assert seen2 == [3]


# ---------------------------------------------------------------- fall back: fused -> vmap -> sequential
class _FixedView(nn.Module):
    """Forward code with a hard-coded feature count: fine per member and under vmap, but the fused
    network's (B, M*6, 12) activations cannot be viewed as (B, 72), so fused evaluation raises."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv1d(2, 6, 3, padding=1), nn.Linear(72, 5)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        return self.fc(h.reshape(h.shape[0], 72))


class _FixedViewNotVmappable(_FixedView):
    """As :class:`_FixedView`, and a Python scalar read from a weight: vmap raises too."""

    def forward(self, x):
        return super().forward(x) * float(self.fc.weight.abs().max().item())


class _ChannelFlip(nn.Module):
    """Reverses the channel order by hand: runs fused, but mixes the members' channel blocks."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv1d(2, 4, 3, padding=1), nn.Linear(48, 3)

    def forward(self, x):
        h = self.conv(x).flip(1)
        return self.fc(h.flatten(1))


@pytest.mark.parametrize("model,batch,starts,ends", [
    (_FixedView, 5, "Ensemble: fused path unusable (fused evaluation failed: RuntimeError: ", "); trying vmap"),
    (_ChannelFlip, 4, "Ensemble: fused path unusable (fused output differs from sequential (max ", ")); trying vmap"),
], ids=["fused-evaluation-error", "fused-output-differs"])
def test_fused_failure_falls_back_to_vmap_with_one_info_line_naming_why(model, batch, starts, ends, caplog):
    torch.manual_seed(0)
    models = [model() for _ in range(3)]
    ens = Ensemble(models, batched=True)
    assert ens.path == "fused"
    x = torch.randn(batch, 2, 12)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        out = ens.member_logits(x)
    assert ens.path == "vmap"
    torch.testing.assert_close(out, _reference(models, x), atol=1e-5, rtol=0)
    (msg,) = _messages(caplog, logging.INFO)
    assert msg.startswith(starts)
    assert msg.endswith(ends)
    assert not _messages(caplog, logging.WARNING)


def test_when_fused_and_vmap_both_fail_the_first_call_ends_sequential_with_one_warning(caplog):
    torch.manual_seed(0)
    models = [_FixedViewNotVmappable() for _ in range(3)]
    ens = Ensemble(models, batched=True)
    x = torch.randn(4, 2, 12)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        out = ens.member_logits(x)
    assert ens.path == "sequential" and not ens.batched
    torch.testing.assert_close(out, _reference(models, x), atol=1e-6, rtol=0)
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].getMessage().startswith(
        "Ensemble: using the sequential path (vmap evaluation failed: RuntimeError: ")
    # to() builds the batched paths again, starting from fused
    assert ens.to("cpu") is ens and ens.path == "fused"


class _Shift(nn.Module):
    """A per-member offset kept as a buffer (no fused form for custom modules with state)."""

    def __init__(self, n: int):
        super().__init__()
        self.register_buffer("offset", torch.randn(n))

    def forward(self, x):
        return x + self.offset


class _Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = _Shift(3)


class _WithNestedBuffer(nn.Module):
    """Linear -> buffer offset two modules deep (``outer.inner.offset``): runs on the vmap path."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(24, 3)
        self.outer = _Outer()

    def forward(self, x):
        return self.outer.inner(self.fc(x.flatten(1)))


def test_vmap_path_stacks_buffers_and_members_keep_viewing_them(caplog):
    torch.manual_seed(0)
    models = [_WithNestedBuffer() for _ in range(3)]
    x = torch.randn(6, 2, 12)
    want = _reference(models, x)
    keys = list(models[0].state_dict())
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        ens = Ensemble(models, batched=True)
    assert ens.path == "vmap"
    assert _messages(caplog, logging.DEBUG) == [
        "Ensemble: no fused form (TypeError: _Shift has parameters/buffers and no fused form); trying vmap"]
    assert all(list(m.state_dict()) == keys for m in models)  # the members' own names, nothing added
    torch.testing.assert_close(ens.member_logits(x), want, atol=1e-6, rtol=0)
    assert ens.path == "vmap"
    with torch.no_grad():
        models[1].outer.inner.offset.add_(10.0)  # an in-place change to a member's buffer is seen
    got = ens.member_logits(x)
    assert ens.path == "vmap"
    torch.testing.assert_close(got[1], want[1] + 10.0, atol=1e-5, rtol=0)
    torch.testing.assert_close(got[0], want[0], atol=1e-6, rtol=0)


class _NonPersistent(nn.Module):
    """A non-persistent buffer whose size differs per member: invisible to ``state_dict`` (so
    the architecture check passes), but the members' buffers cannot be stacked."""

    def __init__(self, n: int):
        super().__init__()
        self.fc = nn.Linear(24, 3)
        self.register_buffer("scratch", torch.zeros(n), persistent=False)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_members_whose_buffers_cannot_be_stacked_run_sequentially_saying_why(caplog):
    models = [_NonPersistent(2), _NonPersistent(3)]
    with caplog.at_level(logging.INFO, logger=LOGGER):
        ens = Ensemble(models, batched=True)
    assert ens.path == "sequential"
    (msg,) = _messages(caplog, logging.WARNING)
    assert msg.startswith("Ensemble: using the sequential path (cannot stack member state (RuntimeError: ")


class _TinyNetB(TinyNet):
    """Same layers as TinyNet, another class."""


def test_members_of_different_classes_run_sequentially_with_a_warning_naming_both(caplog):
    models = [trained_member(0)[0], trained_member(1, model_fn=_TinyNetB)[0]]
    with caplog.at_level(logging.INFO, logger=LOGGER):
        ens = Ensemble(models, batched=True)
    assert ens.path == "sequential"
    records = [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.INFO]
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.WARNING, "Ensemble: using the sequential path (member 1 is a _TinyNetB, member 0 a TinyNet)")]


def test_members_of_different_shapes_run_sequentially_with_a_warning_naming_the_member(caplog):
    models = [trained_member(0)[0], trained_member(1)[0], trained_member(2, model_fn=lambda: TinyNet(channels=4))[0]]
    with caplog.at_level(logging.INFO, logger=LOGGER):
        ens = Ensemble(models, batched=True)
    assert ens.path == "sequential"
    assert _messages(caplog, logging.WARNING) == [
        "Ensemble: using the sequential path (member 2 has different parameter/buffer names, shapes, dtypes or devices)"]
    two = [trained_member(0)[0], trained_member(1, model_fn=lambda: TinyNet(channels=4))[0]]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert Ensemble(two, batched=True).path == "sequential"
    assert _messages(caplog, logging.WARNING) == [
        "Ensemble: using the sequential path (member 1 has different parameter/buffer names, shapes, dtypes or devices)"]


# ---------------------------------------------------------------- construction and to()
def test_default_is_auto_sequential_and_a_single_member_never_batches():
    models = _members(2)
    assert Ensemble(models).path == "sequential"
    one = Ensemble(_members(1), batched=True)
    assert one.path == "sequential" and not one.batched
    assert one.to("cpu").path == "sequential"
    x = torch.randn(3, 2, 12)
    torch.testing.assert_close(one.member_logits(x), _reference(one.models, x), atol=0, rtol=0)


def test_argument_errors_are_exact():
    with pytest.raises(ValueError, match=r"^models: need at least one member, got an empty list$"):
        Ensemble([])
    with pytest.raises(ValueError, match=r"^masks: expected 2 mask dicts, got 1$"):
        Ensemble(_members(2), masks=[{}])


class _TwoHeads(nn.Module):
    """A minimal model form: one network holding two members (``num_members``, ``member_logits``)."""

    num_members = 2

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 3), nn.Linear(4, 3)

    def member_logits(self, x):
        return torch.stack([self.a(x), self.b(x)])

    def forward(self, x):
        return self.member_logits(x).mean(0)


class _CountsMembers(nn.Module):
    """A plain network that happens to have a ``num_members`` attribute but no ``member_logits``."""

    num_members = 4

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x)


class _HasMemberLogits(nn.Module):
    """A plain network with a ``member_logits`` method but no ``num_members``."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def member_logits(self, x):
        return torch.stack([self.fc(x), self.fc(x)])

    def forward(self, x):
        return self.fc(x)


def test_a_model_form_holds_every_member_and_takes_one_mask_dict_per_member():
    torch.manual_seed(0)
    form = _TwoHeads()
    ens = Ensemble([form], batched=True, masks=[{}, {}])
    assert ens.form is form and ens.members == 2 and ens.path == "sequential"
    x = torch.randn(5, 4)
    with torch.no_grad():
        torch.testing.assert_close(ens.member_logits(x), form.member_logits(x))
    assert len(Ensemble([form], masks=[{}]).masks) == 1
    with pytest.raises(ValueError, match=r"^masks: expected 1 mask dicts, got 3$"):
        Ensemble([form], masks=[{}, {}, {}])
    with pytest.raises(ValueError, match=r"^models: a model form \(MIMO, BatchEnsemble, MC dropout\) holds all "
                                         r"members; pass it alone$"):
        Ensemble([form, _CountsMembers()])


def test_a_form_needs_both_member_logits_and_num_members():
    for cls in (_CountsMembers, _HasMemberLogits):
        ens = Ensemble([cls(), cls()])
        assert ens.form is None and ens.members == 2


def test_to_keeps_masks_reference_and_path():
    models = _members(3)
    masks = [{"fc.weight": torch.ones(5, 72, dtype=torch.bool)} for _ in models]
    ens = Ensemble(models, batched=True, masks=masks)
    assert ens.path == "fused"
    assert ens.to("cpu") is ens
    assert ens.path == "fused"  # the fused network is built again, not replaced by vmap
    assert len(ens.masks) == 3 and all(torch.equal(d["fc.weight"], masks[0]["fc.weight"]) for d in ens.masks)
    x = torch.randn(4, 2, 12)
    # inputs are still cast to the members' dtype after the move
    torch.testing.assert_close(ens.member_logits(x.double()), _reference(models, x), atol=1e-5, rtol=0)


def test_to_on_a_sequential_ensemble_leaves_the_members_tensors_alone(caplog):
    models = _members(3)
    ens = Ensemble(models, batched=False)
    ptrs = [p.data_ptr() for m in models for p in m.parameters()]
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        ens.to("cpu")
    assert ens.path == "sequential"
    assert [p.data_ptr() for m in models for p in m.parameters()] == ptrs  # no stacking
    assert not _messages(caplog)
    diff = [trained_member(0)[0], trained_member(1, model_fn=_TinyNetB)[0]]
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        Ensemble(diff, batched=False).to("cpu")
    assert not _messages(caplog)


def test_parameter_free_members_take_inputs_as_they_are():
    ens = Ensemble([nn.Identity(), nn.Flatten()], batched=False)
    x = torch.arange(6, dtype=torch.float64).reshape(3, 2)
    assert ens.to("cpu") is ens
    out = ens.member_logits(x)
    assert out.dtype == torch.float64 and torch.equal(out, torch.stack([x, x]))


# ---------------------------------------------------------------- inputs
class _Bag(nn.Module):
    """Token ids (B, T) -> mean embedding -> logits (B, 3): an integer-input network."""

    def __init__(self):
        super().__init__()
        self.emb, self.fc = nn.Embedding(10, 4), nn.Linear(4, 3)

    def forward(self, ids):
        return self.fc(self.emb(ids).mean(1))


def test_inputs_numpy_float64_and_integer_ids():
    models = _members(2)
    ens = Ensemble(models, batched=False)
    x = torch.randn(4, 2, 12)
    want = _reference(models, x)
    torch.testing.assert_close(ens.member_logits(x.numpy()), want, atol=0, rtol=0)  # numpy arrays are accepted
    torch.testing.assert_close(ens.member_logits(x.double()), want, atol=1e-6, rtol=0)  # cast to float32
    torch.manual_seed(0)
    bags = [_Bag(), _Bag()]
    ids = torch.tensor([[1, 2, 3], [4, 5, 9]])
    got = Ensemble(bags, batched=False).member_logits(ids)  # integer inputs keep their dtype
    torch.testing.assert_close(got, _reference(bags, ids), atol=0, rtol=0)


def test_uncertainty_refuses_other_shapes_with_the_shape_in_the_message():
    with pytest.raises(ValueError, match=r"^probs: expected shape \(M, B, C\), got \(2, 3\)$"):
        uncertainty_from_probs(torch.zeros(2, 3))


# ---------------------------------------------------------------- Ensemble.load's errors
def _manifest(run):
    return json.loads((run / "manifest.json").read_text())


def _write(run, manifest):
    (run / "manifest.json").write_text(json.dumps(manifest))


def test_load_refuses_a_manifest_that_is_not_an_object(tmp_path):
    run, _ = make_run(tmp_path, members=1)
    (run / "manifest.json").write_text("[1, 2]")
    with pytest.raises(UserError) as err:
        Ensemble.load(run)
    assert str(err.value) == f"{run / 'manifest.json'}: expected a JSON object"


def test_load_names_the_status_of_an_incomplete_run(tmp_path):
    run, _ = make_run(tmp_path, status="running", members=1)
    with pytest.raises(UserError) as err:
        Ensemble.load(run)
    assert str(err.value) == f"{run}: run directory is not a completed run (status 'running', expected 'complete')"


@pytest.mark.parametrize("key", ["model", "num_classes", "input_shape", "tickets"])
def test_load_lists_missing_manifest_keys(tmp_path, key):
    run, _ = make_run(tmp_path, members=1)
    m = _manifest(run)
    del m[key]
    _write(run, m)
    with pytest.raises(UserError) as err:
        Ensemble.load(run)
    assert str(err.value) == f"{run / 'manifest.json'}: missing keys [{key!r}]"


@pytest.mark.parametrize("tickets", [[], {"file": "tickets/member_0.pt"}, "tickets/member_0.pt"])
def test_load_needs_a_non_empty_ticket_list(tmp_path, tickets):
    run, _ = make_run(tmp_path, members=1)
    m = _manifest(run)
    m["tickets"] = tickets
    _write(run, m)
    with pytest.raises(UserError) as err:
        Ensemble.load(run)
    assert str(err.value) == f"{run / 'manifest.json'}: 'tickets' must be a non-empty list"


@pytest.mark.parametrize("entry", [{"file": 3}, {"member": 0}, "tickets/member_0.pt"])
def test_load_needs_a_file_string_per_ticket(tmp_path, entry):
    run, _ = make_run(tmp_path, members=1)
    m = _manifest(run)
    m["tickets"] = [entry]
    _write(run, m)
    with pytest.raises(UserError) as err:
        Ensemble.load(run)
    assert str(err.value) == f"{run / 'manifest.json'}: each ticket needs a 'file' string"


def test_load_prefixes_a_ticket_mismatch_with_the_ticket_path(tmp_path):
    run, _ = make_run(tmp_path, members=2)
    m = _manifest(run)
    m["model_kwargs"] = {"width": 4}  # the tickets were trained with width 8
    _write(run, m)
    with pytest.raises(UserError) as err:
        Ensemble.load(run)
    assert str(err.value).startswith(f"{run / 'tickets' / 'member_0.pt'}: ")
    assert len(str(err.value)) > len(f"{run / 'tickets' / 'member_0.pt'}: ")


def _mlp_run(tmp_path, form=None):
    """A complete run of an MLP with 3 classes and inputs (1, 20) (neither is the registry's default)."""
    from freetickets.models.efficient import build_form
    from freetickets.models.registry import create_model

    run = tmp_path / "mlp_run"
    (run / "tickets").mkdir(parents=True)
    models, entries = [], []
    for k in range(1 if form else 2):
        torch.manual_seed(k)
        model = create_model("mlp", num_classes=3, input_shape=(1, 20), hidden_sizes=[8])
        if form:
            model = build_form(form, model)
        model.eval()
        save_ticket(run / "tickets" / f"member_{k}.pt", model, {}, {"seed": k})
        models.append(model)
        entries.append({"file": f"tickets/member_{k}.pt", "member": k})
    manifest = {"format": "freetickets-run", "version": 1, "status": "complete", "model": "mlp",
                "model_kwargs": {"hidden_sizes": [8]}, "num_classes": 3, "input_shape": [1, 20],
                "members": 2, "tickets": entries}
    if form:
        manifest["model_form"] = form
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run, models


def test_load_builds_members_with_the_manifests_classes_and_input_shape(tmp_path):
    run, models = _mlp_run(tmp_path)
    ens = Ensemble.load(run)
    x = torch.randn(3, 1, 20)
    out = ens.member_logits(x)
    assert out.shape == (2, 3, 3)
    torch.testing.assert_close(out, _reference(models, x), atol=1e-6, rtol=0)


def test_load_wraps_the_model_into_its_recorded_form(tmp_path):
    form = {"kind": "mimo", "members": 2}
    run, (model,) = _mlp_run(tmp_path, form=form)
    ens = Ensemble.load(run)
    assert ens.form is not None and type(ens.form) is type(model) and ens.members == 2
    x = torch.randn(3, 1, 20)
    with torch.no_grad():
        torch.testing.assert_close(ens.member_logits(x), model.member_logits(x), atol=1e-6, rtol=0)
