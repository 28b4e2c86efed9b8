"""The privacy ledger: every DP event composed so far, JSON-serialisable and rebuilt after restart.

Composition commutes, so the ledger keeps *counts of distinct events* (one entry for a job
whose versions all cost the same) rather than one entry per version: it stays a few hundred
bytes however many versions are made, and ``SelfComposedDpEvent(event, count)`` lets an
accountant compose a count in O(log count) instead of one by one. The JSON names events by a
closed list of dp-accounting classes; nothing read back is imported by name.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import dp_accounting as dpa

LEDGER_FORMAT = 1


@dataclass(frozen=True)
class PrivacyLedger:
    """The events of ``versions`` published versions, as ``(event, count)`` pairs.

    Immutable: :meth:`record` returns a new ledger, so the service can store the ledger of a
    version in the same transaction as the version and nothing else.
    """

    versions: int = 0
    counts: tuple[tuple[dpa.DpEvent, int], ...] = ()

    def record(self, event: dpa.DpEvent, *, versions: int = 1) -> PrivacyLedger:
        """The ledger after ``versions`` more versions that each add ``event``.

        A ``NoOpDpEvent`` (a version that releases nothing about a device not yet counted,
        as in the capped model between two windows) advances the version count only.
        """
        if versions < 0:
            raise ValueError(f"versions must be >= 0, got {versions}")
        if isinstance(event, dpa.NoOpDpEvent) or versions == 0:
            return PrivacyLedger(self.versions + versions, self.counts)
        counts = dict(self.counts)
        counts[event] = counts.get(event, 0) + versions
        return PrivacyLedger(self.versions + versions, tuple(counts.items()))

    @property
    def compositions(self) -> int:
        """How many events were composed (releases that can involve a device)."""
        return sum(count for _, count in self.counts)

    def as_event(self) -> dpa.DpEvent:
        """One ``DpEvent`` for everything composed so far (``NoOpDpEvent`` when empty)."""
        if not self.counts:
            return dpa.NoOpDpEvent()
        parts = [dpa.SelfComposedDpEvent(event, count) for event, count in self.counts]
        return parts[0] if len(parts) == 1 else dpa.ComposedDpEvent(parts)

    def to_json(self) -> str:
        """The ledger as JSON text, to store beside the version it accounts for."""
        return json.dumps(
            {
                "format": LEDGER_FORMAT,
                "versions": self.versions,
                "events": [
                    {"count": count, "event": _encode(event)} for event, count in self.counts
                ],
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> PrivacyLedger:
        """The ledger :meth:`to_json` wrote; raises ``ValueError`` for anything else."""
        try:
            data = json.loads(text)
            if data["format"] != LEDGER_FORMAT:
                raise ValueError(f"unknown ledger format {data['format']!r}")
            counts = tuple((_decode(item["event"]), int(item["count"])) for item in data["events"])
            versions = int(data["versions"])
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a privacy ledger: {exc}") from exc
        if versions < 0 or any(count < 1 for _, count in counts):
            raise ValueError("not a privacy ledger: negative versions or a count below 1")
        return cls(versions, counts)


def _encode(event: dpa.DpEvent) -> dict[str, Any]:
    if isinstance(event, dpa.GaussianDpEvent):
        return {"type": "gaussian", "noise_multiplier": float(event.noise_multiplier)}
    if isinstance(event, dpa.PoissonSampledDpEvent):
        return {
            "type": "poisson_sampled",
            "sampling_probability": float(event.sampling_probability),
            "event": _encode(event.event),
        }
    if isinstance(event, dpa.SampledWithoutReplacementDpEvent):
        return {
            "type": "sampled_without_replacement",
            "source_dataset_size": int(event.source_dataset_size),
            "sample_size": int(event.sample_size),
            "event": _encode(event.event),
        }
    if isinstance(event, dpa.SelfComposedDpEvent):
        return {"type": "self_composed", "count": int(event.count), "event": _encode(event.event)}
    if isinstance(event, dpa.ComposedDpEvent):
        return {"type": "composed", "events": [_encode(inner) for inner in event.events]}
    raise ValueError(f"the ledger does not store {type(event).__name__}")


_DECODERS: Mapping[str, Callable[[Mapping[str, Any]], dpa.DpEvent]] = {
    "gaussian": lambda d: dpa.GaussianDpEvent(float(d["noise_multiplier"])),
    "poisson_sampled": lambda d: dpa.PoissonSampledDpEvent(
        float(d["sampling_probability"]), _decode(d["event"])
    ),
    "sampled_without_replacement": lambda d: dpa.SampledWithoutReplacementDpEvent(
        int(d["source_dataset_size"]), int(d["sample_size"]), _decode(d["event"])
    ),
    "self_composed": lambda d: dpa.SelfComposedDpEvent(_decode(d["event"]), int(d["count"])),
    "composed": lambda d: dpa.ComposedDpEvent([_decode(inner) for inner in d["events"]]),
}


def _decode(data: Mapping[str, Any]) -> dpa.DpEvent:
    decoder = _DECODERS.get(data["type"])
    if decoder is None:
        raise ValueError(f"unknown event type {data['type']!r}")
    return decoder(data)
