"""Failed token checks per client address: past the limit within a minute, that address's
tokens are not checked at all until the minute ends, so nobody can try tokens as fast as a
front answers (nor make it fetch the JWKS for every made-up ``kid``).

The count is in Redis, one counter per address and minute, so a limit holds across fronts: a
failure costs one round trip (a request that passes costs nothing). Each front remembers the
addresses it saw go over until their minute ends; another front learns it at its own next
failure of that address, so all fronts together check at most the limit plus one token per
front in a minute.
"""

from __future__ import annotations

import logging
import math
import time

from broker.engine import UNAVAILABLE, Engine

log = logging.getLogger(__name__)

_MINUTE = 60.0
_PRUNE_AT = 10_000  # remembered addresses before the lapsed ones are dropped


class Lockout:
    def __init__(self, engine: Engine, limit: int) -> None:
        """``limit``: failed checks an address may make per minute (0: no limit)."""
        self._engine = engine
        self._limit = limit
        self._until: dict[str, float] = {}  # address -> end of its minute (Unix seconds)

    def retry_after(self, address: str) -> int | None:
        """Seconds until the address's tokens are checked again; None: they are checked now."""
        until = self._until.get(address)
        if until is None:
            return None
        left = until - time.time()
        if left <= 0:
            del self._until[address]
            return None
        return max(1, math.ceil(left))

    async def failed(self, address: str) -> None:
        """Count one failed token check of the address."""
        if self._limit <= 0:
            return
        try:
            count, until = await self._engine.limits.failed_authentication(address)
        except UNAVAILABLE:
            return  # the 401 goes out all the same; the check itself needed no Redis
        if count >= self._limit:
            if len(self._until) >= _PRUNE_AT:
                now = time.time()
                self._until = {a: u for a, u in self._until.items() if u > now}
            self._until[address] = until
            if count == self._limit:
                log.warning(
                    "%d failed token checks from %s within a minute: its tokens are refused "
                    "unchecked until the minute ends",
                    count,
                    address,
                )
