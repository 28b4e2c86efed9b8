"""The server's side of SecAgg+ for one group, sans-IO: messages in, relays out, the sum at the end.

```
server = GroupServer(params, identities)
server.receive(message)              # any round's message; a bad one raises a typed SecAggError
server.waiting_for()                 # devices this round still waits for
server.close_round()                 # at the deadline, or once nobody is awaited
server.keys_for(d) | shares_for(d) | unmask_request_for(d)   # what device d fetches next
server.result()                      # Σ x_u mod 2^bits over the survivors U3, exactly
```

Each close checks the threshold: fewer than t devices left in a round abandons the group
(``stage`` ABANDONED, ``state.abandoned`` the reason), and :meth:`result` then raises
:class:`GroupAbandoned`: dropout is data, and an abandoned group never yields a wrong sum.
Unmasking reconstructs the self-mask seed b_u of each survivor and the mask key s_d of each
dropout that still has surviving neighbours, nothing else (Bell et al., CCS 2020, Fig. 1).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedge.secagg import crypto, field
from fedge.secagg.client import PAIRWISE_MASK_LABEL, mask_sign
from fedge.secagg.errors import (
    BadShare,
    BadSignature,
    GroupAbandoned,
    LateMessage,
    MalformedMessage,
    NotInGroup,
    OutOfOrder,
    ReplayedMessage,
    SecAggError,
)
from fedge.secagg.messages import (
    AdvertiseKeys,
    EncryptedShare,
    MaskedInput,
    Message,
    ShareKeys,
    Unmasking,
    UnmaskRequest,
)
from fedge.secagg.params import GroupParams
from fedge.secagg.state import GroupState, Stage, Vector, state_from_bytes, state_to_bytes

_ROUND: dict[type, Stage] = {
    AdvertiseKeys: Stage.ADVERTISE,
    ShareKeys: Stage.SHARE,
    MaskedInput: Stage.MASK,
    Unmasking: Stage.UNMASK,
}


class GroupServer:
    """One group's server state machine (see the module docstring)."""

    def __init__(
        self,
        params: GroupParams,
        identities: Mapping[int, bytes],
        state: GroupState | None = None,
    ) -> None:
        self.params, self._identities = params, identities
        self.state = state if state is not None else GroupState(params=params)
        self._senders: dict[int, list[int]] | None = None  # recipient → senders, once fixed

    @classmethod
    def from_bytes(cls, data: bytes, identities: Mapping[int, bytes]) -> GroupServer:
        """A server resumed from :meth:`to_bytes` (a stored state)."""
        state = state_from_bytes(data)
        return cls(state.params, identities, state)

    def to_bytes(self) -> bytes:
        """The state to store (see :mod:`fedge.secagg.state`)."""
        return state_to_bytes(self.state)

    @property
    def stage(self) -> Stage:
        """The round the group is in."""
        return self.state.stage

    def survivors(self) -> dict[str, int]:
        """How many devices each round has heard from so far (U1 … U4), for metrics."""
        s = self.state
        return {
            "members": len(self.params.members),
            "advertised": len(s.advertised),
            "shared": len(s.recipients),
            "masked": len(s.masked),
            "unmasked": len(s.unmasked),
        }

    # --- receiving ------------------------------------------------------------------------------

    def receive(self, message: Message) -> None:
        """Take one device's message for the current round, or refuse it with a typed error."""
        if message.group != self.params.group:
            raise NotInGroup(
                f"a message for group {message.group} reached group {self.params.group}"
            )
        self.params.check_member(message.device)
        stage, round_ = self.state.stage, _ROUND[type(message)]
        if stage is Stage.ABANDONED:
            raise GroupAbandoned(f"group {self.params.group} was abandoned: {self.state.abandoned}")
        if round_.value < stage.value:
            raise LateMessage(f"round {round_.name.lower()} of group {self.params.group} is closed")
        if round_.value > stage.value:
            raise OutOfOrder(f"group {self.params.group} is in round {stage.name.lower()}")
        if isinstance(message, AdvertiseKeys):
            self._advertise(message)
        elif isinstance(message, ShareKeys):
            self._share(message)
        elif isinstance(message, MaskedInput):
            self._masked(message)
        else:
            self._unmasking(message)

    def _advertise(self, keys: AdvertiseKeys) -> None:
        if keys.device in self.state.advertised:
            raise ReplayedMessage(f"device {keys.device} has already advertised keys")
        identity = self._identities.get(keys.device)
        if identity is None:
            raise BadSignature(f"no identity key is known for device {keys.device}")
        crypto.verify(identity, keys.signature, keys.signed_bytes(self.params))
        self.state.advertised[keys.device] = keys

    def _share(self, message: ShareKeys) -> None:
        s = self.state
        if message.device not in s.advertised:
            raise NotInGroup(f"device {message.device} advertised no keys in this group")
        if message.device in s.recipients:
            raise ReplayedMessage(f"device {message.device} has already sent its shares")
        expected = set(self._advertised_neighbours(message.device))
        recipients = {share.recipient for share in message.shares}
        if not recipients <= expected:
            raise NotInGroup(
                f"shares for {sorted(recipients - expected)}: not advertised neighbours"
            )
        if recipients != expected:
            raise MalformedMessage(f"shares missing for neighbours {sorted(expected - recipients)}")
        s.recipients[message.device] = tuple(sorted(recipients))
        for share in message.shares:
            s.undelivered.setdefault(share.recipient, []).append(share)

    def _masked(self, message: MaskedInput) -> None:
        s = self.state
        if message.device not in s.recipients:
            raise NotInGroup(f"device {message.device} sent no shares in this group")
        if message.device in s.masked:
            raise ReplayedMessage(f"device {message.device} has already sent its masked input")
        message.check(self.params)
        dtype = crypto.mask_dtype(self.params.bits)
        vector: Vector = message.vector.astype(dtype)
        if s.total is not None:
            vector += s.total
        s.total = np.bitwise_and(vector, self._field_mask())
        s.masked.append(message.device)

    def _unmasking(self, message: Unmasking) -> None:
        s = self.state
        if message.device not in s.masked:
            raise NotInGroup(f"device {message.device} sent no masked input in this group")
        if message.device in s.unmasked:
            raise ReplayedMessage(f"device {message.device} has already sent its unmasking")
        request = self.unmask_request_for(message.device)
        if (
            tuple(o for o, _ in message.self_mask_shares) != request.survivors
            or tuple(o for o, _ in message.key_shares) != request.dropouts
        ):
            raise MalformedMessage(
                "an unmasking must hold b-shares of exactly the surviving senders and "
                "key shares of exactly the dropped ones, in ascending order"
            )
        s.unmasked[message.device] = message

    # --- what devices fetch ---------------------------------------------------------------------

    def keys_for(self, device: int) -> tuple[AdvertiseKeys, ...]:
        """After round 1: the advertised keys of ``device``'s neighbours."""
        self._at(Stage.SHARE, "keys are relayed")
        return tuple(self.state.advertised[v] for v in self._advertised_neighbours(device))

    def shares_for(self, device: int) -> tuple[EncryptedShare, ...]:
        """After round 2: the sealed shares addressed to ``device``."""
        self._at(Stage.MASK, "shares are delivered")
        self.params.check_member(device)
        return tuple(self.state.undelivered.get(device, ()))

    def unmask_request_for(self, device: int) -> UnmaskRequest:
        """After round 3: which of the devices that sent ``device`` shares survived masking."""
        self._at(Stage.UNMASK, "unmasking is requested")
        masked = set(self.state.masked)
        senders = self._senders_of(device)
        return UnmaskRequest(
            group=self.params.group,
            recipient=device,
            survivors=tuple(u for u in senders if u in masked),
            dropouts=tuple(u for u in senders if u not in masked),
        )

    def waiting_for(self) -> frozenset[int]:
        """Devices whose message for the current round has not arrived."""
        s, t = self.state, self.params.threshold
        # A device that saw fewer than t neighbours stops by itself (the client's rule).
        before = {
            Stage.ADVERTISE: set(self.params.members),
            Stage.SHARE: {d for d in s.advertised if len(self._advertised_neighbours(d)) >= t},
            Stage.MASK: {d for d in s.recipients if len(s.undelivered.get(d, ())) >= t},
            Stage.UNMASK: set(s.masked),
        }.get(s.stage, set())
        done = {
            Stage.ADVERTISE: s.advertised.keys(),
            Stage.SHARE: s.recipients.keys(),
            Stage.MASK: set(s.masked),
            Stage.UNMASK: s.unmasked.keys(),
        }.get(s.stage, set())
        return frozenset(before - set(done))

    # --- closing rounds -------------------------------------------------------------------------

    def close_round(self) -> Stage:
        """Close the current round (at its deadline, or when nobody is awaited); the new stage."""
        s = self.state
        heard = {
            Stage.ADVERTISE: len(s.advertised),
            Stage.SHARE: len(s.recipients),
            Stage.MASK: len(s.masked),
            Stage.UNMASK: len(s.unmasked),
        }
        if s.stage not in heard:
            raise OutOfOrder(f"group {self.params.group} has ended ({s.stage.name.lower()})")
        if heard[s.stage] < self.params.threshold:
            return self.abandon(
                f"round {s.stage.name.lower()} closed with {heard[s.stage]} devices, "
                f"below the threshold {self.params.threshold}"
            )
        if s.stage is Stage.UNMASK:
            try:
                s.total = self._unmask()  # from here on the sum itself, no longer masked
            except SecAggError as error:
                return self.abandon(f"unmasking failed: {error}")
            s.stage = Stage.DONE
            return s.stage
        if s.stage is Stage.MASK:
            s.undelivered.clear()  # delivered or never to be: no survivor needs them now
        s.stage = Stage(s.stage.value + 1)
        return s.stage

    def abandon(self, reason: str) -> Stage:
        """Give the group up (a deadline passed, a store failed); it gives no sum."""
        self.state.stage, self.state.abandoned = Stage.ABANDONED, reason
        self.state.total, self.state.undelivered = None, {}
        return self.state.stage

    def result(self) -> Vector:
        """The exact Σ x_u mod 2^bits over the devices that uploaded a masked input (U3)."""
        if self.state.stage is Stage.ABANDONED:
            raise GroupAbandoned(f"group {self.params.group} was abandoned: {self.state.abandoned}")
        if self.state.stage is not Stage.DONE or self.state.total is None:
            raise OutOfOrder(f"group {self.params.group} has not finished unmasking")
        return self.state.total

    def _unmask(self) -> Vector:
        s, params = self.state, self.params
        assert s.total is not None
        masked = set(s.masked)
        self_shares: dict[int, list[tuple[int, bytes]]] = {}
        key_shares: dict[int, list[tuple[int, bytes]]] = {}
        for holder, message in s.unmasked.items():
            for owner, share in message.self_mask_shares:
                self_shares.setdefault(owner, []).append((params.point(holder), share))
            for owner, share in message.key_shares:
                key_shares.setdefault(owner, []).append((params.point(holder), share))
        total = s.total.copy()
        for survivor in s.masked:
            (seed,) = _rebuild(self_shares.get(survivor, []), params.threshold, f"b_{survivor}")
            total -= crypto.expand_words(seed, params.length, params.bits)  # reduced at the end
        for dropout in sorted(set(s.recipients) - masked):
            neighbours = [u for u in s.recipients[dropout] if u in masked]
            if not neighbours:
                continue  # it masked with nobody who survived: nothing to remove
            (raw,) = _rebuild(key_shares.get(dropout, []), params.threshold, f"s_{dropout}")
            key = X25519PrivateKey.from_private_bytes(raw)
            if crypto.raw_public(key) != s.advertised[dropout].mask_key:
                raise BadShare(f"the key rebuilt for device {dropout} is not the one it advertised")
            for survivor in neighbours:
                seed = crypto.agree(
                    key,
                    s.advertised[survivor].mask_key,
                    label=PAIRWISE_MASK_LABEL,
                    context=params.digest,
                )
                pairwise = crypto.expand_words(seed, params.length, params.bits)
                if mask_sign(survivor, dropout) > 0:
                    total -= pairwise
                else:
                    total += pairwise
        return total & self._field_mask()

    def _senders_of(self, device: int) -> list[int]:
        """The devices that sent ``device`` a share (fixed once round 2 closed), ascending."""
        if self._senders is None:
            senders: dict[int, list[int]] = {}
            for sender in sorted(self.state.recipients):
                for recipient in self.state.recipients[sender]:
                    senders.setdefault(recipient, []).append(sender)
            self._senders = senders
        return self._senders.get(device, [])

    def _advertised_neighbours(self, device: int) -> tuple[int, ...]:
        self.params.check_member(device)
        return tuple(v for v in self.params.neighbours[device] if v in self.state.advertised)

    def _field_mask(self) -> np.unsignedinteger:
        dtype = crypto.mask_dtype(self.params.bits)
        return dtype((1 << self.params.bits) - 1)

    def _at(self, stage: Stage, what: str) -> None:
        if self.state.stage is not stage:
            raise OutOfOrder(
                f"{what} in round {stage.name.lower()}; group is {self.state.stage.name.lower()}"
            )


def _rebuild(shares: list[tuple[int, bytes]], threshold: int, name: str) -> list[bytes]:
    """One secret from (point, share) pairs; fewer than ``threshold`` is a :class:`BadShare`."""
    if len(shares) < threshold:
        raise BadShare(f"{name} has {len(shares)} shares of the {threshold} it needs")
    points = [point for point, _ in shares]
    values = np.stack([field.share_from_bytes(share) for _, share in shares])[:, None, :]
    return field.combine(points, values, threshold)
