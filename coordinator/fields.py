"""The field types every configuration model of the coordinator uses (job, privacy section).

JSON Schema's numbers: ``Count`` and ``Amount`` take 3 and 3.0 but not ``false``, which
pydantic's lax int and float would take as 0. The bounded optional types keep their bound
inside the ``Annotated``, before the validator: written as ``Amount | None = Field(gt=0)``,
pydantic puts the bound into the OpenAPI schema as a bare ``gt`` that JSON Schema does not
know, so the spec would promise that 0 is accepted (the schemathesis run finds it).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


class Strict(BaseModel):
    """Unknown fields are an error: a typo in a config must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")


def _not_a_bool(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("a number, not a boolean")
    return value


Count = Annotated[int, BeforeValidator(_not_a_bool)]
Amount = Annotated[float, BeforeValidator(_not_a_bool)]
# For ``X | None`` fields, where a bound given to Field() would leave the schema (see above).
PositiveAmount = Annotated[float, Field(gt=0), BeforeValidator(_not_a_bool)]
Fraction = Annotated[float, Field(gt=0, le=1), BeforeValidator(_not_a_bool)]
PositiveCount = Annotated[int, Field(ge=1), BeforeValidator(_not_a_bool)]
NonNegativeCount = Annotated[int, Field(ge=0), BeforeValidator(_not_a_bool)]
