"""Exact resume after SIGKILL: ``python -m freetickets train`` is killed at a random moment
(seeded: after its first checkpoint appears, plus a random delay), twice, then finished with
``--resume``; its tickets must be bitwise identical to an uninterrupted run's."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from freetickets.train import train

from _reliability_helpers import assert_same_tickets, cli_args, config

# Longer than the in-process runs so that a kill lands while training (about 100-150 steps).
KILL_RUNS = {
    "edst": ("edst", {"epochs": 8, "explore_epochs": 2, "members": 3}),
    "dst": ("dst", {"epochs": 4, "members": 3}),
    "pf": ("pf", {"epochs": 3, "pf_epochs": 3}),
}


def _env() -> dict[str, str]:
    # the same intra-op thread count as the in-process reference (see conftest.py)
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as f:
        return subprocess.Popen(cmd, env=_env(), stdout=f, stderr=subprocess.STDOUT)


def _kill_after_checkpoint(proc: subprocess.Popen, ckpt: Path, delay_s: float, deadline_s: float = 120) -> bool:
    """SIGKILL ``proc`` ``delay_s`` after ``ckpt`` changes (appears, or is rewritten on resume);
    returns whether it was still running when killed."""
    before = ckpt.stat().st_mtime_ns if ckpt.is_file() else None
    end = time.monotonic() + deadline_s
    while time.monotonic() < end and proc.poll() is None:
        if ckpt.is_file() and ckpt.stat().st_mtime_ns != before:
            break
        time.sleep(0.005)
    time.sleep(delay_s)
    alive = proc.poll() is None
    if alive:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=deadline_s)
    return alive and proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("name", list(KILL_RUNS))
def test_sigkill_then_resume_is_bitwise_exact(name, tmp_path):
    method, extra = KILL_RUNS[name]
    ref = tmp_path / "ref"
    t0 = time.perf_counter()
    train(config(method, **extra), ref)
    ref_s = time.perf_counter() - t0

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "freetickets", "train", "--out", str(out),
           *cli_args(method, checkpoint_every_steps=2, **extra)]
    log = tmp_path / "train.log"
    rng = random.Random(f"kill-{name}")
    kills = 0
    for attempt in range(2):
        proc = _start(cmd + (["--resume"] if attempt else []), log)
        kills += _kill_after_checkpoint(proc, out / "checkpoint.pt", rng.uniform(0.0, 0.4 * ref_s))
    assert kills >= 1, f"no kill landed while training; see {log}"
    manifest = (out / "manifest.json").read_text()
    assert '"status": "running"' in manifest
    done = subprocess.run(cmd + ["--resume"], env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not list(out.rglob(".*.tmp"))  # temporary files of writes cut short were removed
    assert_same_tickets(ref, out)
