"""DDP on CPU (gloo, 2 processes under torchrun): masks identical on every rank, rank 0 writes
alone, and the 2-process run with per-rank batch B/2 equals the 1-process run with batch B."""
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

# EDST on MNIST-1D with an MLP without BatchNorm (per-rank BatchNorm would legitimately differ),
# fp32: exploration epoch, then two refinement phases with a jump between them.
CFG = {"method": "edst", "model": "mlp", "model_kwargs": {"batch_norm": False}, "data": "mnist1d",
       "num_samples": 1000, "epochs": 3, "explore_epochs": 1, "members": 2, "batch_size": 64,
       "update_interval": 4, "device": "cpu", "seed": 3, "eval_batch_size": 50}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str], tmp_path: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """One 2-rank run of the worker (library API) and one single-process reference run."""
    tmp = tmp_path_factory.mktemp("ddp")
    results = tmp / "results"
    results.mkdir()
    cfg = dict(CFG, check_consistency=True)
    proc = _torchrun([str(HERE / "_ddp_worker.py"), str(tmp / "ddp"), str(results), json.dumps(cfg)], tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(results / f"rank{r}.pt", weights_only=True) for r in range(2)]
    single = validate(merge(TrainConfig(), CFG, source="test"))
    train(single, tmp / "single")
    return tmp, ranks


def test_masks_identical_on_every_rank(ddp_run):
    tmp, ranks = ddp_run
    c0, c1 = ranks[0]["checksums"], ranks[1]["checksums"]
    assert len(c0) >= 6  # several periodic updates plus the EDST jump
    assert c0 == c1
    assert ranks[0]["masks"].keys() == ranks[1]["masks"].keys()
    for name, m in ranks[0]["masks"].items():
        assert torch.equal(m, ranks[1]["masks"][name]), name


def test_check_consistency_detects_diverged_masks(ddp_run):
    _, ranks = ddp_run
    for r in ranks:
        assert "masks differ across ranks" in r["raised"]


def test_only_rank0_writes(ddp_run):
    tmp, _ = ddp_run
    assert not (tmp / "ddp-rank1").exists()
    manifest = json.loads((tmp / "ddp" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["tickets"]) == 2
    rows = [json.loads(line) for line in (tmp / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]  # one line per epoch, not one per rank
    # training metrics are all-reduced over both ranks' slices
    single_rows = [json.loads(line) for line in (tmp / "single" / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(rows, single_rows):
        assert a["train_accuracy"] == pytest.approx(b["train_accuracy"], abs=1e-6)
        assert a["val_accuracy"] == pytest.approx(b["val_accuracy"], abs=1e-9)
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)


def test_ddp_equals_single_process(ddp_run):
    """2 ranks x 32 samples == 1 process x 64 samples: same masks, weights within 1e-5."""
    tmp, _ = ddp_run
    max_diff = 0.0
    for k in range(2):
        a = load_ticket(tmp / "ddp" / "tickets" / f"member_{k}.pt")
        b = load_ticket(tmp / "single" / "tickets" / f"member_{k}.pt")
        assert a.masks.keys() == b.masks.keys()
        for name in a.masks:
            assert torch.equal(a.masks[name], b.masks[name]), name
        for name, t in a.state_dict.items():
            max_diff = max(max_diff, float((t.float() - b.state_dict[name].float()).abs().max()))
    print(f"DDP vs single-process max abs weight difference: {max_diff:.3g}")
    assert max_diff < 1e-5


def test_unavailable_backend_is_one_line_error(tmp_path):
    proc = _torchrun(["-m", "freetickets", "train", "--method", "dense", "--model", "mlp", "--out", str(tmp_path / "r"),
                      "--epochs", "1", "--num-samples", "200", "--device", "cpu", "--set", "dist_backend=nccl"],
                     tmp_path, timeout=90)
    assert proc.returncode != 0
    ours = [line for line in proc.stderr.splitlines() if line.startswith("freetickets: error:")]
    assert ours and all("nccl" in line for line in ours), proc.stderr[-2000:]
    # no traceback from our processes (torchrun itself then reports the failed children)
    assert "src/freetickets" not in proc.stderr and "[rank0]" not in proc.stderr
    assert not (tmp_path / "r").exists()
