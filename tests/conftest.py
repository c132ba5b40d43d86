"""Shared test fixtures, session-wide so that session-scoped fixtures (the shared training runs
of tests/train and tests/cli) see them too.

- ``FREETICKETS_CACHE`` points at one cache directory per test session, never the user's cache.
- One intra-op thread for the whole session.
"""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FREETICKETS_CACHE", str(tmp_path_factory.getbasetemp() / "freetickets-cache"))
        yield


@pytest.fixture(autouse=True, scope="session")
def _threads():
    # Tests run tiny tensor ops, where thread hand-offs cost more than they save (measured several
    # times faster with one thread on a busy 2-core machine); restore the caller's setting after.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
