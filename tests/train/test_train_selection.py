"""Members are selected on the validation split (the last 10% of the training set), never on test."""
from __future__ import annotations

import pytest
import torch

from freetickets.ensembles.tickets import load_ticket, ticket_to_model
from freetickets.models import create_model
from freetickets.train.loaders import evaluate_split

from _train_helpers import TINY

RUNS = ["dst_run", "static_run", "deep_run", "pf_own_run", "pf_from_deep_run", "edst_run"]


def _member_rows(run, ticket):
    rows = run.metrics
    if run.cfg.method == "edst":
        return [r for r in rows if r["phase"] == "refine" and r["phase_index"] == ticket["phase_index"]]
    kind = "finetune" if run.cfg.method == "pf" else "train"
    return [r for r in rows if r["member"] == ticket["member"] and r["kind"] == kind]


@pytest.mark.parametrize("run_name", RUNS)
def test_ticket_is_the_best_validation_epoch(run_name, request):
    run = request.getfixturevalue(run_name)
    for t in run.manifest["tickets"]:
        rows = _member_rows(run, t)
        assert rows
        best = max(r["val_accuracy"] for r in rows)
        assert t["val_accuracy"] == best
        first_best = next(r for r in rows if r["val_accuracy"] == best)  # ties keep the earlier epoch
        assert t["epoch"] == first_best["epoch"]
        assert first_best["best"] is True


@pytest.mark.parametrize("run_name", ["dst_run", "edst_run"])
def test_recorded_accuracy_is_the_tickets_accuracy_on_the_validation_split(run_name, request, tiny_data):
    run = request.getfixturevalue(run_name)
    n_val, n_test = tiny_data.val.x.shape[0], tiny_data.test.x.shape[0]
    assert n_val == tiny_data.train.x.shape[0] // 9  # 10% of the original training set
    for t in run.manifest["tickets"]:
        model = create_model("cnn1d", num_classes=tiny_data.num_classes, input_shape=tuple(tiny_data.input_shape),
                             **TINY["model_kwargs"])
        ticket_to_model(load_ticket(run.root / t["file"]), model)
        loss, acc = evaluate_split(model, tiny_data.val.x, tiny_data.val.y, 1024, tiny_data.normalize,
                                   torch.device("cpu"))
        assert acc == t["val_accuracy"]
        assert loss == pytest.approx(t["val_loss"], rel=1e-6)
        assert round(acc * n_val) == pytest.approx(acc * n_val)  # a count over the val split, not test
    assert n_val != n_test
