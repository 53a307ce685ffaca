"""The systems the benchmark runs side by side, and what the harness needs to know of each.

A scenario speaks one of two protocols to its server: ``conversation`` (the broker's API
version 1: ``GET /v1/conversations/{cid}/stream``, frames with an ``id:``, ``Last-Event-ID``) or
``ds`` (Durable Streams: ``/v1/stream/{name}``, appends by ``POST``, ``live=sse`` reads). A
system serves one or both; the benchmark runs a scenario against every selected system that
serves its protocol, with the same load processes, the same appender schedule and the same
accounting.

A system's *server CPU* is what it needs to serve the load: its server process and, when the
system keeps its state in Redis, Redis as well (the broker's front and Redis; resumable-stream's
Node process and Redis; the Durable Streams reference server alone, which keeps its streams in
its own memory).
"""

from __future__ import annotations

from dataclasses import dataclass

CONVERSATION = "conversation"
DS = "ds"


@dataclass(frozen=True)
class System:
    name: str
    protocols: tuple[str, ...]
    uses_redis: bool
    # How its Redis connections are named (``<this>:front:<pid>``), to count them; None: none.
    redis_client: str | None
    # The Node server under scripts/bench/peers/ that runs it; None: a Python front.
    node_script: str | None = None

    @property
    def is_peer(self) -> bool:
        return self.node_script is not None


SYSTEMS: tuple[System, ...] = (
    System("broker", (CONVERSATION, DS), uses_redis=True, redis_client="broker"),
    System("naive", (CONVERSATION,), uses_redis=True, redis_client="naive"),
    System(
        "resumable-stream",
        (CONVERSATION,),
        uses_redis=True,
        redis_client="resumable-stream",
        node_script="resumable_stream_server.mjs",
    ),
    System(
        "ds-reference",
        (DS,),
        uses_redis=False,
        redis_client=None,
        node_script="durable_streams_server.mjs",
    ),
)


def system(name: str) -> System:
    for candidate in SYSTEMS:
        if candidate.name == name:
            return candidate
    raise KeyError(name)


def peers() -> tuple[System, ...]:
    return tuple(s for s in SYSTEMS if s.is_peer)
