"""Preemption cost: seconds from SIGTERM to process exit, and the work lost, on CPU.

For each case a child process runs ``freetickets train`` (the CLI, in that process) and sends
itself SIGTERM from a forward pre-hook in the middle of training step N, as a scheduler's signal
arrives at an arbitrary moment. The child records the wall-clock time of the signal and the
number of training steps it started; the parent takes the time when ``wait()`` returns (the
process is gone) and reads the checkpoint that ``--resume`` would start from. Printed per case:

* ``term->exit s``: SIGTERM to exit (the step in progress, the step checkpoint, teardown);
* ``lost steps``: steps started minus the steps in that checkpoint (what a resume trains again);
* the same with preemption switched off (``FREETICKETS_PREEMPT_SIGNALS=none``: the default
  action, i.e. what SIGKILL or an old version does): the process dies at once and a resume
  starts from the last epoch checkpoint (or from scratch in the first epoch).

Cases: ``cnn1d`` with the demo preset (``mnist1d_dst``: width 128, batch 128, one member,
signal mid-epoch and at an epoch's last batch, where the stop waits for the end-of-epoch
validation and checkpoint) and ``wrn-16-8`` on tiny CIFAR-10 files in the official layout (batch
32, random pixels: speed only). One thread, like the tests. Numbers depend on the machine and
its load; they are not asserted anywhere.

Usage: ``PYTHONPATH=src python benchmarks/preempt.py [--only cnn1d|wrn-16-8] [--threads N]``
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CIFAR_PER_BATCH, CIFAR_VAL = 100, 100  # 500 images -> 400 train (13 steps of 32) + 100 validation


def _write_cifar10(root: Path) -> None:
    import numpy as np

    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [*[(f"data_batch_{i}", CIFAR_PER_BATCH) for i in range(1, 6)], ("test_batch", 50)]:
        batch = {b"batch_label": b"batch", b"labels": [int(v) for v in rng.integers(0, 10, n)],
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"filenames": [b"img_%d.png" % i for i in range(n)]}
        with open(d / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)


def _cases(tmp: Path) -> dict[str, tuple[list[str], list[int]]]:
    """name -> (train arguments, steps at which to signal)."""
    common = ["--method", "dst", "--members", "1", "--device", "cpu", "--set", "eval_batch_size=256"]
    demo = ["--config", "mnist1d_dst", *common, "--epochs", "3"]
    data = tmp / "cifar"
    if not data.exists():
        _write_cifar10(data)
    wrn = ["--data", "cifar10", "--data-dir", str(data), "--model", "wrn-16-8", *common, "--epochs", "2",
           "--batch-size", "32", "--update-interval", "4"]
    return {"cnn1d": (demo, [10, 0]), "wrn-16-8": (wrn, [4])}  # 0: the epoch's last batch


# ----------------------------------------------------------------------------- child
def _child(step: int, record: str, argv: list[str]) -> int:
    import torch

    import freetickets.models as models_pkg
    from freetickets.cli.main import main
    from freetickets.data import cifar

    cifar.VAL_SIZE = CIFAR_VAL
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    state = {"steps": 0, "signal_time": None, "hook_times": []}
    real = models_pkg.create_model

    def hook(module, inputs):
        if module.training and torch.is_grad_enabled():
            state["steps"] += 1
            if state["steps"] <= step:
                state["hook_times"].append(time.time())
            if state["steps"] == step:
                state["signal_time"] = time.time()
                Path(record).write_text(json.dumps(state))  # if the default action kills us now
                os.kill(os.getpid(), signal.SIGTERM)

    def create_model(*args, **kwargs):
        model = real(*args, **kwargs)
        model.register_forward_pre_hook(hook)
        return model

    models_pkg.create_model = create_model
    rc = main(argv)
    state["returned_time"] = time.time()  # the CLI returned: the rest is interpreter teardown
    Path(record).write_text(json.dumps(state))
    return rc


# ----------------------------------------------------------------------------- parent
def _steps_per_epoch(out: Path) -> int:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return rows[0]["step"]


def _checkpoint_step(out: Path) -> int:
    import torch

    path = out / "checkpoint.pt"
    if not path.is_file():
        return 0
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return int(ckpt["job_state"]["global_step"]) if ckpt.get("job_state") else 0


def _median_step(times: list[float]) -> float:
    """Median seconds between the starts of consecutive training steps (epoch ends excluded by
    the median's robustness only; enough for a rough step time)."""
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    return gaps[len(gaps) // 2] if gaps else float("nan")


def _one(args: list[str], step: int, tmp: Path, graceful: bool, threads: int) -> dict:
    out = tmp / f"run-{time.monotonic_ns()}"
    record = tmp / "record.json"
    record.unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "BENCH_THREADS": str(threads)}
    if not graceful:
        env["FREETICKETS_PREEMPT_SIGNALS"] = "none"
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(step), str(record), "--",
                             "train", "--out", str(out), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate()
    t_exit = time.time()
    state = json.loads(record.read_text())
    if state["signal_time"] is None:
        raise SystemExit(f"the run ended before step {step}: {err[-2000:]}")
    saved = _checkpoint_step(out)
    returned = state.get("returned_time")
    return {"rc": proc.returncode, "seconds": t_exit - state["signal_time"], "started": state["steps"],
            "to_return": (returned - state["signal_time"]) if returned else None,
            "step_s": _median_step(state["hook_times"]),
            "checkpoint_step": saved, "lost": state["steps"] - saved,
            "line": next((l for l in err.splitlines() if l.startswith("freetickets: ")), "")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=["cnn1d", "wrn-16-8"], action="append")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for name, (args, steps) in _cases(tmp).items():
            if a.only and name not in a.only:
                continue
            for step in steps:
                if step == 0:  # the first epoch's last batch: learn the epoch length from a 1-epoch run
                    probe = tmp / "probe"
                    subprocess.run([sys.executable, "-m", "freetickets", "train", "--out", str(probe), *args,
                                    "--epochs", "1"], check=True, capture_output=True)
                    step = _steps_per_epoch(probe)
                    where = f"step {step} (epoch's last batch)"
                else:
                    where = f"step {step} (mid-epoch)"
                g = _one(args, step, tmp, True, a.threads)
                k = _one(args, step, tmp, False, a.threads)
                print(f"{name:9s} SIGTERM in {where}: exit {g['rc']}, term->exit {g['seconds']:.2f} s "
                      f"(CLI returned after {g['to_return']:.2f} s; one step {g['step_s']:.2f} s), "
                      f"started {g['started']} steps, checkpoint at {g['checkpoint_step']}, lost {g['lost']} | "
                      f"preemption off: exit {k['rc']}, term->exit {k['seconds']:.2f} s, lost {k['lost']}",
                      flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sep = sys.argv.index("--")
        sys.exit(_child(int(sys.argv[2]), sys.argv[3], sys.argv[sep + 1:]))
    main()
