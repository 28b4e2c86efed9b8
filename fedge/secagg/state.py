"""The server's state for one group, as plain data, and its bytes (so a coordinator can store it).

Everything the server has received and still needs is here: the advertised keys (U1), who
sent shares to whom and the sealed shares not yet delivered (U2), who uploaded a masked input
(U3) and the running masked sum, the unmasking shares (U4), and how the group ended. A
coordinator that stores :func:`state_to_bytes` after each accepted message can rebuild the
server after a SIGKILL with :func:`state_from_bytes` and carry on, or abandon the group.

Bytes: 4-byte length, a JSON header (sealed shares and keys in base64), then the running sum
as little-endian words.
"""

from __future__ import annotations

import base64
import enum
import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fedge.secagg.crypto import mask_dtype
from fedge.secagg.errors import MalformedMessage
from fedge.secagg.messages import AdvertiseKeys, EncryptedShare, Unmasking
from fedge.secagg.params import GroupParams

Vector = npt.NDArray[np.unsignedinteger]


class Stage(enum.Enum):
    """The round a group is in; the value is the round's number (0: advertise keys)."""

    ADVERTISE = 0
    SHARE = 1
    MASK = 2
    UNMASK = 3
    DONE = 4
    ABANDONED = 5


@dataclass
class GroupState:
    """One group's server-side state; ``total`` is Σ y_u mod 2^bits over ``masked``."""

    params: GroupParams
    stage: Stage = Stage.ADVERTISE
    advertised: dict[int, AdvertiseKeys] = field(default_factory=dict)
    recipients: dict[int, tuple[int, ...]] = field(default_factory=dict)
    undelivered: dict[int, list[EncryptedShare]] = field(default_factory=dict)
    masked: list[int] = field(default_factory=list)
    total: Vector | None = None
    unmasked: dict[int, Unmasking] = field(default_factory=dict)
    abandoned: str = ""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _bytes(text: Any) -> bytes:
    return base64.b64decode(str(text), validate=True)


def state_to_bytes(state: GroupState) -> bytes:
    """The state as bytes (see the module docstring)."""
    header = {
        "params": state.params.to_json(),
        "stage": state.stage.name,
        "advertised": [
            [k.device, _b64(k.cipher_key), _b64(k.mask_key), _b64(k.signature)]
            for k in state.advertised.values()
        ],
        "recipients": [[sender, list(to)] for sender, to in state.recipients.items()],
        "undelivered": [
            [s.sender, s.recipient, _b64(s.sealed)]
            for shares in state.undelivered.values()
            for s in shares
        ],
        "masked": state.masked,
        "unmasked": [
            [
                u.device,
                [[owner, _b64(share)] for owner, share in u.self_mask_shares],
                [[owner, _b64(share)] for owner, share in u.key_shares],
            ]
            for u in state.unmasked.values()
        ],
        "abandoned": state.abandoned,
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    body = (
        b""
        if state.total is None
        else state.total.astype(state.total.dtype.newbyteorder("<")).tobytes()
    )
    return struct.pack("<I", len(head)) + head + body


def state_from_bytes(data: bytes) -> GroupState:
    """The state back from :func:`state_to_bytes`; bytes that do not parse are refused."""
    try:
        (size,) = struct.unpack_from("<I", data)
        header = json.loads(data[4 : 4 + size])
        params = GroupParams.from_json(header["params"])
        group = params.group
        state = GroupState(
            params=params, stage=Stage[header["stage"]], abandoned=header["abandoned"]
        )
        for device, cipher, mask, signature in header["advertised"]:
            state.advertised[int(device)] = AdvertiseKeys(
                group, int(device), _bytes(cipher), _bytes(mask), _bytes(signature)
            )
        state.recipients = {int(s): tuple(int(r) for r in to) for s, to in header["recipients"]}
        for sender, recipient, sealed in header["undelivered"]:
            share = EncryptedShare(int(sender), int(recipient), _bytes(sealed))
            state.undelivered.setdefault(share.recipient, []).append(share)
        state.masked = [int(d) for d in header["masked"]]
        for device, own, keys in header["unmasked"]:
            state.unmasked[int(device)] = Unmasking(
                group,
                int(device),
                tuple((int(o), _bytes(s)) for o, s in own),
                tuple((int(o), _bytes(s)) for o, s in keys),
            )
        body = data[4 + size :]
        if body:
            dtype = np.dtype(mask_dtype(params.bits)).newbyteorder("<")
            state.total = np.frombuffer(body, dtype=dtype).astype(mask_dtype(params.bits))
            if state.total.size != params.length:
                raise ValueError(f"the sum has {state.total.size} values, not {params.length}")
        return state
    except (KeyError, TypeError, ValueError, struct.error) as error:
        if isinstance(error, MalformedMessage):
            raise
        raise MalformedMessage(f"the stored group state does not parse: {error}") from None
