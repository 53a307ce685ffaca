"""The wake dispatcher: every worker delivers the wakes of Durable Streams subscriptions.

Subscriptions to look at are in the engine's ``due`` set, scored by when; a dispatcher takes
the due ones under a lease (a dispatcher that dies leaves them due again when it runs out),
looks at each in a task of its own (at most ``BROKER_DS_WAKE_CONCURRENCY`` at once) and then
settles it: done, or to be looked at again when a lease or a retry ends.

A look compares the subscription's cursors with its streams' tails; with pending work and no
wake or lease in flight, the issue script gives this dispatcher a new generation, its wake id
and token, and a delivery lease. Only the dispatcher that issued a generation delivers it, once:
a webhook (signed with the active Ed25519 key, the target's addresses checked again) or an
event appended to the pull-wake subscription's wake stream. A dispatcher that dies mid-delivery
lets its delivery lease lapse; the next look drops that generation (its token is no longer
current) and issues a new one, so no wake is lost and no generation is delivered twice. A
failed webhook is retried with backoff, 1 s doubling to 60 s with 20 % jitter, each attempt a
new generation, the subscription's status ``failed`` meanwhile.

One worker at a time also sweeps every subscription now and then (the lock in Redis runs
out by itself): the streams' tails against the cursors, the source of truth, so a wake whose
mark a dying front lost is only late, never lost.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import socket
import time
from urllib.parse import urlsplit

import anyio
import anyio.abc
import httpx
import msgspec

from broker.core import offsets
from broker.core.backoff import Backoff
from broker.core.settings import Settings
from broker.core.subscriptions import (
    SIGNATURE_HEADER,
    WEBHOOK,
    WakeEvent,
    WakeStream,
    WebhookAnswer,
    WebhookWake,
    address_allowed,
    backoff_seconds,
    sign,
)
from broker.engine import UNAVAILABLE, Engine
from broker.engine.subscriptions import Issued, LinkState, Subscription
from workers.slots import Freed

log = logging.getLogger(__name__)
_encoder = msgspec.json.Encoder()
_answer = msgspec.json.Decoder(WebhookAnswer)
_POLL_SECONDS = 0.05
_ROOT = "/v1/stream/"


class WakeDispatcher:
    def __init__(self, engine: Engine, settings: Settings, name: str) -> None:
        self._engine = engine
        self._subscriptions = engine.subscriptions
        self._settings = settings
        self._name = name
        self._looking: set[str] = set()
        # Subscriptions taken again while a look at them was in flight (marked by a write
        # meanwhile), with the lease they were taken under: looked at again when that look ends.
        self._retaken: dict[str, int] = {}
        self._slot_freed = Freed()
        # The lease of a look, and of a delivery: the webhook's time and a margin.
        self._lease_ms = int((settings.ds_webhook_timeout_seconds + 5) * 1000)
        self.delivered = 0  # wakes delivered by this dispatcher (a webhook or a wake event)

    async def run(self) -> None:
        """Deliver until cancelled; looks in flight then stay due for another dispatcher."""
        timeout = httpx.Timeout(self._settings.ds_webhook_timeout_seconds)
        async with (
            httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as http,
            anyio.create_task_group() as looks,
        ):
            self._http = http
            looks.start_soon(self._sweep)
            await self._take(looks)

    @property
    def _free(self) -> int:
        return self._settings.ds_wake_concurrency - len(self._looking)

    async def _take(self, looks: anyio.abc.TaskGroup) -> None:
        backoff = Backoff()
        while True:
            if self._free <= 0:
                await self._slot_freed.wait()
                continue
            try:
                due = await self._subscriptions.take_due(self._free, self._lease_ms)
            except UNAVAILABLE:
                log.warning("subscriptions unreachable; retrying in %.1fs", backoff.delay)
                await backoff.wait()
                continue
            backoff.reset()
            for digest, taken in due:
                if digest in self._looking:
                    self._retaken[digest] = taken
                else:
                    self._looking.add(digest)
                    looks.start_soon(self._look, digest, taken)
            if not due:
                await anyio.sleep(_POLL_SECONDS)

    async def _sweep(self) -> None:
        seconds = self._settings.ds_subscription_sweep_seconds
        while True:
            await anyio.sleep(seconds * random.uniform(0.8, 1.2))  # noqa: S311 (spreading only)
            try:
                if await self._subscriptions.sweep_lock(self._name, seconds * 0.9):
                    marked = await self._subscriptions.sweep()
                    if marked:
                        log.info("subscription sweep: %d subscription(s) with pending work", marked)
            except UNAVAILABLE:
                log.warning("subscription sweep: Redis unreachable")

    async def _look(self, digest: str, taken: int) -> None:
        again: int | None = None
        try:
            again = await self._look_at(digest)
            await self._subscriptions.settle(digest, taken, again)
            # Taken again while this look ran (a write marked it): what was written may be newer
            # than what this look saw, so it is due now, not when that lease runs out. No await
            # between the last check and leaving ``_looking``, so none is missed.
            while (retaken := self._retaken.pop(digest, None)) is not None:
                await self._subscriptions.settle(digest, retaken, int(time.time() * 1000))
        except UNAVAILABLE:
            # Left due: once its lease runs out, a dispatcher (maybe this one) looks again.
            log.warning("Redis unreachable; subscription %s left for later", digest)
        finally:
            self._looking.discard(digest)
            self._slot_freed.set()

    async def _look_at(self, digest: str) -> int | None:
        """Issue and deliver a wake if one is due; when to look again (None: when marked)."""
        subscription = await self._subscriptions.load(digest)
        if subscription is None:
            return None
        states = await self._subscriptions.states(subscription)
        pending = any(state.pending for state in states)
        issued = await self._subscriptions.issue(digest, self._name, self._lease_ms, pending)
        if issued.outcome in ("busy", "later"):
            return issued.until_ms
        if issued.outcome != "issued":
            return None
        if subscription.config.type == WEBHOOK:
            return await self._webhook(subscription, issued, states)
        return await self._wake_event(subscription, issued, states)

    async def _webhook(
        self, subscription: Subscription, issued: Issued, states: list[LinkState]
    ) -> int | None:
        config = subscription.config
        assert config.webhook_url is not None
        body = _encoder.encode(
            WebhookWake(
                subscription_id=subscription.id,
                wake_id=issued.wake_id,
                generation=issued.generation,
                streams=_wake_streams(states),
                callback_url=(
                    f"{subscription.base_url}{_ROOT}__ds/subscriptions/{subscription.id}/callback"
                ),
                callback_token=issued.token,
            )
        )
        answer, problem = await self._post(config.webhook_url, body)
        subscriptions = self._subscriptions
        now = int(time.time() * 1000)
        if problem is None and answer is not None and answer.done:
            acks = [(s.path, s.tail) for s in states if s.tail is not None and s.pending]
            await subscriptions.sent(subscription.digest, issued.generation, "done", acks=acks)
            self.delivered += 1
            return now  # new events since the snapshot wake it again
        if problem is None:
            await subscriptions.sent(subscription.digest, issued.generation, "sent")
            self.delivered += 1
            return now + config.lease_ttl_ms  # a callback must come before then
        attempts = subscription.attempts + 1
        wait = backoff_seconds(attempts, random.uniform(-1, 1))  # noqa: S311 (spreading only)
        retry_at = now + int(wait * 1000)
        log.warning(
            "webhook of subscription %s, attempt %d: %s; next in %.1fs",
            subscription.id,
            attempts,
            problem,
            wait,
        )
        await subscriptions.sent(
            subscription.digest, issued.generation, "failed", retry_at_ms=retry_at
        )
        return retry_at

    async def _post(self, url: str, body: bytes) -> tuple[WebhookAnswer | None, str | None]:
        """One attempt: the receiver's answer on a 2xx, or what went wrong."""
        problem = await self._check_target(url)
        if problem is not None:
            return None, problem
        kid, private = await self._subscriptions.signing_key()
        headers = {
            "content-type": "application/json",
            "user-agent": "llm-stream-broker",
            SIGNATURE_HEADER: sign(private, kid, body, int(time.time())),
        }
        with anyio.move_on_after(self._settings.ds_webhook_timeout_seconds) as scope:
            try:
                response = await self._http.post(url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                return None, f"no answer ({type(exc).__name__})"
        if scope.cancelled_caught:
            return None, "no answer in time"
        if not 200 <= response.status_code < 300:
            return None, f"HTTP {response.status_code}"
        try:
            return _answer.decode(response.content or b"{}"), None
        except msgspec.DecodeError:
            return WebhookAnswer(), None

    async def _check_target(self, url: str) -> str | None:
        """The webhook's host must still resolve to allowed addresses (DNS may have changed
        since the subscription was made)."""
        allow = self._settings.ds_webhook_allow_localhost
        parts = urlsplit(url)
        host = (parts.hostname or "").strip("[]")
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                infos = await anyio.getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
            except OSError:
                return "the host does not resolve"
            addresses = [ipaddress.ip_address(str(i[4][0]).split("%")[0]) for i in infos]
        if not all(address_allowed(a, allow_localhost=allow) for a in addresses):
            return "the host resolves to a private or local address: refused"
        return None

    async def _wake_event(
        self, subscription: Subscription, issued: Issued, states: list[LinkState]
    ) -> int | None:
        """Append the wake event to the subscription's wake stream (one its owner may write)."""
        config = subscription.config
        assert config.wake_stream is not None
        streams = self._engine.streams
        meta = await streams.meta(config.wake_stream)
        now = int(time.time() * 1000)
        if (
            meta is None
            or meta.is_deleted
            or not self._subscriptions.may_read(meta.owner, subscription.owner, subscription.admin)
        ):
            attempts = subscription.attempts + 1
            retry_at = now + int(backoff_seconds(attempts, 0) * 1000)
            log.warning("subscription %s: no wake stream it may write", subscription.id)
            await self._subscriptions.sent(
                subscription.digest, issued.generation, "failed", retry_at_ms=retry_at
            )
            return retry_at
        first = next((state.path for state in states if state.pending), None)
        event = _encoder.encode(WakeEvent("wake", subscription.id, first, issued.generation, now))
        appended = await streams.append(
            config.wake_stream, meta.ctn, [event], close=False, seq="", producer=None
        )
        if appended.linked:
            await self._subscriptions.changed(config.wake_stream, appended.linked)
        await self._subscriptions.sent(subscription.digest, issued.generation, "sent")
        self.delivered += 1
        return None


def _wake_streams(states: list[LinkState]) -> list[WakeStream]:
    return [
        WakeStream(
            state.path,
            state.kind,  # type: ignore[arg-type]
            offsets.encode(state.acked),
            offsets.encode(state.tail if state.tail is not None else state.acked),
            state.pending,
        )
        for state in states
    ]
