"""Codec names, parsed: ``float32``, ``fp16``, ``rot{b}``, ``eden1``, ``fix{b}``, ``randk{P}+…``.

Grammar: ``[sparsifier "+"] values``; a stage is a family, a number, and optional
``:key=value,key=value`` parameters::

    float32 | fp16                      floats
    rot1 | rot2 | rot4 | rot8 [:chunk=N] rotation + b-bit on each piece's range
    eden1 [:chunk=N]                    rotation + 1 bit with EDEN's unbiased scale
    fix{b}:range=R [,chunk=N]           rotation + b-bit on the fixed range [−R, R]
    randk{P} [:chunk=N]                 keep P % of coordinates (0 < P < 100), seed-shared

``randk10`` alone sends the kept values as float32. Anything else is a :class:`CodecError`
that names what is wrong.
"""

from __future__ import annotations

import re

from fedge.codecs.codec import DEFAULT_SPARSE_CHUNK, Codec, Sparsity
from fedge.codecs.errors import CodecError
from fedge.codecs.sampling import PPM
from fedge.codecs.values import (
    DEFAULT_CHUNK,
    Eden,
    FixedRange,
    Float16,
    Float32,
    Rotated,
    ValueCodec,
)

_STAGE = re.compile(r"(?P<family>[a-z]+)(?P<number>[0-9]+(?:\.[0-9]+)?)?(?::(?P<params>.*))?\Z")
_FAMILIES = "float32, fp16, rot{1,2,4,8}, eden1, fix{b}:range=R, randk{P}"


def parse_codec(name: str) -> Codec:
    """The :class:`Codec` a name stands for; its ``name`` is the canonical spelling."""
    if not isinstance(name, str) or not name.strip():
        raise CodecError(f"a codec name is a non-empty string, got {name!r}")
    stages = name.strip().split("+")
    if len(stages) > 2:
        raise CodecError(f"codec {name!r}: at most one sparsifier then one value codec")
    if len(stages) == 1 and stages[0].startswith("randk"):
        stages.append("float32")
    sparsity = _sparsity(stages[0], name) if len(stages) == 2 else None
    return Codec(values=_values(stages[-1], name), sparsity=sparsity)


def _split(stage: str, name: str) -> tuple[str, str | None, dict[str, str]]:
    match = _STAGE.match(stage)
    if match is None:
        raise CodecError(f"codec {name!r}: cannot read {stage!r} (known: {_FAMILIES})")
    params: dict[str, str] = {}
    for item in (match["params"] or "").split(",") if match["params"] is not None else []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value or key in params:
            raise CodecError(f"codec {name!r}: parameter {item!r} is not a single key=value")
        params[key] = value
    return match["family"], match["number"], params


def _integer(name: str, key: str, value: str) -> int:
    if not value.isdigit():
        raise CodecError(f"codec {name!r}: {key} must be a positive integer, got {value!r}")
    return int(value)


def _only(name: str, params: dict[str, str], allowed: set[str]) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        taken = ", ".join(sorted(allowed)) or "none"
        raise CodecError(f"codec {name!r}: unknown parameter {unknown[0]!r} (takes: {taken})")


def _sparsity(stage: str, name: str) -> Sparsity:
    family, number, params = _split(stage, name)
    if family != "randk" or number is None:
        raise CodecError(
            f"codec {name!r}: the first of two stages must be randk{{P}}, got {stage!r}"
        )
    _only(name, params, {"chunk"})
    ppm = round(float(number) * PPM / 100)
    chunk = _integer(name, "chunk", params["chunk"]) if "chunk" in params else DEFAULT_SPARSE_CHUNK
    return Sparsity(ppm=ppm, chunk=chunk)


def _values(stage: str, name: str) -> ValueCodec:
    family, number, params = _split(stage, name)
    chunk = _integer(name, "chunk", params["chunk"]) if "chunk" in params else DEFAULT_CHUNK
    full = f"{family}{number or ''}"
    if full in ("float32", "fp16"):
        _only(name, params, set())
        return Float32() if full == "float32" else Float16()
    if family == "randk":
        raise CodecError(f"codec {name!r}: randk comes first, the value codec after the '+'")
    bits = _integer(name, "b", number) if number is not None else 0
    if family == "rot":
        _only(name, params, {"chunk"})
        return Rotated(width=bits, chunk_size=chunk)
    if family == "eden":
        _only(name, params, {"chunk"})
        if bits != 1:
            raise CodecError(f"codec {name!r}: eden sends one bit per value (eden1), got b={bits}")
        return Eden(chunk_size=chunk)
    if family == "fix":
        _only(name, params, {"chunk", "range"})
        if "range" not in params:
            raise CodecError(
                f"codec {name!r}: fix{{b}} needs its shared range, e.g. fix8:range=0.05"
            )
        try:
            limit = float(params["range"])
        except ValueError:
            raise CodecError(
                f"codec {name!r}: range must be a number, got {params['range']!r}"
            ) from None
        return FixedRange(width=bits, chunk_size=chunk, limit=limit)
    raise CodecError(f"unknown codec {stage!r} in {name!r} (known: {_FAMILIES})")
