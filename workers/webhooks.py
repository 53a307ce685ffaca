"""The webhook dispatcher: every worker POSTs finished runs to ``BROKER_WEBHOOK_URL``.

It reads the outbox (``broker.engine.outbox``) through the ``webhook`` consumer group, so the
workers share the deliveries, and runs apart from the generations: its own task group and HTTP
client, one task per delivery, at most ``BROKER_WEBHOOK_CONCURRENCY`` at once. A slow or dead
receiver holds deliveries, never a run or a token.

A delivery is retried with doubling backoff until a 2xx answer or until
``BROKER_WEBHOOK_RETRY_SECONDS`` after its run ended (then it is given up, with an error in the
log), and only then acknowledged. Until then its notice stays pending in the group: the
dispatcher renews it like a job lease, and a notice whose dispatcher died is claimed by another
worker's. So a delivery survives the crash of any process; it may then be POSTed again, with
the same ``Broker-Delivery-Id``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import anyio
import anyio.abc
import httpx
import msgspec

from broker.core.backoff import Backoff
from broker.core.finished import notice_decoder
from broker.core.settings import Settings
from broker.core.webhook import (
    ATTEMPT_HEADER,
    DELIVERY_ID_HEADER,
    SIGNATURE_HEADER,
    signature,
    webhook_body,
    webhook_encoder,
)
from broker.engine import UNAVAILABLE, Engine
from broker.engine.queue import Handed, Leases
from workers.slots import Freed

log = logging.getLogger(__name__)


class WebhookDispatcher:
    def __init__(self, engine: Engine, settings: Settings, consumer: str) -> None:
        self._engine = engine
        self._settings = settings
        self._leases = engine.outbox.webhook_leases(consumer)  # one per outbox shard
        # Notices being delivered here, by (shard, entry id), each in its own scope: their
        # leases are renewed, and a delivery whose lease was taken over is cancelled.
        self._held: dict[tuple[str, bytes], anyio.CancelScope] = {}
        self._slot_freed = Freed()

    async def run(self) -> None:
        """Deliver until cancelled; deliveries in flight then stay pending for another worker."""
        settings = self._settings
        timeout = settings.webhook_timeout_seconds
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(timeout), follow_redirects=False) as http,
            anyio.create_task_group() as deliveries,
        ):
            self._http = http
            deliveries.start_soon(self._renew)
            deliveries.start_soon(self._reclaim, deliveries)
            for shard in self._leases:
                deliveries.start_soon(self._read, deliveries, shard)

    @property
    def _free(self) -> int:
        return self._settings.webhook_concurrency - len(self._held)

    async def _read(self, deliveries: anyio.abc.TaskGroup, shard: str) -> None:
        leases = self._leases[shard]
        backoff = Backoff()
        group_ready = False
        while True:
            if self._free <= 0:
                await self._slot_freed.wait()
                continue
            try:
                if not group_ready:
                    await leases.ensure_group()
                    group_ready = True
                entries = await leases.read_new(self._free, self._settings.job_block_ms)
            except UNAVAILABLE:
                log.warning("outbox unreachable; retrying in %.1fs", backoff.delay)
                await backoff.wait()
                continue
            backoff.reset()
            self._start(deliveries, shard, entries)

    def _start(
        self, deliveries: anyio.abc.TaskGroup, shard: str, entries: Sequence[Handed]
    ) -> None:
        for entry_id, payload in entries:
            if (shard, entry_id) not in self._held:  # claiming its own only renewed its lease
                self._held[shard, entry_id] = anyio.CancelScope()
                deliveries.start_soon(self._deliver, shard, entry_id, payload)

    async def _renew(self) -> None:
        """Keep this dispatcher's deliveries looking alive: their idle time is their lease."""
        while True:
            await anyio.sleep(self._settings.lease_seconds / 3)
            for shard, leases in self._leases.items():
                held = [entry for of, entry in self._held if of == shard]
                if not held:
                    continue
                try:
                    lost = await leases.renew(held)
                except UNAVAILABLE:
                    log.warning("could not renew webhook delivery leases")
                    continue
                for entry_id in lost:
                    scope = self._held.get((shard, entry_id))
                    if scope is not None:
                        log.warning("webhook delivery %s was taken over; abandoning it", entry_id)
                        scope.cancel()

    async def _reclaim(self, deliveries: anyio.abc.TaskGroup) -> None:
        """Take over the deliveries of dispatchers that died."""
        lease_ms = int(self._settings.lease_seconds * 1000)
        while True:
            await anyio.sleep(self._settings.reap_interval_seconds)
            for shard, leases in self._leases.items():
                if self._free <= 0:
                    break
                try:
                    claimed = await leases.claim_lapsed(lease_ms, self._free)
                except UNAVAILABLE:
                    continue
                taken = [entry for entry in claimed if (shard, entry[0]) not in self._held]
                if taken:
                    log.warning("took over %d webhook delivery(ies) of a lost worker", len(taken))
                    self._start(deliveries, shard, taken)

    async def _deliver(self, shard: str, entry_id: bytes, payload: bytes | None) -> None:
        leases = self._leases[shard]
        try:
            with self._held[shard, entry_id]:
                if await self._try_delivering(leases, entry_id, payload):
                    await leases.release(entry_id)
        except UNAVAILABLE:
            # Left pending: once its lease lapses, a dispatcher (maybe this one) takes it again.
            log.warning("Redis unreachable; webhook delivery %s left for later", entry_id)
        finally:
            del self._held[shard, entry_id]
            self._slot_freed.set()

    async def _try_delivering(self, leases: Leases, entry_id: bytes, payload: bytes | None) -> bool:
        """Deliver one notice's run until done or given up; True when it may be acknowledged."""
        try:
            notice = notice_decoder.decode(payload) if payload else None
        except msgspec.DecodeError:
            notice = None
        if notice is None:
            log.error("dropping a malformed or trimmed outbox entry %s", entry_id)
            return True
        run = await self._engine.outbox.finished_run(notice.conversation_id, notice.run_id)
        if run is None:
            log.error("run %s is gone from Redis: its webhook is not sent", notice.run_id)
            return True
        body = webhook_encoder.encode(webhook_body(run))
        # Retried until this long after the run ended (the notice's id is when it was written).
        give_up_at = int(entry_id.split(b"-")[0]) / 1000 + self._settings.webhook_retry_seconds
        backoff = self._settings.webhook_backoff_seconds
        attempt = 0
        while True:
            attempt += 1
            problem = await self._post(body, notice.run_id, attempt)
            if problem is None:
                log.debug("delivered run %s (attempt %d)", notice.run_id, attempt)
                return True
            if time.time() + backoff > give_up_at:
                log.error(
                    "gave up the webhook of run %s after %d attempt(s): %s",
                    notice.run_id,
                    attempt,
                    problem,
                )
                return True
            log.warning(
                "webhook of run %s, attempt %d: %s; next in %gs",
                notice.run_id,
                attempt,
                problem,
                backoff,
            )
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, self._settings.webhook_backoff_max_seconds)
            if await leases.renew([entry_id]):
                # Paused past its lease: another dispatcher has it now and sends it itself.
                log.warning("webhook delivery %s was taken over; abandoning it", entry_id)
                return False

    async def _post(self, body: bytes, delivery_id: str, attempt: int) -> str | None:
        """One attempt; None on a 2xx answer, else what went wrong (never the URL: it may hold
        a token)."""
        settings = self._settings
        headers = {
            "content-type": "application/json",
            "user-agent": "llm-stream-broker",
            DELIVERY_ID_HEADER: delivery_id,
            ATTEMPT_HEADER: str(attempt),
            SIGNATURE_HEADER: signature(settings.webhook_secret, body),
        }
        status = 0
        with anyio.move_on_after(settings.webhook_timeout_seconds) as scope:
            try:
                async with self._http.stream(
                    "POST", settings.webhook_url, content=body, headers=headers
                ) as response:
                    status = response.status_code  # the answer's body is of no interest
            except httpx.HTTPError as exc:
                return f"no answer ({type(exc).__name__})"
        if scope.cancelled_caught:
            return f"no answer within {settings.webhook_timeout_seconds:g} s"
        if 200 <= status < 300:
            return None
        return f"HTTP {status}"
