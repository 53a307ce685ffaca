"""Redis key names.

Every key of one conversation carries the hash tag ``{<cid>}`` so the whole conversation lives
in one Redis Cluster slot and the multi-key scripts in ``store`` stay legal there.
"""

from __future__ import annotations


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

    def wakeup(self, process_id: str) -> str:
        """A per-process stream whose only job is to interrupt the shared tail's blocking read."""
        return f"{self.prefix}:wakeup:{process_id}"
