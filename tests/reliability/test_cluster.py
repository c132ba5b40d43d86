"""Runs on a cluster, emulated on this machine with gloo on CPU: a 2-process torchrun run stopped
by SIGTERM (delivered as SLURM, Kubernetes or a single rank would receive it) stops every rank
after the same step with exit status 75 and one checkpoint written by rank 0, and ``--resume``
gives tickets and metrics rows bitwise identical to an uninterrupted 2-process run; two
``torchrun --nnodes 2`` launchers (one process each, c10d rendezvous on the loopback address,
the same run directory) give the single-node run's result bitwise, with the lock held and the
files written by global rank 0 only (LOCAL_RANK is 0 on both "nodes")."""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from freetickets.train.preempt import EXIT_PREEMPTED
from freetickets.utils.io import safe_torch_load

from _reliability_helpers import assert_same_tickets, cli_args, expected_position, metrics_rows

HERE = Path(__file__).resolve().parent
WORKER = str(HERE / "_signal_at_step.py")
STEPS, EPOCHS, MEMBERS = 12, 2, 2  # the helpers' DST configuration: 2 members x 2 epochs x 12 steps
ARGS = cli_args("dst")
TIMEOUT = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(results: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT", "SIGNAL_RANK", "SIGNAL_TO", "LOCK_PROBE")}
    return {**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
            "RESULT_DIR": str(results), **extra}


def _launch(out: Path, results: Path, *, nodes: int = 1, step: int = 0, sig: str = "SIGTERM", resume: bool = False,
            **extra: str) -> dict:
    """Run the worker under torchrun: one launcher with 2 processes (``nodes=1``) or two launchers
    with one process each (``nodes=2``). Returns the launchers' exit statuses, their stderr and
    the ranks' result records, by global rank."""
    results.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    tail = [WORKER, str(step), sig, "train", "--out", str(out), *ARGS, *(["--resume"] if resume else [])]
    run = [sys.executable, "-m", "torch.distributed.run"]
    if nodes == 1:
        cmds = [[*run, "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(port), *tail]]
    else:
        cmds = [[*run, "--nnodes", "2", "--node-rank", str(n), "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                 "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"test-{port}", *tail] for n in range(nodes)]
    # a session of their own: a signal for the launcher never reaches pytest
    procs = [subprocess.Popen(c, env=_env(results, **extra), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, start_new_session=True) for c in cmds]
    try:
        errs = [p.communicate(timeout=TIMEOUT)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    ranks = {}
    for f in sorted(results.glob("rank*.json")):
        r = json.loads(f.read_text())
        ranks[r["rank"]] = r
    return {"rc": [p.returncode for p in procs], "stderr": "\n".join(errs), "ranks": ranks}


def _ok(launch: dict) -> None:
    assert launch["rc"] == [0] * len(launch["rc"]), launch["stderr"][-4000:]
    assert sorted(launch["ranks"]) == [0, 1], launch["stderr"][-4000:]
    assert all(r["rc"] == 0 for r in launch["ranks"].values())


def _without_time(rows):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]


def _stop_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("freetickets: ")]


def _holder_pid(out: Path) -> int:
    return int((out / ".freetickets.lock").read_text().split("@")[0])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted single-node 2-process run."""
    tmp = tmp_path_factory.mktemp("ref-ddp")
    launch = _launch(tmp / "run", tmp / "results")
    _ok(launch)
    assert _holder_pid(tmp / "run") == launch["ranks"][0]["pid"]
    assert len(metrics_rows(tmp / "run")) == EPOCHS * MEMBERS  # one row per epoch, not one per rank
    return tmp / "run"


def _assert_stopped(launch: dict, out: Path, step: int, remote: bool) -> None:
    """Every rank exited 75 after the same number of steps, the step the request arrived in (one
    more at a member's last batch, see expected_position); rank 0 printed one line; the
    checkpoint holds that position."""
    err = launch["stderr"]
    assert all(rc != 0 for rc in launch["rc"]), err[-4000:]  # torchrun reports the failed ranks
    ranks = launch["ranks"]
    assert sorted(ranks) == [0, 1], err[-4000:]
    assert [ranks[r]["rc"] for r in (0, 1)] == [EXIT_PREEMPTED] * 2, err[-4000:]
    steps = ranks[0]["steps"]
    assert ranks[1]["steps"] == steps
    assert expected_position(steps, STEPS, EPOCHS) == expected_position(step, STEPS, EPOCHS)
    assert steps in (step, step + 1)
    lines = _stop_lines(err)
    who = "SIGTERM (on another rank) " if remote else "SIGTERM "
    assert len(lines) == 1 and lines[0].startswith(f"freetickets: stopped by {who}"), err[-4000:]
    # no traceback from our code (torchrun prints its own when it is signalled)
    assert not [line for line in err.splitlines() if line.strip().startswith('File "') and "freetickets" in line]
    ckpt = safe_torch_load(out / "checkpoint.pt", map_location="cpu")
    job, epoch, batch = expected_position(step, STEPS, EPOCHS)
    assert ckpt["run_state"]["job_index"] == job
    assert (ckpt["job_state"]["epoch"], ckpt["job_state"]["batch"]) == (epoch, batch)
    assert '"status": "running"' in (out / "manifest.json").read_text()
    assert _holder_pid(out) == ranks[0]["pid"]


def _resume_and_compare(out: Path, results: Path, reference: Path, nodes: int) -> None:
    done = _launch(out, results, nodes=nodes, resume=True)
    _ok(done)
    assert _holder_pid(out) == done["ranks"][0]["pid"]
    assert_same_tickets(reference, out)
    assert _without_time(metrics_rows(out)) == _without_time(metrics_rows(reference))


# How the signal arrives: SLURM signals every process of the step (the launcher and each rank);
# `kill -TERM <torchrun>` (or Kubernetes, whose PID 1 is torchrun) reaches the launcher, which
# forwards SIGTERM to the ranks; a signal for one rank only must stop the others too.
# (delivery, environment of the worker, the step the signal is sent in)
DELIVERY = {"every-process": (dict(SIGNAL_TO="all"), random.Random("ddp-all").randint(1, STEPS * EPOCHS - 1)),
            "launcher": (dict(SIGNAL_TO="launcher"), random.Random("ddp-launcher").randint(STEPS * EPOCHS + 1, 40)),
            # member 0's last batch: every rank stops one step into member 1
            "rank-1-only": (dict(SIGNAL_TO="self", SIGNAL_RANK="1"), STEPS * EPOCHS)}


@pytest.mark.slow  # about 30 s: two torchrun launches
@pytest.mark.parametrize("delivery", sorted(DELIVERY))
def test_ddp_sigterm_then_resume_is_bitwise_exact(delivery, reference, tmp_path):
    env, step = DELIVERY[delivery]
    out = tmp_path / "run"
    launch = _launch(out, tmp_path / "stopped", step=step, **env)
    if delivery == "launcher":  # forwarded by torchrun: lands a little later, at a step no one chose
        step = launch["ranks"][0]["steps"] if 0 in launch["ranks"] else step
    _assert_stopped(launch, out, step, remote=delivery == "rank-1-only")
    _resume_and_compare(out, tmp_path / "resumed", reference, nodes=1)


def test_two_nodes_equal_one_node(reference, tmp_path):
    """Two launchers (--nnodes 2, one process each) give the single-node 2-process result bitwise;
    LOCAL_RANK is 0 on both, and the global rank 0 alone holds the lock and writes."""
    out = tmp_path / "run"
    launch = _launch(out, tmp_path / "results", nodes=2)
    _ok(launch)
    assert [launch["ranks"][r]["local_rank"] for r in (0, 1)] == [0, 0]
    assert _holder_pid(out) == launch["ranks"][0]["pid"]
    assert len(metrics_rows(out)) == EPOCHS * MEMBERS
    assert_same_tickets(reference, out)
    assert _without_time(metrics_rows(out)) == _without_time(metrics_rows(reference))


@pytest.mark.slow  # about 30 s: two pairs of torchrun launchers
def test_two_nodes_lock_and_sigterm_then_resume(reference, tmp_path):
    """On two nodes: the rank-1 process (LOCAL_RANK 0 on its node) cannot take the lock, which
    names global rank 0's process; SIGTERM to every process stops both ranks at the same step
    with exit 75; resuming on two nodes again gives the single-node result bitwise."""
    step = random.Random("two-nodes").randint(1, MEMBERS * EPOCHS * STEPS - 1)
    out = tmp_path / "run"
    launch = _launch(out, tmp_path / "stopped", nodes=2, step=step, SIGNAL_TO="all", LOCK_PROBE="1")
    _assert_stopped(launch, out, step, remote=False)
    probe = launch["ranks"][1]["lock_probe"]
    assert probe is not None and "being written by another freetickets train" in probe, probe
    assert f"pid {launch['ranks'][0]['pid']}" in probe
    _resume_and_compare(out, tmp_path / "resumed", reference, nodes=2)


def test_own_sums_per_rank_and_after_a_world_size_change():
    from freetickets.train.distributed import DistInfo, own_sums

    by_rank = [{"loss": 1.5, "correct": 3, "seen": 8}, {"loss": 0.25, "correct": 5, "seen": 7}]
    two = [DistInfo(r, 2, 0) for r in (0, 1)]
    assert [own_sums(by_rank[0], by_rank, d) for d in two] == by_rank  # the same world size: exact
    total = {"loss": 1.75, "correct": 8, "seen": 15}
    assert own_sums(by_rank[0], by_rank, DistInfo()) == total  # resumed in one process
    three = [own_sums(by_rank[0], by_rank, DistInfo(r, 3, r)) for r in range(3)]
    assert three == [total, {"loss": 0.0, "correct": 0, "seen": 0}, {"loss": 0.0, "correct": 0, "seen": 0}]
    # a checkpoint without per-rank sums (single process): rank 0 continues, the others from zero
    assert [own_sums(total, None, d) for d in two] == [total, {"loss": 0.0, "correct": 0, "seen": 0}]
    assert own_sums(total, None, DistInfo()) == total
