"""Helpers shared by tests/train (imported by its conftest and tests; a unique module name)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


from freetickets.train.config import TrainConfig, validate

TINY = dict(model="cnn1d", model_kwargs={"width": 16}, num_samples=1000, batch_size=64, device="cpu",
            update_interval=5, seed=0)


def tiny_config(**overrides) -> TrainConfig:
    return validate(TrainConfig(**{**TINY, **overrides}))


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line.strip()]


def read_manifest(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "manifest.json").read_text())


@dataclass
class Run:
    """A finished run: its directory, config, manifest, metrics rows and anything recorded."""

    root: Path
    cfg: TrainConfig
    manifest: dict
    metrics: list[dict]
    recorded: dict = field(default_factory=dict)
