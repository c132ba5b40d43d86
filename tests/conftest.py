"""Shared test fixtures.

Every test gets its own data cache directory (``FREETICKETS_CACHE``) so that tests never touch
the user's cache and never depend on each other.
"""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "freetickets-cache"
    monkeypatch.setenv("FREETICKETS_CACHE", str(cache))
    yield


@pytest.fixture(autouse=True, scope="session")
def _threads():
    # Tests run tiny tensor ops, where thread hand-offs cost more than they save (measured several
    # times faster with one thread on a busy 2-core machine); restore the caller's setting after.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
