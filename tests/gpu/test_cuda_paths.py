"""CUDA paths, end to end. Skipped without a CUDA device (CI has none); run on a GPU machine with
``python -m pytest -q tests/gpu`` (``benchmarks/gpu_session.sh`` does, and records the result).

- EDST with WRN-16-2 on CIFAR-10 files in the official layout, on CUDA with bf16 autocast and
  channels_last: the run completes, every ticket's masked weights are exactly zero and its
  per-layer active counts equal the engine's targets, and ``evaluate`` reads it on CUDA.
- ``Ensemble.load(..., device="cuda", batched=True)`` keeps a batched path (its one-time check
  against the sequential path passes under CUDA's TF32 rounding) and agrees with sequential.
- The engine under bf16 autocast on CUDA: masked weights exactly zero after every step with
  momentum, weight decay and Adam; counts unchanged by gradient-growth updates.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from freetickets.cli.main import main
from freetickets.data import cifar as cifar_mod
from freetickets.ensembles.ensemble import Ensemble
from freetickets.ensembles.tickets import load_ticket
from freetickets.models.registry import create_model
from freetickets.sparse import SparseEngine

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _write_cifar10(root: Path, per_batch: int = 60, n_test: int = 100) -> None:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for i in range(6):
        rng = np.random.default_rng(i)
        n = n_test if i == 0 else per_batch
        batch = {b"batch_label": b"batch", b"labels": [int(v) for v in rng.integers(0, 10, n)],
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"filenames": [b"img_%d.png" % k for k in range(n)]}
        with open(d / ("test_batch" if i == 0 else f"data_batch_{i}"), "wb") as f:
            pickle.dump(batch, f, protocol=2)


def test_edst_cifar_bf16_channels_last_on_cuda(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cifar_mod, "VAL_SIZE", 60)
    data = tmp_path / "data"
    _write_cifar10(data)
    run = tmp_path / "run"
    argv = ["train", "--method", "edst", "--data", "cifar10", "--data-dir", str(data), "--model", "wrn-16-2",
            "--epochs", "3", "--explore-epochs", "1", "--members", "2", "--batch-size", "32",
            "--update-interval", "2", "--device", "cuda", "--precision", "bf16", "--channels-last",
            "--out", str(run), "--set", "eval_batch_size=64"]
    assert main(argv) == 0
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["tickets"]) == 2
    for entry in manifest["tickets"]:
        ticket = load_ticket(run / entry["file"])
        assert entry["sparsity"] == pytest.approx(0.8, abs=1e-3)
        for name, mask in ticket.masks.items():
            w = ticket.state_dict[name]
            assert bool((w[~mask] == 0).all()), name
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data-dir", str(data), "--device", "cuda", "--ood", "none", "--corruptions", "none", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0.0 <= result["ensemble"]["accuracy"] <= 1.0

    x = torch.randn(16, 3, 32, 32, device="cuda")
    seq = Ensemble.load(run, device="cuda").member_probs(x)  # "auto": sequential (measured faster)
    ens = Ensemble.load(run, device="cuda", batched=True)
    batched = ens.member_probs(x)
    assert ens.path in ("fused", "vmap"), ens.path  # the batched form passed its self-check on CUDA
    assert batched.shape == seq.shape == (2, 16, 10)
    assert (batched - seq).abs().max().item() < 2e-2


@pytest.mark.parametrize("optim", ["sgd", "adam"])
def test_engine_bf16_autocast_masks_exact_on_cuda(optim):
    torch.manual_seed(0)
    model = create_model("wrn-16-2", num_classes=10, input_shape=(3, 32, 32)).cuda()
    model = model.to(memory_format=torch.channels_last)
    if optim == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    engine = SparseEngine(model, opt, sparsity=0.8, grow="gradient", update_interval=3)
    counts = {n: int(m.sum()) for n, m in engine.masks.items()}
    params = dict(model.named_parameters())
    for step in range(7):
        x = torch.randn(16, 3, 32, 32, device="cuda").to(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (16,), device="cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        engine.step()
        opt.zero_grad(set_to_none=True)
        for n, m in engine.masks.items():
            assert m.device.type == "cuda" and m.dtype == torch.bool
            assert int(m.sum()) == counts[n], (step, n)
            assert bool((params[n].detach()[~m] == 0).all()), (step, n)
    assert engine.step_count == 7


@pytest.mark.parametrize("n", [1000, 200_000])
def test_selection_on_cuda_equals_cpu(n):
    """The CUDA selection path (device-side thresholds, one read per step, nonzero_static) picks
    exactly the CPU positions: ties by lower index, NaN last, band and rank-all paths."""
    from freetickets.sparse.selection import select_largest, select_smallest

    g = torch.Generator().manual_seed(n)
    scores = torch.randint(-50, 50, (n,), generator=g).float() / 7  # many ties
    scores[torch.randperm(n, generator=g)[: n // 50]] = float("nan")
    cand = torch.rand(n, generator=g) < 0.6
    m = int(cand.sum())
    for k in (1, m // 3, m // 2, m - n // 50 + 3, m):  # one k needs NaN positions
        for fn in (select_smallest, select_largest):
            for magnitude in (False, True):
                cpu = fn(scores, cand, k, magnitude=magnitude)
                gpu = fn(scores.cuda(), cand.cuda(), k, magnitude=magnitude)
                assert int(cpu.sum()) == k
                assert torch.equal(cpu, gpu.cpu()), (k, fn.__name__, magnitude)
