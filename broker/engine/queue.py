"""Leases: which worker holds which entry of a stream read through a consumer group.

Jobs are leased this way, and so are webhook deliveries (the outbox's ``webhook`` group).

A job's idle time in the pending list is its lease. The worker running a job renews it every
third of a lease; a job left idle for a whole lease is claimed by some worker. Both renewing
and releasing touch only entries this worker still holds: a worker paused past its lease
(a GC pause, a frozen VM, SIGSTOP) may find its jobs claimed by another worker when it wakes,
and then must neither take them back nor acknowledge them for the new holder. Renewing tells
it which jobs it lost, so it can abandon their runs at once, even while their model is silent.
"""

from __future__ import annotations

import redis.asyncio as aioredis
import redis.exceptions

GROUP = "workers"

# KEYS: jobs. ARGV: group, consumer, then entry ids. Renews (resets the idle time of) the ids
# still pending for this consumer and returns them; the others were claimed away or are gone.
_RENEW = """
local held = {}
local claim = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0}
for i = 3, #ARGV do
  if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2]) > 0 then
    held[#held + 1] = ARGV[i]
    claim[#claim + 1] = ARGV[i]
  end
end
if #held > 0 then
  claim[#claim + 1] = 'JUSTID'
  redis.call(unpack(claim))
end
return held
"""

# KEYS: the stream. ARGV: group, consumer, entry id, '1' to delete it. Done with an entry:
# acknowledged (and deleted, for jobs, which no other group reads), if this consumer still holds
# it (another worker that claimed it does that itself).
_RELEASE = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2]) == 0 then
  return 0
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
if ARGV[4] == '1' then redis.call('XDEL', KEYS[1], ARGV[3]) end
return 1
"""


class Leases:
    """The leases of one consumer (one worker process) of one stream's consumer group.

    ``start`` is where a new group begins reading; ``delete`` says whether a released entry is
    also deleted (jobs are; outbox notices are read by other groups too, so they are not).
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        key: str,
        consumer: str,
        *,
        group: str = GROUP,
        start: str = "0",
        delete: bool = True,
    ) -> None:
        self._redis = redis
        self._key = key
        self._consumer = consumer
        self._group = group
        self._start = start
        self._delete = "1" if delete else "0"
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(self._key, self._group, id=self._start, mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read_new(self, count: int, block_ms: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Up to ``count`` jobs nobody has taken yet, leased to this worker."""
        response = await self._redis.xreadgroup(
            self._group, self._consumer, {self._key: ">"}, count=count, block=block_ms
        )
        return [message for _, messages in response or () for message in messages]

    async def claim_lapsed(
        self, lease_ms: int, count: int
    ) -> list[tuple[bytes, dict[bytes, bytes] | None]]:
        """Jobs whose lease lapsed (their worker died or stalled), now leased to this worker.

        The caller skips any of its own live jobs among them: claiming one only renewed it.
        """
        _, claimed, *_ = await self._redis.xautoclaim(
            self._key, self._group, self._consumer, lease_ms, "0-0", count=count
        )
        return claimed

    async def renew(self, entries: list[bytes]) -> set[bytes]:
        """Renew the leases of ``entries`` this worker still holds; returns those it lost."""
        if not entries:
            return set()
        held = await self._renew(keys=[self._key], args=[self._group, self._consumer, *entries])
        return set(entries) - set(held)

    async def release(self, entry_id: bytes) -> None:
        """Done with an entry: acknowledge it, unless another worker holds it now."""
        await self._release(
            keys=[self._key], args=[self._group, self._consumer, entry_id, self._delete]
        )
