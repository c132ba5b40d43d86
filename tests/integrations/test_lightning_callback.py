"""Lightning integration: exact density after fit, one engine step per optimizer step, bitwise resume."""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pl = pytest.importorskip("lightning.pytorch")

from freetickets.integrations.lightning import SparseTrainingCallback  # noqa: E402
from freetickets.sparse import layer_active_counts, sparsifiable_parameters  # noqa: E402


class TinyModule(pl.LightningModule):
    def __init__(self, conv: bool = False) -> None:
        super().__init__()
        if conv:
            self.net = nn.Sequential(nn.Conv1d(1, 8, 3, padding=1), nn.BatchNorm1d(8), nn.ReLU(), nn.Flatten(),
                                     nn.Linear(8 * 20, 5))
        else:
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 24), nn.ReLU(),
                                     nn.Linear(24, 5))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)


def _loader():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 20, generator=g)
    y = torch.randint(0, 5, (64,), generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8, shuffle=False)


def _trainer(tmp_path, max_epochs, callback, **kw):
    extra = kw.pop("callbacks", [])
    return pl.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=str(tmp_path), deterministic=True,
                      log_every_n_steps=1, **kw, callbacks=[callback, *extra])


@pytest.fixture(autouse=True)
def _quiet():
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


@pytest.mark.parametrize("conv", [False, True])
def test_fit_exact_density_and_one_engine_step_per_optimizer_step(tmp_path, conv):
    torch.manual_seed(0)
    module = TinyModule(conv)
    cb = SparseTrainingCallback(sparsity=0.75, update_interval=3)
    trainer = _trainer(tmp_path, 2, cb, accumulate_grad_batches=2)
    trainer.fit(module, _loader())
    engine = cb.engine
    # total_steps = 8 optimizer steps, so updates stop at step 6 (75%): one update, at step 3
    assert trainer.global_step == 8 and engine.step_count == 8 and engine.total_steps == 8 and engine.end_step == 6
    assert engine.update_count == 1
    shapes = {n: tuple(p.shape) for n, p in sparsifiable_parameters(module)}
    assert {n: int(m.sum()) for n, m in engine.masks.items()} == layer_active_counts(shapes, 0.75, "erk")
    params = dict(module.named_parameters())
    for n, m in engine.masks.items():
        assert bool((params[n].detach()[~m] == 0).all()), n
    assert engine.topology_version >= 1
    assert trainer.callback_metrics["sparse/updates"].item() == 1.0
    assert trainer.callback_metrics["sparse/sparsity"].item() == pytest.approx(engine.sparsity())


def test_resume_from_checkpoint_is_bitwise(tmp_path):
    class StopAfterFirstEpoch(pl.Callback):  # an interrupted run: same max_epochs, so the same total_steps
        def on_train_epoch_end(self, trainer, pl_module):
            trainer.should_stop = True

    def run(root, epochs, ckpt=None, seed=0, stop=False):
        torch.manual_seed(seed)  # a resumed run starts from other initial weights: all must come from the checkpoint
        module = TinyModule()
        cb = SparseTrainingCallback(sparsity=0.8, update_interval=3, grow="gradient")
        ck = pl.callbacks.ModelCheckpoint(dirpath=str(root), save_last=True, every_n_epochs=1, save_top_k=-1)
        trainer = _trainer(root, epochs, cb, callbacks=[ck, *([StopAfterFirstEpoch()] if stop else [])])
        trainer.fit(module, _loader(), ckpt_path=ckpt)
        return module, cb.engine

    ref_module, ref_engine = run(tmp_path / "ref", 3)
    run(tmp_path / "part", 3, stop=True)
    ckpt = tmp_path / "part" / "last.ckpt"
    saved = torch.load(ckpt, weights_only=False)
    assert any("SparseTrainingCallback" in k for k in saved["callbacks"])
    module, engine = run(tmp_path / "part", 3, ckpt=str(ckpt), seed=123)
    assert engine.step_count == ref_engine.step_count == 24 and saved["global_step"] == 8
    assert engine.update_count == ref_engine.update_count == 5  # steps 3, 6, ..., 15: updates stop at 18
    for n in ref_engine.masks:
        assert torch.equal(ref_engine.masks[n], engine.masks[n]), n
    for (n, a), (_, b) in zip(ref_module.state_dict().items(), module.state_dict().items()):
        assert torch.equal(a, b), n
    assert ref_engine.stats() == engine.stats()


def _active_nonzero_share(module, engine) -> float:
    params = dict(module.named_parameters())
    active = sum(int(m.sum()) for m in engine.masks.values())
    nonzero = sum(int((params[n].detach()[m] != 0).sum()) for n, m in engine.masks.items())
    return nonzero / active


def test_default_fit_ends_on_trained_weights(tmp_path):
    """The documented options (sparsity 0.8, update every 4 steps): updates stop at 75% of the
    fit's steps, so >= 99% of the active weights are non-zero at the end. Updating up to the last
    step (end_step past the end) leaves the last update's regrown weights at 0 -- the trap."""
    torch.manual_seed(0)
    module = TinyModule()
    cb = SparseTrainingCallback(sparsity=0.8, update_interval=4)
    _trainer(tmp_path, 2, cb).fit(module, _loader())
    assert cb.engine.total_steps == 16 and cb.engine.end_step == 12 and cb.engine.update_count == 2  # steps 4, 8
    assert _active_nonzero_share(module, cb.engine) >= 0.99

    torch.manual_seed(0)
    module = TinyModule()
    cb = SparseTrainingCallback(sparsity=0.8, update_interval=4, end_step=10**6)
    _trainer(tmp_path / "trap", 2, cb).fit(module, _loader())
    assert cb.engine.update_count == 4 and _active_nonzero_share(module, cb.engine) < 0.9  # update at the last step
