"""What the server sees: uniform-looking masked vectors, masks it cannot remove without keys."""

from __future__ import annotations

import numpy as np
from scipy import stats

from fedge.secagg import MaskedInput, Stage, expand_mask
from fedge.secagg.client import mask_sign
from fedge.secagg.field import combine, share_from_bytes
from tests.fedge.secagg.group import Group, make_group, run_round

BITS, LENGTH = 16, 20_000


def looks_uniform(words: np.ndarray, bits: int) -> bool:
    """Every bit is balanced within 2 %, and the top 4 bits fill 16 bins as chance would."""
    words = words.astype(np.uint64)
    ones = np.array([(words >> i & 1).mean() for i in range(bits)])
    bins = np.bincount((words >> (bits - 4)).astype(np.int64), minlength=16)
    return bool(np.all(np.abs(ones - 0.5) < 0.02) and stats.chisquare(bins).pvalue > 1e-4)


def masked_group(seed: int) -> tuple[Group, dict[int, MaskedInput]]:
    """A group whose inputs are all zero, run to its unmasking round; the masked inputs seen."""
    group = make_group(10, seed=seed, degree=6, threshold=4, bits=BITS, length=LENGTH)
    group.inputs = {d: np.zeros(LENGTH, np.uint64) for d in group.params.members}
    run_round(group, 0)
    run_round(group, 1)
    seen = {}
    for device, client in group.clients.items():
        client.open_shares(group.server.shares_for(device))
        seen[device] = client.mask(group.inputs[device])
        group.server.receive(seen[device])
    group.server.close_round()
    return group, seen


def self_mask_seeds(group: Group) -> dict[int, bytes]:
    """Every b_u, rebuilt as the server rebuilds them from the neighbours' unmasking shares."""
    held: dict[int, list[tuple[int, bytes]]] = {}
    for holder, client in group.clients.items():
        unmasking = client.unmask(group.server.unmask_request_for(holder))
        for owner, share in unmasking.self_mask_shares:
            held.setdefault(owner, []).append((group.params.point(holder), share))
    seeds = {}
    for owner, shares in held.items():
        values = np.stack([share_from_bytes(s) for _, s in shares])[:, None, :]
        (seeds[owner],) = combine([p for p, _ in shares], values, group.params.threshold)
    return seeds


def test_a_masked_vector_of_an_all_zero_input_looks_uniform():
    _, seen = masked_group(seed=21)

    assert all(looks_uniform(message.vector, BITS) for message in seen.values())


def test_with_its_self_mask_and_all_but_one_pairwise_mask_removed_a_vector_is_still_masked():
    # The worst case the threat model allows: the server learns b_u (u survived) and every
    # neighbour but one colludes, giving up its pairwise seed with u. What is left of y_u − x_u
    # is ± the mask of the one honest neighbour: uniform-looking, from a 256-bit seed that only
    # u and that neighbour can compute.
    group, seen = masked_group(seed=22)
    u = group.params.members[0]
    honest, *colluding = group.params.neighbours[u]
    residual = seen[u].vector.astype(np.uint32) - group.inputs[u].astype(np.uint32)
    residual -= expand_mask(self_mask_seeds(group)[u], LENGTH, BITS)
    for w in colluding:
        pairwise = expand_mask(group.clients[w].pairwise_seed(u), LENGTH, BITS)
        residual = residual - pairwise if mask_sign(u, w) > 0 else residual + pairwise
    residual &= np.uint32((1 << BITS) - 1)

    honest_seed = group.clients[honest].pairwise_seed(u)
    expected = expand_mask(honest_seed, LENGTH, BITS)
    if mask_sign(u, honest) < 0:
        expected = (-expected.astype(np.int64)) % (1 << BITS)
    assert len(honest_seed) * 8 == 256
    assert np.array_equal(residual, expected)
    assert looks_uniform(residual, BITS)
    assert not np.array_equal(residual, np.zeros(LENGTH))


def test_the_servers_masked_sum_with_one_self_mask_left_on_looks_uniform():
    # Pairwise masks cancel in the sum of all; the self-masks do not. With every self-mask but
    # one removed, the sum is still uniform: the server needs the last b_u too.
    group, _ = masked_group(seed=23)
    keep = group.params.members[3]
    total = group.server.state.total.astype(np.uint32).copy()
    seeds = self_mask_seeds(group)
    for device in group.params.members:
        if device != keep:
            total -= expand_mask(seeds[device], LENGTH, BITS)
    total &= np.uint32((1 << BITS) - 1)
    unmasked = (total - expand_mask(seeds[keep], LENGTH, BITS)) & np.uint32((1 << BITS) - 1)

    assert looks_uniform(total, BITS)
    assert np.array_equal(unmasked, np.zeros(LENGTH))  # the last one off: the (zero) sum itself
    assert not looks_uniform(unmasked, BITS)


def test_the_server_never_receives_both_secrets_of_any_device():
    group = make_group(20, seed=24)
    gone = set(group.params.members[::4])
    run_round(group, 0)
    run_round(group, 1)
    run_round(group, 2, gone)
    run_round(group, 3)

    assert group.server.stage is Stage.DONE
    self_mask_owners, key_owners = set(), set()
    for unmasking in group.server.state.unmasked.values():
        self_mask_owners |= {owner for owner, _ in unmasking.self_mask_shares}
        key_owners |= {owner for owner, _ in unmasking.key_shares}
    assert key_owners <= gone
    assert not self_mask_owners & key_owners
