"""A shape mismatch that comes from a default names the default (``--data`` is mnist1d)."""
from __future__ import annotations

from freetickets.cli.main import main


def _run(args, capsys):
    capsys.readouterr()
    code = main(args)
    return code, capsys.readouterr().err.strip().splitlines()


def test_flops_without_data_says_data_defaults_to_mnist1d(capsys):
    code, err = _run(["flops", "--model", "wrn-28-10"], capsys)
    assert code == 2 and len(err) == 1
    assert "takes images (C, H, W), got (1, 40)" in err[0] and "--data defaults to mnist1d" in err[0]
    code, err = _run(["flops", "--model", "wrn-28-10", "--data", "mnist1d"], capsys)  # said explicitly
    assert code == 2 and len(err) == 1 and "takes images" in err[0] and "defaults" not in err[0]


def test_train_without_data_says_data_defaults_to_mnist1d(tmp_path, capsys):
    code, err = _run(["train", "--method", "dense", "--model", "lenet5", "--epochs", "1", "--out", str(tmp_path / "r")],
                     capsys)
    assert code == 2 and len(err) == 1
    assert err[0].startswith("freetickets: error: --model:") and "--data defaults to mnist1d" in err[0]
    assert not (tmp_path / "r" / "manifest.json").exists()
