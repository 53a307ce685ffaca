"""Each subject's index of the conversations it owns: a sorted set by latest message.

The index is in another hash slot than the conversations it names (one per subject), so it is
only a pointer: it is written with a command of its own after the accept script (``ZADD GT``
makes a repeat or a late arrival harmless), and a listing reads the conversations' own meta
for what it shows, skipping (and removing) an entry whose conversation expired or changed
hands since. The index lives as long as its newest conversation may (its TTL renewed with each
message), and entries older than that are trimmed.
"""

from __future__ import annotations

from typing import NamedTuple

from broker.core.settings import Settings
from broker.engine.connections import Client
from broker.engine.conversations import Conversations, Summary
from broker.engine.keys import Keys

_READ_AHEAD = 16  # index entries read per round trip beyond what the page still needs


class Listed(NamedTuple):
    conversation_id: str
    last_activity_ms: int  # the index's score: its latest message, the list's order
    summary: Summary


class ConversationIndex:
    def __init__(
        self, client: Client, keys: Keys, conversations: Conversations, settings: Settings
    ) -> None:
        self._redis = client
        self._keys = keys
        self._conversations = conversations
        # A conversation lives at most this long after its latest message: the idle TTL,
        # renewed until its run ends.
        self._ttl_ms = int((settings.idle_ttl_seconds + settings.max_run_seconds) * 1000)

    async def record(self, subject: str, cid: str, at_ms: int) -> None:
        """Record in its owner's index that ``cid`` had a message at ``at_ms``."""
        key = self._keys.owned(subject)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {cid: at_ms}, gt=True)
            pipe.zremrangebyscore(key, "-inf", at_ms - self._ttl_ms)
            pipe.pexpire(key, self._ttl_ms)
            await pipe.execute()

    async def forget(self, subject: str, cid: str) -> None:
        await self._redis.zrem(self._keys.owned(subject), cid)

    async def page(
        self, subject: str, limit: int, after: tuple[int, str] | None
    ) -> tuple[list[Listed], bool]:
        """Up to ``limit`` of ``subject``'s conversations ('' for those nobody owns), newest
        activity first, after the position ``after`` (score, id) of a previous page's last;
        and whether more follow."""
        key = self._keys.owned(subject)
        top: int | str = after[0] if after is not None else "+inf"
        found: list[Listed] = []
        stale: list[str] = []
        offset = 0
        while len(found) <= limit:
            want = limit + 1 - len(found) + _READ_AHEAD
            raw = await self._redis.zrevrangebyscore(
                key, top, "-inf", start=offset, num=want, withscores=True
            )
            offset += len(raw)
            entries = [(member.decode(), int(score)) for member, score in raw]
            if after is not None:
                # Equal scores come in descending id order: the last page ended at its id.
                entries = [(c, s) for c, s in entries if s != after[0] or c < after[1]]
            summaries = await self._conversations.summaries([cid for cid, _ in entries])
            for (cid, score), summary in zip(entries, summaries, strict=True):
                if summary is None or summary.owner != subject:
                    stale.append(cid)  # expired, or deleted and created again by someone else
                    continue
                found.append(Listed(cid, score, summary))
            if len(raw) < want:
                break
        if stale:
            await self._redis.zrem(key, *stale)
        return found[:limit], len(found) > limit
