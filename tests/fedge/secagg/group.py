"""A whole secure group in one process: real clients, a real server, and dropout as data."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedge.secagg import (
    GroupAbandoned,
    GroupParams,
    GroupServer,
    SecAggClient,
    default_degree,
    default_threshold,
)
from fedge.secagg.crypto import raw_public

ROUNDS = 4  # advertise, share keys, masked input, unmasking


@dataclass
class Group:
    """A group's parameters, its members' clients and identity directory, and its server."""

    params: GroupParams
    clients: dict[int, SecAggClient]
    identities: dict[int, Ed25519PrivateKey]
    directory: dict[int, bytes]
    server: GroupServer
    inputs: dict[int, np.ndarray] = field(default_factory=dict)
    gone: set[int] = field(default_factory=set)  # every device that has stopped, by any round
    sent: list[set[int]] = field(default_factory=lambda: [set() for _ in range(ROUNDS)])

    def plain_sum(self, devices: Sequence[int]) -> np.ndarray:
        total = sum(
            (self.inputs[d].astype(object) for d in devices), np.zeros(self.params.length, object)
        )
        return (total % (1 << self.params.bits)).astype(np.uint64)


def make_group(
    members: int,
    *,
    seed: int = 0,
    bits: int = 16,
    length: int = 40,
    degree: int | None = None,
    threshold: int | None = None,
    group: int = 1,
) -> Group:
    """A group of ``members`` devices (ids 1000, 1001, …) with inputs uniform on [0, 2^bits)."""
    rng = np.random.default_rng(seed)
    randomness: Callable[[int], bytes] = rng.bytes  # deterministic runs; the library takes any
    ids = tuple(range(1000, 1000 + members))
    k = default_degree(members) if degree is None else degree
    params = GroupParams(
        group=group,
        members=ids,
        degree=k,
        threshold=default_threshold(k) if threshold is None else threshold,
        bits=bits,
        length=length,
        graph_seed=rng.bytes(32),
    )
    identities = {d: Ed25519PrivateKey.from_private_bytes(rng.bytes(32)) for d in ids}
    directory = {d: raw_public(key) for d, key in identities.items()}
    clients = {
        d: SecAggClient(
            params, d, identity=identities[d], identities=directory, random_bytes=randomness
        )
        for d in ids
    }
    inputs = {d: rng.integers(0, 1 << bits, length, dtype=np.uint64) for d in ids}
    server = GroupServer(params, directory)
    return Group(params, clients, identities, directory, server, inputs)


def run_round(
    group: Group,
    round_: int,
    drop: set[int] | frozenset[int] = frozenset(),
    *,
    restart: bool = False,
) -> None:
    """Every device not gone and not in ``drop`` sends its message for ``round_``; then close it.

    A client that stops by itself (too few neighbours left) counts as gone. With ``restart``
    the server is rebuilt from its bytes before the round's messages arrive.
    """
    if restart:
        group.server = GroupServer.from_bytes(group.server.to_bytes(), group.directory)
    server = group.server
    group.gone |= set(drop)
    for device, client in group.clients.items():
        if device in group.gone:
            continue
        try:
            if round_ == 0:
                message = client.advertise()
            elif round_ == 1:
                message = client.share_keys(server.keys_for(device))
            elif round_ == 2:
                client.open_shares(server.shares_for(device))
                message = client.mask(group.inputs[device])
            else:
                message = client.unmask(server.unmask_request_for(device))
        except GroupAbandoned:
            group.gone.add(device)
            continue
        server.receive(message)
        group.sent[round_].add(device)
    server.close_round()


def run_group(
    group: Group, drops: Sequence[set[int]] = (), *, restart: bool = False
) -> GroupServer:
    """All four rounds, ``drops[r]`` vanishing just before round r; stops once abandoned."""
    from fedge.secagg import Stage

    for round_ in range(ROUNDS):
        if group.server.stage is Stage.ABANDONED:
            break
        drop = drops[round_] if round_ < len(drops) else set()
        run_round(group, round_, drop, restart=restart)
    return group.server
