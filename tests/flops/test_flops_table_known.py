"""`freetickets flops` against hand formulas for every method, and its flag validation (issue 13).

The model is the MNIST-1D MLP (40 -> 256 -> 256 -> 10): its dense forward FLOPs per sample are
the three matmuls, 2 x (40·256 + 256·256 + 256·10) = 156,672, computed here by hand. The sparse
forward is the same sum with each layer weighted by its ERK density (the ERK primitive is tested
in tests/sparse). Per-run totals follow the accounting of docs/flops.md: a normal step costs 3 f per
sample, a gradient-growth update step 2 f_S + f_D.
"""
from __future__ import annotations

import re

import pytest

from freetickets.cli.main import main
from freetickets.evaluation import flops_table as _flops_table
from freetickets.models import create_model
from freetickets.sparse import layer_densities, sparsifiable_parameters

F_D = 2 * (40 * 256 + 256 * 256 + 256 * 10)
M, EPOCHS, N, B, PF_EPOCHS = 3, 10, 1000, 100, 2
STEPS = EPOCHS * (N // B)  # 100 optimizer steps per run
KW = dict(model="mlp", data="mnist1d", sparsity=0.8, members=M, epochs=EPOCHS, batch_size=B, train_size=N,
          update_interval=1, pf_epochs=PF_EPOCHS)


def flops_table(**kw) -> str:
    """The table with the train defaults under the given settings (no preset)."""
    train_size = kw.pop("train_size", None)
    return _flops_table(kw, train_size=train_size, preset="none")


def _f_s() -> float:
    net = create_model("mlp", num_classes=10, input_shape=(1, 40))
    named = dict(sparsifiable_parameters(net))
    dens = layer_densities({n: tuple(p.shape) for n, p in named.items()}, 0.8, "erk")
    assert sorted(tuple(p.shape) for p in named.values()) == sorted([(256, 40), (256, 256), (10, 256)])
    return sum(2 * p.shape[0] * p.shape[1] * dens[n] for n, p in named.items())


F_S = _f_s()
DENSE_RUN = B * STEPS * 3 * F_D


def _numbers(text: str) -> dict[str, float]:
    lines = {ln.strip().split("  ")[0]: ln for ln in text.splitlines()[1:]}
    num = lambda s: float(s.replace(",", ""))
    dense = num(re.search(r"sample\s+([\d,]+)", lines["dense forward FLOPs / sample"]).group(1))
    train = re.search(r"FLOPs\s+([\d.e+]+)\s+\(([\d.]+)x", lines["training FLOPs"])
    inf = re.search(r"sample\s+([\d,]+)", lines["inference FLOPs / sample"]).group(1)
    return {"dense": dense, "train": float(train.group(1)), "train_ratio": float(train.group(2)), "inference": num(inf)}


def _rigl_run(grow: str = "gradient") -> float:
    per_step = (2 * F_S + F_D) if grow == "gradient" else 3 * F_S  # update_interval 1: every step updates
    return B * STEPS * per_step


EXPECT = {  # method: (training FLOPs, inference FLOPs per sample)
    "dense": (DENSE_RUN, F_D),
    "deep": (M * DENSE_RUN, M * F_D),
    "static": (M * B * STEPS * 3 * F_S, M * F_S),
    "dst": (M * _rigl_run(), M * F_S),
    "edst": (_rigl_run(), M * F_S),  # one run; M tickets at test
    "pf": (M * (DENSE_RUN + B * PF_EPOCHS * (N // B) * 3 * F_S), M * F_S),  # dense parent + sparse fine-tuning
    "snapshot": (DENSE_RUN, M * F_D),
}


@pytest.mark.parametrize("method", sorted(EXPECT))
def test_flops_table_matches_the_hand_formula(method):
    got = _numbers(flops_table(method=method, **KW))
    train, inference = EXPECT[method]
    assert got["dense"] == F_D
    assert got["train"] == pytest.approx(train, rel=5e-4)  # printed with 4 significant digits
    assert got["train_ratio"] == pytest.approx(train / DENSE_RUN, abs=6e-4)
    assert got["inference"] == pytest.approx(inference, abs=0.5)


@pytest.mark.parametrize("grow", ["random", "momentum"])
def test_dense_gradient_term_only_for_gradient_growth(grow):
    got = _numbers(flops_table(method="dst", grow=grow, **KW))
    assert got["train"] == pytest.approx(M * _rigl_run(grow), rel=5e-4)
    assert got["train"] < 0.9 * M * _rigl_run("gradient")


def test_reference_epochs_scale_the_dense_reference():
    got = _numbers(flops_table(method="edst", reference_epochs=5, **KW))
    assert got["train_ratio"] == pytest.approx(_rigl_run() / (DENSE_RUN / 2), abs=6e-4)


# ----------------------------------------------------------------- flags validated like train
def _run(argv, capsys):
    """``main(argv)``, restoring the ``freetickets`` logger it reconfigures."""
    import logging

    logger = logging.getLogger("freetickets")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    try:
        rc = main(argv)
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved
    return rc, capsys.readouterr()


@pytest.mark.parametrize("flag, value, message", [
    ("--train-size", "-3", "--train-size: must be >= 1, got -3"),
    ("--train-size", "0", "--train-size: must be >= 1, got 0"),
    ("--update-interval", "0", "--update-interval: must be >= 1, got 0"),
    ("--members", "0", "--members: must be >= 1, got 0"),
    ("--sparsity", "1.0", "--sparsity: 1.0 is outside [0.0, 1.0)"),
    ("--reference-epochs", "0", "--reference-epochs: must be >= 1, got 0"),
    ("--grow", "rigl", "--grow: 'rigl' is not one of gradient, random, momentum"),
])
def test_flops_refuses_bad_flags_in_one_line(flag, value, message, capsys):
    rc, out = _run(["flops", "--model", "mlp", "--data", "mnist1d", flag, value], capsys)
    assert rc == 2
    assert out.err.strip() == f"freetickets: error: {message}"
    assert "Traceback" not in out.err and out.out == ""


def test_flops_and_train_give_the_same_message(tmp_path, capsys):
    _, flops = _run(["flops", "--model", "mlp", "--update-interval", "0"], capsys)
    _, trained = _run(["train", "--method", "dst", "--model", "mlp", "--out", str(tmp_path / "r"),
                       "--update-interval", "0"], capsys)
    assert flops.err == trained.err != ""
    assert not (tmp_path / "r").exists()
