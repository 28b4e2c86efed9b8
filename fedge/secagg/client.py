"""A device's side of SecAgg+ in one group, sans-IO: a step per round, input in, message out.

```
client = SecAggClient(params, device, identity=signing_key, identities=directory)
send(client.advertise())                           # round 1
send(client.share_keys(neighbours_keys))           # round 2: t-of-k shares of b_u and s_u, sealed
client.open_shares(shares_for_me)                  # round 3: as soon as they are delivered
send(client.mask(integers))                        #          y_u = x_u + PRG(b_u) + Σ ±PRG(s_uv)
send(client.unmask(unmask_request))                # round 4: b-shares of survivors, s-shares of
                                                   #          dropouts
```

The steps run in this order, once each (else :class:`OutOfOrder`); a device whose masked upload
was lost may still answer the unmask request after ``open_shares``. Every input is checked
(membership, signatures, sizes, decryption) and refused with a typed error naming the reason.
A client that sees fewer than ``threshold`` neighbours at a step stops with
:class:`GroupAbandoned`: nothing it sent so far reveals its input. Randomness (keys, the
self-mask seed, the Shamir coefficients and nonces) comes from ``random_bytes``, the OS CSPRNG
unless a test injects another.
"""

from __future__ import annotations

import enum
import json
import os
import struct
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedge.secagg import crypto, field
from fedge.secagg.errors import (
    BadShare,
    BadSignature,
    GroupAbandoned,
    MalformedMessage,
    NotInGroup,
    OutOfField,
    OutOfOrder,
    ReplayedMessage,
    WrongSize,
)
from fedge.secagg.messages import (
    AdvertiseKeys,
    EncryptedShare,
    MaskedInput,
    ShareKeys,
    Unmasking,
    UnmaskRequest,
    signed_advertisement,
)
from fedge.secagg.params import GroupParams

SHARE_KEY_LABEL = b"fedge-secagg-v1 share key"
PAIRWISE_MASK_LABEL = b"fedge-secagg-v1 pairwise mask"


class ClientStage(enum.Enum):
    """Where a client is: the step it has done last."""

    NEW = 0
    ADVERTISED = 1
    SHARED = 2
    OPENED = 3
    MASKED = 4
    DONE = 5


def share_associated_data(params: GroupParams, sender: int, recipient: int) -> bytes:
    """What AES-GCM authenticates beside a sealed share: the group, its sender and recipient."""
    return params.digest + struct.pack("<QQ", sender, recipient)


def mask_sign(device: int, peer: int) -> int:
    """+1 when ``device`` adds its pairwise mask with ``peer``, −1 when it subtracts it."""
    return 1 if device < peer else -1


