"""Fuzzing ``freetickets train``'s flags and YAML configs (hypothesis): every input either works
or exits with status 2 and exactly one line on stderr, no traceback, and nothing created.

Training itself is replaced by a no-op *after* the up-front checks (``Trainer.__init__``
validates the configuration and builds the model on a probe), so a valid input costs
milliseconds; real training under the same checks is covered by the resume tests.
"""
from __future__ import annotations

import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from freetickets.cli.main import main
from freetickets.train import runner
from freetickets.train.config import TrainConfig

FLAG_VALUES: dict[str, list[str]] = {
    "--method": ["dense", "deep", "dst", "edst", "pf", "static", "DST", "edst2", ""],
    "--model": ["mlp", "cnn1d", "lenet5", "mlpp", "wrn-27-10", "wrn-10-1", "resnet", ""],
    "--data": ["mnist1d", "MNIST-1D", "cifar10", "cifar11", "imagenet", ""],
    "--data-dir": ["/nonexistent/dir", ""],
    "--num-samples": ["1000", "500", "50", "0", "abc", "100000000000"],
    "--sparsity": ["0.8", "0", "0.99", "1", "-0.1", "nan", "inf", "abc", "1e400"],
    "--members": ["1", "2", "3", "0", "-2", "2.5", "x", "100000"],
    "--epochs": ["1", "2", "3", "0", "-1", "1e3", "10000000"],
    "--explore-epochs": ["0", "1", "2", "5", "-1"],
    "--jump-fraction": ["0.8", "0", "1", "1.5", "-1", "nan"],
    "--distribution": ["erk", "er", "uniform", "ERK", "normal"],
    "--prune": ["magnitude", "set", "random"],
    "--grow": ["gradient", "random", "momentum", "grad"],
    "--prune-fraction": ["0.5", "0", "1", "2"],
    "--prune-schedule": ["constant", "cosine", "linear"],
    "--update-interval": ["5", "none", "0", "-3", "1.5", "abc", "99999999999999999999999"],
    "--lr": ["0.1", "0", "-1", "1e30", "inf", "nan", "x"],
    "--batch-size": ["64", "1", "0", "-5"],
    "--optimizer": ["sgd", "adam", "adamw", "rmsprop"],
    "--weight-decay": ["0", "5e-4", "-1"],
    "--seed": ["0", "7", "-1", "4294967296", "1" + "0" * 40],
    "--device": ["auto", "cpu", "cuda", "tpu"],
    "--precision": ["fp32", "bf16", "fp16"],
    "--pf-epochs": ["1", "0"],
    "--pf-lr": ["0.001", "0", "-1"],
    "--sparse-init": ["none", "rescale", "zero"],
    "--reference-epochs": ["1", "10", "0"],
    "--checkpoint-every-steps": ["1", "5", "0", "-1"],
    "--from": ["/nonexistent/run", ""],
    "--member": ["0", "1", "5", "-1"],
    "--set": ["lr_schedule=cosine", "lr_schedule=poly", "foo=1", "lr=abc", "model_kwargs={width: 16}",
              "model_kwargs={hidden_sizes: [16]}", "model_kwargs={width: -1}", "model_kwargs=[1]",
              "model_kwargs={1: 2}", "nesterov=maybe", "nesterov=true", "lr_milestones=[0.5, 2]", "=", "noequals",
              "label_smoothing=1", "grad_clip=0", "grad_clip=1", "refine_lr_factors=[0.1]", "update_interval=null",
              "seed=1.5", "eval_batch_size=0", "warmup_epochs=1", "lr=[1]", "lr={a: 1}", "lr=!!python/object:os.system",
              "epochs=.inf", "lr=" + "9" * 400, "momentum=1", "update_end_fraction=0.5", "from=/x", "method=null",
              "data={}", "sparsity=true", "compile=yes", "num_samples=~"],
}
VALUE = st.one_of(
    st.sampled_from(sorted({v for vs in FLAG_VALUES.values() for v in vs})),
    st.text(string.printable, max_size=12).filter(lambda s: not s.startswith("-")),  # "-h" would print --help
    st.integers(-10**6, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


@st.composite
def flag_lists(draw):
    """A valid quick run, then 1-4 flags replaced by values meant for them (or any value)."""
    argv = {"--method": "dst", "--model": "mlp", "--num-samples": "1000", "--epochs": "2", "--members": "2",
            "--batch-size": "64", "--update-interval": "5", "--device": "cpu"}
    extra: list[str] = []
    for flag in draw(st.lists(st.sampled_from(sorted(FLAG_VALUES)), min_size=1, max_size=4)):
        meant = st.sampled_from(FLAG_VALUES[flag])
        value = draw(st.one_of(meant, meant, meant, VALUE))  # mostly values meant for the flag
        if flag == "--set":
            extra += ["--set", value]
        else:
            argv[flag] = value
    out = [item for pair in argv.items() for item in pair] + extra
    tail = draw(st.sampled_from([None, None, None, "--resume", "--overwrite", "--bogus-flag", "extra-positional"]))
    if tail is not None:
        out.append(tail)
    return out


def _no_training(monkeypatch) -> list:
    """Trainer.fit -> no-op (after __init__'s up-front checks); returns the list of fits."""
    fits = []

    def fit(self):
        fits.append(self.cfg)
        return {"tickets": []}

    monkeypatch.setattr(runner.Trainer, "fit", fit)
    return fits


def _check_outcome(rc: int, err: str, out_dir: Path) -> None:
    assert "Traceback" not in err
    if rc == 0:
        return
    assert rc == 2, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("freetickets: error: ") and len(lines[0]) > len("freetickets: error: ") + 5
    assert not out_dir.exists()  # rejected before anything was created


_SETTINGS = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@_SETTINGS
@given(flags=flag_lists())
def test_fuzz_train_flags(flags, tmp_path, monkeypatch, capsys):
    fits = _no_training(monkeypatch)
    out_dir = tmp_path / "never-created"
    try:
        rc = main(["train", "--out", str(out_dir), *flags])
    except SystemExit as exc:  # argparse's own exits (--help/--version) only
        pytest.fail(f"SystemExit({exc.code}) for {flags}")
    captured = capsys.readouterr()
    _check_outcome(rc, captured.err, out_dir)
    if rc == 0:
        assert len(fits) == 1 and captured.err == ""


KEYS = TrainConfig.field_names() + ["lrr", "epoch", "explore-epochs", "members ", "from", "Model", "", "x" * 30]
YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**3, 10**12) | st.floats() | st.text(string.printable, max_size=10)
    | st.sampled_from(["dst", "edst", "mlp", "cnn1d", "mnist1d", "erk", "cosine", "0.5", "none"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(string.ascii_lowercase, max_size=6), inner,
                                                                max_size=3),
    max_leaves=5,
)
VALID_BASE = {"method": "dst", "model": "mlp", "num_samples": 1000, "epochs": 2, "members": 2, "batch_size": 64,
              "device": "cpu"}


GOOD_VALUES = {"lr": [0.05, 1, "1e-2"], "epochs": [1, 2], "sparsity": [0.5, 0, 0.9], "distribution": ["er", "uniform"],
               "grow": ["random", "momentum"], "prune": ["set"], "lr_schedule": ["cosine", "constant"],
               "update_interval": [3, None, "none"], "model_kwargs": [{"hidden_sizes": [16]}, {}],
               "explore_epochs": [0, 1], "nesterov": [True], "label_smoothing": [0.1], "members": [1, 3],
               "method": ["dense", "deep", "edst", "static", "pf"], "model": ["cnn1d", "lenet5"],
               "data": ["MNIST-1D", "cifar10"], "num_samples": [None, 2000], "optimizer": ["adam"],
               "warmup_epochs": [1], "grad_clip": [1, 0.5], "lr_milestones": [[0.5], []], "seed": [3],
               "checkpoint_every_steps": [10], "jump_fraction": [0.5], "prune_schedule": ["cosine"],
               "update_end_fraction": [0.5], "refine_lr_factors": [[0.2, 0.02]], "member": [None, 1]}


@st.composite
def yaml_texts(draw):
    kind = draw(st.sampled_from(["mapping", "mapping", "mapping", "garbage", "bytes"]))
    if kind == "mapping":
        cfg = dict(VALID_BASE)
        for _ in range(draw(st.integers(1, 3))):
            key = draw(st.sampled_from(KEYS))
            good = GOOD_VALUES.get(key)
            cfg[key] = draw(st.sampled_from(good)) if good and draw(st.booleans()) else draw(YAML_VALUES)
        return yaml.safe_dump(cfg).encode()
    if kind == "garbage":
        return draw(st.sampled_from([
            "method: [dst\n", "a: b: c\n", "\t- x\n  y: [", "- 1\n- 2\n", "just a string", "", "---\n...\n",
            "lr: !!python/object/apply:os.system ['touch yaml-ran-code']\n", "{{{{", "epochs: 2\nepochs: 3\n",
            "method: dst\nmodel: mlp\nnum_samples: 1000\nepochs: 1\nmembers: 1\n",
        ])).encode() + draw(st.text(string.printable, max_size=20)).encode()
    return draw(st.binary(max_size=40))


@_SETTINGS
@given(text=yaml_texts(), with_flag=st.booleans())
def test_fuzz_yaml_configs(text, with_flag, tmp_path, monkeypatch, capsys):
    fits = _no_training(monkeypatch)
    path = tmp_path / "config.yaml"
    path.write_bytes(text)
    out_dir = tmp_path / "never-created"
    argv = ["train", "--out", str(out_dir), "--config", str(path)]
    if with_flag:
        argv += ["--epochs", "1"]
    rc = main(argv)
    captured = capsys.readouterr()
    _check_outcome(rc, captured.err, out_dir)
    if rc == 0:
        assert len(fits) == 1


@pytest.mark.parametrize("argv, expected", [
    (["--method", "dst", "--set", "lrr=0.1"], "did you mean 'lr'"),
    (["--method", "edst", "--epochs", "3", "--explore-epochs", "3"], "--explore-epochs"),
    (["--method", "dst", "--members", "2", "--member", "2"], "--member"),
    (["--method", "dst", "--model", "mlpp"], "did you mean 'mlp'"),
    (["--method", "dst", "--data", "cifar11"], "did you mean 'cifar10'"),
    (["--method", "dst", "--model", "cnn1d", "--data", "cifar10"], "--model"),
    (["--method", "dst", "--set", "model_kwargs={widht: 16}", "--model", "cnn1d"], "width"),
])
def test_specific_bad_inputs_name_the_flag(argv, expected, tmp_path, monkeypatch, capsys):
    _no_training(monkeypatch)
    out_dir = tmp_path / "never-created"
    assert main(["train", "--out", str(out_dir), *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and expected in err, err
    assert not out_dir.exists()


def test_unknown_yaml_key_suggests_the_closest(tmp_path, monkeypatch, capsys):
    _no_training(monkeypatch)
    path = tmp_path / "c.yaml"
    path.write_text("method: dst\nexplore_epoch: 2\n")
    assert main(["train", "--out", str(tmp_path / "r"), "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'explore_epoch'" in err and "did you mean 'explore_epochs'" in err
