"""``--structure channel`` through the CLI: runs record it, tickets meet the channel contract
(masks = outer(kept output channels, kept input columns), removed channels exactly 0 in
BatchNorm affine parameters, one architecture for all members), and misuse is one line, exit 2."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from _cli_helpers import manifest_of, train_cli
from freetickets.ensembles.tickets import load_ticket

EDST = ["--epochs", "4", "--explore-epochs", "1", "--members", "3", "--structure", "channel"]


def _keep_out(mask: torch.Tensor) -> torch.Tensor:
    return mask.reshape(mask.shape[0], -1).any(dim=1)


def _check_tickets(run, norm_of: dict[str, str]) -> list[dict[str, torch.Tensor]]:
    """Contract checks on every ticket; returns each member's kept-output-channel vectors."""
    manifest = manifest_of(run)
    assert manifest["structure"] == "channel"
    assert yaml.safe_load((run / "config.yaml").read_text())["structure"] == "channel"
    kept = []
    for entry in manifest["tickets"]:
        state, masks, _ = load_ticket(run / entry["file"])
        keep = {n: _keep_out(m) for n, m in masks.items()}
        for name, mask in masks.items():
            cols = mask.reshape(mask.shape[0], mask.shape[1], -1).any(dim=2).any(dim=0)
            extra = (1,) * (mask.dim() - 2)
            assert torch.equal(mask, (keep[name].view(-1, 1, *extra) & cols.view(1, -1, *extra)).expand(mask.shape))
            assert torch.all(state[name][~mask] == 0)
            if name in norm_of:
                for part in ("weight", "bias"):
                    assert torch.all(state[f"{norm_of[name]}.{part}"][~keep[name]] == 0), name
        assert abs(entry["sparsity"] - 0.8) < 0.01
        kept.append(keep)
    counts = [{n: int(k.sum()) for n, k in keep.items()} for keep in kept]
    assert all(c == counts[0] for c in counts)  # one slim architecture for every member
    return kept


@pytest.mark.parametrize("model, norm_of, kwargs", [
    ("cnn1d", {"features.0.weight": "features.1", "features.3.weight": "features.4", "features.6.weight": "features.7"},
     "{width: 16}"),
    ("mlp", {"features.1.weight": "features.2", "features.4.weight": "features.5"}, "{hidden_sizes: [32, 32]}"),
])
def test_edst_channel_run_meets_the_contract(model, norm_of, kwargs, tmp_path):
    run = tmp_path / model
    assert train_cli(run, "edst", "--model", model, *EDST, "--set", f"model_kwargs={kwargs}") == 0
    kept = _check_tickets(run, norm_of)
    first = next(iter(norm_of))
    assert not torch.equal(kept[0][first], kept[1][first])  # the EDST jump moved channels
    assert int(kept[0][first].sum()) < kept[0][first].numel()


@pytest.mark.parametrize("method, extra", [
    ("dst", ["--epochs", "2", "--members", "2"]),
    ("static", ["--epochs", "1", "--members", "2"]),
    ("pf", ["--epochs", "1", "--pf-epochs", "1", "--members", "2"]),
])
def test_other_sparse_methods_take_channel_structure(method, extra, tmp_path):
    run = tmp_path / method
    assert train_cli(run, method, "--structure", "channel", *extra) == 0
    _check_tickets(run, {"features.0.weight": "features.1"})


def test_unstructured_runs_record_no_structure_in_the_manifest(tmp_path):
    run = tmp_path / "static"
    assert train_cli(run, "static", "--epochs", "1", "--members", "1") == 0
    assert "structure" not in json.loads((run / "manifest.json").read_text())
    assert yaml.safe_load((run / "config.yaml").read_text())["structure"] == "unstructured"


@pytest.mark.parametrize("argv, flag", [
    (["deep", "--structure", "channel"], "--structure"),
    (["edst", "--structure", "blocks"], "structure"),
    (["dst", "--structure", "channel", "--grow", "momentum"], "--grow"),
    (["dst", "--structure", "channel", "--prune", "set"], "--prune"),
])
def test_misuse_is_one_line_and_exit_2(argv, flag, tmp_path, capsys):
    capsys.readouterr()
    rc = train_cli(tmp_path / "bad", *argv)
    assert rc == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("freetickets: error:")]
    assert len(errors) == 1 and flag in errors[0], err
    assert not (tmp_path / "bad").exists()
