"""Function-space trajectories: every job's predicted probabilities on a fixed probe subset of
the validation split, recorded at the end of every epoch (the released code's ``--mode tsne``).

Layout in the run directory: ``trajectories/job<j>.npz`` per training job ``j`` (one per member
for dense/deep/DST/static; the single EDST job; PF's parents and fine-tuning jobs), with

* ``probs``: ``(E, P, C)`` float16, softmax probabilities after epoch ``epoch[e]``;
* ``epoch``, ``phase_index``: ``(E,)`` int64, the job-plan epoch (1-based, as everywhere
  users read epochs) and its phase (EDST: refinement phase = ticket index; exploration epochs have phase ``explore``);
* ``phase``: ``(E,)`` unicode; ``probe_index``: ``(P,)`` int64, the probed validation rows;
* ``meta``: a 0-d unicode JSON string ``{"member", "kind", "tickets", "job"}`` of the job.

The probe is ``P = min(256, n_val)`` evenly spaced validation rows: fixed by the data, not by the
seed, so runs of different seeds and methods are probed on the same inputs. Recording is a plain
eval-mode forward pass under ``no_grad`` (no RNG is drawn, BatchNorm statistics are not touched);
a file is rewritten atomically with the rows of earlier epochs plus the new one, so a resumed run
that repeats an epoch replaces that row instead of duplicating it. Runs without the folder (older
runs) simply have no trajectories.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from freetickets.utils.io import atomic_write_bytes

log = logging.getLogger(__name__)

__all__ = ["PROBE_SIZE", "TRAJECTORY_DIR", "probe_indices", "TrajectoryRecorder", "load_trajectories",
           "trajectory_array"]

PROBE_SIZE = 256
TRAJECTORY_DIR = "trajectories"


def probe_indices(n_val: int, size: int = PROBE_SIZE) -> torch.Tensor:
    """``(min(size, n_val),)`` int64 evenly spaced rows of a validation split of ``n_val`` rows."""
    p = min(size, n_val)
    if p <= 0:
        return torch.zeros(0, dtype=torch.int64)
    return torch.div(torch.arange(p, dtype=torch.int64) * n_val, p, rounding_mode="floor")


def _probe_inputs(split: Any, idx: torch.Tensor, normalize: Callable | None, device: torch.device) -> torch.Tensor:
    if hasattr(split, "x") and isinstance(split.x, torch.Tensor):
        x = split.x[idx.to(split.x.device)].to(device)
        return normalize(x) if normalize is not None else x.to(torch.float32)
    return torch.stack([torch.as_tensor(split[int(i)][0]) for i in idx]).to(device)


def _read(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


class TrajectoryRecorder:
    """Appends one probe row per epoch of one job to ``trajectories/job<j>.npz`` (rank 0 only)."""

    def __init__(self, root: Path, job_index: int, job: Any, data: Any, device: torch.device,
                 autocast: Callable | None = None):
        self.path = Path(root) / TRAJECTORY_DIR / f"job{job_index}.npz"
        self.meta = json.dumps({"member": int(job.member), "kind": str(job.kind), "tickets": str(job.tickets),
                                "job": int(job_index)}, sort_keys=True)
        self.autocast = autocast
        self.enabled = True
        try:
            n_val = len(data.val) if not hasattr(data.val, "x") else int(data.val.x.shape[0])
            self.idx = probe_indices(n_val)
            self.x = _probe_inputs(data.val, self.idx, data.normalize, device) if len(self.idx) else None
        except Exception as exc:  # a split we cannot index: no trajectories, never a failed run
            log.info("trajectories: not recorded (%s)", exc)
            self.enabled = False
        if self.enabled and self.x is None:
            self.enabled = False

    @classmethod
    def for_job(cls, ctx: Any, job: Any, job_index: int, autocast: Callable | None) -> "TrajectoryRecorder":
        """The recorder of ``job`` in a :class:`~freetickets.train.runner.RunContext`."""
        rec = cls(ctx.run.root, job_index, job, ctx.data, ctx.device, autocast)
        rec.enabled = rec.enabled and ctx.dist.is_main
        return rec

    @torch.no_grad()
    def probs(self, model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor] | None = None
              ) -> np.ndarray | None:
        """``(P, C)`` float16 softmax probabilities of ``model`` on the probe, or None.

        ``forward(x) -> (B, C)`` scores (default ``model(x)``): the recipe's validation scores, so
        a network holding M members (MIMO, ...) is recorded as the mean of its members'
        probabilities (the softmax of its ensemble log-probabilities)."""
        forward = model if forward is None else forward
        was_training = model.training
        model.eval()
        try:
            chunks = []
            for i in range(0, self.x.shape[0], 64):  # bounded memory for large inputs
                with self.autocast() if self.autocast else contextlib.nullcontext():
                    chunks.append(forward(self.x[i : i + 64]))
            logits = torch.cat(chunks) if all(isinstance(c, torch.Tensor) for c in chunks) else chunks[0]
        finally:
            model.train(was_training)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != self.x.shape[0]:
            log.info("trajectories: model output of shape %s is not (probes, classes); not recorded",
                     tuple(getattr(logits, "shape", ())))
            self.enabled = False
            return None
        return torch.softmax(logits.float(), dim=1).cpu().numpy().astype(np.float16)

    def record(self, model: nn.Module, spec: Any, forward: Callable[[torch.Tensor], torch.Tensor] | None = None
               ) -> None:
        """Write the row of epoch ``spec.number`` (1-based); rows of that epoch or later are replaced.
        ``forward``: as for :meth:`probs`."""
        if not self.enabled:
            return
        p = self.probs(model, forward)
        if p is None:
            return
        old = _read(self.path)
        keep = (old["epoch"] < spec.number) if old is not None and old["probs"].shape[1:] == p.shape else None

        def stack(key: str, new: np.ndarray) -> np.ndarray:
            return np.concatenate([old[key][keep], new]) if keep is not None else new
        arrays = {
            "probs": stack("probs", p[None]),
            "epoch": stack("epoch", np.asarray([spec.number], dtype=np.int64)),
            "phase_index": stack("phase_index", np.asarray([spec.phase_index], dtype=np.int64)),
            "phase": stack("phase", np.asarray([str(spec.phase)])),
            "probe_index": self.idx.numpy(),
            "meta": np.asarray(self.meta),
        }
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, buf.getvalue())


def load_trajectories(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every job's trajectory, in job order: dicts with the arrays of the module docstring
    (``probs`` as float32) and the ``meta`` keys. ``[]`` for runs without trajectories."""
    folder = Path(run_dir) / TRAJECTORY_DIR
    if not folder.is_dir():
        return []
    out = []
    for path in folder.glob("job*.npz"):
        z = _read(path)
        if z is None or "probs" not in z:
            continue
        entry: dict[str, Any] = json.loads(str(z["meta"]))
        entry.update(probs=z["probs"].astype(np.float32), epoch=z["epoch"], phase_index=z["phase_index"],
                     phase=z["phase"], probe_index=z["probe_index"])
        out.append(entry)
    return sorted(out, key=lambda e: e["job"])


def trajectory_array(run_dir: str | Path) -> np.ndarray:
    """``(epochs, members, probes, classes)`` float32: the trajectories of the run's ticket-making
    jobs stacked member by member (PF's dense parents left out). EDST is one job: members = 1.

    Raises ``ValueError`` if the run has none or the jobs have different epoch counts.
    """
    jobs = [t for t in load_trajectories(run_dir) if t["kind"] != "parent"]
    if not jobs:
        raise ValueError(f"{run_dir}: no trajectories recorded")
    lengths = {t["probs"].shape[0] for t in jobs}
    if len(lengths) != 1:
        raise ValueError(f"{run_dir}: jobs have different epoch counts {sorted(lengths)}")
    return np.stack([t["probs"] for t in jobs], axis=1)
