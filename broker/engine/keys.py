"""Redis key and channel names.

Every key of one conversation, and its live channel, carries the hash tag ``{<cid>}`` so the
whole conversation lives in one Redis Cluster slot and the multi-key scripts in ``store`` stay
legal there. The limits of one subject share the hash tag ``{s:<digest of the subject>}`` in
the same way. The jobs queue is several streams whose hash tags are chosen to fall in
different parts of the slot space, so on a cluster they spread over the shards; each worker has
a control channel of its own, tagged with its name.
"""

from __future__ import annotations

import hashlib

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot


class ConversationKeys:
    __slots__ = ("base", "events", "meta", "live")

    def __init__(self, prefix: str, cid: str) -> None:
        self.base = f"{prefix}:{{{cid}}}"  # every key of the conversation starts with it
        self.events = f"{self.base}:events"  # the Redis Stream: every event, in order
        # hash: active_run, first_id (first entry ever written), owner (the subject who created it)
        self.meta = f"{self.base}:meta"
        self.live = f"{self.base}:live"  # pub/sub channel: every append, as it is stored

    def run(self, run_id: str) -> str:
        """Hash of one run: status, ids of its message and terminal events, owner."""
        return f"{self.base}:run:{run_id}"

    def idempotency(self, key: str) -> str:
        return f"{self.base}:idem:{key}"


class SubjectKeys:
    """The limit counters of one subject (a token's ``sub``, or a client address).

    The subject is digested: it may hold any character, ``{`` and ``}`` included, which would
    break the hash tag, and its length is the token issuer's choice.
    """

    __slots__ = ("_base", "streams", "runs", "conversations")  # and storage, a property

    def __init__(self, prefix: str, subject: str) -> None:
        digest = hashlib.blake2b(subject.encode(), digest_size=12).hexdigest()
        self._base = f"{prefix}:{{s:{digest}}}"
        self.streams = f"{self._base}:streams"  # sorted set: open stream ids by lease expiry
        self.runs = f"{self._base}:runs"  # sorted set: conversations with a run, by deadline
        # sorted set: the conversations the subject owns, by the time of their latest message
        self.conversations = f"{self._base}:conversations"

    def requests(self, minute: int) -> str:
        return f"{self._base}:req:{minute}"

    def posts(self, minute: int) -> str:
        return f"{self._base}:post:{minute}"

    def created(self, day: int) -> str:
        return f"{self._base}:new:{day}"

    def stream_messages(self, minute: int) -> str:
        """Durable Streams messages written in one minute."""
        return f"{self._base}:dsm:{minute}"

    def streams_created(self, day: int) -> str:
        """Durable Streams created in one UTC day."""
        return f"{self._base}:dsn:{day}"

    @property
    def subscriptions(self) -> str:
        """Set: the digests of this subject's subscriptions."""
        return f"{self._base}:subs"

    @property
    def storage(self) -> str:
        """Hash: the bytes this subject wrote to each stream incarnation ('<uid> <name>') that
        may still exist, and their total (field '')."""
        return f"{self._base}:dsb"


class DurableKeys:
    """The keys of one Durable Streams stream, tagged with a digest of its name.

    The name is a URL path: any length, any character (``{`` included). The digest keeps the
    tag short and well-formed; every key of the stream shares it, so one script may touch them
    all on a cluster.
    """

    __slots__ = ("_base", "meta", "data", "producers", "forks", "live", "subscriptions")

    def __init__(self, prefix: str, name: str) -> None:
        digest = hashlib.blake2b(name.encode(), digest_size=16).hexdigest()
        self._base = f"{prefix}:ds:{{d:{digest}}}"
        self.meta = (
            f"{self._base}:meta"  # hash: see broker.protocols.durable_streams.wire.StreamMeta
        )
        self.data = f"{self._base}:data"  # the Redis Stream: one entry per message or append
        self.producers = f"{self._base}:producers"  # hash: producer id -> "epoch:seq"
        self.forks = f"{self._base}:forks"  # set: names of the streams forked from this one
        self.live = f"{self._base}:live"  # pub/sub channel: every append and the close
        # set: the subscriptions linked to this name (their digests); outlives the stream,
        # since a link names a path, and is cleaned when a subscription drops the link
        self.subscriptions = f"{self._base}:subs"

    @property
    def all(self) -> list[str]:
        return [self.meta, self.data, self.producers, self.forks]

    def staging(self, uid: str) -> str:
        """A fork's inherited entries while they are copied, before its creation commits."""
        return f"{self._base}:stage:{uid}"


class SubscriptionKeys:
    """The keys of one Durable Streams subscription, tagged with its digest (of its owner and
    its id: each subject has a namespace of its own), so its scripts run in one slot."""

    __slots__ = ("digest", "state", "links")

    def __init__(self, prefix: str, digest: str) -> None:
        self.digest = digest
        base = f"{prefix}:sub:{{u:{digest}}}"
        self.state = f"{base}:state"  # hash: configuration, wake, lease, generation, status
        self.links = f"{base}:links"  # hash: stream path -> '<kinds>|<acked entry id>'


