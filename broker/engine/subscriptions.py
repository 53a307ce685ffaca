"""Durable Streams subscriptions in Redis: durable cursors over streams that wake a worker.

A subscription's keys share one hash tag, the digest of its owner and id (each subject has a
namespace of its own, so nobody learns of another's subscriptions), and every change to it is
one script over them (``lua/subscription_*.lua``): its hash holds the configuration and the
wake state (generation, wake id, the sha-256 of the current token, phase, lease), its links
hash holds one cursor per stream path.

Streams live in other slots, so what ties them to subscriptions is written beside the
scripts, never inside them, and each such write has a repair path:

- every stream name has a set of the subscriptions linked to it (in the stream's slot; the
  append script returns it, so a write learns whom to wake at no extra cost), written after
  the link;
- ``due``, a sorted set of the subscriptions a dispatcher should look at, scored by when: a
  write that finds subscriptions linked marks them due now; a lease or a retry marks when
  it runs out;
- a sweep (``sweep``), run by one worker at a time every ``BROKER_DS_SUBSCRIPTION_SWEEP_SECONDS``,
  compares every subscription's cursors with its streams' tails, which are the source of
  truth, and marks due what has pending work and re-adds lost reverse links: a front that died
  between an append and its mark delays a wake by one sweep, it never loses it;
- ``stream_index``, every stream name by creation time: what a pattern's backfill reads; a
  name whose stream is gone is dropped when a listing finds it so.

Tails: a Durable Stream's tail is its metadata's; a conversation's (``conversations/<cid>``)
is its newest entry while no run is active, else the active run's user message, so a
subscriber is woken by a new message and by a run's end, not by every token in between.
"""

from __future__ import annotations

import base64
import secrets
import time
import uuid
from dataclasses import dataclass
from hashlib import sha256
from typing import Any, NamedTuple

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.core.ids import ORIGIN, StreamPos, format_stream_id, parse_stream_id
from broker.core.settings import Settings
from broker.core.subscriptions import (
    Config,
    Jwk,
    Jwks,
    jwk,
    key_id,
    literal_prefix,
    matches,
    private_bytes,
    public_bytes,
)
from broker.engine.connections import Client
from broker.engine.keys import Keys, SubscriptionKeys, subscription_digest
from broker.engine.scripts import Scripts

CONVERSATIONS = "conversations/"
_TOMBSTONE_MS = 24 * 3600 * 1000
_RETIRED_KEY_MS = 15 * 60 * 1000  # a rotated key stays published this long (replay window)
_LINK_BATCH = 200
_KEY_CACHE_SECONDS = 5.0


class Tail(NamedTuple):
    """A linked stream as a subscriber may see it: its tail, or None when it does not exist
    (or is no longer one its subscriber may read)."""

    tail: StreamPos | None


class LinkState(NamedTuple):
    path: str
    kind: str  # "explicit" or "glob" (explicit wins for a path linked both ways)
    acked: StreamPos
    tail: StreamPos | None

    @property
    def pending(self) -> bool:
        return self.tail is not None and self.tail > self.acked


@dataclass(frozen=True, slots=True)
class Subscription:
    digest: str
    id: str
    owner: str
    admin: bool
    config: Config
    created_ms: int
    base_url: str
    status: str
    phase: str
    generation: int
    wake_id: str
    attempts: int  # webhook deliveries failed in a row
    links: dict[str, tuple[str, StreamPos]]  # path -> (kinds, acked)


class Put(NamedTuple):
    outcome: str  # "created", "same", "different"
    refused: int = 0  # links over the bound


class Claim(NamedTuple):
    outcome: str  # "ok", "claimed", "not_pull", "gone"
    generation: int = 0
    wake_id: str = ""
    token: str = ""
    holder: str = ""


class Issued(NamedTuple):
    outcome: str  # "issued", "busy", "waiting", "later", "idle", "gone"
    generation: int = 0
    wake_id: str = ""
    token: str = ""
    until_ms: int = 0


def token_hash(token: str) -> str:
    return sha256(token.encode()).hexdigest()


def new_token(digest: str) -> str:
    """A callback or claim token: the subscription's digest (where to look) and 32 random
    bytes; only its sha-256 is stored, and a new wake replaces it."""
    return f"{digest}.{secrets.token_urlsafe(32)}"


def digest_of_token(token: str) -> str | None:
    digest, dot, _ = token.partition(".")
    return digest if dot and len(digest) == 32 and digest.isalnum() else None


