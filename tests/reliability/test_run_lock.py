"""One writer per run directory: the advisory lock of ``freetickets train`` (and what readers do
while it is held)."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from freetickets.cli.main import main
from freetickets.train import train
from freetickets.train.runlock import LOCK_NAME, RunLock, holder

from _reliability_helpers import (Interrupt, StepCounter, assert_same_tickets, cli_args, config, metrics_rows)

HERE = Path(__file__).resolve().parent
LONG = {"epochs": 6, "members": 2}  # a DST run of a few seconds: long enough to be caught running


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root``: (sha256, mtime_ns); a refused writer must leave it unchanged."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _without_time(rows):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None and not path.is_file():
        time.sleep(0.005)
    assert proc.poll() is None, "the first writer ended before the test could act"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    ref = tmp_path_factory.mktemp("lock-ref") / "run"
    train(config("dst", **LONG), ref)
    return ref


@pytest.mark.parametrize("extra", [[], ["--resume"], ["--overwrite"]])
def test_second_writer_is_refused_in_process(extra, reference, tmp_path, capsys):
    """A held lock (here by this test) refuses train with one line naming the directory and the
    holder's pid, exit 2, and nothing in the directory changes (not even with --overwrite)."""
    run = tmp_path / "run"
    train(config("dst", **LONG), run)
    lock = RunLock(run)
    lock.acquire()
    before = _snapshot(run)  # (taking the lock wrote this process's pid into the lock file)
    try:
        capsys.readouterr()
        assert main(["train", "--out", str(run), *cli_args("dst", **LONG), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert str(run) in err[0] and f"pid {os.getpid()}" in err[0] and "being written" in err[0], err
        assert _snapshot(run) == before
    finally:
        lock.release()
    assert holder(run) is None


def test_second_writer_refused_while_the_first_runs(reference, tmp_path):
    """Two real processes on one directory: the second (plain, --resume, --overwrite) exits 2
    naming the first's pid; the first finishes undisturbed (same tickets and metrics rows as an
    undisturbed run, one row per epoch)."""
    run = tmp_path / "run"
    args = [sys.executable, "-m", "freetickets", "train", "--out", str(run), *cli_args("dst", **LONG)]
    first = subprocess.Popen(args, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(run / "config.yaml", first)
    first.send_signal(signal.SIGSTOP)  # paused (still holding the lock) while the others try
    try:
        _second_writers(args, run, first.pid)
    finally:
        first.send_signal(signal.SIGCONT)
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-2000:]
    assert holder(run) is None
    assert_same_tickets(reference, run)
    assert _without_time(metrics_rows(run)) == _without_time(metrics_rows(reference))


def _second_writers(args: list[str], run: Path, pid: int) -> None:
    assert holder(run) is not None and holder(run).startswith(f"{pid}@")
    before = _snapshot(run)
    for extra in ([], ["--resume"], ["--overwrite"]):
        second = subprocess.run(args + extra, env=_env(), capture_output=True, text=True, timeout=120)
        ours = [line for line in second.stderr.splitlines() if line.startswith("freetickets:")]
        assert second.returncode == 2 and len(ours) == 1, second.stderr[-2000:]
        assert f"pid {pid}" in ours[0] and str(run) in ours[0]
    ev = subprocess.run([sys.executable, "-m", "freetickets", "evaluate", str(run), "--ood", "none"],
                        env=_env(), capture_output=True, text=True, timeout=120)
    assert ev.returncode == 2 and "still being trained" in ev.stderr and f"pid {pid}" in ev.stderr
    assert _snapshot(run) == before


def test_sigkill_of_the_holder_does_not_block_resume(reference, tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "freetickets", "train", "--out", str(run), *cli_args("dst", **LONG)]
    first = subprocess.Popen(args, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(run / "checkpoint.pt", first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    assert (run / LOCK_NAME).read_text().startswith(f"{first.pid}@")  # the stale pid is still written...
    assert holder(run) is None  # ...but the kernel released the lock with the process
    done = subprocess.run(args + ["--resume"], env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same_tickets(reference, run)


def test_lock_file_is_not_part_of_the_run(tmp_path):
    """A directory holding only the lock file (a setup that failed after taking it) is reusable,
    and --overwrite keeps the lock file it holds."""
    run = tmp_path / "run"
    lock = RunLock(run)
    lock.acquire()
    lock.release()
    assert (run / LOCK_NAME).is_file()
    assert main(["train", "--out", str(run), *cli_args("static", epochs=1, members=1)]) == 0
    assert main(["train", "--out", str(run), "--overwrite", *cli_args("static", epochs=1, members=1)]) == 0
    assert (run / LOCK_NAME).is_file() and holder(run) is None


def test_readers_on_running_and_interrupted_runs(tmp_path, monkeypatch, capsys):
    """evaluate/predict/report: a held lock is reported in one line; --partial uses the tickets
    listed so far (here: member 0 of an interrupted 2-member DST run)."""
    import numpy as np

    run = tmp_path / "run"
    StepCounter(monkeypatch, stop_at=2 * 12 + 5)  # inside member 1
    with pytest.raises(Interrupt):
        train(config("dst"), run)
    monkeypatch.undo()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "running" and len(manifest["tickets"]) == 1
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((3, 1, 40), dtype=np.float32))
    commands = {"evaluate": ["evaluate", str(run), "--ood", "none", "--json"],
                "predict": ["predict", str(run), "--input", str(x), "--output", str(tmp_path / "p.npz")],
                "report": ["report", str(run), "--out", str(tmp_path / "report")]}
    lock = RunLock(run)
    lock.acquire()
    try:
        for name, cmd in commands.items():
            capsys.readouterr()
            assert main(cmd) == 2, name
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and "still being trained" in err[0] and f"pid {os.getpid()}" in err[0], (name, err)
            assert "--partial" in err[0]
    finally:
        lock.release()
    capsys.readouterr()
    assert main(commands["evaluate"]) == 2  # interrupted, nobody training: the old message
    assert "not complete" in capsys.readouterr().err
    assert main(commands["evaluate"] + ["--partial"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["partial"] is True and len(result["members"]) == 1
    assert main(commands["predict"] + ["--partial"]) == 0
    assert (tmp_path / "p.npz").is_file()


def test_reader_on_a_run_still_being_set_up(tmp_path):
    """Locked but no manifest yet (a train between taking the lock and writing its manifest):
    readers say the run is being trained, not that it is no run directory."""
    from freetickets.errors import UserError
    from freetickets.train.rundir import load_complete_manifest
    from freetickets.train.runlock import RunLock

    run = tmp_path / "run"
    lock = RunLock(run)
    lock.acquire()
    try:
        for partial in (False, True):
            with pytest.raises(UserError, match=f"still being trained \\(pid {os.getpid()}\\)"):
                load_complete_manifest(run, partial=partial)
    finally:
        lock.release()
    with pytest.raises(UserError, match="not a freetickets run directory"):
        load_complete_manifest(run)
