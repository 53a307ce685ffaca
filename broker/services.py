"""What a front process's request handlers share: owned by the app's lifespan, passed as state."""

from __future__ import annotations

from dataclasses import dataclass

from broker.feed import Feed
from broker.hub import Hub
from broker.ids import StreamPos
from broker.settings import Settings
from broker.store import Store


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: Store
    hub: Hub

    def feed(self, cid: str, position: StreamPos, *, run_id: str | None = None) -> Feed:
        return Feed(
            self.store,
            self.hub,
            cid,
            position,
            keepalive=self.settings.keepalive_seconds,
            batch=self.settings.replay_batch,
            run_id=run_id,
        )