def _kinds(value: str) -> tuple[str, StreamPos]:
    kinds, _, acked = value.partition("|")
    return kinds, parse_stream_id(acked) or ORIGIN


def _prefix_member(pattern: str, digest: str) -> str:
    """A pattern's entry in the prefix index: its literal start, NUL, the subscription."""
    return f"{literal_prefix(pattern)}\0{digest}"


def link_type(kinds: str) -> str:
    return "explicit" if "e" in kinds else "glob"


class Subscriptions:
    def __init__(self, client: Client, keys: Keys, scripts: Scripts, settings: Settings) -> None:
        self._redis = client
        self._keys = keys
        self._scripts = scripts
        self._enforced = settings.auth == "jwt"
        self._max_links = settings.ds_max_streams_per_subscription
        self._cached_key: tuple[float, str, Ed25519PrivateKey] | None = None

    # Keys and access --------------------------------------------------------------------------

    def keys(self, digest: str) -> SubscriptionKeys:
        return self._keys.subscription(digest)

    def _script_keys(self, digest: str) -> list[str]:
        keys = self.keys(digest)
        return [keys.state, keys.links]

    def may_read(self, stream_owner: str, owner: str, admin: bool) -> bool:
        return not self._enforced or admin or stream_owner == owner

    async def tails(self, paths: list[str], owner: str, admin: bool) -> dict[str, Tail]:
        """Where each path's stream ends, for a subscriber ``owner``: None for a stream that
        does not exist or that it may not read (so nothing of it is told)."""
        out: dict[str, Tail] = {}
        if not paths:
            return out
        async with self._redis.pipeline(transaction=False) as pipe:
            for path in paths:
                if path.startswith(CONVERSATIONS):
                    conversation = self._keys.conversation(path.removeprefix(CONVERSATIONS))
                    pipe.hmget(conversation.meta, "owner", "first_id", "active_run")
                    pipe.xrevrange(conversation.events, "+", "-", count=1)
                else:
                    pipe.hmget(self._keys.durable(path).meta, "owner", "tail", "deleted")
            replies = await pipe.execute()
        runs: list[tuple[str, str]] = []
        index = 0
        for path in paths:
            if path.startswith(CONVERSATIONS):
                (stream_owner, first, active), newest = replies[index], replies[index + 1]
                index += 2
                if first is None or not self.may_read((stream_owner or b"").decode(), owner, admin):
                    out[path] = Tail(None)
                elif active:
                    runs.append((path, active.decode()))
                else:
                    out[path] = Tail(parse_stream_id(newest[0][0]) if newest else ORIGIN)
            else:
                stream_owner, tail, deleted = replies[index]
                index += 1
                if tail is None or deleted == b"1":
                    out[path] = Tail(None)
                elif not self.may_read((stream_owner or b"").decode(), owner, admin):
                    out[path] = Tail(None)
                else:
                    out[path] = Tail(parse_stream_id(tail) or ORIGIN)
        if runs:
            async with self._redis.pipeline(transaction=False) as pipe:
                for path, run in runs:
                    conversation = self._keys.conversation(path.removeprefix(CONVERSATIONS))
                    pipe.hget(conversation.run(run), "message_event_id")
                messages = await pipe.execute()
            for (path, _), message in zip(runs, messages, strict=True):
                out[path] = Tail(parse_stream_id(message) if message else ORIGIN)
        return out

    # The subscription itself ------------------------------------------------------------------

    async def load(self, digest: str) -> Subscription | None:
        keys = self.keys(digest)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.state)
            pipe.hgetall(keys.links)
            raw, links = await pipe.execute()
        if not raw:
            return None
        state = {k.decode(): v.decode() for k, v in raw.items()}
        if state.get("status", "deleted") == "deleted":
            return None
        return Subscription(
            digest=digest,
            id=state["id"],
            owner=state.get("owner", ""),
            admin=state.get("admin") == "1",
            config=msgspec.json.decode(state["config"], type=Config),
            created_ms=int(state.get("created", "0")),
            base_url=state.get("base", ""),
            status=state.get("status", "active"),
            phase=state.get("phase", "idle"),
            generation=int(state.get("gen", "0")),
            wake_id=state.get("wake", ""),
            attempts=int(state.get("attempts", "0")),
            links={k.decode(): _kinds(v.decode()) for k, v in links.items()},
        )

    async def get(self, owner: str, subscription_id: str) -> Subscription | None:
        return await self.load(subscription_digest(owner, subscription_id))

    async def count_of(self, owner: str) -> int:
        return int(await self._redis.scard(self._keys.subject(owner).subscriptions))

    async def put(
        self,
        owner: str,
        admin: bool,
        subscription_id: str,
        config: Config,
        base_url: str,
    ) -> Put:
        """Create (201), re-confirm (200) or refuse (409) a subscription; a new one links its
        explicit streams and backfills its pattern, each at its stream's tail."""
        digest = subscription_digest(owner, subscription_id)
        now = int(time.time() * 1000)
        explicit = list(config.streams)
        tails = await self.tails(explicit, owner, admin)
        fields: list[Any] = [
            "id",
            subscription_id,
            "owner",
            owner,
            "admin",
            "1" if admin else "",
            "config",
            msgspec.json.encode(config),
            "created",
            now,
            "base",
            base_url,
            "type",
            config.type,
            "lease",
            config.lease_ttl_ms,
        ]
        pairs: list[Any] = []
        for path in explicit[: self._max_links]:
            pairs += [path, format_stream_id(tails[path].tail or ORIGIN)]
        reply = await self._scripts.subscription_put(
            keys=self._script_keys(digest),
            args=[now, config.digest, *fields, "--", *pairs],
        )
        outcome = reply[0].decode()
        if outcome != "created":
            return Put(outcome)
        refused = max(0, len(explicit) - self._max_links)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.sadd(self._keys.subscriptions, digest)
            pipe.sadd(self._keys.subject(owner).subscriptions, digest)
            if config.pattern is not None:
                entry = msgspec.json.encode([owner, admin, config.pattern, now])
                pipe.hset(self._keys.subscription_patterns, digest, entry)
                pipe.zadd(self._keys.pattern_prefixes, {_prefix_member(config.pattern, digest): 0})
            for path in explicit[: self._max_links]:
                pipe.sadd(self._keys.durable(path).subscriptions, digest)
            await pipe.execute()
        if config.pattern is not None:
            refused += await self._backfill(digest, owner, admin, config.pattern, now)
        await self.mark_due([digest])
        return Put(outcome, refused)

    async def _backfill(
        self,
        digest: str,
        owner: str,
        admin: bool,
        pattern: str,
        created_ms: int,
        linked: frozenset[str] = frozenset(),
    ) -> int:
        """Link the streams that match ``pattern`` now, but those ``linked`` already: at their
        tail, or from their start for one created after the subscription (its first append
        must wake it)."""
        prefix = literal_prefix(pattern)
        candidates: list[tuple[str, int]] = []
        if prefix.startswith(CONVERSATIONS) or CONVERSATIONS.startswith(prefix):
            # A subscriber's own conversations (everyone's without authentication).
            owned = self._keys.owned(owner if self._enforced else "")
            if not (self._enforced and admin):
                for cid in await self._redis.zrange(owned, 0, -1):
                    candidates.append((CONVERSATIONS + cid.decode(), 0))
        # Bytes: "\xff" in a str would go out as UTF-8, below some names' first bytes.
        low: bytes = b"[" + prefix.encode() if prefix else b"-"
        high: bytes = b"[" + prefix.encode() + b"\xff" if prefix else b"+"
        start = 0
        while True:
            names = await self._redis.zrangebylex(
                self._keys.stream_index, low, high, start=start, num=1000
            )
            candidates += [(name.decode(), 1) for name in names]
            if len(names) < 1000:
                break
            start += 1000
        matching = [path for path, _ in candidates if path not in linked and matches(pattern, path)]
        return await self.link(digest, owner, admin, matching, kind="g", created_after=created_ms)

    async def link(
        self,
        digest: str,
        owner: str,
        admin: bool,
        paths: list[str],
        *,
        kind: str,
        created_after: int | None = None,
        from_start: bool = False,
    ) -> int:
        """Link ``paths`` the subscriber may read (``kind`` "g" or "e"); returns how many the
        bound refused. Each gets its stream's tail as its cursor, or the start with
        ``from_start`` (a stream created after the subscription)."""
        if not paths:
            return 0
        tails = await self.tails(paths, owner, admin)
        created: dict[str, float] = {}
        if created_after is not None and not from_start:
            scores = await self._redis.zmscore(self._keys.stream_index, paths)
            created = {p: s for p, s in zip(paths, scores, strict=True) if s is not None}
        pairs: list[Any] = []
        linked: list[str] = []
        for path in paths:
            tail = tails[path].tail
            if tail is None and kind == "g":
                continue  # a pattern links only streams that exist and may be read
            new = from_start or (created_after is not None and created.get(path, 0) > created_after)
            pairs += [path, format_stream_id(ORIGIN if new or tail is None else tail)]
            linked.append(path)
        refused = 0
        for at in range(0, len(pairs), _LINK_BATCH * 2):
            reply = await self._scripts.subscription_link(
                keys=self._script_keys(digest),
                args=[self._max_links, kind, *pairs[at : at + _LINK_BATCH * 2]],
            )
            if reply[0] == b"gone":
                return refused
            refused += int(reply[2])
        if linked:
            async with self._redis.pipeline(transaction=False) as pipe:
                for path in linked:
                    pipe.sadd(self._keys.durable(path).subscriptions, digest)
                await pipe.execute()
            await self.mark_due([digest])
        return refused

    async def unlink(self, digest: str, path: str) -> bool:
        """Remove the explicit link of ``path`` (a glob link stays); False when gone."""
        reply = await self._scripts.subscription_unlink(
            keys=self._script_keys(digest), args=["e", path]
        )
        if reply[0] == b"gone":
            return False
        if int(reply[1]):
            await self._redis.srem(self._keys.durable(path).subscriptions, digest)
        return True

    async def delete(self, owner: str, subscription_id: str) -> bool:
        digest = subscription_digest(owner, subscription_id)
        subscription = await self.load(digest)
        if subscription is None:
            return False
        paths = await self._scripts.subscription_delete(
            keys=self._script_keys(digest), args=[_TOMBSTONE_MS]
        )
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.srem(self._keys.subscriptions, digest)
            pipe.srem(self._keys.subject(owner).subscriptions, digest)
            pipe.hdel(self._keys.subscription_patterns, digest)
            if subscription.config.pattern is not None:
                member = _prefix_member(subscription.config.pattern, digest)
                pipe.zrem(self._keys.pattern_prefixes, member)
            pipe.zrem(self._keys.subscriptions_due, digest)
            for path in paths:
                pipe.srem(self._keys.durable(path.decode()).subscriptions, digest)
            await pipe.execute()
        return True

    async def states(self, subscription: Subscription) -> list[LinkState]:
        """Every link with its stream's tail, in path order; links to streams the subscriber
        may no longer read are left out."""
        paths = sorted(subscription.links)
        tails = await self.tails(paths, subscription.owner, subscription.admin)
        out = []
        for path in paths:
            kinds, acked = subscription.links[path]
            tail = tails[path].tail
            out.append(LinkState(path, link_type(kinds), acked, tail))
        return out

    # Waking -----------------------------------------------------------------------------------

    async def mark_due(self, digests: list[str], at_ms: int | None = None) -> None:
        """Have a dispatcher look at these subscriptions now (or at ``at_ms``), unless one is
        due sooner already."""
        if not digests:
            return
        when = int(time.time() * 1000) if at_ms is None else at_ms
        await self._redis.zadd(self._keys.subscriptions_due, dict.fromkeys(digests, when), lt=True)

    async def changed(self, path: str, linked: list[bytes] | None = None) -> None:
        """A stream was written: mark the subscriptions linked to it due (``linked``: the
        append script's answer, or read here)."""
        if linked is None:
            linked = list(await self._redis.smembers(self._keys.durable(path).subscriptions))
        await self.mark_due([d.decode() for d in linked])

    async def stream_created(self, path: str, owner: str, *, index: bool = True) -> None:
        """A stream (or a conversation) came to be: list it, and link it from its start to
        the pattern subscriptions that match it and may read it, before its first wake."""
        now = int(time.time() * 1000)
        # Only the patterns whose literal start is a start of the path can match it: one
        # range of the prefix index per segment of the path, whatever the patterns' number.
        parts = path.split("/")
        starts = [""] + ["/".join(parts[:i]) + "/" for i in range(1, len(parts))] + [path]
        async with self._redis.pipeline(transaction=False) as pipe:
            if index:
                pipe.zadd(self._keys.stream_index, {path: now})
            pipe.smembers(self._keys.durable(path).subscriptions)
            for start in starts:
                low = b"[" + start.encode() + b"\0"
                pipe.zrangebylex(self._keys.pattern_prefixes, low, low + b"\xff")
            replies = await pipe.execute()
        linked = replies[1 if index else 0]
        candidates = {
            member.rpartition(b"\0")[2]
            for found in replies[len(replies) - len(starts) :]
            for member in found
        } - set(linked)
        patterns = {}
        if candidates:
            ordered = sorted(candidates)
            raws = await self._redis.hmget(self._keys.subscription_patterns, ordered)
            patterns = {d: r for d, r in zip(ordered, raws, strict=True) if r is not None}
        for digest, raw in patterns.items():
            sub_owner, admin, pattern, _ = msgspec.json.decode(raw)
            if matches(pattern, path) and self.may_read(owner, sub_owner, admin):
                await self.link(
                    digest.decode(), sub_owner, admin, [path], kind="g", from_start=True
                )
        if linked:
            await self.mark_due([d.decode() for d in linked])

    async def stream_deleted(self, path: str) -> None:
        await self._redis.zrem(self._keys.stream_index, path)

    async def take_due(self, count: int, lease_ms: int) -> list[tuple[str, int]]:
        reply = await self._scripts.subscription_take(
            keys=[self._keys.subscriptions_due],
            args=[int(time.time() * 1000), count, lease_ms],
        )
        return [(reply[i].decode(), int(reply[i + 1])) for i in range(0, len(reply), 2)]

    async def settle(self, digest: str, taken: int, again_ms: int | None) -> None:
        await self._scripts.subscription_settle(
            keys=[self._keys.subscriptions_due],
            args=[digest, taken, "" if again_ms is None else again_ms],
        )

    async def issue(self, digest: str, dispatcher: str, lease_ms: int, pending: bool) -> Issued:
        token = new_token(digest)
        wake_id = "w_" + uuid.uuid4().hex
        reply = await self._scripts.subscription_issue(
            keys=self._script_keys(digest),
            args=[
                int(time.time() * 1000),
                dispatcher,
                lease_ms,
                "1" if pending else "",
                wake_id,
                token_hash(token),
            ],
        )
        outcome = reply[0].decode()
        if outcome == "issued":
            return Issued(outcome, int(reply[1]), wake_id, token)
        if outcome in ("busy", "later"):
            return Issued(outcome, until_ms=int(reply[1]))
        return Issued(outcome)

    async def sent(
        self,
        digest: str,
        generation: int,
        outcome: str,
        *,
        retry_at_ms: int = 0,
        acks: list[tuple[str, StreamPos]] = (),  # type: ignore[assignment]
    ) -> bool:
        """Record a delivery's outcome for its generation; False when fenced."""
        pairs = [part for path, pos in acks for part in (path, format_stream_id(pos))]
        reply = await self._scripts.subscription_sent(
            keys=self._script_keys(digest),
            args=[int(time.time() * 1000), generation, outcome, retry_at_ms, *pairs],
        )
        return reply[0] == b"ok"

    async def claim(self, digest: str, worker: str) -> Claim:
        token = new_token(digest)
        reply = await self._scripts.subscription_claim(
            keys=self._script_keys(digest),
            args=[int(time.time() * 1000), worker, token_hash(token), "w_" + uuid.uuid4().hex],
        )
        outcome = reply[0].decode()
        if outcome == "ok":
            generation, wake_id, until = int(reply[1]), reply[2].decode(), int(reply[3])
            await self.mark_due([digest], until)  # a lapsed lease is seen to
            return Claim(outcome, generation, wake_id, token)
        if outcome == "claimed":
            return Claim(outcome, int(reply[2]), holder=reply[1].decode())
        return Claim(outcome)

    async def acknowledge(
        self,
        token: str,
        generation: int,
        wake_id: str,
        mode: str,
        done: bool,
        acks: list[tuple[str, StreamPos]],
    ) -> tuple[str, int]:
        """A callback, ack or release with a bearer ``token``: ("released" | "extended" |
        "fenced", lease end)."""
        digest = digest_of_token(token)
        if digest is None:
            return "fenced", 0
        pairs = [part for path, pos in acks for part in (path, format_stream_id(pos))]
        reply = await self._scripts.subscription_ack(
            keys=self._script_keys(digest),
            args=[
                int(time.time() * 1000),
                token_hash(token),
                generation,
                wake_id,
                mode,
                "1" if done else "",
                *pairs,
            ],
        )
        outcome = reply[0].decode()
        until = int(reply[1]) if outcome == "extended" else 0
        if outcome == "extended":
            await self.mark_due([digest], until)
        elif outcome == "released":
            await self.mark_due([digest])  # pending work left wakes it again
        return outcome, until

    # The sweep --------------------------------------------------------------------------------

    async def sweep_lock(self, owner: str, seconds: float) -> bool:
        """One sweep at a time across workers: the lock runs out by itself."""
        return bool(
            await self._redis.set(
                self._keys.subscription_sweep, owner, nx=True, px=int(seconds * 1000)
            )
        )

    async def sweep(self) -> int:
        """Mark due every subscription whose cursors are behind its streams' tails, and
        re-add the reverse links a lost write left out; returns how many were marked."""
        marked = 0
        cursor = 0
        while True:
            cursor, digests = await self._redis.sscan(self._keys.subscriptions, cursor, count=200)
            for raw in digests:
                digest = raw.decode()
                subscription = await self.load(digest)
                if subscription is None:
                    await self._redis.srem(self._keys.subscriptions, digest)
                    continue
                pattern = subscription.config.pattern
                if pattern is not None:  # streams whose linking a lost write left out
                    await self._backfill(
                        digest,
                        subscription.owner,
                        subscription.admin,
                        pattern,
                        subscription.created_ms,
                        frozenset(subscription.links),
                    )
                    subscription = await self.load(digest)
                    if subscription is None:
                        continue
                states = await self.states(subscription)
                async with self._redis.pipeline(transaction=False) as pipe:
                    for state in states:
                        pipe.sadd(self._keys.durable(state.path).subscriptions, digest)
                    await pipe.execute()
                if any(state.pending for state in states):
                    await self.mark_due([digest])
                    marked += 1
            if not cursor:
                return marked

    # Signing keys -----------------------------------------------------------------------------

    async def signing_key(self) -> tuple[str, Ed25519PrivateKey]:
        """The active webhook signing key (made once, kept in Redis for every process; read
        again every few seconds, so a rotation needs no restart)."""
        cached = self._cached_key
        if cached is not None and time.monotonic() - cached[0] < _KEY_CACHE_SECONDS:
            return cached[1], cached[2]
        keys = self._keys.signing_keys
        active = await self._redis.hget(keys, "active")
        if active is None:
            await self._add_key(activate_if_none=True)
            active = await self._redis.hget(keys, "active")
        assert active is not None
        kid = active.decode()
        raw = await self._redis.hget(keys, f"priv:{kid}")
        assert raw is not None
        private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(raw))
        self._cached_key = (time.monotonic(), kid, private)
        return kid, private

    async def _add_key(self, *, activate_if_none: bool) -> str:
        private = Ed25519PrivateKey.generate()
        kid = key_id(public_bytes(private))
        keys = self._keys.signing_keys
        now = int(time.time() * 1000)
        await self._redis.hset(
            keys,
            mapping={f"priv:{kid}": base64.b64encode(private_bytes(private)), f"since:{kid}": now},
        )
        if activate_if_none and not await self._redis.hsetnx(keys, "active", kid):
            await self._redis.hdel(keys, f"priv:{kid}", f"since:{kid}")
        return kid

    async def rotate_signing_key(self) -> str:
        """Make a new key the active one; the old one stays published for the replay window."""
        kid = await self._add_key(activate_if_none=False)
        keys = self._keys.signing_keys
        old = await self._redis.hget(keys, "active")
        if old is not None:  # marked first: a reader in between still publishes the old key
            await self._redis.hset(keys, f"retired:{old.decode()}", int(time.time() * 1000))
        await self._redis.hset(keys, "active", kid)
        self._cached_key = None
        return kid

    async def jwks(self) -> Jwks:
        """The public keys a receiver may need: the active one and those retired within the
        replay window; older retired keys are dropped."""
        await self.signing_key()
        raw = {
            k.decode(): v for k, v in (await self._redis.hgetall(self._keys.signing_keys)).items()
        }
        now = int(time.time() * 1000)
        published: list[Jwk] = []
        for field, value in raw.items():
            if not field.startswith("priv:"):
                continue
            kid = field.removeprefix("priv:")
            retired = raw.get(f"retired:{kid}")
            if retired is not None and now - int(retired) > _RETIRED_KEY_MS:
                await self._redis.hdel(
                    self._keys.signing_keys, field, f"since:{kid}", f"retired:{kid}"
                )
                continue
            private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(value))
            published.append(jwk(public_bytes(private)))
        return Jwks(published)
