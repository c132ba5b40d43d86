"""Sharding helpers, map-style data in the runner, --member runs and bf16 mask exactness (1 process)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from freetickets.data import BatchIterator, load_data
from freetickets.ensembles.tickets import load_ticket
from freetickets.errors import UserError
from freetickets.sparse import SparseEngine
from freetickets.train.config import TrainConfig, merge, validate
from freetickets.train.distributed import (DistInfo, ShardedBatchSampler, choose_backend, loss_scale, shard_batch,
                                           shard_bounds)
from freetickets.train.runner import train

FAST = {"model": "mlp", "model_kwargs": {"batch_norm": False}, "num_samples": 600, "epochs": 2, "batch_size": 50,
        "update_interval": 3, "device": "cpu", "eval_batch_size": 64}


def _cfg(**kw) -> TrainConfig:
    return validate(merge(TrainConfig(), {**FAST, **kw}, source="test"))


def test_shards_cover_the_global_batch_and_weights_average_exactly():
    for n in (1, 7, 64, 65):
        for world in (2, 3):
            infos = [DistInfo(r, world) for r in range(world)]
            bounds = [shard_bounds(n, i) for i in infos]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            sizes = [hi - lo for lo, hi in bounds]
            assert max(sizes) - min(sizes) <= 1
            # rank r's mean loss (weight 1/s_r per sample) x scale, averaged by DDP (/W): 1/N per sample
            for s, i in zip(sizes, infos):
                if s:
                    assert loss_scale(s, n, i) / s / world == pytest.approx(1 / n)
    x, y = torch.arange(10).view(10, 1), torch.arange(10)
    assert shard_batch(x, y, DistInfo(1, 2))[1].tolist() == [5, 6, 7, 8, 9]


def test_sharded_sampler_matches_the_tensor_iterator():
    bundle = load_data("mnist1d", num_samples=300)
    split = bundle.train
    it = BatchIterator(split, 32, shuffle=True, seed=5, epoch=3)
    order = it.indices()
    per_rank = [list(ShardedBatchSampler(len(split), 32, shuffle=True, seed=5, epoch=3, info=DistInfo(r, 2)))
                for r in range(2)]
    assert len(per_rank[0]) == len(it) == len(ShardedBatchSampler(len(split), 32, shuffle=True, seed=5, epoch=3,
                                                                  info=DistInfo(0, 2)))
    for i, (a, b) in enumerate(zip(*per_rank)):
        assert a + b == order[i * 32 : (i + 1) * 32].tolist()
    resumed = list(ShardedBatchSampler(len(split), 32, shuffle=True, seed=5, epoch=3, info=DistInfo(0, 2),
                                       start_batch=2))
    assert resumed == per_rank[0][2:]


def test_nccl_without_cuda_is_a_user_error():
    with pytest.raises(UserError, match="nccl"):
        choose_backend("nccl", torch.device("cpu"))
    assert choose_backend("auto", torch.device("cpu")) == "gloo"


class _MapStyle(torch.utils.data.Dataset):
    def __init__(self, split):
        self.x, self.y = split.x, split.y

    def __len__(self):
        return int(self.y.shape[0])

    def __getitem__(self, i):
        return self.x[i].float(), int(self.y[i])


def test_runner_trains_on_map_style_data_like_on_tensors(tmp_path, monkeypatch):
    import freetickets.data as data_pkg

    real = data_pkg.load_data
    tensor = dataclasses.replace(real("mnist1d", num_samples=600), augment=None, normalize=None)
    mapped = dataclasses.replace(tensor, train=_MapStyle(tensor.train), val=_MapStyle(tensor.val))
    cfg = _cfg(method="dst", members=1, num_workers=0)
    monkeypatch.setattr(data_pkg, "load_data", lambda *a, **k: tensor)
    m_tensor = train(cfg, tmp_path / "tensor")
    monkeypatch.setattr(data_pkg, "load_data", lambda *a, **k: mapped)
    m_map = train(cfg, tmp_path / "map")
    assert m_map["status"] == "complete"
    assert m_map["flops"]["dense_train_reference"] == m_tensor["flops"]["dense_train_reference"]
    a = load_ticket(tmp_path / "tensor" / "tickets" / "member_0.pt")
    b = load_ticket(tmp_path / "map" / "tickets" / "member_0.pt")
    for name, t in a.state_dict.items():
        assert torch.equal(t, b.state_dict[name]), name  # same order, same batches: bitwise equal


def test_member_flag_writes_a_run_with_that_member_only(tmp_path):
    manifest = train(_cfg(method="dst", members=3, member=1, epochs=1), tmp_path / "m1")
    assert [t["member"] for t in manifest["tickets"]] == [1]
    assert manifest["tickets"][0]["seed"] == 1  # seed + k, as in the full run
    assert sorted(p.name for p in (tmp_path / "m1" / "tickets").iterdir()) == ["member_1.pt"]


def test_num_classes_mismatch_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="num_classes"):
        train(_cfg(method="dense", model_kwargs={"num_classes": 7}), tmp_path / "bad")


def test_bf16_autocast_keeps_masks_exact_on_cpu():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(40, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    engine = SparseEngine(model, opt, sparsity=0.8, update_interval=2)
    x, y = torch.randn(32, 40), torch.randint(0, 10, (32,))
    for _ in range(7):
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            logits = model(x)
        assert logits.dtype == torch.bfloat16
        torch.nn.functional.cross_entropy(logits.float(), y).backward()
        opt.step()
        engine.step()
        opt.zero_grad()
        for name, p in model.named_parameters():
            assert p.dtype == torch.float32  # master weights stay fp32 under autocast
            if name in engine.masks:
                assert torch.count_nonzero(p[~engine.masks[name]]) == 0
    assert engine.update_count == 3
    assert engine.sparsity() == pytest.approx(0.8, abs=1e-3)


def test_bf16_training_run_on_cpu(tmp_path):
    manifest = train(_cfg(method="dst", members=1, epochs=1, precision="bf16"), tmp_path / "bf16")
    t = load_ticket(tmp_path / "bf16" / "tickets" / "member_0.pt")
    for name, m in t.masks.items():
        assert torch.count_nonzero(t.state_dict[name][~m]) == 0
    assert manifest["tickets"][0]["sparsity"] == pytest.approx(0.8, abs=1e-3)
