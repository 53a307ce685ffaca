"""The open streams of this front process, counted three ways, each with its bound: per
conversation (``BROKER_MAX_STREAMS_PER_CONVERSATION``), per client address
(``BROKER_MAX_STREAMS_PER_ADDRESS``, whatever subjects it holds tokens of) and in all
(``BROKER_MAX_STREAMS``). The per-subject count across fronts is the limits' (in Redis); these
are local, and cost nothing but a dictionary lookup."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from broker.core.errors import FRONT_FULL, TOO_MANY_STREAMS, ApiError
from broker.core.settings import Settings

_RETRY_SECONDS = "5"


def _streams(count: int) -> str:
    return f"{count} open stream{'' if count == 1 else 's'}"


class OpenStreams:
    def __init__(self, settings: Settings, on_change: Callable[[int], None]) -> None:
        """``on_change`` is told each change of the total (the open-streams gauge)."""
        self._per_conversation = settings.max_streams_per_conversation
        self._per_address = settings.max_streams_per_address
        self._in_all = settings.max_streams
        self._on_change = on_change
        self._conversations: Counter[str] = Counter()
        self._addresses: Counter[str] = Counter()
        self.total = 0

    def admit(self, cid: str, address: str) -> Callable[[], None]:
        """Count a new stream of conversation (or Durable Stream) ``cid`` from ``address``, or
        refuse it; returns the call that releases it."""
        if self._in_all and self.total >= self._in_all:
            raise ApiError(
                FRONT_FULL,
                f"this front holds {_streams(self.total)}, its most; another may take it",
                {"Retry-After": _RETRY_SECONDS},
            )
        here = self._conversations[cid]
        if here >= self._per_conversation:
            raise ApiError(
                TOO_MANY_STREAMS,
                f"this conversation already has {_streams(here)} here",
                {"Retry-After": _RETRY_SECONDS},
            )
        mine = self._addresses[address]
        if self._per_address and mine >= self._per_address:
            raise ApiError(
                TOO_MANY_STREAMS,
                f"this client address already has {_streams(mine)} here",
                {"Retry-After": _RETRY_SECONDS},
            )
        self._conversations[cid] += 1
        self._addresses[address] += 1
        self.total += 1
        self._on_change(1)

        def release() -> None:
            self.total -= 1
            self._on_change(-1)
            for counts, key in ((self._conversations, cid), (self._addresses, address)):
                counts[key] -= 1
                if not counts[key]:
                    del counts[key]

        return release
