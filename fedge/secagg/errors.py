"""Secure aggregation's errors: each names its reason, a short code a coordinator can answer with.

FedgeError
└── SecAggError                 (reason)
    ├── InvalidParameters       invalid_parameters: a group no protocol run can have
    ├── WeakSeed                weak_seed: a mask PRG seed shorter than 128 bits
    ├── MalformedMessage        malformed: a message that is not what its round takes
    │   ├── WrongSize           wrong_size: a key, share, ciphertext or vector of another size
    │   └── OutOfField          out_of_field: a value outside Z_p or Z_2^b
    ├── NotInGroup              not_in_group: a sender or recipient the group or round lacks
    ├── ReplayedMessage         replayed: a second message from one device in one round
    ├── LateMessage             late: a message for a round already closed
    ├── OutOfOrder              out_of_order: a message or call before its round
    ├── BadSignature            bad_signature: advertised keys not signed by their device
    ├── BadShare                bad_share: a share that does not decrypt or does not fit the others
    └── GroupAbandoned          abandoned: fewer than the threshold are left; no sum is given
"""

from __future__ import annotations

from typing import ClassVar

from fedge.errors import FedgeError


class SecAggError(FedgeError, ValueError):
    """Root of secure aggregation's errors; ``reason`` is a stable code, the message says why."""

    reason: ClassVar[str] = "secagg_error"


class InvalidParameters(SecAggError):
    """Group parameters that no run can have (threshold, degree, bits, members)."""

    reason = "invalid_parameters"


class WeakSeed(SecAggError):
    """A mask PRG seed shorter than 128 bits: its mask could be found by search."""

    reason = "weak_seed"


class MalformedMessage(SecAggError):
    """A message whose shape or content is not what its round takes."""

    reason = "malformed"


class WrongSize(MalformedMessage):
    """A key, signature, share, ciphertext or vector of another size than the group's."""

    reason = "wrong_size"


class OutOfField(MalformedMessage):
    """A share limb not below the prime, or a vector entry not below ``2^bits``."""

    reason = "out_of_field"


class NotInGroup(SecAggError):
    """A device that is not a member of the group, or not one this round still counts."""

    reason = "not_in_group"


class ReplayedMessage(SecAggError):
    """A second message from the same device in the same round."""

    reason = "replayed"


class LateMessage(SecAggError):
    """A message for a round the server has already closed."""

    reason = "late"


class OutOfOrder(SecAggError):
    """A message for a round not yet open, or a client step called before the one it follows."""

    reason = "out_of_order"


class BadSignature(SecAggError):
    """Advertised keys whose signature does not verify under the device's identity key."""

    reason = "bad_signature"


class BadShare(SecAggError):
    """A share that does not decrypt, or shares that do not lie on one polynomial."""

    reason = "bad_share"


class GroupAbandoned(SecAggError):
    """The group fell below its threshold: it is abandoned and gives no sum."""

    reason = "abandoned"
