"""The efficient ensembles under torchrun (2 CPU processes, gloo). BatchEnsemble's tiled batch
and Packed-Ensembles' plain batch (no randomness, every member on every row) split exactly
across ranks, so their 2-process run equals the 1-process run; Masksembles cuts each rank's half
into its M slices (another valid assignment of rows to masks); MIMO's per-step
shuffles and MC dropout's training masks are drawn per rank (each rank shuffles / drops its own
half of the batch), so for those the run must complete, rank 0 alone writes, and the network
loads as an M-member ensemble."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from freetickets.ensembles.ensemble import Ensemble
from freetickets.ensembles.tickets import load_ticket
from freetickets.train import train
from freetickets.train.config import resolve

CFG = {"model": "mlp", "model_kwargs": {"batch_norm": False}, "num_samples": 1000, "epochs": 2, "members": 3,
       "batch_size": 64, "device": "cpu", "seed": 1, "eval_batch_size": 50, "mimo_batch_repetitions": 2}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun_train(method: str, out: Path) -> subprocess.CompletedProcess:
    args = ["--method", method, "--out", str(out)]
    for key, value in CFG.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_port()}", "-m", "freetickets", "train", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=out.parent)


@pytest.mark.parametrize("method", ["batchensemble", "mimo", "mcdropout", "packed", "masksembles"])
def test_two_process_run(method, tmp_path):
    proc = _torchrun_train(method, tmp_path / "ddp")
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((tmp_path / "ddp" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["members"] == 3
    assert sorted(p.name for p in (tmp_path / "ddp" / "tickets").iterdir()) == ["member_0.pt"]
    ens = Ensemble.load(tmp_path / "ddp")
    assert ens.member_probs(torch.randn(4, 1, 40)).shape == (3, 4, 10)
    if method not in ("batchensemble", "packed"):
        return
    train(resolve(None, {**CFG, "method": method}), tmp_path / "single")
    a = load_ticket(tmp_path / "ddp" / "tickets" / "member_0.pt").state_dict
    b = load_ticket(tmp_path / "single" / "tickets" / "member_0.pt").state_dict
    assert a.keys() == b.keys()
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert diff < 1e-5, diff
