"""A secure group's public parameters: who is in it, its graph, threshold and masking field.

The coordinator fixes them when it forms the group (from a round's cohort, or from K leases
of an asynchronous job) and sends the same ones to every member; every message is bound to
their :meth:`GroupParams.digest`, so a device given other parameters than its neighbours
cannot agree keys with them.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from fedge.secagg.crypto import MAX_BITS
from fedge.secagg.errors import InvalidParameters, NotInGroup
from fedge.secagg.graph import check_degree, neighbours

_U64 = 1 << 64


@dataclass(frozen=True)
class GroupParams:
    """One group's parameters; invalid ones are an :class:`InvalidParameters` naming the field.

    ``members`` are device ids (ascending, distinct, < 2^64); ``degree`` the neighbour count k;
    ``threshold`` t shares of k rebuild a secret: t − 1 colluding neighbours learn nothing, and
    every survivor needs t surviving neighbours (:func:`~fedge.secagg.graph.dropout_threshold`);
    with 2t > k even a server that lies about who dropped cannot rebuild both secrets of a
    device (:attr:`resists_lying_server`);
    ``bits`` the masking field Z_2^bits (the codec's ``sum_bits(n)``); ``length`` the integers
    per input; ``graph_seed`` ≥ 16 public random bytes that draw the graph.
    """

    group: int
    members: tuple[int, ...]
    degree: int
    threshold: int
    bits: int
    length: int
    graph_seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.group < _U64:
            raise InvalidParameters(f"group id must be in [0, 2^64), got {self.group}")
        if len(self.members) < 3:
            raise InvalidParameters(f"a group has at least 3 members, got {len(self.members)}")
        if list(self.members) != sorted(set(self.members)) or not (
            self.members[0] >= 0 and self.members[-1] < _U64
        ):
            raise InvalidParameters("members must be distinct device ids in [0, 2^64), ascending")
        check_degree(len(self.members), self.degree)
        if not 2 <= self.threshold <= self.degree:
            raise InvalidParameters(
                f"threshold must be in [2, degree]: got {self.threshold} for degree {self.degree}"
            )
        if not 1 <= self.bits <= MAX_BITS:
            raise InvalidParameters(f"bits must be in [1, {MAX_BITS}], got {self.bits}")
        if self.length < 1:
            raise InvalidParameters(f"length must be at least 1, got {self.length}")
        if len(self.graph_seed) < 16:
            raise InvalidParameters("graph_seed needs at least 16 bytes")

    @property
    def resists_lying_server(self) -> bool:
        """2t > k: no split of honest neighbours gives a server t shares of both secrets."""
        return 2 * self.threshold > self.degree

    @cached_property
    def neighbours(self) -> dict[int, tuple[int, ...]]:
        """Each member's k neighbours, ascending."""
        return neighbours(self.members, self.degree, self.graph_seed)

    @cached_property
    def _index(self) -> dict[int, int]:
        return {device: i for i, device in enumerate(self.members)}

    def check_member(self, device: int) -> None:
        """A :class:`NotInGroup` unless ``device`` is a member."""
        if device not in self._index:
            raise NotInGroup(f"device {device} is not in group {self.group}")

    def point(self, device: int) -> int:
        """The Shamir x-coordinate of a member's shares: its index + 1."""
        self.check_member(device)
        return self._index[device] + 1

    @cached_property
    def digest(self) -> bytes:
        """SHA-256 of the parameters: every key derivation and signature is bound to it."""
        head = struct.pack(
            "<QIIIQ", self.group, self.degree, self.threshold, self.bits, self.length
        )
        body = struct.pack(f"<{len(self.members)}Q", *self.members)
        return hashlib.sha256(b"fedge-secagg-v1 group" + head + body + self.graph_seed).digest()

    def to_json(self) -> dict[str, Any]:
        """The parameters as JSON-able values (the seed in hex)."""
        return {
            "group": self.group,
            "members": list(self.members),
            "degree": self.degree,
            "threshold": self.threshold,
            "bits": self.bits,
            "length": self.length,
            "graph_seed": self.graph_seed.hex(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GroupParams:
        """The parameters back from :meth:`to_json`; missing or mistyped fields are refused."""
        try:
            return cls(
                group=int(data["group"]),
                members=tuple(int(d) for d in data["members"]),
                degree=int(data["degree"]),
                threshold=int(data["threshold"]),
                bits=int(data["bits"]),
                length=int(data["length"]),
                graph_seed=bytes.fromhex(str(data["graph_seed"])),
            )
        except (KeyError, TypeError, ValueError) as error:
            if isinstance(error, InvalidParameters):
                raise
            raise InvalidParameters(f"group parameters do not parse: {error!r}") from None


def encode_params(params: GroupParams) -> bytes:
    """Canonical JSON bytes of the parameters."""
    return json.dumps(params.to_json(), sort_keys=True, separators=(",", ":")).encode()
