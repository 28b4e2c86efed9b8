"""The four rounds' messages, frozen dataclasses; each refuses a wrong shape with a typed error.

```
round            device → server                     server → device
1 advertise      AdvertiseKeys (2 public keys, sig)  its neighbours' AdvertiseKeys
2 share keys     ShareKeys (one sealed share/nbr)    the EncryptedShares addressed to it
3 masked input   MaskedInput (y = x + masks)         UnmaskRequest (which nbrs survived)
4 unmasking      Unmasking (b-shares of survivors,   —  (the server now has the sum)
                 key shares of dropouts)
```

Shapes are checked on construction; what depends on the group (membership, the vector's
length and field, the round) is checked by the server and the client, which know it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedge.secagg.crypto import KEY_BYTES, NONCE_BYTES, SIGNATURE_BYTES, TAG_BYTES
from fedge.secagg.errors import MalformedMessage, OutOfField, WrongSize
from fedge.secagg.field import SHARE_BYTES
from fedge.secagg.params import GroupParams

SHARE_PLAINTEXT_BYTES = 16 + 2 * SHARE_BYTES  # sender, recipient, share of b_u, share of s_u
SEALED_BYTES = NONCE_BYTES + SHARE_PLAINTEXT_BYTES + TAG_BYTES


def _check_length(what: str, data: bytes, size: int) -> None:
    if len(data) != size:
        raise WrongSize(f"{what} is {size} bytes, got {len(data)}")


@dataclass(frozen=True)
class AdvertiseKeys:
    """Round 1: a device's two X25519 public keys (for sealing shares, for masks), signed."""

    group: int
    device: int
    cipher_key: bytes
    mask_key: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_length("cipher_key", self.cipher_key, KEY_BYTES)
        _check_length("mask_key", self.mask_key, KEY_BYTES)
        _check_length("signature", self.signature, SIGNATURE_BYTES)
        if self.cipher_key == self.mask_key:
            raise MalformedMessage("cipher_key and mask_key must be different keys")

    def signed_bytes(self, params: GroupParams) -> bytes:
        """What the signature covers: the group's digest, the device and both keys."""
        return signed_advertisement(params, self.device, self.cipher_key, self.mask_key)


def signed_advertisement(params: GroupParams, device: int, cipher: bytes, mask: bytes) -> bytes:
    """The bytes a device signs when it advertises its keys to ``params``' group."""
    return b"fedge-secagg-v1 advertise" + params.digest + struct.pack("<Q", device) + cipher + mask


@dataclass(frozen=True)
class EncryptedShare:
    """One sealed share pair, from ``sender`` for ``recipient``: only the recipient can open it."""

    sender: int
    recipient: int
    sealed: bytes

    def __post_init__(self) -> None:
        _check_length("a sealed share", self.sealed, SEALED_BYTES)
        if self.sender == self.recipient:
            raise MalformedMessage("a device does not send a share to itself")


@dataclass(frozen=True)
class ShareKeys:
    """Round 2: a device's shares of b_u and s_u, one sealed pair per neighbour that advertised."""

    group: int
    device: int
    shares: tuple[EncryptedShare, ...]

    def __post_init__(self) -> None:
        recipients = [share.recipient for share in self.shares]
        if len(set(recipients)) != len(recipients):
            raise MalformedMessage("a neighbour is sent more than one share")
        if any(share.sender != self.device for share in self.shares):
            raise MalformedMessage(f"every share must be sent by device {self.device}")


@dataclass(frozen=True, eq=False)
class MaskedInput:
    """Round 3: y_u = x_u + PRG(b_u) + Σ ±PRG(s_uv) mod 2^bits, one unsigned word per integer."""

    group: int
    device: int
    vector: npt.NDArray[np.unsignedinteger]

    def __post_init__(self) -> None:
        if self.vector.ndim != 1 or self.vector.dtype.kind != "u":
            raise MalformedMessage("a masked vector is one-dimensional, of unsigned integers")

    def check(self, params: GroupParams) -> None:
        """Its length and field are the group's: else :class:`WrongSize` / :class:`OutOfField`."""
        if self.vector.size != params.length:
            raise WrongSize(f"a masked vector has {params.length} values, got {self.vector.size}")
        if params.bits < 8 * self.vector.dtype.itemsize and np.any(self.vector >> params.bits):
            raise OutOfField(f"masked values must be below 2^{params.bits}")


@dataclass(frozen=True)
class UnmaskRequest:
    """Server → device after round 3: which of its share-senders survived and which dropped."""

    group: int
    recipient: int
    survivors: tuple[int, ...]
    dropouts: tuple[int, ...]

    def __post_init__(self) -> None:
        if set(self.survivors) & set(self.dropouts):
            raise MalformedMessage("a device cannot both survive and drop out")


@dataclass(frozen=True)
class Unmasking:
    """Round 4: shares of b_u for surviving neighbours, of s_u for those that dropped out."""

    group: int
    device: int
    self_mask_shares: tuple[tuple[int, bytes], ...]
    key_shares: tuple[tuple[int, bytes], ...]

    def __post_init__(self) -> None:
        owners = [owner for owner, _ in self.self_mask_shares + self.key_shares]
        if len(set(owners)) != len(owners):
            raise MalformedMessage("one share per neighbour: a neighbour appears twice")
        for _, share in self.self_mask_shares + self.key_shares:
            _check_length("a share", share, SHARE_BYTES)
        for _, share in self.self_mask_shares + self.key_shares:
            if np.any(np.frombuffer(share, "<u4") >= (1 << 31) - 1):
                raise OutOfField("a share limb must be below the prime 2^31 - 1")


Message = AdvertiseKeys | ShareKeys | MaskedInput | Unmasking
