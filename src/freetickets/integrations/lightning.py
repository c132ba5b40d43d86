"""PyTorch Lightning: dynamic sparse training as one callback.

Usage::

    from freetickets.integrations.lightning import SparseTrainingCallback
    trainer = lightning.Trainer(callbacks=[SparseTrainingCallback(sparsity=0.8, update_interval=100)])
    trainer.fit(module)                       # any LightningModule with one optimizer
    trainer.fit(module, ckpt_path="last.ckpt")  # resume: masks and engine counters restored exactly

What it does and why there:

* **Fit start** (``on_fit_start``; optimizers exist, and on resume the model weights are already
  restored): builds ``SparseEngine(pl_module, optimizer, **engine_options)`` on the
  LightningModule (so names are the module's ``named_parameters`` names) and its single
  optimizer. On resume it starts from the masks saved in the checkpoint instead of drawing new
  ones.
* **Updates end on a trained model**: the engine gets ``total_steps=
  trainer.estimated_stepping_batches`` (the fit's optimizer steps, accumulation included), so
  topology updates stop at 75% of them and the last quarter trains the final topology. Pass
  ``end_step=`` or ``total_steps=`` among the engine options to choose otherwise.
* **After every optimizer step**: ``on_train_batch_end`` runs after Lightning's
  ``optimizer.step()`` and before the next batch's forward pass and ``zero_grad`` (Lightning
  zeroes gradients inside the next closure), so masked weights are 0 for every forward pass and
  gradient growth sees the step's (accumulated) gradient. It calls ``engine.step()`` once per
  increase of ``trainer.global_step`` (= optimizer steps), so with ``accumulate_grad_batches``
  the engine steps once per optimizer step, not per micro-batch; steps GradScaler skipped
  (``precision="16-mixed"``) are handled by the engine (no update on non-finite gradients).
* **Checkpoints**: ``state_dict()`` / ``load_state_dict()`` are Lightning's callback-state hooks,
  so ``engine.state_dict()`` is stored in every Lightning checkpoint and restored by
  ``trainer.fit(ckpt_path=...)``.
* **Logging**: ``sparse/sparsity``, ``sparse/explored_fraction`` and ``sparse/updates`` via
  ``pl_module.log`` (Lightning's ``log_every_n_steps`` applies).
"""
from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl

from freetickets.integrations._common import build_engine, engine_log_values, unwrap_optimizer
from freetickets.sparse import SparseEngine

__all__ = ["SparseTrainingCallback"]

logger = logging.getLogger(__name__)


class SparseTrainingCallback(pl.Callback):
    """Lightning callback running a :class:`~freetickets.sparse.SparseEngine`.

    Args:
        log: log sparsity scalars with ``pl_module.log`` (default True).
        **engine_options: keyword arguments of ``SparseEngine`` (``sparsity``, ``distribution``,
            ``update_interval``, ``include``, ``exclude``, ``regrow_pruned``, ...), except
            ``model``/``optimizer``.

    Attributes:
        engine: the engine of the current fit (``None`` before the first fit starts).
    """

    def __init__(self, log: bool = True, **engine_options: Any) -> None:
        for bad in ("model", "optimizer", "masks"):
            if bad in engine_options:
                raise ValueError(f"SparseTrainingCallback: {bad!r} is set by the callback, not an engine option")
        self.engine_options = dict(engine_options)
        self.log_values = bool(log)
        self.engine: SparseEngine | None = None
        self._restored: dict[str, Any] | None = None
        self._seen_steps = 0

    @property
    def state_key(self) -> str:
        return "SparseTrainingCallback"

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if len(trainer.optimizers) != 1:
            raise ValueError(f"SparseTrainingCallback: needs exactly one optimizer, the module has {len(trainer.optimizers)}")
        optimizer = unwrap_optimizer(trainer.optimizers[0])
        self.engine = build_engine(pl_module, optimizer, self.engine_options, self._restored,
                                   total_steps=trainer.estimated_stepping_batches)
        self._restored = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The loops (hence global_step) are restored after on_fit_start; sync the step count here.
        self._seen_steps = trainer.global_step
        if self.engine is not None and self.engine.step_count != trainer.global_step:
            logger.warning("SparseTrainingCallback: engine at step %d but trainer at global step %d (checkpoint "
                           "without engine state?)", self.engine.step_count, trainer.global_step)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.engine is None:
            return
        stepped = False
        while self._seen_steps < trainer.global_step:
            self.engine.step()
            self._seen_steps += 1
            stepped = True
        if stepped and self.log_values:
            for name, value in engine_log_values(self.engine).items():
                pl_module.log(name, value, on_step=True, on_epoch=False, prog_bar=False, logger=bool(trainer.loggers))

    def state_dict(self) -> dict[str, Any]:
        return {"engine": self.engine.state_dict()} if self.engine is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Called while the checkpoint is restored, before optimizers exist: build at fit start.
        self._restored = state_dict.get("engine")
