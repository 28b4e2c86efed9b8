"""Secure aggregation composes with fix{b} codecs: the unmasked sum decodes to the updates' sum."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.codecs import parse_codec
from fedge.secagg import Stage
from tests.fedge.secagg.group import make_group, run_round

LENGTH, SEED = 3000, 4242


@pytest.mark.parametrize("name", ["fix8:range=0.5", "randk20+fix4:range=0.5,chunk=256"])
def test_the_survivors_unmasked_integers_decode_to_the_sum_of_their_decoded_updates(name):
    codec = parse_codec(name)
    members = 12
    # The field in which a sum of n devices' integers cannot wrap: b + ⌈log2 n⌉ bits.
    group = make_group(members, seed=31, bits=codec.sum_bits(members), length=codec.kept(LENGTH))
    params = group.params
    rng = np.random.default_rng(5)
    updates = {d: (rng.normal(size=LENGTH) * 0.05).astype(np.float32) for d in params.members}
    payloads = {
        d: codec.encode(x, seed=SEED, rng=np.random.default_rng(d)) for d, x in updates.items()
    }
    group.inputs = {d: codec.integers(p).values.astype(np.int64) for d, p in payloads.items()}
    dropped = set(params.members[1:4])

    for round_ in range(4):
        run_round(group, round_, dropped if round_ == 2 else set())

    survivors = sorted(group.sent[2])
    assert group.server.stage is Stage.DONE and len(survivors) == members - 3
    decoded = np.zeros(LENGTH)
    codec.add_integer_sum(
        group.server.result(), count=len(survivors), length=LENGTH, seed=SEED, into=decoded
    )
    one_by_one = np.zeros(LENGTH)
    for d in survivors:
        payloads[d].add_to(one_by_one)
    np.testing.assert_allclose(decoded, one_by_one, rtol=1e-6, atol=1e-6)
