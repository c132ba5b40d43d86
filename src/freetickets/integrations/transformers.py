"""Hugging Face ``Trainer``: dynamic sparse training as one ``TrainerCallback``.

Usage::

    from freetickets.integrations.transformers import SparseTrainingCallback
    trainer = transformers.Trainer(model=model, args=args, train_dataset=ds,
                                   callbacks=[SparseTrainingCallback(sparsity=0.8, update_interval=100)])
    trainer.train()
    trainer.train(resume_from_checkpoint=True)   # masks and engine counters restored exactly

What it does and why there:

* ``on_train_begin`` (the optimizer exists; on resume the weights, optimizer and
  ``TrainerState`` are already restored): builds ``SparseEngine(model, optimizer,
  **engine_options)``; names are the model's ``named_parameters`` names (BERT-style models:
  the ``query``/``key``/``value``/``dense`` ``nn.Linear`` weights are sparse, embeddings and
  LayerNorms dense). On resume (``state.global_step > 0``) it loads the engine state saved next
  to that checkpoint, ``<output_dir>/checkpoint-<global_step>/sparse_engine.pt``, starting from
  its masks; a missing file is an error (the checkpoint was written without this callback).
  The engine gets ``total_steps=state.max_steps`` (the run's optimizer steps), so topology
  updates stop at 75% of them and the last quarter trains the final topology; ``end_step=`` or
  ``total_steps=`` among the engine options choose otherwise.
* ``on_optimizer_step`` (after ``optimizer.step()``, before ``zero_grad()``): ``engine.step()``;
  it runs once per optimizer step, so with ``gradient_accumulation_steps`` the engine counts
  optimizer steps and gradient growth ranks the accumulated gradient. Steps skipped by fp16
  loss scaling have non-finite gradients: the engine postpones a due update (see the engine).
* ``on_save`` (after the checkpoint folder is written): ``engine.state_dict()`` into
  ``sparse_engine.pt`` in that folder (main process only; masks are identical on every rank).
* ``on_log``: adds ``sparse/sparsity``, ``sparse/explored_fraction``, ``sparse/updates`` to the
  logged values and to ``trainer.state.log_history``. The ``report_to`` integrations run before
  user callbacks, so they do not receive these values; read ``log_history`` or log
  ``callback.engine.stats()`` yourself.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import torch
from transformers import TrainerCallback

from freetickets.integrations._common import build_engine, engine_log_values, unwrap_optimizer
from freetickets.sparse import SparseEngine
from freetickets.utils.io import atomic_torch_save, safe_torch_load

__all__ = ["ENGINE_FILE", "SparseTrainingCallback"]

logger = logging.getLogger(__name__)

#: File name of the engine state inside each ``checkpoint-<step>`` folder.
ENGINE_FILE = "sparse_engine.pt"


class SparseTrainingCallback(TrainerCallback):
    """``TrainerCallback`` running a :class:`~freetickets.sparse.SparseEngine`.

    Args:
        **engine_options: keyword arguments of ``SparseEngine`` (``sparsity``, ``distribution``,
            ``update_interval``, ``include``, ``exclude``, ``regrow_pruned``, ...), except
            ``model``/``optimizer``/``masks``.

    Attributes:
        engine: the engine of the current ``train()`` call (``None`` before it starts).
    """

    def __init__(self, **engine_options: Any) -> None:
        for bad in ("model", "optimizer", "masks"):
            if bad in engine_options:
                raise ValueError(f"SparseTrainingCallback: {bad!r} is set by the callback, not an engine option")
        self.engine_options = dict(engine_options)
        self.engine: SparseEngine | None = None

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if model is None or optimizer is None:
            raise RuntimeError("SparseTrainingCallback: the Trainer passed no model/optimizer to on_train_begin")
        saved = None
        if state.global_step > 0:
            path = os.path.join(args.output_dir, f"checkpoint-{state.global_step}", ENGINE_FILE)
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"SparseTrainingCallback: resuming at step {state.global_step} but {path} does not exist "
                    "(was the checkpoint written without SparseTrainingCallback?)")
            saved = safe_torch_load(path, map_location="cpu")
        self.engine = build_engine(model, unwrap_optimizer(optimizer), self.engine_options, saved,
                                   total_steps=state.max_steps)
        if self.engine.step_count != state.global_step:
            raise RuntimeError(f"SparseTrainingCallback: engine state at step {self.engine.step_count}, "
                               f"Trainer at step {state.global_step}")

    def on_optimizer_step(self, args, state, control, **kwargs):
        if self.engine is not None:
            self.engine.step()

    def on_save(self, args, state, control, **kwargs):
        if self.engine is None or not state.is_world_process_zero:
            return
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if not os.path.isdir(folder):
            logger.warning("SparseTrainingCallback: checkpoint folder %s not found; engine state not saved", folder)
            return
        atomic_torch_save(self.engine.state_dict(), os.path.join(folder, ENGINE_FILE))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.engine is None or logs is None:
            return
        values = engine_log_values(self.engine)
        logs.update(values)  # seen by the callbacks after this one (printing, progress)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(values)
