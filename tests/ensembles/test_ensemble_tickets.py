"""Compact tickets: bitwise round trip, size, validation, and refusal of unsafe files."""
from __future__ import annotations

import pickle
import torch
import pytest
from torch import nn

from freetickets.ensembles.tickets import (
    Ticket, load_ticket, pack_mask, save_ticket, ticket_nbytes, ticket_to_model, unpack_mask,
)
from freetickets.errors import UnsafeFileError, UserError

from _ensemble_helpers import TinyNet, random_masks, trained_member


def _bytes(t: torch.Tensor) -> bytes:
    return t.detach().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()


def test_pack_unpack_roundtrip_odd_sizes():
    g = torch.Generator().manual_seed(0)
    for shape in [(1,), (7,), (3, 5), (2, 3, 5, 1)]:
        mask = torch.rand(shape, generator=g) > 0.5
        packed = pack_mask(mask)
        assert packed.dtype == torch.uint8 and packed.numel() == (mask.numel() + 7) // 8
        assert torch.equal(unpack_mask(packed, list(shape)), mask)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_round_trip_is_bitwise(tmp_path, dtype):
    model, masks = trained_member(0)
    model.to(dtype)
    meta = {"seed": 3, "phase": 1, "epoch": 7, "val_accuracy": 0.93, "note": [1, {"a": None}]}
    path = save_ticket(tmp_path / "t.pt", model, masks, meta)
    ticket = load_ticket(path)
    assert isinstance(ticket, Ticket)
    state, loaded_masks, loaded_meta = ticket  # unpacks like a tuple
    assert loaded_meta == meta
    assert set(loaded_masks) == set(masks)
    for k in masks:
        assert torch.equal(loaded_masks[k], masks[k])
    ref = model.state_dict()
    assert list(state) == list(ref)
    for k in ref:
        assert state[k].dtype == ref[k].dtype and state[k].shape == ref[k].shape
        assert _bytes(state[k]) == _bytes(ref[k]), k
    fresh = TinyNet().to(dtype)
    ticket_to_model(ticket, fresh)
    for k, v in fresh.state_dict().items():
        assert _bytes(v) == _bytes(ref[k]), k
    assert fresh.state_dict()["bn.num_batches_tracked"].item() == 3


def test_stores_only_active_values(tmp_path):
    model, masks = trained_member(1)
    path = save_ticket(tmp_path / "t.pt", model, masks, {})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "freetickets-ticket" and raw["version"] == 1
    for name, mask in masks.items():
        entry = raw["sparse"][name]
        assert entry["values"].numel() == int(mask.sum())
        assert entry["mask"].dtype == torch.uint8
        assert entry["shape"] == list(mask.shape)
    assert "bn.running_mean" in raw["dense"] and "conv.bias" in raw["dense"]


def test_three_tickets_smaller_than_one_dense_checkpoint(tmp_path):
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256), nn.Linear(256, 10))
    g = torch.Generator().manual_seed(0)
    total = 0
    for k in range(3):
        masks = random_masks(model, 0.2, g)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in masks:
                    p.mul_(masks[n])
        total += ticket_nbytes(save_ticket(tmp_path / f"m{k}.pt", model, masks, {"seed": k}))
    torch.save(model.state_dict(), tmp_path / "dense.pt")
    ratio = total / ticket_nbytes(tmp_path / "dense.pt")
    assert ratio <= 0.8, ratio


def test_truncated_ticket_is_a_user_error(tmp_path):
    model, masks = trained_member(2)
    path = save_ticket(tmp_path / "t.pt", model, masks, {})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="t.pt") as info:
        load_ticket(path)
    assert not isinstance(info.value, UnsafeFileError)


def test_missing_ticket_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_ticket(tmp_path / "nope.pt")


def test_value_count_mismatch_names_the_file(tmp_path):
    model, masks = trained_member(3)
    path = save_ticket(tmp_path / "bad.pt", model, masks, {})
    raw = torch.load(path, weights_only=True)
    raw["sparse"]["fc.weight"]["values"] = raw["sparse"]["fc.weight"]["values"][:-1].clone()
    torch.save(raw, path)
    with pytest.raises(UserError, match=r"bad\.pt.*fc\.weight"):
        load_ticket(path)


def test_wrong_header_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(UserError, match="other.pt.*format"):
        load_ticket(path)
    torch.save({"format": "freetickets-ticket", "version": 99}, path)
    with pytest.raises(UserError, match="version"):
        load_ticket(path)


class _Custom:
    def __init__(self):
        self.x = 1


class _Payload:
    """Unpickling this object calls open(target, "w"), i.e. creates a file."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickled_object_is_refused(tmp_path):
    path = tmp_path / "custom.pt"
    torch.save({"format": "freetickets-ticket", "version": 1, "obj": _Custom()}, path)
    with pytest.raises(UnsafeFileError):
        load_ticket(path)


def test_crafted_pickle_does_not_run(tmp_path):
    target = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pt"
    torch.save({"format": "freetickets-ticket", "version": 1, "x": _Payload(target)}, path)
    with pytest.raises(UnsafeFileError):
        load_ticket(path)
    assert not target.exists()
    # Control: the payload really is live when loaded unsafely (so the test above means something).
    control = tmp_path / "control.txt"
    ctrl_path = tmp_path / "ctrl.pt"
    with open(ctrl_path, "wb") as f:
        pickle.dump(_Payload(control), f)
    with open(ctrl_path, "rb") as f:
        pickle.load(f).close()
    assert control.exists()


def test_ticket_to_wrong_model_is_a_user_error(tmp_path):
    model, masks = trained_member(4)
    ticket = load_ticket(save_ticket(tmp_path / "t.pt", model, masks, {}))
    with pytest.raises(UserError, match="does not fit"):
        ticket_to_model(ticket, TinyNet(channels=7))
    with pytest.raises(UserError, match="does not fit"):
        ticket_to_model(ticket, nn.Linear(3, 3))


def test_bad_masks_and_meta_are_rejected(tmp_path):
    model, masks = trained_member(5)
    with pytest.raises(ValueError, match="not in the model"):
        save_ticket(tmp_path / "t.pt", model, {"nope.weight": masks["fc.weight"]}, {})
    with pytest.raises(ValueError, match="shape"):
        save_ticket(tmp_path / "t.pt", model, {"fc.weight": masks["fc.weight"].T}, {})
    with pytest.raises(ValueError, match="meta"):
        save_ticket(tmp_path / "t.pt", model, masks, {"obj": object()})
    assert not (tmp_path / "t.pt").exists()
