"""Sliding HyperLogLog: accuracy within the stated error, eviction, determinism."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamwarden.operators.features.hll import SlidingHll, estimate_from, item_hash, relative_standard_error


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 30_000), st.integers(0, 2**32), st.sampled_from([8, 10]))
def test_estimate_within_four_standard_errors(n, salt, precision):
    hll = SlidingHll(precision, ((1_000, 10),), [0])
    for i in range(n):
        hll.add(item_hash(f"{salt}-{i}"), 500)
    est = hll.estimate(0)
    assert abs(est - n) <= 4 * relative_standard_error(precision) * n + 1


def test_values_leave_with_their_buckets():
    hll = SlidingHll(8, ((1_000, 5), (10_000, 6)), [0, 0])
    for i in range(200):
        hll.add(item_hash(f"old{i}"), 100)
    hll.advance(4_999)  # bucket 4: window 0..4 still holds bucket 0
    assert hll.estimate(0) == pytest.approx(200, rel=0.25)
    for i in range(50):
        hll.add(item_hash(f"new{i}"), 4_999)
    hll.advance(5_000)  # bucket 0 leaves the 5 s window, not the 60 s one
    assert hll.estimate(0) == pytest.approx(50, rel=0.25)
    assert hll.estimate(1) == pytest.approx(250, rel=0.25)
    hll.advance(1_000_000)
    assert hll.estimate(0) == hll.estimate(1) == 0.0


def test_hash_is_deterministic_and_spreads():
    assert item_hash("acct-1") == item_hash("acct-1")
    hashes = {item_hash(f"acct-{i}") for i in range(10_000)}
    assert len(hashes) == 10_000
    top = [h >> 56 for h in hashes]  # register index bits are roughly uniform
    assert min(top.count(b) for b in range(256)) > 10


def test_small_range_uses_linear_counting():
    m = 256
    assert estimate_from(m << 64, m, m) == 0.0
    # one register set to 1: linear counting m * ln(m / (m - 1))
    zsum = ((m - 1) << 64) + (1 << 63)
    assert estimate_from(zsum, m - 1, m) == pytest.approx(1.002, abs=0.01)


@pytest.mark.parametrize("n", [100, 700, 5_000, 40_000])
@pytest.mark.parametrize("precision", [8, 10])
def test_estimate_at_fixed_sizes(n, precision):
    hll = SlidingHll(precision, ((1_000, 4),), [0])
    for i in range(n):
        hll.add(item_hash(f"v{i}"), (i % 4) * 1_000 - 3_000)  # spread over the window's buckets
    assert abs(hll.estimate(0) - n) <= 3 * relative_standard_error(precision) * n
