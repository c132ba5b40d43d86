"""Known answers for the paired Student-t interval and the claim verdicts."""
import math

import pytest

from freetickets.metrics.claims import FAILS, HOLDS, NOT_RESOLVED, claim, paired_interval, verdict


def test_two_seeds_known_interval():
    # d = [1, 3]: mean 2, sd sqrt(2), se 1, t_{0.975,1} = 12.706204736...
    mean, lo, hi = paired_interval([1.0, 3.0])
    assert mean == 2.0
    assert lo == pytest.approx(2.0 - 12.706204736174698, abs=1e-9)
    assert hi == pytest.approx(2.0 + 12.706204736174698, abs=1e-9)


def test_five_seeds_known_interval():
    # d = [1, 2, 3, 4, 5]: mean 3, sd sqrt(2.5), se sqrt(0.5), t_{0.975,4} = 2.776445105...
    mean, lo, hi = paired_interval([1, 2, 3, 4, 5])
    half = 2.7764451051977987 * math.sqrt(0.5)
    assert mean == 3.0
    assert (lo, hi) == (pytest.approx(3.0 - half, abs=1e-9), pytest.approx(3.0 + half, abs=1e-9))


def test_one_seed_is_unbounded_and_not_resolved():
    assert paired_interval([0.7]) == (0.7, -math.inf, math.inf)
    c = claim("x", [0.9], [0.2])
    assert c["interval"] == [None, None] and c["verdict"] == NOT_RESOLVED and c["seeds"] == 1


def test_zero_spread_is_point_interval():
    assert paired_interval([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)
    assert claim("x", [1.0, 2.0], [0.5, 1.5])["verdict"] == HOLDS
    assert claim("x", [1.0, 2.0], [1.0, 2.0])["verdict"] == NOT_RESOLVED


def test_verdicts_and_direction():
    assert verdict(0.1, 0.3) == HOLDS
    assert verdict(-0.3, -0.1) == FAILS
    assert verdict(-0.1, 0.3) == NOT_RESOLVED
    # lower is better (NLL, ECE): a - b entirely negative means the claim holds
    assert verdict(-0.3, -0.1, higher_is_better=False) == HOLDS
    assert verdict(0.1, 0.3, higher_is_better=False) == FAILS
    c = claim("nll", [0.10, 0.11, 0.12], [0.20, 0.22, 0.21], higher_is_better=False)
    assert c["verdict"] == HOLDS and c["difference"] == pytest.approx(-0.1, abs=1e-12)


def test_unpaired_counts_rejected():
    with pytest.raises(ValueError):
        claim("x", [1.0, 2.0], [1.0])


def test_threshold_and_inclusive():
    # "DST within 0.5 points of deep": a - b > -0.005
    assert verdict(-0.004, -0.001, threshold=-0.005) == HOLDS
    assert verdict(-0.008, -0.006, threshold=-0.005) == FAILS
    assert verdict(-0.006, -0.001, threshold=-0.005) == NOT_RESOLVED
    # "ratio - 1 <= 0" with a point interval at 0: holds only when inclusive
    assert verdict(0.0, 0.0, higher_is_better=False) == NOT_RESOLVED
    assert verdict(0.0, 0.0, higher_is_better=False, inclusive=True) == HOLDS
    assert verdict(0.01, 0.01, higher_is_better=False, inclusive=True) == FAILS
    c = claim("x", [0.90, 0.91], [0.902, 0.912], threshold=-0.005)
    assert c["difference"] == pytest.approx(-0.002) and c["verdict"] == HOLDS
