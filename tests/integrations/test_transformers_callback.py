"""Hugging Face Trainer integration on a tiny BERT built from a config (no downloads): exact
density after training, one engine step per optimizer step, bitwise resume from a checkpoint."""
from __future__ import annotations

import logging
import os

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from freetickets.integrations.transformers import ENGINE_FILE, SparseTrainingCallback  # noqa: E402
from freetickets.sparse import layer_active_counts, sparsifiable_parameters  # noqa: E402


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n: int = 48) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(1, 40, (n, 12), generator=g)
        self.labels = (self.ids[:, 0] > 20).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(12, dtype=torch.long), "labels": self.labels[i]}


def tiny_bert(seed: int):
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=2,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return transformers.BertForSequenceClassification(config)


def _args(out, max_steps, accumulation=1, save_steps=None):
    return transformers.TrainingArguments(
        output_dir=str(out), max_steps=max_steps, per_device_train_batch_size=8, learning_rate=5e-3,
        gradient_accumulation_steps=accumulation, use_cpu=True, report_to=[], disable_tqdm=True,
        logging_steps=2, save_strategy="steps" if save_steps else "no", save_steps=save_steps or 500,
        seed=0, data_seed=0, dataloader_num_workers=0)


@pytest.fixture(autouse=True)
def _quiet():
    transformers.logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)


def test_bert_exact_density_after_training(tmp_path):
    model = tiny_bert(0)
    cb = SparseTrainingCallback(sparsity=0.8, update_interval=2)
    trainer = transformers.Trainer(model=model, args=_args(tmp_path, 6, accumulation=2), train_dataset=Tokens(),
                                   callbacks=[cb])
    trainer.train()
    engine = cb.engine
    # max_steps 6: updates stop at step 4 (75%), so the only update is at step 2
    assert trainer.state.global_step == engine.step_count == 6 and engine.end_step == 4 and engine.update_count == 1
    names = [n for n, _ in sparsifiable_parameters(model)]
    assert "bert.encoder.layer.0.attention.self.query.weight" in names
    assert not any("embeddings" in n or "LayerNorm" in n for n in names)
    shapes = {n: tuple(p.shape) for n, p in sparsifiable_parameters(model)}
    assert {n: int(m.sum()) for n, m in engine.masks.items()} == layer_active_counts(shapes, 0.8, "erk")
    params = dict(model.named_parameters())
    for n, m in engine.masks.items():
        assert bool((params[n].detach()[~m] == 0).all()), n
    assert engine.topology_version >= 1
    logged = [row for row in trainer.state.log_history if "sparse/sparsity" in row]
    assert logged and logged[-1]["sparse/sparsity"] == pytest.approx(engine.sparsity())


def test_resume_from_checkpoint_is_bitwise(tmp_path):
    ref_model = tiny_bert(0)
    ref_cb = SparseTrainingCallback(sparsity=0.8, update_interval=2)
    transformers.Trainer(model=ref_model, args=_args(tmp_path / "ref", 8, save_steps=4), train_dataset=Tokens(),
                         callbacks=[ref_cb]).train()
    part = tmp_path / "part"
    transformers.Trainer(model=tiny_bert(0), args=_args(part, 8, save_steps=4), train_dataset=Tokens(),
                         callbacks=[SparseTrainingCallback(sparsity=0.8, update_interval=2)]).train()
    assert os.path.isfile(part / "checkpoint-4" / ENGINE_FILE)
    model = tiny_bert(123)  # other initial weights: everything must come from the checkpoint
    cb = SparseTrainingCallback(sparsity=0.8, update_interval=2)
    transformers.Trainer(model=model, args=_args(part, 8, save_steps=4), train_dataset=Tokens(),
                         callbacks=[cb]).train(resume_from_checkpoint=str(part / "checkpoint-4"))
    assert cb.engine.step_count == ref_cb.engine.step_count == 8
    for n in ref_cb.engine.masks:
        assert torch.equal(ref_cb.engine.masks[n], cb.engine.masks[n]), n
    for (n, a), (_, b) in zip(ref_model.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), n
    assert ref_cb.engine.stats() == cb.engine.stats()


def test_resume_without_engine_state_is_an_error(tmp_path):
    transformers.Trainer(model=tiny_bert(0), args=_args(tmp_path, 4, save_steps=4), train_dataset=Tokens()).train()
    trainer = transformers.Trainer(model=tiny_bert(0), args=_args(tmp_path, 6, save_steps=4), train_dataset=Tokens(),
                                   callbacks=[SparseTrainingCallback(sparsity=0.8)])
    with pytest.raises(FileNotFoundError, match="sparse_engine.pt does not exist"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-4"))


def test_default_training_ends_on_trained_weights(tmp_path):
    """Default options as documented (sparsity 0.8, update every 4 steps): updates stop at 75% of
    ``max_steps``, so >= 99% of the active weights are non-zero after ``train()``."""
    model = tiny_bert(0)
    cb = SparseTrainingCallback(sparsity=0.8, update_interval=4)
    transformers.Trainer(model=model, args=_args(tmp_path, 12), train_dataset=Tokens(), callbacks=[cb]).train()
    engine = cb.engine
    assert engine.total_steps == 12 and engine.end_step == 9 and engine.update_count == 2  # steps 4 and 8
    params = dict(model.named_parameters())
    active = sum(int(m.sum()) for m in engine.masks.values())
    nonzero = sum(int((params[n].detach()[m] != 0).sum()) for n, m in engine.masks.items())
    assert nonzero / active >= 0.99
