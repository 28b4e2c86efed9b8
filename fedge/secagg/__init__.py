"""Secure aggregation (SecAgg+, Bell et al. CCS 2020) as a sans-IO library both ends import.

A coordinator forms a group (:class:`GroupParams`), runs one :class:`GroupServer` per group
and relays what it returns; each device runs a :class:`SecAggClient`. The server learns only
the sum mod 2^bits of the survivors' integer vectors (a ``fix{b}`` codec's, in a field of its
``sum_bits(n)``), even when devices drop at any step. See docs/secure-aggregation.md.
"""

from fedge.secagg.client import ClientStage, SecAggClient
from fedge.secagg.crypto import expand_mask
from fedge.secagg.errors import (
    BadShare,
    BadSignature,
    GroupAbandoned,
    InvalidParameters,
    LateMessage,
    MalformedMessage,
    NotInGroup,
    OutOfField,
    OutOfOrder,
    ReplayedMessage,
    SecAggError,
    WeakSeed,
    WrongSize,
)
from fedge.secagg.graph import default_degree, default_threshold, dropout_threshold, exposure
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
from fedge.secagg.server import GroupServer
from fedge.secagg.state import GroupState, Stage

__all__ = [
    "AdvertiseKeys",
    "BadShare",
    "BadSignature",
    "ClientStage",
    "EncryptedShare",
    "GroupAbandoned",
    "GroupParams",
    "GroupServer",
    "GroupState",
    "InvalidParameters",
    "LateMessage",
    "MalformedMessage",
    "MaskedInput",
    "Message",
    "NotInGroup",
    "OutOfField",
    "OutOfOrder",
    "ReplayedMessage",
    "SecAggClient",
    "SecAggError",
    "ShareKeys",
    "Stage",
    "UnmaskRequest",
    "Unmasking",
    "WeakSeed",
    "WrongSize",
    "default_degree",
    "default_threshold",
    "dropout_threshold",
    "expand_mask",
    "exposure",
]
