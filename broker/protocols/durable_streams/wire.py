"""The shapes Durable Streams keeps in Redis and sends in SSE control events."""

from __future__ import annotations

import msgspec


class StreamMeta(msgspec.Struct, kw_only=True):
    """A stream's metadata hash, as the scripts in ``scripts`` write it (every value a string).

    ``ct`` is the content type as it was given; ``ctn`` its media type in lower case, which
    appends are compared against. ``tail`` is the id of the newest entry (``0-0``: none yet),
    kept here because a trimmed or empty Redis stream cannot say what it last held.
    """

    ct: str
    ctn: str
    tail: str = "0-0"
    closed: str = ""
    ttl: str = ""  # sliding TTL in seconds, as given
    exp: str = ""  # absolute expiry, RFC 3339 as given
    expms: str = ""  # the same, in Unix milliseconds
    owner: str = ""  # the subject that created it ("" under BROKER_AUTH=none)
    seq: str = ""  # the last Stream-Seq accepted
    src: str = ""  # a fork's source stream
    deleted: str = ""  # "1": deleted while forks of it lived; every request answers 410

    @property
    def is_deleted(self) -> bool:
        return self.deleted == "1"

    @property
    def is_closed(self) -> bool:
        return self.closed == "1"


class Control(msgspec.Struct, omit_defaults=True):
    """The SSE ``control`` event."""

    streamNextOffset: str  # noqa: N815 (the protocol's field names)
    streamCursor: str | None = None  # noqa: N815
    upToDate: bool = False  # noqa: N815
    streamClosed: bool = False  # noqa: N815


class ConversationMessage(msgspec.Struct):
    """A conversation event as one message of the read-only JSON view of the conversation."""

    id: str
    type: str
    data: msgspec.Raw
