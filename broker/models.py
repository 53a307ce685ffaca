"""The models clients may ask for, and the params each accepts.

The front tier checks a request against this catalogue before it accepts a run, so an unknown
model or a bad parameter is refused with a 422 and nothing is written.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

DEFAULT_MODEL = "simulated"


class SimulatedParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The built-in model: deterministic words, no network."""

    tokens: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 60
    interval_ms: Annotated[float, msgspec.Meta(ge=0, le=60_000)] = 20
    seed: int | str | None = None
    reasoning_tokens: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 0


CATALOGUE: dict[str, type[msgspec.Struct]] = {"simulated": SimulatedParams}


class UnknownModel(Exception):
    pass


def check_params(model: str, params: dict[str, Any]) -> msgspec.Struct:
    """Validate ``params`` for ``model``; raises UnknownModel or msgspec.ValidationError."""
    params_type = CATALOGUE.get(model)
    if params_type is None:
        raise UnknownModel(model)
    return msgspec.convert(params, params_type)
