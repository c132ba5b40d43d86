"""Pinned checks of :func:`freetickets.ensembles.tickets.load_ticket` on damaged ticket files: each
inconsistency is refused with its exact one-line reason (the byte counts included), and the
loaded tensors go where ``map_location`` says. Also ``pack_mask`` on non-bool masks and the
message of :func:`ticket_to_model` for missing/unexpected keys."""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from freetickets.ensembles.tickets import load_ticket, pack_mask, save_ticket, ticket_to_model
from freetickets.errors import UserError


def _ticket(tmp_path, active: int = 16, neg_zero: bool = False):
    """A Linear(4, 6) ticket (24 weights, ``active`` of them kept); with ``neg_zero`` the inactive
    entries hold -0.0, so the file stores their signs."""
    model = nn.Linear(4, 6)
    mask = torch.zeros(24, dtype=torch.bool)
    mask[:active] = True
    mask = mask.view(6, 4)
    with torch.no_grad():
        model.weight.masked_fill_(~mask, -0.0 if neg_zero else 0.0)
    path = save_ticket(tmp_path / "t.pt", model, {"weight": mask}, {})
    return path, torch.load(path, weights_only=True)


def _refused(tmp_path, payload, why: str):
    path = tmp_path / "bad.pt"
    torch.save(payload, path)
    with pytest.raises(UserError, match="^" + re.escape(f"{path}: not a valid freetickets ticket: {why}") + "$"):
        load_ticket(path)


def test_unsupported_version_names_both(tmp_path):
    _, payload = _ticket(tmp_path)
    _refused(tmp_path, {**payload, "version": 99}, "unsupported version 99 (this build reads 1)")


@pytest.mark.parametrize("part, wrong", [("keys", {}), ("sparse", []), ("dense", []), ("meta", [])])
def test_each_part_must_have_its_type(tmp_path, part, wrong):
    _, payload = _ticket(tmp_path)
    _refused(tmp_path, {**payload, part: wrong}, "'keys', 'sparse', 'dense' and 'meta' must be a list and dicts")


def test_keys_must_list_every_entry_once(tmp_path):
    _, payload = _ticket(tmp_path)
    why = "'keys' does not match the stored 'sparse' and 'dense' entries"
    _refused(tmp_path, {**payload, "keys": ["weight"]}, why)  # bias missing
    _refused(tmp_path, {**payload, "keys": ["weight", "bias", "bias"]}, why)  # a duplicate
    both = {**payload, "dense": {**payload["dense"], "weight": torch.zeros(6, 4)}}
    _refused(tmp_path, both, why)  # sparse and dense at once


def test_entries_must_have_their_types(tmp_path):
    _, payload = _ticket(tmp_path)
    _refused(tmp_path, {**payload, "dense": {"bias": [0.0] * 6}}, "dense entry 'bias' is not a tensor")
    _refused(tmp_path, {**payload, "sparse": {"weight": [1]}}, "sparse entry 'weight' is not a dict")
    entry = payload["sparse"]["weight"]

    def with_entry(**changes):
        return {**payload, "sparse": {"weight": {**entry, **changes}}}

    _refused(tmp_path, with_entry(values=entry["values"].view(2, -1)), "'weight': 'values' must be a 1-D tensor")
    for shape in ([6, -4], (6, 4), [6, 4.0]):
        _refused(tmp_path, with_entry(shape=shape), "'weight': 'shape' must be a list of non-negative ints")
    # ceil(numel / 8) bytes: 8 entries -> 1 byte, 10 -> 2, 24 -> 3 (the file has 3)
    _refused(tmp_path, with_entry(shape=[2, 4]), "'weight': 'mask' must be a uint8 tensor of 1 bytes")
    _refused(tmp_path, with_entry(shape=[2, 5]), "'weight': 'mask' must be a uint8 tensor of 2 bytes")
    _refused(tmp_path, with_entry(mask=entry["mask"].long()), "'weight': 'mask' must be a uint8 tensor of 3 bytes")
    _refused(tmp_path, with_entry(mask=entry["mask"].view(1, -1)), "'weight': 'mask' must be a uint8 tensor of 3 bytes")


def test_a_zero_size_sparse_entry_is_valid(tmp_path):
    _, payload = _ticket(tmp_path)
    empty = {"values": torch.zeros(0), "mask": torch.zeros(0, dtype=torch.uint8), "shape": [0, 4]}
    path = tmp_path / "empty.pt"
    torch.save({**payload, "sparse": {"weight": empty}}, path)
    ticket = load_ticket(path)
    assert ticket.state_dict["weight"].shape == (0, 4) and ticket.masks["weight"].shape == (0, 4)


