"""DDP with ``structure: channel`` (gloo, 2 processes under torchrun): channel masks identical on
every rank after every update (the engine's generator draws the same channels everywhere) and
equal to the single-process run's."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from freetickets.ensembles.tickets import load_ticket
from freetickets.train.config import TrainConfig, merge, validate
from freetickets.train.runner import train

HERE = Path(__file__).resolve().parent

# EDST with channel structure on an MLP without BatchNorm (per-rank BatchNorm would legitimately differ)
CFG = {"method": "edst", "model": "mlp", "model_kwargs": {"batch_norm": False, "hidden_sizes": [32, 32]},
       "data": "mnist1d", "num_samples": 1000, "epochs": 3, "explore_epochs": 1, "members": 2, "batch_size": 64,
       "update_interval": 4, "prune_fraction": 0.2, "device": "cpu", "seed": 3, "eval_batch_size": 50,
       "structure": "channel"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two torchrun ranks plus a reference run: about 30 s on the shared CPU
def test_channel_masks_identical_on_every_rank_and_equal_to_one_process(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", str(HERE / "_ddp_worker.py"), str(tmp_path / "ddp"), str(results),
           json.dumps(dict(CFG, check_consistency=True))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(results / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert len(ranks[0]["checksums"]) >= 6 and ranks[0]["checksums"] == ranks[1]["checksums"]
    for name, m in ranks[0]["masks"].items():
        assert torch.equal(m, ranks[1]["masks"][name]), name
    train(validate(merge(TrainConfig(), CFG, source="test")), tmp_path / "single")
    for k in range(2):
        a = load_ticket(tmp_path / "ddp" / "tickets" / f"member_{k}.pt")
        b = load_ticket(tmp_path / "single" / "tickets" / f"member_{k}.pt")
        for name in a.masks:
            assert torch.equal(a.masks[name], b.masks[name]), name
            rows = a.masks[name].any(dim=1)
            assert torch.equal(a.masks[name], rows.view(-1, 1) & a.masks[name].any(dim=0).view(1, -1))
