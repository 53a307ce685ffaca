"""Redis key names.

Every key of one conversation carries the hash tag ``{<cid>}`` so the whole conversation lives
in one Redis Cluster slot and the multi-key scripts in ``store`` stay legal there. The limits of
one subject share the hash tag ``{s:<digest of the subject>}`` in the same way.
"""

from __future__ import annotations

import hashlib


class ConversationKeys:
    __slots__ = ("_base", "events", "meta")

    def __init__(self, prefix: str, cid: str) -> None:
        self._base = f"{prefix}:{{{cid}}}"
        self.events = f"{self._base}:events"  # the Redis Stream: every event, in order
        # hash: active_run, first_id (first entry ever written), owner (the subject who created it)
        self.meta = f"{self._base}:meta"

    def run(self, run_id: str) -> str:
        """Hash of one run: status, ids of its message and terminal events, owner."""
        return f"{self._base}:run:{run_id}"

    def idempotency(self, key: str) -> str:
        return f"{self._base}:idem:{key}"


class SubjectKeys:
    """The limit counters of one subject (a token's ``sub``, or a client address).

    The subject is digested: it may hold any character, ``{`` and ``}`` included, which would
    break the hash tag, and its length is the token issuer's choice.
    """

    __slots__ = ("_base", "streams", "runs")

    def __init__(self, prefix: str, subject: str) -> None:
        digest = hashlib.blake2b(subject.encode(), digest_size=12).hexdigest()
        self._base = f"{prefix}:{{s:{digest}}}"
        self.streams = f"{self._base}:streams"  # sorted set: open stream ids by lease expiry
        self.runs = f"{self._base}:runs"  # sorted set: conversations with a run, by deadline

    def requests(self, minute: int) -> str:
        return f"{self._base}:req:{minute}"

    def posts(self, minute: int) -> str:
        return f"{self._base}:post:{minute}"

    def created(self, day: int) -> str:
        return f"{self._base}:new:{day}"


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.jobs = f"{prefix}:jobs"
        self.control = f"{prefix}:control"
        # A stream of notices, one per finished run, read by the webhook dispatcher and by
        # taps through consumer groups (``broker.core.outbox``).
        self.outbox = f"{prefix}:outbox"

    def conversation(self, cid: str) -> ConversationKeys:
        return ConversationKeys(self.prefix, cid)

    def subject(self, subject: str) -> SubjectKeys:
        return SubjectKeys(self.prefix, subject)

    def wakeup(self, process_id: str) -> str:
        """A per-process stream whose only job is to interrupt the shared tail's blocking read."""
        return f"{self.prefix}:wakeup:{process_id}"
