"""Reliability tests train many tiny models; one intra-op thread makes them several times faster
on a busy 2-core machine (thread hand-offs dominate such small ops), and the exact-resume
comparisons run with the same thread count on both sides (subprocesses get OMP_NUM_THREADS=1)."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