class SecAggClient:
    """One device in one secure group (see the module docstring for the four steps)."""

    def __init__(
        self,
        params: GroupParams,
        device: int,
        *,
        identity: Ed25519PrivateKey,
        identities: Mapping[int, bytes],
        random_bytes: crypto.RandomBytes = os.urandom,
    ) -> None:
        params.check_member(device)
        self.params, self.device = params, device
        self._identity, self._identities = identity, identities
        self._random_bytes = random_bytes
        self._cipher = crypto.new_agreement_key(random_bytes)
        self._mask = crypto.new_agreement_key(random_bytes)
        self._self_seed = random_bytes(crypto.SEED_BYTES)
        self._peers: dict[int, AdvertiseKeys] = {}
        self._held: dict[int, tuple[bytes, bytes]] = {}  # sender → (its b-share, its s-share)
        self.stage = ClientStage.NEW

    def advertise(self) -> AdvertiseKeys:
        """Round 1: the two public keys, signed with the device's identity key."""
        self._step(ClientStage.NEW)
        cipher, mask = crypto.raw_public(self._cipher), crypto.raw_public(self._mask)
        signed = signed_advertisement(self.params, self.device, cipher, mask)
        self.stage = ClientStage.ADVERTISED
        return AdvertiseKeys(
            group=self.params.group,
            device=self.device,
            cipher_key=cipher,
            mask_key=mask,
            signature=crypto.sign(self._identity, signed),
        )

    def share_keys(self, advertised: Sequence[AdvertiseKeys]) -> ShareKeys:
        """Round 2: shares of b_u and of the mask key s_u for each neighbour that advertised."""
        self._step(ClientStage.ADVERTISED)
        neighbours = set(self.params.neighbours[self.device])
        peers: dict[int, AdvertiseKeys] = {}
        for keys in advertised:
            self._check_group(keys.group)
            if keys.device not in neighbours:
                raise NotInGroup(f"device {keys.device} is not a neighbour of {self.device}")
            if keys.device in peers:
                raise ReplayedMessage(f"device {keys.device}'s keys were relayed twice")
            identity = self._identities.get(keys.device)
            if identity is None:
                raise BadSignature(f"no identity key is known for device {keys.device}")
            crypto.verify(identity, keys.signature, keys.signed_bytes(self.params))
            peers[keys.device] = keys
        self._enough(len(peers), "neighbours advertised keys")
        order = sorted(peers)
        shares = field.split(
            [self._self_seed, crypto.raw_private(self._mask)],
            [self.params.point(v) for v in order],
            self.params.threshold,
            self._random_bytes,
        )
        sealed = []
        for peer, pair in zip(order, shares, strict=True):
            plaintext = struct.pack("<QQ", self.device, peer) + b"".join(
                field.shares_to_bytes(pair)
            )
            key = crypto.agree(
                self._cipher,
                peers[peer].cipher_key,
                label=SHARE_KEY_LABEL,
                context=self.params.digest,
            )
            associated = share_associated_data(self.params, self.device, peer)
            sealed.append(
                EncryptedShare(
                    sender=self.device,
                    recipient=peer,
                    sealed=crypto.seal(key, plaintext, associated, self._random_bytes),
                )
            )
        self._peers, self.stage = peers, ClientStage.SHARED
        return ShareKeys(group=self.params.group, device=self.device, shares=tuple(sealed))

    def open_shares(self, received: Sequence[EncryptedShare]) -> None:
        """Round 3, first half: open and check the shares the server delivered to this device.

        It needs no input, so a device can do it while it still trains (and stop early, with
        a typed error, when a share is bad or too few neighbours are left).
        """
        self._step(ClientStage.SHARED)
        held: dict[int, tuple[bytes, bytes]] = {}
        for share in received:
            if share.recipient != self.device:
                raise NotInGroup(f"a share for device {share.recipient} reached {self.device}")
            if share.sender not in self._peers:
                raise NotInGroup(f"device {share.sender} did not advertise keys to {self.device}")
            if share.sender in held:
                raise ReplayedMessage(f"device {share.sender}'s share was delivered twice")
            held[share.sender] = self._open(share)
        self._enough(len(held), "neighbours sent shares")
        self._held, self.stage = held, ClientStage.OPENED

    def mask(self, values: npt.NDArray[np.integer]) -> MaskedInput:
        """Round 3: ``values`` (integers in [0, 2^bits)) masked with b_u and one mask per sender.

        Pairwise masks are taken with exactly the neighbours whose shares arrived: the server
        delivered those, so it knows which masks a later dropout leaves to remove.
        """
        self._step(ClientStage.OPENED)
        words = self._integers(values)
        dtype = crypto.mask_dtype(self.params.bits)
        # Whole words, reduced once at the end (crypto.expand_words says why that is exact).
        masked = words + crypto.expand_words(self._self_seed, self.params.length, self.params.bits)
        for peer in sorted(self._held):
            pairwise = crypto.expand_words(
                self.pairwise_seed(peer), self.params.length, self.params.bits
            )
            if mask_sign(self.device, peer) > 0:
                masked += pairwise
            else:
                masked -= pairwise
        if self.params.bits < 8 * np.dtype(dtype).itemsize:
            masked &= dtype((1 << self.params.bits) - 1)
        self.stage = ClientStage.MASKED
        return MaskedInput(group=self.params.group, device=self.device, vector=masked)

    def unmask(self, request: UnmaskRequest) -> Unmasking:
        """Round 4: for each neighbour whose share this device holds, exactly one of its secrets.

        A survivor's b-share (to remove its self-mask) or a dropout's s-share (to remove the
        pairwise masks it left), never both: the server's two lists must split the senders.
        """
        if self.stage is not ClientStage.OPENED:
            self._step(ClientStage.MASKED)
        self._check_group(request.group)
        if request.recipient != self.device:
            raise NotInGroup(
                f"an unmask request for device {request.recipient} reached {self.device}"
            )
        if set(request.survivors) | set(request.dropouts) != set(self._held) or len(
            request.survivors
        ) + len(request.dropouts) != len(self._held):
            raise MalformedMessage(
                "survivors and dropouts must split exactly the neighbours that sent shares"
            )
        self.stage = ClientStage.DONE
        return Unmasking(
            group=self.params.group,
            device=self.device,
            self_mask_shares=tuple((u, self._held[u][0]) for u in sorted(request.survivors)),
            key_shares=tuple((u, self._held[u][1]) for u in sorted(request.dropouts)),
        )

    def to_bytes(self) -> bytes:
        """Everything the client holds, secrets included, for a device to store between rounds.

        Store it where the device keeps its token (owner-only), and store it *before* sending a
        step's message: a client restored to an earlier stage could answer a second, different
        unmask request, which is the one thing a device must never do.
        """
        state = {
            "params": self.params.to_json(),
            "device": self.device,
            "stage": self.stage.name,
            "cipher": crypto.raw_private(self._cipher).hex(),
            "mask": crypto.raw_private(self._mask).hex(),
            "self_seed": self._self_seed.hex(),
            "peers": [
                [k.device, k.cipher_key.hex(), k.mask_key.hex(), k.signature.hex()]
                for k in self._peers.values()
            ],
            "held": [[sender, b.hex(), s.hex()] for sender, (b, s) in self._held.items()],
        }
        return json.dumps(state, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        identity: Ed25519PrivateKey,
        identities: Mapping[int, bytes],
        random_bytes: crypto.RandomBytes = os.urandom,
    ) -> SecAggClient:
        """A client restored from :meth:`to_bytes`; bytes that do not parse are refused."""
        try:
            state = json.loads(data)
            params = GroupParams.from_json(state["params"])
            client = cls(
                params,
                int(state["device"]),
                identity=identity,
                identities=identities,
                random_bytes=random_bytes,
            )
            client.stage = ClientStage[state["stage"]]
            client._cipher = X25519PrivateKey.from_private_bytes(bytes.fromhex(state["cipher"]))
            client._mask = X25519PrivateKey.from_private_bytes(bytes.fromhex(state["mask"]))
            client._self_seed = bytes.fromhex(state["self_seed"])
            for device, cipher, mask, signature in state["peers"]:
                client._peers[int(device)] = AdvertiseKeys(
                    params.group,
                    int(device),
                    bytes.fromhex(cipher),
                    bytes.fromhex(mask),
                    bytes.fromhex(signature),
                )
            for sender, b, s in state["held"]:
                client._held[int(sender)] = (bytes.fromhex(b), bytes.fromhex(s))
        except (KeyError, TypeError, ValueError) as error:
            if isinstance(error, MalformedMessage):
                raise
            raise MalformedMessage(f"the stored client state does not parse: {error!r}") from None
        return client

    def pairwise_seed(self, peer: int) -> bytes:
        """The 256-bit seed this device shares with ``peer`` (what a colluding peer would know)."""
        keys = self._peers.get(peer)
        if keys is None:
            raise NotInGroup(f"device {peer} advertised no keys to {self.device}")
        return crypto.agree(
            self._mask, keys.mask_key, label=PAIRWISE_MASK_LABEL, context=self.params.digest
        )

    def _open(self, share: EncryptedShare) -> tuple[bytes, bytes]:
        key = crypto.agree(
            self._cipher,
            self._peers[share.sender].cipher_key,
            label=SHARE_KEY_LABEL,
            context=self.params.digest,
        )
        associated = share_associated_data(self.params, share.sender, self.device)
        plaintext = crypto.open_sealed(key, share.sealed, associated)
        if struct.unpack_from("<QQ", plaintext) != (share.sender, self.device):
            raise BadShare(f"the share from device {share.sender} names other devices inside")
        first, second = plaintext[16 : 16 + field.SHARE_BYTES], plaintext[16 + field.SHARE_BYTES :]
        field.share_from_bytes(first), field.share_from_bytes(second)  # limbs below the prime
        return first, second

    def _integers(self, values: npt.NDArray[np.integer]) -> npt.NDArray[np.unsignedinteger]:
        bits, length = self.params.bits, self.params.length
        if values.ndim != 1 or values.size != length:
            raise WrongSize(f"the input has {length} integers, got shape {values.shape}")
        if values.dtype.kind not in "iu":
            raise MalformedMessage(f"the input must be integers, got {values.dtype}")
        if values.size and (int(values.min()) < 0 or int(values.max()) >> bits):
            raise OutOfField(f"input integers must be in [0, 2^{bits})")
        return values.astype(crypto.mask_dtype(bits))

    def _enough(self, count: int, what: str) -> None:
        if count < self.params.threshold:
            self.stage = ClientStage.DONE
            raise GroupAbandoned(
                f"only {count} {what}, below the threshold {self.params.threshold}"
            )

    def _check_group(self, group: int) -> None:
        if group != self.params.group:
            raise NotInGroup(f"a message for group {group} reached group {self.params.group}")

    def _step(self, expected: ClientStage) -> None:
        if self.stage is not expected:
            raise OutOfOrder(
                f"this step follows {expected.name.lower()}; "
                f"the client is {self.stage.name.lower()}"
            )
