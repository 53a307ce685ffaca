"""What a front process's request handlers share: owned by the app's lifespan, passed as state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import anyio

from broker.core.catalogue import Catalogue
from broker.core.ids import StreamPos
from broker.core.settings import Settings
from broker.engine import Engine
from broker.front.http.metrics import FrontMetrics
from broker.front.security.access import Gate
from broker.front.security.lockout import Lockout
from broker.front.security.tokens import TokenVerifier
from broker.front.streaming.admission import OpenStreams
from broker.front.streaming.feed import Feed, FrameWriter, Openings
from broker.front.streaming.hub import Hub


@dataclass(frozen=True)
class Services:
    settings: Settings
    engine: Engine
    hub: Hub
    catalogue: Catalogue
    # A stream's opening reads share half the Redis pool, its later replay reads the other
    # half (see Feed._read): a storm of long replays cannot delay every new client's first
    # event, and the process never asks for more connections than its pool holds (the
    # cluster client refuses instead of waiting).
    first_reads: anyio.CapacityLimiter
    catch_up: anyio.CapacityLimiter
    # Authorization and limits, run by every guarded route before its handler.
    gate: Gate
    metrics: FrontMetrics
    # Set when the process drains: every wait a request is in ends at once (see app.drain).
    draining: anyio.Event
    # This process's open SSE streams, per conversation, per client address and in all.
    open_streams: OpenStreams
    # Failed token checks per client address (read by the authentication middleware).
    lockout: Lockout
    # The token checks (None with BROKER_AUTH=none), for the session's logout.
    verifier: TokenVerifier | None
    openings: Openings = field(default_factory=Openings)

    def admit_stream(self, cid: str, address: str) -> Callable[[], None]:
        """Count a new stream of ``cid`` from client ``address``, or refuse it (429, or 503
        when this front is full); returns the call that releases it."""
        return self.open_streams.admit(cid, address)

    def feed(
        self,
        cid: str,
        position: StreamPos,
        *,
        run_id: str | None = None,
        expires_at: float | None = None,
        writer: FrameWriter | None = None,
        exact: bool = False,
        opened: Callable[[], None] | None = None,
    ) -> Feed:
        return Feed(
            self.engine.conversations,
            self.hub,
            cid,
            position,
            batch=self.settings.replay_batch,
            first_reads=self.first_reads,
            catch_up=self.catch_up,
            run_id=run_id,
            expires_at=expires_at,
            writer=writer,
            exact=exact,
            openings=self.openings,
            opened=opened or (lambda: None),
            metrics=self.metrics,
        )
