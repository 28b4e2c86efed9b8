"""Shamir sharing of raw 32-byte secrets: any t shares rebuild them, t − 1 tell nothing."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fedge.secagg import BadShare, InvalidParameters, OutOfField, WrongSize
from fedge.secagg.field import (
    LIMB_BITS,
    PRIME,
    SHARE_BYTES,
    combine,
    lagrange_weights,
    share_from_bytes,
    shares_to_bytes,
    split,
)


def randomness(seed: int):
    return np.random.default_rng(seed).bytes


@st.composite
def sharings(draw: st.DrawFn):
    count = draw(st.integers(2, 40))
    threshold = draw(st.integers(1, count))
    points = draw(st.lists(st.integers(1, PRIME - 1), min_size=count, max_size=count, unique=True))
    secrets = draw(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=3))
    return points, threshold, secrets, draw(st.integers(0, 2**32))


@settings(max_examples=60, deadline=None)
@given(sharings(), st.data())
def test_any_threshold_of_the_shares_rebuild_every_secret(case, data):
    points, threshold, secrets, seed = case
    shares = split(secrets, points, threshold, randomness(seed))
    chosen = data.draw(st.permutations(range(len(points))))[:threshold]

    rebuilt = combine([points[i] for i in chosen], shares[chosen], threshold)

    assert rebuilt == secrets


@settings(max_examples=40, deadline=None)
@given(sharings())
def test_more_than_threshold_shares_rebuild_too_and_are_checked_against_each_other(case):
    points, threshold, secrets, seed = case
    shares = split(secrets, points, threshold, randomness(seed))

    assert combine(points, shares, threshold) == secrets


@settings(max_examples=40, deadline=None)
@given(sharings().filter(lambda c: c[1] >= 2))
def test_threshold_minus_one_shares_rebuild_nothing(case):
    points, threshold, secrets, seed = case
    shares = split(secrets, points, threshold, randomness(seed))
    few = threshold - 1

    with pytest.raises(BadShare, match="cannot give a secret"):
        combine(points[:few], shares[:few], threshold)
    # Interpolating them anyway gives another polynomial: no secret at all (limbs past 16
    # bits), or, with chance 2^-240, a wrong one.
    with contextlib.suppress(BadShare):
        assert combine(points[:few], shares[:few], few) != secrets


@settings(max_examples=30, deadline=None)
@given(sharings().filter(lambda c: c[1] >= 2), st.binary(min_size=32, max_size=32))
def test_every_candidate_secret_is_consistent_with_threshold_minus_one_shares(case, candidate):
    # t − 1 shares and any candidate secret fix exactly one polynomial of degree t − 1 (its
    # value at a fresh point follows): every secret is equally possible, so the shares say
    # nothing about which one was shared.
    points, threshold, secrets, seed = case
    shares = split(secrets[:1], points, threshold, randomness(seed))
    known = np.asarray(points[: threshold - 1], dtype=np.int64)
    fresh = max(points) % (PRIME - 1) + 1 if max(points) < PRIME - 1 else 1
    while fresh in points:
        fresh = fresh % (PRIME - 1) + 1
    candidate_limbs = np.frombuffer(candidate, "<u2").astype(np.int64)
    nodes = np.concatenate([[0], known])
    values = np.concatenate([candidate_limbs[None, :], shares[: threshold - 1, 0]])
    weights = lagrange_weights(nodes, np.asarray([fresh], dtype=np.int64))[0]
    completed = (weights[:, None] * values % PRIME).sum(axis=0) % PRIME

    rebuilt = combine(
        [*known.tolist(), fresh],
        np.concatenate([shares[: threshold - 1], completed[None, None, :]]),
        threshold,
    )

    assert rebuilt == [candidate]


def test_threshold_minus_one_shares_of_two_secrets_are_alike_and_uniform():
    # The same t − 1 points, secret all-zeros against all-ones, over many sharings: the share
    # values fall in 32 equal bins of Z_p alike (chi-square), and as uniformly as chance allows.
    points, threshold, trials = [3, 8, 21, 40, 41], 5, 400
    zeros, ones = bytes(32), b"\xff" * 32
    a = split([zeros] * trials, points, threshold, randomness(1))[: threshold - 1]
    b = split([ones] * trials, points, threshold, randomness(2))[: threshold - 1]
    bins = 32
    count_a = np.bincount((a.ravel() * bins // PRIME), minlength=bins)
    count_b = np.bincount((b.ravel() * bins // PRIME), minlength=bins)

    assert stats.chisquare(count_a).pvalue > 1e-4
    assert stats.chisquare(count_b).pvalue > 1e-4
    assert stats.chi2_contingency(np.stack([count_a, count_b])).pvalue > 1e-4


def test_one_wrong_share_among_more_than_threshold_is_caught():
    points, secrets = [1, 2, 3, 4, 5, 6], [bytes(range(32))]
    shares = split(secrets, points, 4, randomness(3))
    shares[5, 0, 7] = (shares[5, 0, 7] + 1) % PRIME

    with pytest.raises(BadShare, match="one polynomial"):
        combine(points, shares, 4)


def test_splitting_vectorises_over_secrets_and_limbs():
    secrets = [bytes([i]) * 32 for i in range(50)]
    points = list(range(1, 41))

    shares = split(secrets, points, 21, randomness(4))

    assert shares.shape == (40, 50, 256 // LIMB_BITS)
    assert combine(points[10:31], shares[10:31], 21) == secrets


def test_a_share_is_64_bytes_and_reads_back():
    shares = split([bytes(32)], [1, 2, 3], 2, randomness(5))

    blobs = shares_to_bytes(shares[:, 0])

    assert all(len(blob) == SHARE_BYTES for blob in blobs)
    assert [share_from_bytes(blob).tolist() for blob in blobs] == shares[:, 0].tolist()


def test_share_bytes_of_another_length_or_past_the_prime_are_refused():
    with pytest.raises(WrongSize, match="64 bytes"):
        share_from_bytes(bytes(63))
    with pytest.raises(OutOfField, match="below the prime"):
        share_from_bytes(np.full(16, PRIME, "<u4").tobytes())


@pytest.mark.parametrize(
    ("points", "threshold", "secret", "error"),
    [
        ([1, 1, 2], 2, bytes(32), InvalidParameters),
        ([0, 1, 2], 2, bytes(32), InvalidParameters),
        ([1, 2, 3], 4, bytes(32), InvalidParameters),
        ([1, 2, 3], 2, bytes(16), WrongSize),
    ],
)
def test_bad_points_thresholds_or_secret_sizes_are_refused(points, threshold, secret, error):
    with pytest.raises(error):
        split([secret], points, threshold, randomness(6))
