"""How the ticket is chosen among validation epochs: the best validation accuracy, and on a tie
the EARLIER epoch (a later epoch must be strictly better to replace the ticket).

Validation scores are scripted (the loop's validation call is replaced), so the test pins the
selection rule itself, independent of what a tiny model happens to reach.
"""
from __future__ import annotations

import pytest

import freetickets.train.runner as runner_mod
from freetickets.ensembles.tickets import load_ticket
from freetickets.train import train

from _train_helpers import read_metrics, tiny_config


def _train_with_scores(tmp_path, monkeypatch, accuracies: list[float], **overrides):
    scores = iter(accuracies)

    def scripted(*args, **kwargs):
        acc = next(scores)
        return 1.0 - acc, acc  # (val_loss, val_accuracy)

    monkeypatch.setattr(runner_mod, "evaluate_sharded", scripted)
    cfg = tiny_config(num_samples=300, **overrides)
    manifest = train(cfg, tmp_path / "run")
    return manifest, read_metrics(tmp_path / "run")


def test_a_tie_keeps_the_earlier_epoch(tmp_path, monkeypatch):
    manifest, rows = _train_with_scores(tmp_path, monkeypatch, [0.5, 0.7, 0.7, 0.6],
                                        method="dense", epochs=4)
    (ticket,) = manifest["tickets"]
    assert ticket["epoch"] == 2 and ticket["val_accuracy"] == 0.7  # epochs are numbered from 1
    assert [r["best"] for r in rows] == [True, True, False, False]
    assert load_ticket(tmp_path / "run" / ticket["file"]).meta["epoch"] == 2


def test_a_strictly_better_later_epoch_replaces_the_ticket(tmp_path, monkeypatch):
    manifest, rows = _train_with_scores(tmp_path, monkeypatch, [0.7, 0.6, 0.7, 0.71],
                                        method="dense", epochs=4)
    (ticket,) = manifest["tickets"]
    assert ticket["epoch"] == 4 and ticket["val_accuracy"] == pytest.approx(0.71)  # the 4th of 4 epochs
    assert [r["best"] for r in rows] == [True, False, False, True]
