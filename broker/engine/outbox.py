"""The outbox: one notice per finished run (``broker.core.finished``), read by consumer groups,
and the finished runs its notices name, read back from their conversations.

It is one stream per shard (as many as the jobs queue has): a conversation's notices go to one
of them, in order, and a consumer reads every shard, each with leases of its own.
"""

from __future__ import annotations

from broker.core.finished import WEBHOOK_GROUP, FinishedRun, RunEnded, notice_encoder
from broker.core.ids import format_stream_id
from broker.core.settings import Settings
from broker.engine.connections import Client
from broker.engine.conversations import Conversations
from broker.engine.keys import Keys
from broker.engine.queue import Leases
from broker.engine.scripts import Scripts


class Outbox:
    def __init__(
        self,
        client: Client,
        keys: Keys,
        scripts: Scripts,
        conversations: Conversations,
        settings: Settings,
    ) -> None:
        self._redis = client
        self._keys = keys
        self._scripts = scripts
        self._conversations = conversations
        # The cap is for the whole outbox: each shard keeps its share.
        self._maxlen = max(1, -(-settings.outbox_maxlen // len(keys.outbox_streams)))

    async def add(self, notice: RunEnded) -> None:
        """Add a finished run's notice, retried through a Redis outage like the run
        transitions; the cap trims the oldest notices."""
        data = notice_encoder.encode(notice)
        stream = self._keys.outbox_stream(notice.conversation_id)

        async def add() -> None:
            await self._redis.xadd(stream, {b"n": data}, maxlen=self._maxlen, approximate=True)

        await self._conversations.retried(add, "a run's notice")

    def _leases(self, group: str, consumer: str, start: str) -> dict[str, Leases]:
        return {
            stream: Leases(
                self._redis,
                self._scripts,
                stream,
                consumer,
                field=b"n",
                group=group,
                start=start,
                delete=False,
            )
            for stream in self._keys.outbox_streams
        }

    def webhook_leases(self, consumer: str) -> dict[str, Leases]:
        """The webhook dispatcher's share of the deliveries, per shard. The group starts at its
        creation: runs that ended before a webhook was configured are not sent."""
        return self._leases(WEBHOOK_GROUP, consumer, "$")

    def tap_leases(self, group: str, consumer: str) -> dict[str, Leases]:
        """A tap's group, per shard: from the oldest notice still kept, so a new group copies
        the retained history too."""
        return self._leases(group, consumer, "0")

    async def finished_run(self, cid: str, run_id: str) -> FinishedRun | None:
        """The run's entries from its user message through its terminal event; None when the
        run is unknown (expired with its conversation) or not finished."""
        record = await self._conversations.run(cid, run_id)
        if record is None or not record.ended:
            return None
        first, last = record.message_event_id, record.terminal_event_id
        if not first or not last:
            return None
        entries = await self._conversations.run_entries(cid, run_id, first, last)
        complete = bool(entries) and format_stream_id(entries[0].pos) == first
        return FinishedRun(
            cid,
            run_id,
            record.state.value,
            record.model,
            record.assistant_message_id,
            last,
            entries,
            complete,
        )
