"""The outbox stream: one notice per finished run (``broker.core.finished``), read by consumer
groups, and the finished runs its notices name, read back from their conversations."""

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
        self._key = keys.outbox
        self._scripts = scripts
        self._conversations = conversations
        self._maxlen = settings.outbox_maxlen

    async def add(self, notice: RunEnded) -> None:
        """Add a finished run's notice, retried through a Redis outage like the run
        transitions; the cap trims the oldest notices."""
        data = notice_encoder.encode(notice)

        async def add() -> None:
            await self._redis.xadd(self._key, {b"n": data}, maxlen=self._maxlen, approximate=True)

        await self._conversations.retried(add, "a run's notice")

    def webhook_leases(self, consumer: str) -> Leases:
        """The webhook dispatcher's share of the deliveries. The group starts at its creation:
        runs that ended before a webhook was configured are not sent."""
        return Leases(
            self._redis,
            self._scripts,
            self._key,
            consumer,
            field=b"n",
            group=WEBHOOK_GROUP,
            start="$",
            delete=False,
        )

    def tap_leases(self, group: str, consumer: str) -> Leases:
        """A tap's group: from the oldest notice still kept, so a new group copies the
        retained history too."""
        return Leases(
            self._redis, self._scripts, self._key, consumer, field=b"n", group=group, delete=False
        )

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
