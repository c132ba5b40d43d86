"""Shared pieces of the reliability tests: tiny configurations, interrupting a run in-process,
and a bitwise comparison of two run directories' tickets and manifests."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

import freetickets.models as models_pkg
from freetickets.ensembles.tickets import load_ticket
from freetickets.train import train
from freetickets.train.config import resolve

# A few seconds of CPU for the slowest method: 1000 MNIST-1D samples -> 720 training samples,
# 12 steps of 64 per epoch.
BASE: dict[str, Any] = dict(model="mlp", num_samples=1000, batch_size=64, device="cpu", members=2,
                            update_interval=3, eval_batch_size=256)
METHODS: dict[str, dict[str, Any]] = {
    "dense": dict(epochs=3),
    "deep": dict(epochs=2),
    "dst": dict(epochs=2),
    "static": dict(epochs=2),
    "edst": dict(epochs=4, explore_epochs=1, members=3, jump_fraction=0.7),
    "pf": dict(epochs=2, pf_epochs=2),
    # one network holding the members: MIMO's per-step shuffles (rho and r > 1 exercise both
    # paths), BatchEnsemble's tiled batch, MC dropout's RNG-drawn training masks
    "mimo": dict(epochs=2, mimo_input_repetition=0.5, mimo_batch_repetitions=2),
    "batchensemble": dict(epochs=2, batchensemble_init="normal"),
    "mcdropout": dict(epochs=2, dropout_rate=0.2),
    # grouped layers of every member in one pass; fixed masks on batch slices
    "packed": dict(epochs=2, packed_alpha=2.0, packed_gamma=2),
    "masksembles": dict(epochs=2, masksembles_scale=2.0),
}


def config(method: str, **extra: Any):
    return resolve(None, {**BASE, "method": method, **METHODS[method], **extra})


def cli_args(method: str, **extra: Any) -> list[str]:
    """The same configuration as ``config`` as ``freetickets train`` flags (via ``--set``)."""
    values = {**BASE, **METHODS[method], **extra}
    args = ["--method", method]
    for key, value in values.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    return args


class Interrupt(Exception):
    """Stands in for a crash at a chosen training step."""


_CREATE_MODEL = models_pkg.create_model  # the real one, whatever earlier counters patched in


class StepCounter:
    """Counts training steps (forward passes of a model in training mode with autograd on) of
    every model the trainer builds, and raises :class:`Interrupt` on step ``stop_at`` (1-based)."""

    def __init__(self, monkeypatch, stop_at: int | None = None):
        self.steps = 0
        self.stop_at = stop_at
        def create_model(*args, **kwargs):
            model = _CREATE_MODEL(*args, **kwargs)
            model.register_forward_pre_hook(self._hook)
            return model

        monkeypatch.setattr(models_pkg, "create_model", create_model)

    def _hook(self, module, inputs):
        if module.training and torch.is_grad_enabled():
            self.steps += 1
            if self.stop_at is not None and self.steps >= self.stop_at:
                raise Interrupt(f"interrupted at step {self.steps}")


def run_interrupted(cfg, out: Path, monkeypatch, stops: list[int]) -> int:
    """Train ``cfg`` into ``out``, crashing after each number of steps in ``stops`` (counted from
    the start of each process, as a real restart would) and resuming; returns how many times it
    crashed."""
    crashes = 0
    for i, stop in enumerate([*stops, None]):
        StepCounter(monkeypatch, stop)
        try:
            train(cfg, out, resume=i > 0)
        except Interrupt:
            crashes += 1
            manifest = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").is_file() else {}
            assert manifest.get("status", "running") == "running"
    return crashes


def _bits(t: torch.Tensor) -> torch.Tensor:
    if t.is_floating_point():
        return t.contiguous().view(torch.uint8) if t.numel() else t
    return t


def assert_same_tickets(a: Path, b: Path) -> None:
    """Bitwise-equal ticket files and equal manifest ticket entries and FLOPs totals."""
    ma = json.loads((Path(a) / "manifest.json").read_text())
    mb = json.loads((Path(b) / "manifest.json").read_text())
    assert ma["status"] == mb["status"] == "complete"
    assert ma["tickets"] == mb["tickets"]
    assert ma["flops"] == mb["flops"]
    assert ma["members"] == mb["members"]
    per_ticket = (ma.get("model_form") or {}).get("members", 1)  # a model form holds M members in one ticket
    assert len(ma["tickets"]) * per_ticket == ma["members"]
    for entry in ma["tickets"]:
        ta, tb = load_ticket(Path(a) / entry["file"]), load_ticket(Path(b) / entry["file"])
        assert ta.meta == tb.meta
        assert list(ta.state_dict) == list(tb.state_dict)
        for name in ta.state_dict:
            x, y = ta.state_dict[name], tb.state_dict[name]
            assert x.dtype == y.dtype and x.shape == y.shape, name
            assert torch.equal(_bits(x), _bits(y)), f"{entry['file']}: {name} differs"
        assert list(ta.masks) == list(tb.masks)
        for name in ta.masks:
            assert torch.equal(ta.masks[name], tb.masks[name]), f"{entry['file']}: mask {name} differs"


def metrics_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def expected_position(step: int, steps_per_epoch: int, epochs: int) -> tuple[int, int, int]:
    """(job index, epoch, batch) the checkpoint of a stop requested during process step ``step``
    (1-based, every job ``epochs`` x ``steps_per_epoch`` steps) must hold: the next batch, or, at
    an epoch's last batch, the start of the next epoch (after the end-of-epoch work), or, at a
    job's last batch, one step into the next job. A process stopped by a request during step s
    has run s steps, except in the last case (s + 1), whose position is the same formula's."""
    job, s = divmod(step - 1, epochs * steps_per_epoch)
    epoch, batch = divmod(s, steps_per_epoch)
    batch += 1
    if batch < steps_per_epoch:
        return job, epoch, batch
    if epoch + 1 < epochs:
        return job, epoch + 1, 0
    return job + 1, 0, 1
