"""The stream of a conversation that does not exist yet: it waits for the first message.

A client may open the stream before anyone posts (a second device following a fresh id), and
``EventSource`` gives up for good on a 404, so the stream stays open with keep-alives instead.
It subscribes to the conversation's live notices first and checks for the conversation
second, so a first message posted in between is not missed; any notice (or a gap in the
subscription) makes it check again. Then the caller checks who owns the conversation, since
whoever posted first owns it, and streams it from its beginning.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from broker.engine.conversations import Conversations
from broker.front.streaming.feed import DRAIN_RETRY_MS, TOKEN_EXPIRED
from broker.front.streaming.hub import CLOSED, Hub
from broker.front.streaming.sse import KEEPALIVE, retry_frame


class Waiting:
    """Keep-alives until ``cid`` exists; ``created`` then says whether it does (False: the
    stream ended first, its last frame sent)."""

    def __init__(
        self, conversations: Conversations, hub: Hub, cid: str, expires_at: float | None
    ) -> None:
        self._conversations = conversations
        self._hub = hub
        self._cid = cid
        self._expires_at = expires_at
        self.created = False

    async def frames(self) -> AsyncIterator[bytes]:
        async with self._hub.subscribe(self._cid) as subscription:
            if await self._conversations.exists(self._cid):
                self.created = True
                return
            while True:
                items = await subscription.receive()
                if self._expires_at is not None and time.time() >= self._expires_at:
                    yield TOKEN_EXPIRED
                    return
                if not items:
                    yield KEEPALIVE
                    continue
                if any(item is CLOSED for item in items):
                    yield retry_frame(DRAIN_RETRY_MS)
                    return
                if await self._conversations.exists(self._cid):
                    self.created = True
                    return
