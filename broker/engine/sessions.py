"""Ended browser sessions: the token of a session cookie its page logged out of, refused as a
cookie until it expires, on every front.

A token is kept only as its digest, and only as long as it could be used (its ``exp``): the
denylist stays as small as the sessions ended in one token lifetime.
"""

from __future__ import annotations

import hashlib
import time

from broker.engine.connections import Client
from broker.engine.keys import Keys


class Sessions:
    def __init__(self, client: Client, keys: Keys) -> None:
        self._redis = client
        self._keys = keys

    def _key(self, token: str) -> str:
        return self._keys.ended_session(hashlib.sha256(token.encode()).hexdigest())

    async def end(self, token: str, expires_at: float) -> None:
        """Refuse ``token`` as a session cookie until ``expires_at`` (Unix seconds)."""
        if expires_at > time.time():
            await self._redis.set(self._key(token), b"1", pxat=int(expires_at * 1000) + 1)

    async def start(self, token: str) -> None:
        """The token's holder starts a session with it again (``POST /v1/session``)."""
        await self._redis.delete(self._key(token))

    async def ended(self, token: str) -> bool:
        return bool(await self._redis.exists(self._key(token)))
