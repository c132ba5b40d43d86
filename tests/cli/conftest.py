"""Shared runs for the CLI tests: every method trained once per session through ``main([...])``."""
from __future__ import annotations

from pathlib import Path

import pytest

from _cli_helpers import METHOD_ARGS, quiet_cli, train_cli


@pytest.fixture(autouse=True)
def _quiet_cli():
    with quiet_cli():
        yield


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory):
    return tmp_path_factory.mktemp("cli_runs")


@pytest.fixture(scope="session")
def cli_runs(cli_env) -> dict[str, Path]:
    """method -> completed run directory, for every method (PF fine-tunes the deep run's models)."""
    runs = {}
    for method, extra in METHOD_ARGS.items():
        runs[method] = cli_env / method
        assert train_cli(runs[method], method, *extra) == 0, method
    runs["pf"] = cli_env / "pf"
    assert train_cli(runs["pf"], "pf", "--from", str(runs["deep"]), "--epochs", "2", "--members", "2",
                     "--pf-epochs", "1") == 0
    return runs
