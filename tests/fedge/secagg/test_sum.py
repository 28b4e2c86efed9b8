"""The unmasked sum is the survivors' plain integer sum mod 2^bits, exactly, or there is no sum."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fedge.secagg import GroupAbandoned, MalformedMessage, OutOfOrder, SecAggClient, Stage
from tests.fedge.secagg.group import ROUNDS, make_group, run_group, run_round

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def groups_with_dropout(draw: st.DrawFn):
    members = draw(st.integers(3, 30))
    bits = draw(st.sampled_from([1, 7, 16, 18, 31, 32, 40, 64]))
    group = make_group(
        members, seed=draw(st.integers(0, 2**32)), bits=bits, length=draw(st.integers(1, 48))
    )
    ids = list(group.params.members)
    # Each device drops before one round (drawn), or never: a drawn share of the group, ≤ 40 %.
    gone = draw(st.integers(0, (2 * members) // 5))
    order = draw(st.permutations(ids))
    rounds = draw(st.lists(st.integers(0, ROUNDS - 1), min_size=gone, max_size=gone))
    drops = [
        {d for d, r in zip(order, rounds, strict=False) if r == round_} for round_ in range(ROUNDS)
    ]
    return group, drops


@SETTINGS
@given(groups_with_dropout())
def test_the_sum_is_exact_for_any_group_and_dropout_pattern_or_the_group_is_abandoned(case):
    group, drops = case

    server = run_group(group, drops)
    event(f"stage {server.stage.name}")

    if server.stage is Stage.ABANDONED:
        with pytest.raises(GroupAbandoned):
            server.result()
    else:
        assert server.stage is Stage.DONE
        assert np.array_equal(
            server.result().astype(np.uint64), group.plain_sum(sorted(group.sent[2]))
        )


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32), st.sampled_from([0, 1, 2, 3]))
def test_a_tenth_dropping_at_any_one_step_still_gives_the_exact_sum(seed, round_):
    group = make_group(30, seed=seed)
    dropped = set(
        np.random.default_rng(seed).choice(group.params.members, 3, replace=False).tolist()
    )
    drops = [dropped if r == round_ else set() for r in range(ROUNDS)]

    server = run_group(group, drops)

    assert server.stage is Stage.DONE
    survivors = sorted(set(group.params.members) - dropped) if round_ < 3 else group.params.members
    assert sorted(group.sent[2]) == sorted(survivors)
    assert np.array_equal(server.result().astype(np.uint64), group.plain_sum(survivors))


def test_thirty_percent_gone_after_masking_still_gives_the_sum_of_all_who_masked():
    group = make_group(30, seed=3, degree=20, threshold=11)
    after_masking = set(group.params.members[::3])  # 10 of 30, before they unmask

    server = run_group(group, [set(), set(), set(), after_masking])

    assert server.stage is Stage.DONE
    assert np.array_equal(server.result().astype(np.uint64), group.plain_sum(group.params.members))


def test_thirty_percent_gone_before_masking_leaves_the_sum_of_the_rest():
    group = make_group(30, seed=4)
    before_masking = set(group.params.members[1::3])

    server = run_group(group, [set(), set(), before_masking])

    rest = sorted(set(group.params.members) - before_masking)
    assert server.stage is Stage.DONE
    assert np.array_equal(server.result().astype(np.uint64), group.plain_sum(rest))


def test_only_dropouts_keys_and_survivors_self_masks_are_asked_for():
    group = make_group(12, seed=5)
    dropped = {group.params.members[0], group.params.members[5]}

    server = run_group(group, [set(), set(), dropped])

    for unmasking in server.state.unmasked.values():
        assert {owner for owner, _ in unmasking.key_shares} <= dropped
        assert not {owner for owner, _ in unmasking.self_mask_shares} & dropped


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_below_the_threshold_in_any_round_the_group_is_abandoned_with_no_sum(round_):
    group = make_group(10, seed=6, degree=6, threshold=4)
    # Seven of ten gone: three left, below four.
    gone = set(group.params.members[:7])
    drops = [gone if r == round_ else set() for r in range(ROUNDS)]

    server = run_group(group, drops)

    assert server.stage is Stage.ABANDONED
    assert (
        "below the threshold" in server.state.abandoned or "shares of the" in server.state.abandoned
    )
    with pytest.raises(GroupAbandoned, match="abandoned"):
        server.result()


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_the_server_resumed_from_its_bytes_at_every_round_gives_the_same_sum(round_):
    group = make_group(15, seed=7, bits=20, length=1000)
    dropped = {group.params.members[2], group.params.members[9]}
    drops = [dropped if r == round_ else set() for r in range(ROUNDS)]

    server = run_group(group, drops, restart=True)

    assert server.stage is Stage.DONE
    assert np.array_equal(server.result().astype(np.uint64), group.plain_sum(sorted(group.sent[2])))


def test_a_finished_group_resumed_from_its_bytes_still_gives_its_sum():
    group = make_group(8, seed=8)
    server = run_group(group)

    resumed = type(server).from_bytes(server.to_bytes(), group.directory)

    assert resumed.stage is Stage.DONE
    assert np.array_equal(resumed.result(), server.result())


def test_the_server_waits_only_for_devices_that_can_still_send():
    group = make_group(6, seed=9, degree=4, threshold=3)
    run_round(group, 0, {group.params.members[0]})

    waiting = group.server.waiting_for()

    assert group.params.members[0] not in waiting
    assert waiting <= set(group.params.members[1:])
    assert all(len(group.server.keys_for(d)) >= 3 for d in waiting)


def test_clients_restored_from_their_bytes_at_every_round_give_the_same_sum():
    group = make_group(12, seed=12)
    dropped = {group.params.members[4]}
    for round_ in range(ROUNDS):
        group.clients = {
            d: SecAggClient.from_bytes(
                c.to_bytes(), identity=group.identities[d], identities=group.directory
            )
            for d, c in group.clients.items()
        }
        run_round(group, round_, dropped if round_ == 2 else set())

    assert group.server.stage is Stage.DONE
    assert np.array_equal(
        group.server.result().astype(np.uint64), group.plain_sum(sorted(group.sent[2]))
    )


def test_a_restored_client_that_has_answered_its_unmask_request_answers_no_other():
    group = make_group(8, seed=13)
    for round_ in range(3):
        run_round(group, round_)
    device = group.params.members[0]
    request = group.server.unmask_request_for(device)
    group.clients[device].unmask(request)

    restored = SecAggClient.from_bytes(
        group.clients[device].to_bytes(),
        identity=group.identities[device],
        identities=group.directory,
    )

    with pytest.raises(OutOfOrder, match="the client is done"):
        restored.unmask(request)


def test_client_bytes_that_do_not_parse_are_refused():
    group = make_group(4, seed=14, degree=3, threshold=2)

    with pytest.raises(MalformedMessage, match="does not parse"):
        SecAggClient.from_bytes(b"{}", identity=group.identities[1000], identities=group.directory)
