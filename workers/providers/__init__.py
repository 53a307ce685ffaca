"""Model providers, by the model names clients send (see ``broker.models.CATALOGUE``)."""

from __future__ import annotations

from workers.providers.base import Provider
from workers.providers.simulated import SimulatedProvider


def default_providers() -> dict[str, Provider]:
    return {"simulated": SimulatedProvider()}
