"""Shared test fixtures.

Every test gets its own data cache directory (``FREETICKETS_CACHE``) so that tests never touch
the user's cache and never depend on each other.
"""
from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "freetickets-cache"
    monkeypatch.setenv("FREETICKETS_CACHE", str(cache))
    yield


@pytest.fixture(autouse=True, scope="session")
def _threads():
    # CI has 2 cores; more threads than cores only slows small tensor work down.
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield
