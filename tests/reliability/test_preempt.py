"""Graceful preemption: a SIGTERM/SIGUSR1 delivered to ``python -m freetickets train`` at a chosen
or random step ends it with a step checkpoint, one line and exit status 75; ``--resume`` then
gives tickets and metrics rows bitwise identical to an uninterrupted run's."""
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
from freetickets.train.preempt import EXIT_PREEMPTED, preempt_signals
from freetickets.utils.io import safe_torch_load

from _reliability_helpers import assert_same_tickets, cli_args, config, expected_position, metrics_rows

HERE = Path(__file__).resolve().parent
STEPS = 12  # steps per epoch of the helpers' configuration (720 training samples, batch 64)
RUNS = {
    # one job of 4 epochs: exploration, then 3 refinement phases with a jump after the 1st and 2nd
    "edst": ("edst", {}),
    # two jobs (members) of 2 epochs
    "dst": ("dst", {}),
}


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    out = {}
    for name, (method, extra) in RUNS.items():
        out[name] = tmp_path_factory.mktemp(f"ref-{name}") / "run"
        train(config(method, **extra), out[name])
    return out


def _without_time(rows):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]


def _stopped_line(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("freetickets: ")]


def _expected_position(name: str, step: int) -> tuple[int, int, int]:
    return expected_position(step, STEPS, 4 if name == "edst" else 2)


CASES = [("edst", 2 * STEPS, "SIGTERM"),   # last batch of the first refinement phase: then the jump
         ("edst", random.Random("preempt-edst").randint(1, 4 * STEPS - 1), "SIGTERM"),
         ("dst", 2 * STEPS, "SIGTERM"),    # last batch of member 0: stops one step into member 1
         ("dst", random.Random("preempt-dst").randint(1, 4 * STEPS - 1), "SIGUSR1")]


@pytest.mark.parametrize("name,step,sig", CASES)
def test_signal_at_step_then_resume_is_bitwise_exact(name, step, sig, references, tmp_path):
    method, extra = RUNS[name]
    out = tmp_path / "run"
    args = ["train", "--out", str(out), *cli_args(method, **extra)]
    proc = subprocess.run([sys.executable, str(HERE / "_signal_at_step.py"), str(step), sig, *args],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == EXIT_PREEMPTED, proc.stderr[-3000:]
    lines = _stopped_line(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"freetickets: stopped by {sig} "), proc.stderr[-2000:]
    assert "--resume" in lines[0] and str(out) in lines[0] and "75" in lines[0]
    assert "Traceback" not in proc.stderr
    ckpt = safe_torch_load(out / "checkpoint.pt", map_location="cpu")
    job, epoch, batch = _expected_position(name, step)
    assert ckpt["run_state"]["job_index"] == job
    assert (ckpt["job_state"]["epoch"], ckpt["job_state"]["batch"]) == (epoch, batch)
    assert '"status": "running"' in (out / "manifest.json").read_text()

    done = subprocess.run([sys.executable, "-m", "freetickets", *args, "--resume"], env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_tickets(references[name], out)
    assert _without_time(metrics_rows(out)) == _without_time(metrics_rows(references[name]))


def test_external_sigterm_at_a_random_moment(references, tmp_path):
    """SIGTERM from outside, seeded random delay after the first epoch's row: exit 75, then
    --resume is exact."""
    # long enough (2 members x 16 epochs, about 3 s on an idle CPU) for the signal to land while training even
    # when a busy machine delays this process's polling
    method, extra = "dst", {"epochs": 16}
    ref = tmp_path / "ref"
    train(config(method, **extra), ref)
    out = tmp_path / "run"
    args = ["train", "--out", str(out), *cli_args(method, **extra)]
    proc = subprocess.Popen([sys.executable, "-m", "freetickets", *args], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 120
    while time.monotonic() < end and proc.poll() is None and not (out / "metrics.jsonl").is_file():
        time.sleep(0.005)
    time.sleep(random.Random("external-sigterm").uniform(0.0, 0.3))
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    print(f"SIGTERM to exit: {time.monotonic() - t0:.3f} s")
    assert proc.returncode == EXIT_PREEMPTED, stderr[-3000:]
    if proc.returncode == EXIT_PREEMPTED:
        assert len(_stopped_line(stderr)) == 1, stderr[-2000:]
        done = subprocess.run([sys.executable, "-m", "freetickets", *args, "--resume"], env=_env(),
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    assert_same_tickets(ref, out)
    assert _without_time(metrics_rows(out)) == _without_time(metrics_rows(ref))


def test_signal_names_from_the_environment(monkeypatch):
    assert preempt_signals("TERM,usr1") == [signal.SIGTERM, signal.SIGUSR1]
    assert preempt_signals("SIGUSR2") == [signal.SIGUSR2]
    assert preempt_signals("none") == []
    monkeypatch.setenv("FREETICKETS_PREEMPT_SIGNALS", "HUP")
    assert preempt_signals() == [signal.SIGHUP]
    from freetickets.errors import UserError

    for bad in ("KILL", "NOPE"):
        with pytest.raises(UserError, match="FREETICKETS_PREEMPT_SIGNALS"):
            preempt_signals(bad)


def test_preemption_can_be_switched_off(tmp_path):
    """FREETICKETS_PREEMPT_SIGNALS=none: SIGTERM keeps its default action (the process dies, the
    last checkpoint is kept, exactly as with SIGKILL)."""
    out = tmp_path / "run"
    args = ["train", "--out", str(out), *cli_args("dense", epochs=2)]
    proc = subprocess.run([sys.executable, str(HERE / "_signal_at_step.py"), "5", "SIGTERM", *args],
                          env={**_env(), "FREETICKETS_PREEMPT_SIGNALS": "none"}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGTERM
    assert not (out / "checkpoint.pt").exists()