@pytest.mark.parametrize("active, size", [(16, 1), (14, 2)])  # 8 inactive -> 1 byte, 10 -> 2 bytes
def test_negative_zero_signs_must_match_the_inactive_count(tmp_path, active, size):
    path, payload = _ticket(tmp_path, active=active, neg_zero=True)
    loaded = load_ticket(path).state_dict["weight"].reshape(-1)
    assert torch.signbit(loaded[active:]).all()  # -0.0 survives the round trip
    entry = payload["sparse"]["weight"]
    nz = entry["neg_zero"]
    assert nz.numel() == size
    why = f"'weight': 'neg_zero' must be a uint8 tensor of {size} bytes"

    def with_entry(**changes):
        return {**payload, "sparse": {"weight": {**entry, **changes}}}

    _refused(tmp_path, with_entry(neg_zero=torch.zeros(size + 1, dtype=torch.uint8)), why)
    _refused(tmp_path, with_entry(neg_zero=nz.long()), why)
    _refused(tmp_path, with_entry(neg_zero=nz.view(1, -1)), why)
    _refused(tmp_path, with_entry(values=entry["values"].long()), why)  # signs of integers make no sense


def test_map_location_places_every_tensor(tmp_path):
    path, _ = _ticket(tmp_path)
    ticket = load_ticket(path, map_location="meta")
    assert {t.device.type for t in ticket.state_dict.values()} == {"meta"}
    assert {t.device.type for t in ticket.masks.values()} == {"meta"}


def test_pack_mask_reads_any_nonzero_as_active():
    as_bool = pack_mask(torch.tensor([True, False, True]))
    assert torch.equal(pack_mask(torch.tensor([2.0, 0.0, 0.5])), as_bool)
    assert torch.equal(pack_mask(torch.tensor([1, 0, 7], dtype=torch.uint8)), as_bool)
    assert as_bool.tolist() == [0b10100000]  # numpy's big-endian bit order


def test_ticket_to_model_names_missing_and_unexpected_keys(tmp_path):
    path, _ = _ticket(tmp_path)
    ticket = load_ticket(path)
    del ticket.state_dict["bias"]
    ticket.state_dict["extra"] = torch.zeros(1)
    with pytest.raises(UserError) as info:
        ticket_to_model(ticket, nn.Linear(4, 6))
    # torch's three lines (header, missing, unexpected) joined with spaces
    assert str(info.value) == ('ticket does not fit the model: Error(s) in loading state_dict for Linear: '
                               '\tMissing key(s) in state_dict: "bias".  '
                               '\tUnexpected key(s) in state_dict: "extra".')


def test_meta_must_be_plain_json_data_and_the_message_says_where(tmp_path):
    model, mask = nn.Linear(2, 2), torch.ones(2, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match=re.escape("meta['a'][1]: must hold plain JSON-able data (None, bool, int, "
                                                   "float, str, list, dict), got set") + "$"):
        save_ticket(tmp_path / "t.pt", model, {"weight": mask}, {"a": [1, {2}]})
    with pytest.raises(ValueError, match=re.escape("meta['b']: keys must be str, got int") + "$"):
        save_ticket(tmp_path / "t.pt", model, {"weight": mask}, {"b": {3: "x"}})
    with pytest.raises(ValueError, match=re.escape("meta['c'][0]['d']: must hold plain JSON-able data") + ".*got bytes$"):
        save_ticket(tmp_path / "t.pt", model, {"weight": mask}, {"c": ({"d": b"x"},)})


def test_unknown_mask_names_show_five(tmp_path):
    masks = {f"n{i}": torch.ones(1, dtype=torch.bool) for i in range(6)}
    with pytest.raises(ValueError, match=re.escape("masks: names not in the model's state_dict: ['n0', 'n1', 'n2', "
                                                   "'n3', 'n4']") + "$"):
        save_ticket(tmp_path / "t.pt", nn.Linear(2, 2), masks)


def test_weights_outside_the_mask_warn_only_when_non_zero(tmp_path, caplog):
    model = nn.Linear(2, 2)
    mask = torch.tensor([[True, False], [True, True]])
    with torch.no_grad():
        model.weight.fill_(1.0)
    with caplog.at_level("WARNING", logger="freetickets.ensembles.tickets"):
        path = save_ticket(tmp_path / "t.pt", model, {"weight": mask})
    assert [r.getMessage() for r in caplog.records] == [
        f"save_ticket({path}): weight has non-zero weights outside its mask; they are stored as zero"]
    assert load_ticket(path).state_dict["weight"].tolist() == [[1.0, 0.0], [1.0, 1.0]]
    caplog.clear()
    with torch.no_grad():
        model.weight.masked_fill_(~mask, 0.0)
    with caplog.at_level("WARNING", logger="freetickets.ensembles.tickets"):
        save_ticket(tmp_path / "t.pt", model, {"weight": mask})
    assert caplog.records == []


def test_non_bool_masks_are_read_as_bool(tmp_path):
    model = nn.Linear(2, 2)
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    ticket = load_ticket(save_ticket(tmp_path / "t.pt", model, {"weight": mask}))
    assert ticket.masks["weight"].tolist() == [[True, False], [True, True]]


@pytest.mark.parametrize("wrap", ["dataparallel", "compile"])
def test_wrapped_models_are_saved_under_their_bare_names(tmp_path, wrap):
    model = nn.Linear(2, 2)
    wrapped = nn.DataParallel(model) if wrap == "dataparallel" else torch.compile(model)
    ticket = load_ticket(save_ticket(tmp_path / "t.pt", wrapped, {"weight": torch.ones(2, 2, dtype=torch.bool)}))
    assert sorted(ticket.state_dict) == ["bias", "weight"]
    assert ticket_to_model(ticket, wrapped) is wrapped
