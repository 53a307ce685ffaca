"""Limits per subject: what each request costs, and the answer when one is over its limit.

The counting is the engine's (``broker.engine.limits``), in Redis, so every front enforces one
limit, not one each. Here: which limits a request meets (by the ``Cost`` its route declares;
admins meet none), the 429 answers with their ``Retry-After``, and the leases of this front's
open streams, renewed together and dropped when a stream ends.
"""

from __future__ import annotations

import logging
import math
import time
from enum import Enum

import anyio

from broker.core.errors import (
    RATE_LIMITED,
    STORAGE_QUOTA_EXCEEDED,
    TOO_MANY_CONVERSATIONS,
    TOO_MANY_RUNS,
    TOO_MANY_STREAMS,
    TOO_MANY_STREAMS_CREATED,
    ApiError,
)
from broker.core.settings import Settings
from broker.engine import UNAVAILABLE, Engine
from broker.engine.limits import (
    Admitted,
    Over,
    Quota,
    Refusal,
    StreamLease,
    WriteOver,
    WriteQuota,
)
from broker.front.security.principal import Principal

log = logging.getLogger(__name__)

_DAY_MS = 86_400_000
_RETRY_STREAMS_SECONDS = 5
_RETRY_RUNS_SECONDS = 5


class Cost(Enum):
    """What a route costs its subject, besides one request."""

    REQUEST = "request"
    STREAM = "stream"  # holds one of the subject's open streams until it ends
    POST = "post"  # one post, and a run of the conversation in the path


def _plural(count: int, one: str, many: str) -> str:
    return one if count == 1 else many


class StreamLeases:
    """The leases of this front's open streams: renewed together, dropped when a stream ends.

    Renewals and drops go out in one round trip per wake-up, from one task owned by the app's
    lifespan; ending a stream only records it, so it costs the stream's response nothing.
    """

    def __init__(self, engine: Engine, lease_seconds: float) -> None:
        self._engine = engine
        self._renew_every = lease_seconds / 3
        self._open: dict[str, StreamLease] = {}  # by stream id
        self._ended: list[StreamLease] = []
        self._wakeup = anyio.Event()

    def hold(self, lease: StreamLease) -> None:
        self._open[lease.stream_id] = lease

    def release(self, lease: StreamLease) -> None:
        if self._open.pop(lease.stream_id, None) is not None:
            self._ended.append(lease)
            self._wakeup.set()

    @property
    def count(self) -> int:
        return len(self._open)

    async def run(self) -> None:
        next_renewal = anyio.current_time() + self._renew_every
        try:
            while True:
                with anyio.move_on_at(next_renewal):
                    await self._wakeup.wait()
                renew = anyio.current_time() >= next_renewal
                if renew:
                    next_renewal = anyio.current_time() + self._renew_every
                await self._flush(renew)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await self._flush(renew=False)

    async def _flush(self, renew: bool) -> None:
        self._wakeup = anyio.Event()
        ended, self._ended = self._ended, []
        if not ended and not (renew and self._open):
            return
        try:
            await self._engine.limits.update_leases(
                ended, list(self._open.values()) if renew else None
            )
        except UNAVAILABLE:
            # Dropped leases run out by themselves; the next renewal tries again.
            log.warning("could not update stream leases: Redis unreachable")


