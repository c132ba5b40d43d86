"""Non-finite guard: a NaN/Inf loss or weight stops the run with one line naming the epoch, step
and member, exit status 3; the last good checkpoint stays intact, loadable and finite, and a
resume from it reproduces the uninterrupted run."""
from __future__ import annotations

import json

import pytest
import torch

import freetickets.models as models_pkg
from freetickets.cli.main import EXIT_NONFINITE, main
from freetickets.errors import NonFiniteError
from freetickets.train import train
from freetickets.utils.io import safe_torch_load

from _reliability_helpers import _CREATE_MODEL, assert_same_tickets, cli_args, config


def _poison(monkeypatch, at_step: int, what: str) -> None:
    """From training step ``at_step`` on (once), make the logits NaN (``what="loss"``) or set a
    BatchNorm running variance to inf (``what="buffer"``: the loss stays finite)."""
    state = {"steps": 0, "done": False}

    def create_model(*args, **kwargs):
        model = _CREATE_MODEL(*args, **kwargs)

        def pre_hook(module, inputs):
            if not (module.training and torch.is_grad_enabled()):
                return
            state["steps"] += 1
            state["poison"] = state["steps"] >= at_step and not state["done"]
            if state["poison"]:
                state["done"] = True
                if what == "buffer":  # before the forward: autograd has not saved it yet
                    with torch.no_grad():
                        next(b for n, b in module.named_buffers() if n.endswith("running_var")).fill_(float("inf"))

        def hook(module, inputs, output):
            if module.training and torch.is_grad_enabled() and state["poison"] and what == "loss":
                return output * float("nan")
            return None

        model.register_forward_pre_hook(pre_hook)
        model.register_forward_hook(hook)
        return model

    monkeypatch.setattr(models_pkg, "create_model", create_model)


def _assert_finite_checkpoint(run) -> dict:
    ckpt = safe_torch_load(run / "checkpoint.pt")
    for name, t in ckpt["job_state"]["model"].items():
        assert torch.isfinite(t.float()).all(), name
    return ckpt


@pytest.mark.parametrize("what, step, message, last_good", [
    ("loss", 20, "non-finite loss (nan) at epoch 2, step 19, member 0", 18),
    ("buffer", 17, "non-finite weight 'features.2.running_var' before a checkpoint at epoch 2, step 18, member 0", 15),
])
def test_nonfinite_stops_with_exit_3_and_keeps_the_last_good_checkpoint(what, step, message, last_good, tmp_path,
                                                                        monkeypatch, capsys):
    ref = tmp_path / "ref"
    train(config("dst"), ref)
    run = tmp_path / "run"
    _poison(monkeypatch, step, what)
    rc = main(["train", "--out", str(run), *cli_args("dst", checkpoint_every_steps=3)])
    assert rc == EXIT_NONFINITE == 3
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("freetickets: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert message in errors[0], errors[0]
    assert str(run / "checkpoint.pt") in errors[0]
    assert json.loads((run / "manifest.json").read_text())["status"] == "running"
    ckpt = _assert_finite_checkpoint(run)
    assert ckpt["job_state"]["global_step"] == last_good  # the last checkpoint (every 3 steps) before it
    # The checkpoint is good: resuming (without the fault) reproduces the uninterrupted run.
    monkeypatch.setattr(models_pkg, "create_model", _CREATE_MODEL)
    assert main(["train", "--out", str(run), "--resume"]) == 0
    assert_same_tickets(ref, run)


def test_huge_learning_rate_diverges_cleanly(tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(["train", "--out", str(run), *cli_args("dst", lr=1e30, checkpoint_every_steps=1)])
    assert rc == 3
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if x.startswith("freetickets: error:")]
    assert len(line) == 1 and "Traceback" not in err
    assert "non-finite" in line[0] and "epoch 1" in line[0] and "member 0" in line[0] and "step " in line[0]
    if (run / "checkpoint.pt").is_file():
        _assert_finite_checkpoint(run)
    assert json.loads((run / "manifest.json").read_text())["status"] == "running"


def test_library_raises_nonfinite_error(tmp_path, monkeypatch):
    _poison(monkeypatch, 3, "loss")
    with pytest.raises(NonFiniteError, match=r"epoch 1, step 2, member 0"):
        train(config("edst"), tmp_path / "run")
