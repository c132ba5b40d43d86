"""Channel runs end to end, compact (issue 22, "must show"): ``train --method edst --structure
channel`` (tiny settings), then ``Ensemble.load(run, compact=True)`` gives member probabilities
``(3, B, C)`` equal to the masked form's within 1e-4, running slim members in one packed
forward; ``evaluate``, ``predict`` and ``report`` run the compact form and evaluate adds the
compact cost block."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _cli_helpers import manifest_of, quiet_cli, train_cli
from freetickets.cli.main import main
from freetickets.ensembles.ensemble import Ensemble
from freetickets.ensembles.packed import PackedMembers

EDST = ["--epochs", "4", "--explore-epochs", "1", "--members", "3", "--structure", "channel"]


@pytest.fixture(scope="module")
def channel_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("channel_runs")
    runs = {}
    for model, kwargs in (("cnn1d", "{width: 16}"), ("mlp", "{hidden_sizes: [32, 32]}")):
        runs[model] = root / model
        assert train_cli(runs[model], "edst", "--model", model, *EDST, "--set", f"model_kwargs={kwargs}") == 0
    return runs


@pytest.mark.parametrize("model", ["cnn1d", "mlp"])
def test_compact_member_probs_equal_the_masked_form(channel_runs, model):
    run = channel_runs[model]
    assert manifest_of(run)["structure"] == "channel"
    masked = Ensemble.load(run)
    compact = Ensemble.load(run, compact=True)
    assert isinstance(compact.form, PackedMembers) and compact.form.path == "packed"
    slim = sum(p.numel() for p in compact.form.members.parameters())
    assert slim < 0.5 * sum(p.numel() for m in masked.models for p in m.parameters())
    for batch in (1, 64):  # both sides of the packing rule
        x = torch.randn(batch, 1, 40, generator=torch.Generator().manual_seed(batch))
        probs = compact.member_probs(x)
        assert probs.shape == (3, batch, 10)
        assert (probs - masked.member_probs(x)).abs().max().item() <= 1e-4


def test_evaluate_predict_and_report_run_channel_runs_compact(channel_runs, tmp_path, capsys):
    run = channel_runs["cnn1d"]
    capsys.readouterr()
    with quiet_cli():
        assert main(["evaluate", str(run), "--json", "--device", "cpu", "--corruptions", "none", "--ood", "none"]) == 0
    result = json.loads(capsys.readouterr().out)
    cost = result["cost"]
    assert cost["compact"]["path"] == "packed"
    assert 0 < cost["compact"]["inference_flops_vs_dense"] < 3 * 0.5  # three slim members, sparsity 0.8
    assert cost["compact"]["params"] < cost["dense_params"] * 3 * 0.5
    masked = Ensemble.load(run)
    assert cost["nonzero_params"] == sum(int(m.sum()) for d in masked.masks for m in d.values()) + sum(
        p.numel() for model, d in zip(masked.models, masked.masks) for n, p in model.named_parameters() if n not in d)

    with quiet_cli():
        assert main(["evaluate", str(run), "--device", "cpu", "--corruptions", "none", "--ood", "none"]) == 0
    text = capsys.readouterr().out
    assert "compact    slim params" in text and "packed forward" in text

    x = np.random.default_rng(0).standard_normal((5, 1, 40)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    with quiet_cli():
        assert main(["predict", str(run), "--input", str(tmp_path / "x.npy"), "--device", "cpu"]) == 0
    probs = np.load(tmp_path / "x.pred.npz")["probs"]
    np.testing.assert_allclose(probs, masked.predict_proba(torch.from_numpy(x)).numpy(), atol=1e-5)

    with quiet_cli():
        assert main(["report", str(run), "--out", str(tmp_path / "report"), "--device", "cpu"]) == 0
    assert (tmp_path / "report" / "report.md").is_file()
