"""The neighbour graph: k-regular, symmetric, the same from the same public seed on both ends."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.secagg import (
    GroupParams,
    InvalidParameters,
    default_degree,
    default_threshold,
    dropout_threshold,
    exposure,
)
from fedge.secagg.graph import neighbours


@st.composite
def graphs(draw: st.DrawFn):
    members = draw(st.integers(3, 300))
    degrees = [members - 1, *range(2, members - 1, 2)]
    return (
        sorted(draw(st.sets(st.integers(0, 2**64 - 1), min_size=members, max_size=members))),
        draw(st.sampled_from(degrees)),
        draw(st.binary(min_size=16, max_size=32)),
    )


@settings(max_examples=60, deadline=None)
@given(graphs())
def test_every_member_has_k_distinct_other_members_as_neighbours_and_it_is_mutual(case):
    members, degree, seed = case

    graph = neighbours(members, degree, seed)

    assert set(graph) == set(members)
    for device, near in graph.items():
        assert len(set(near)) == degree
        assert device not in near
        assert set(near) <= set(members)
        assert all(device in graph[v] for v in near)


def test_the_same_seed_draws_the_same_graph_and_another_seed_another():
    members = list(range(200))

    graph = neighbours(members, 16, b"a" * 32)

    assert graph == neighbours(members, 16, b"a" * 32)
    assert graph != neighbours(members, 16, b"b" * 32)


def test_the_default_degree_grows_as_log_n_and_the_threshold_is_a_majority():
    assert default_degree(1000) == 40  # ≈ 4·log2 n: the k ≈ 40 at n = 1,000
    assert default_degree(100) == 28
    assert default_degree(10) == 9  # small groups are complete
    for n in (10, 100, 1000, 10_000):
        k = default_degree(n)
        assert 2 * default_threshold(k) > k >= default_threshold(k)


@pytest.mark.parametrize("degree", [0, 1, 3, 10, 11])
def test_a_degree_the_graph_cannot_have_is_refused(degree):
    with pytest.raises(InvalidParameters, match="degree"):
        neighbours(list(range(10)), degree, b"s" * 16)


def test_the_dropout_threshold_keeps_groups_alive_where_the_majority_would_not():
    # k = 40, 30 % gone: a survivor keeps Binomial(40, 0.7) neighbours, mean 28, and falls
    # below 21 with chance ~ 0.6 %; over 1,000 survivors some one almost surely does.
    t = dropout_threshold(1000, 40, dropout=0.3)

    assert 2 <= t < default_threshold(40)
    assert dropout_threshold(1000, 40, dropout=0.1) > t
    assert dropout_threshold(1000, 40, dropout=0.3, abandon_probability=1e-3) > t
    assert dropout_threshold(100, 40, dropout=0.3) >= t


def test_a_lower_threshold_exposes_more_devices_to_colluders():
    low, high = dropout_threshold(1000, 40, dropout=0.3), default_threshold(40)

    assert exposure(1000, 40, low, corrupt=0.05) > exposure(1000, 40, high, corrupt=0.05)
    assert exposure(1000, 40, high, corrupt=0.05) < 1e-9
    assert exposure(1000, 40, low, corrupt=0.0) == 0.0


def test_only_a_majority_threshold_resists_a_server_lying_about_dropouts():
    base = GroupParams(
        1, tuple(range(10)), degree=6, threshold=4, bits=8, length=2, graph_seed=bytes(16)
    )

    assert base.resists_lying_server
    assert not GroupParams(1, base.members, 6, 3, 8, 2, bytes(16)).resists_lying_server


def test_a_dropout_no_threshold_survives_is_refused_naming_the_fix():
    with pytest.raises(InvalidParameters, match="raise the degree"):
        dropout_threshold(1000, 4, dropout=0.9)
