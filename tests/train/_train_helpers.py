"""Helpers shared by tests/train (imported by its conftest and tests; a unique module name)."""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from freetickets.train.config import TrainConfig, validate

TINY = dict(model="cnn1d", model_kwargs={"width": 16}, num_samples=1000, batch_size=64, device="cpu",
            update_interval=5, seed=0)


def tiny_config(**overrides) -> TrainConfig:
    return validate(TrainConfig(**{**TINY, **overrides}))


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line.strip()]


def read_manifest(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "manifest.json").read_text())


@contextlib.contextmanager
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a shared 2-core machine OpenMP's
    spinning threads made these runs up to 50x slower (measured); restore the setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class Run:
    """A finished run: its directory, config, manifest, metrics rows and anything recorded."""

    root: Path
    cfg: TrainConfig
    manifest: dict
    metrics: list[dict]
    recorded: dict = field(default_factory=dict)
