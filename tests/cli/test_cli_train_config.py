"""`freetickets train` configuration and user errors (README, Command line): --config, flags, --set, presets;
every mistake is one line on stderr, exit status 2, and no run directory that looks complete."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from freetickets.cli.main import main
from freetickets.train.config import TrainConfig, resolve

from _cli_helpers import TINY_ARGS, manifest_of, train_cli


def _saved(run: Path) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())


def test_config_file_flags_and_set(tmp_path, cli_env):
    cfg_file = tmp_path / "my.yaml"
    cfg_file.write_text("method: static\nlr: 0.05\nepochs: 4\nmembers: 2\nweight_decay: 0.0\n")
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg_file), "--out", str(run), *TINY_ARGS, "--epochs", "1",
                 "--set", "lr_schedule=cosine", "--set", "lr_milestones=[0.3]"]) == 0
    saved = _saved(run)
    assert saved["method"] == "static" and saved["members"] == 2  # from the file
    assert saved["lr"] == 0.05 and saved["weight_decay"] == 0.0
    assert saved["epochs"] == 1 and saved["batch_size"] == 64  # flags override the file
    assert saved["lr_schedule"] == "cosine" and saved["lr_milestones"] == [0.3]  # --set
    assert saved["model_kwargs"] == {"width": 16}
    # the saved config is complete and reloads to the same configuration
    assert set(saved) == set(TrainConfig.field_names())
    again = resolve(run / "config.yaml", {})
    assert again.to_dict() == saved
    assert manifest_of(run)["status"] == "complete"


def test_preset_by_name(tmp_path, cli_env):
    run = tmp_path / "run"
    assert main(["train", "--config", "mnist1d_dst", "--out", str(run), *TINY_ARGS, "--epochs", "1",
                 "--members", "1"]) == 0
    saved = _saved(run)
    preset = resolve("mnist1d_dst", {})
    assert saved["method"] == "dst" and saved["sparsity"] == preset.sparsity
    assert saved["update_interval"] == 5  # the flag beats the preset's 100
    assert saved["lr"] == preset.lr and saved["members"] == 1


def _check_error(capsys, rc: int, flag: str) -> str:
    assert rc == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("freetickets: error:")]
    assert len(errors) == 1, err
    assert flag in errors[0], errors[0]
    return errors[0]


def _not_complete(run: Path) -> None:
    if run.exists() and (run / "manifest.json").is_file():
        assert manifest_of(run)["status"] != "complete"


BAD = [
    (["--method", "dst", "--members", "0"], "--members"),
    (["--method", "edst", "--epochs", "3", "--explore-epochs", "3"], "--explore-epochs"),
    (["--method", "edst", "--epochs", "4", "--explore-epochs", "2", "--members", "3"], "--epochs"),
    (["--method", "dst", "--sparsity", "1.0"], "--sparsity"),
    (["--method", "dst", "--sparsity", "abc"], "--sparsity"),
    (["--method", "dst", "--update-interval", "none"], "--update-interval"),
    (["--method", "dst", "--update-interval", "often"], "--update-interval"),
    (["--method", "bogus"], "--method"),
    ([], "--method"),
    (["--method", "dst", "--distribution", "erx"], "--distribution"),
    (["--method", "dst", "--members", "2", "--member", "2"], "--member"),
    (["--method", "dst", "--config", "no_such_preset"], "--config"),
    (["--method", "dst", "--set", "lr"], "--set"),
    (["--method", "dst", "--set", "bogus_key=1"], "bogus_key"),
    (["--method", "dst", "--device", "tpu"], "--device"),
]


@pytest.mark.parametrize("argv, flag", BAD, ids=[" ".join(a) or "no-method" for a, _ in BAD])
def test_bad_input_is_one_line_and_exit_2(argv, flag, tmp_path, cli_env, capsys):
    run = tmp_path / "run"
    capsys.readouterr()
    rc = main(["train", "--out", str(run), *TINY_ARGS, "--epochs", "1", *argv])
    _check_error(capsys, rc, flag)
    _not_complete(run)
    assert not run.exists() or not (run / "manifest.json").exists()


def test_existing_run_needs_overwrite_or_resume(cli_runs, capsys):
    run = cli_runs["dense"]
    before = (run / "manifest.json").read_text()
    capsys.readouterr()
    _check_error(capsys, train_cli(run, "dense", "--epochs", "2"), "--out")
    assert (run / "manifest.json").read_text() == before  # untouched


@pytest.fixture()
def incomplete_deep(cli_runs, tmp_path):
    """A copy of the deep run whose manifest says it is still running."""
    import shutil

    run = tmp_path / "incomplete"
    shutil.copytree(cli_runs["deep"], run)
    m = manifest_of(run)
    m["status"] = "running"
    (run / "manifest.json").write_text(json.dumps(m))
    return run


def test_pf_parent_errors_then_a_corrected_command_reuses_the_directory(cli_runs, incomplete_deep, tmp_path,
                                                                      capsys):
    """PF needs dense parents: --from must be a complete deep/dense run of the same model with enough
    members. (Without --from, PF trains its own parents: tests/train/test_train_methods.py.)"""
    run = tmp_path / "pf"
    cases = [
        (cli_runs["dst"], [], "is a 'dst' run"),
        (incomplete_deep, [], "not complete"),
        (tmp_path / "nowhere", [], "not found"),
        (tmp_path, [], "no manifest"),
        (cli_runs["deep"], ["--members", "3"], "needs more"),
        (cli_runs["deep"], ["--model", "mlp", "--set", "model_kwargs={}"], "trained cnn1d"),
    ]
    for source, extra, words in cases:
        capsys.readouterr()
        rc = train_cli(run, "pf", "--from", str(source), "--epochs", "2", "--pf-epochs", "1", *extra)
        line = _check_error(capsys, rc, "--from")
        assert words in line, line
        _not_complete(run)
    # the failed attempts left nothing that blocks the corrected command
    assert train_cli(run, "pf", "--from", str(cli_runs["deep"]), "--members", "2", "--epochs", "2",
                     "--pf-epochs", "1") == 0
    assert manifest_of(run)["status"] == "complete"


def test_evaluate_errors_are_one_line(cli_runs, incomplete_deep, tmp_path, capsys):
    for target, words in [(tmp_path / "nowhere", "not found"), (incomplete_deep, "not complete"),
                          (tmp_path, "no manifest")]:
        capsys.readouterr()
        assert main(["evaluate", str(target), "--json"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err