def subscription_digest(owner: str, subscription_id: str) -> str:
    return hashlib.blake2b(f"{owner}\0{subscription_id}".encode(), digest_size=16).hexdigest()


def _spread_tags(count: int) -> list[str]:
    """``count`` hash tags, the i-th in the i-th of ``count`` equal parts of the slot space.

    A cluster gives each master a contiguous run of slots, so tags spread this way land on
    different masters as evenly as the slots themselves are spread.
    """
    tags = []
    width = REDIS_CLUSTER_HASH_SLOTS / count
    for shard in range(count):
        low, high = int(shard * width), int((shard + 1) * width)
        candidate = 0
        while not low <= key_slot(f"{shard}.{candidate}".encode()) < high:
            candidate += 1
        tags.append(f"{shard}.{candidate}")
    return tags


class Keys:
    def __init__(self, prefix: str, job_shards: int = 1) -> None:
        self.prefix = prefix
        # The jobs queue: one stream per shard, read by the consumer group `workers`.
        tags = _spread_tags(max(1, job_shards))
        self.job_streams = [f"{prefix}:jobs:{{{tag}}}" for tag in tags]
        # The outbox: notices, one per finished run, read by the webhook dispatcher and by
        # taps through consumer groups (``broker.engine.outbox``); sharded like the jobs, so
        # on a cluster the runs' ends do not all write to one slot.
        self.outbox_streams = [f"{prefix}:outbox:{{{tag}}}" for tag in tags]
        # Durable Streams subscriptions, each key of its own (one shard carries each on a
        # cluster): every stream name by creation time (the listing a pattern's backfill
        # reads), every subscription, the patterns, the subscriptions a dispatcher should look
        # at (scored by when), the webhook signing keys, the sweep's lock.
        self.stream_index = f"{prefix}:ds:index"
        self.subscriptions = f"{prefix}:subs:all"
        self.subscription_patterns = f"{prefix}:subs:patterns"
        # sorted set, all scores 0: '<literal start of a pattern>\0<digest>', so a new stream
        # finds the patterns that may match it by lexical ranges, not by reading them all
        self.pattern_prefixes = f"{prefix}:subs:prefixes"
        self.subscriptions_due = f"{prefix}:subs:due"
        self.signing_keys = f"{prefix}:subs:keys"
        self.subscription_sweep = f"{prefix}:subs:sweep"

    def conversation(self, cid: str) -> ConversationKeys:
        return ConversationKeys(self.prefix, cid)

    def durable(self, name: str) -> DurableKeys:
        return DurableKeys(self.prefix, name)

    def subscription(self, digest: str) -> SubscriptionKeys:
        return SubscriptionKeys(self.prefix, digest)

    def subject(self, subject: str) -> SubjectKeys:
        return SubjectKeys(self.prefix, subject)

    def owned(self, subject: str) -> str:
        """The index of the conversations ``subject`` owns. Conversations created with
        BROKER_AUTH=none belong to nobody (subject ''): they share one index of their own, under
        a hash tag no conversation id can have (ids hold no ``:``), so deleting a conversation
        whose keys are found by its tag never reaches it."""
        if not subject:
            return f"{self.prefix}:{{s:anonymous}}:conversations"
        return self.subject(subject).conversations

    def job_index(self, stream: str) -> tuple[str, str]:
        """A jobs shard's index of its queued jobs (sorted set: entry id by enqueue time) and
        of the runs they are for (hash: entry id -> "cid run_id"), in the shard's slot."""
        return f"{stream}:queued", f"{stream}:runs"

    def ended_session(self, digest: str) -> str:
        """A session cookie's token that was logged out of, by its digest (``sessions``)."""
        return f"{self.prefix}:session:{digest}"

    def failed_authentications(self, address: str, minute: int) -> str:
        """The counter of failed token checks from a client address in one minute (its own
        slot: the address is digested like a subject)."""
        digest = hashlib.blake2b(address.encode(), digest_size=12).hexdigest()
        return f"{self.prefix}:{{a:{digest}}}:failed:{minute}"

    def outbox_stream(self, cid: str) -> str:
        """The outbox shard of a conversation's runs: one shard, so its notices keep their
        order, as on a single stream."""
        return self.outbox_streams[key_slot(cid.encode()) % len(self.outbox_streams)]

    def job_stream(self, run_id: str) -> str:
        """The jobs shard of a run: any fixed choice works, the run id spreads them evenly."""
        return self.job_streams[key_slot(run_id.encode()) % len(self.job_streams)]

    def control(self, worker: str) -> str:
        """The channel on which one worker hears cancels of the runs it owns."""
        return f"{self.prefix}:control:{{{worker}}}"