class Limits:
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings
        self.leases = StreamLeases(engine, settings.stream_lease_seconds)
        self._any = any(
            (
                settings.limit_requests_per_minute,
                settings.limit_posts_per_minute,
                settings.limit_streams_per_subject,
                settings.limit_active_runs_per_subject,
            )
        )

    def counts(self, principal: Principal) -> bool:
        """Whether a request of this principal is counted at all (admins meet no limit)."""
        return self._any and not principal.admin

    def quota(self, cost: Cost, cid: str | None) -> Quota:
        settings = self._settings
        posting = cost is Cost.POST and cid is not None
        return Quota(
            requests_per_minute=settings.limit_requests_per_minute,
            posts_per_minute=settings.limit_posts_per_minute if posting else 0,
            streams=settings.limit_streams_per_subject if cost is Cost.STREAM else 0,
            active_runs=settings.limit_active_runs_per_subject if posting else 0,
            conversation=cid if posting else None,
        )

    def settle(self, verdict: Admitted | Refusal) -> StreamLease | None:
        """Raise the refusal, or hold and return the stream lease taken (if any)."""
        if isinstance(verdict, Admitted):
            if verdict.lease is not None:
                self.leases.hold(verdict.lease)
            return verdict.lease
        settings = self._settings
        if verdict.over in (Over.REQUESTS, Over.POSTS):
            if verdict.over is Over.REQUESTS:
                limit = settings.limit_requests_per_minute
                what = _plural(limit, "request", "requests")
            else:
                limit = settings.limit_posts_per_minute
                what = _plural(limit, "message", "messages")
            raise ApiError(
                RATE_LIMITED,
                f"more than {limit} {what} a minute",
                {"Retry-After": str(max(1, math.ceil(verdict.retry_after_ms / 1000)))},
            )
        if verdict.over is Over.STREAMS:
            limit = settings.limit_streams_per_subject
            raise ApiError(
                TOO_MANY_STREAMS,
                f"{limit} {_plural(limit, 'stream is', 'streams are')} open already; close one",
                {"Retry-After": str(_RETRY_STREAMS_SECONDS)},
            )
        limit = settings.limit_active_runs_per_subject
        raise ApiError(
            TOO_MANY_RUNS,
            f"{limit} {_plural(limit, 'answer is', 'answers are')} being generated already; "
            "wait for one to end or cancel it",
            {"Retry-After": str(_RETRY_RUNS_SECONDS)},
        )

    def creation_counter(self, principal: Principal) -> str | None:
        """The counter a new conversation of this principal is counted on (None: not
        counted), for the round trip that checks the conversation before posting."""
        if self._settings.limit_conversations_per_day <= 0 or principal.admin:
            return None
        return self._engine.limits.creation_counter(principal.subject)

    async def give_back_creation(self, counter: str) -> None:
        """Uncount a new conversation that was not created after all (refused, or failed);
        shielded, so a client gone meanwhile cannot leave it counted."""
        with anyio.CancelScope(shield=True):
            try:
                await self._engine.limits.uncount(counter)
            except UNAVAILABLE:
                log.warning("could not uncount a refused conversation: Redis unreachable")

    def check_creation(self, created: int) -> None:
        limit = self._settings.limit_conversations_per_day
        if created > limit:
            now_ms = int(time.time() * 1000)
            raise ApiError(
                TOO_MANY_CONVERSATIONS,
                f"more than {limit} new conversations today (UTC)",
                {"Retry-After": str(max(1, math.ceil((_DAY_MS - now_ms % _DAY_MS) / 1000)))},
            )

    def counts_write(self, principal: Principal, *, creating: bool = False) -> bool:
        """Whether ``admit_write`` counts this principal's write at all: an append that is not
        counted needs nothing of its stream before its script (no storage field)."""
        settings = self._settings
        return not principal.admin and bool(
            settings.limit_ds_messages_per_minute
            or settings.limit_ds_bytes_per_subject
            or (creating and settings.limit_ds_streams_per_day)
        )

    async def admit_write(
        self, principal: Principal, *, messages: int, size: int, field: str, creating: bool
    ) -> bool:
        """Count a Durable Streams write of ``messages`` messages storing ``size`` bytes in the
        stream incarnation ``field`` (``storage_field``); raise its refusal. True when it was
        counted: then what it does not store is given back (``refund_write``)."""
        settings = self._settings
        if not self.counts_write(principal, creating=creating):
            return False
        creations = settings.limit_ds_streams_per_day if creating else 0
        refusal = await self._engine.limits.admit_write(
            principal.subject,
            WriteQuota(
                messages,
                size,
                field,
                messages_per_minute=settings.limit_ds_messages_per_minute,
                storage_bytes=settings.limit_ds_bytes_per_subject,
                streams_per_day=creations,
            ),
        )
        if refusal is None:
            return True
        if refusal.over is WriteOver.MESSAGES:
            limit = settings.limit_ds_messages_per_minute
            raise ApiError(
                RATE_LIMITED,
                f"more than {limit} stream {_plural(limit, 'message', 'messages')} a minute",
                {"Retry-After": str(max(1, math.ceil(refusal.retry_after_ms / 1000)))},
            )
        if refusal.over is WriteOver.CREATED:
            now_ms = int(time.time() * 1000)
            raise ApiError(
                TOO_MANY_STREAMS_CREATED,
                f"more than {settings.limit_ds_streams_per_day} new streams today (UTC)",
                {"Retry-After": str(max(1, math.ceil((_DAY_MS - now_ms % _DAY_MS) / 1000)))},
            )
        raise ApiError(
            STORAGE_QUOTA_EXCEEDED,
            f"your streams hold {refusal.stored} bytes of at most "
            f"{settings.limit_ds_bytes_per_subject}: delete some, or write less",
        )

    async def refund_write(
        self, principal: Principal, field: str, size: int | None, *, creation: bool = False
    ) -> None:
        """Give back what a counted write did not store (``size`` None: all the bytes of a
        deleted stream); a lost refund only leaves the count high until the stream is gone."""
        settings = self._settings
        if principal.admin or not (
            settings.limit_ds_bytes_per_subject or settings.limit_ds_streams_per_day
        ):
            return
        try:
            await self._engine.limits.refund_write(
                principal.subject, field, size, creation=creation
            )
        except UNAVAILABLE:
            log.warning("could not give back a stream write's count: Redis unreachable")
