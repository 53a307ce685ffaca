"""A Durable Stream's configuration: what a create asks for, parsed from the protocol's headers
(``broker.protocols.durable_streams``) and stored by the engine (``broker.engine.streams``)."""

from __future__ import annotations

from typing import NamedTuple


class StreamConfig(NamedTuple):
    """An existing stream matches a create when all of this is equal."""

    content_type: str
    media_type: str  # the content type's media type in lower case, what appends must match
    ttl: str  # sliding TTL in seconds, as given ('' none)
    expires_at: str  # absolute expiry, RFC 3339 as given ('' none)
    expires_at_ms: str  # the same, in Unix milliseconds
    closed: bool
    # A fork: the source's name, the fork offset's entry id and the sub-offset ('' otherwise).
    source: str = ""
    fork_offset: str = ""
    fork_sub_offset: str = ""
