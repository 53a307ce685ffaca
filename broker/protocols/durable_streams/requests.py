"""What a write request asks for: its headers and body, checked before anything is written."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from urllib.parse import urlsplit

import msgspec

from broker.core.errors import (
    EMPTY_ARRAY,
    EMPTY_BODY,
    INVALID_EXPIRES_AT,
    INVALID_EXPIRY,
    INVALID_FORK,
    INVALID_PRODUCER,
    INVALID_SUB_OFFSET,
    INVALID_TTL,
    MALFORMED_JSON,
    TOO_MANY_MESSAGES,
    ApiError,
)
from broker.core.streams import StreamConfig
from broker.protocols.durable_streams.framing import JSON

# Up to ten digits of seconds (three centuries): a larger TTL would not fit Redis's expiry.
_TTL = re.compile(r"0|[1-9][0-9]{0,9}")
_MAX_SAFE = (1 << 53) - 1
# Producer-Id and Stream-Seq are stored per stream; like an Idempotency-Key, they are bounded.
MAX_TOKEN_LENGTH = 255
DEFAULT_CONTENT_TYPE = "application/octet-stream"


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def flag(headers: Mapping[str, str], name: str) -> bool:
    """A presence header: only ``true`` (any case) counts; anything else is no header."""
    return headers.get(name, "").strip().lower() == "true"


def _expiry(raw: str) -> int:
    try:
        moment = datetime.fromisoformat(raw.strip().replace("z", "Z"))
    except ValueError:
        raise ApiError(INVALID_EXPIRES_AT, "Stream-Expires-At must be an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise ApiError(INVALID_EXPIRES_AT, "Stream-Expires-At needs a time zone")
    return int(moment.timestamp() * 1000)


def create_config(headers: Mapping[str, str]) -> StreamConfig:
    """A create's configuration from its headers (a case-insensitive mapping)."""
    content_type = headers.get("content-type", "").strip() or DEFAULT_CONTENT_TYPE
    ttl = headers.get("stream-ttl")
    expires_at = headers.get("stream-expires-at")
    if ttl is not None and expires_at is not None:
        raise ApiError(INVALID_EXPIRY, "give Stream-TTL or Stream-Expires-At, not both")
    if ttl is not None and not _TTL.fullmatch(ttl.strip()):
        raise ApiError(INVALID_TTL, "Stream-TTL must be a whole number of seconds")
    expires_ms = str(_expiry(expires_at)) if expires_at is not None else ""
    source = headers.get("stream-forked-from")
    sub = headers.get("stream-fork-sub-offset")
    if source is None and (sub is not None or "stream-fork-offset" in headers):
        raise ApiError(INVALID_FORK, "Stream-Fork-(Sub-)Offset needs Stream-Forked-From")
    if sub is not None:
        sub = sub.strip()
        if (
            not sub.isascii()
            or not sub.isdigit()
            or len(sub) > 16
            or (len(sub) > 1 and sub[0] == "0")
        ):
            raise ApiError(INVALID_SUB_OFFSET, "Stream-Fork-Sub-Offset is not an integer >= 0")
        if sub != "0" and "stream-fork-offset" not in headers:
            raise ApiError(INVALID_SUB_OFFSET, "a sub-offset needs Stream-Fork-Offset")
    return StreamConfig(
        content_type,
        media_type(content_type),
        ttl.strip() if ttl is not None else "",
        expires_at or "",
        expires_ms,
        flag(headers, "stream-closed"),
        _source_name(source) if source is not None else "",
        "",
        "" if sub in (None, "0") else sub,
    )


def _source_name(value: str) -> str:
    """``Stream-Forked-From`` is the source's URL path; its name is what follows the prefix."""
    path = urlsplit(value.strip()).path
    name = path.removeprefix("/v1/stream/").strip("/")
    if not name:
        raise ApiError(INVALID_FORK, "Stream-Forked-From names no stream")
    return name


def messages(
    body: bytes, stream_media_type: str, *, append: bool, max_messages: int
) -> list[bytes]:
    """The messages a body holds: one, or for JSON streams each element of a top-level array;
    at most ``max_messages`` (each is an XADD inside the one script that makes the append
    atomic, which holds Redis for everyone while it runs)."""
    if stream_media_type != JSON:
        return [body] if body else []
    if not body.strip():
        if append:
            raise ApiError(EMPTY_BODY, "an append needs a body")
        return []
    try:
        value = msgspec.json.decode(body, type=msgspec.Raw)
        text = bytes(value).lstrip()
        if text.startswith(b"["):
            items = [bytes(item) for item in msgspec.json.decode(text, type=list[msgspec.Raw])]
        else:
            items = [bytes(value)]
    except (msgspec.DecodeError, RecursionError):
        raise ApiError(MALFORMED_JSON, "the body is not valid JSON") from None
    if append and not items:
        raise ApiError(EMPTY_ARRAY, "an empty JSON array appends nothing")
    if len(items) > max_messages:
        raise ApiError(TOO_MANY_MESSAGES, f"at most {max_messages} messages per write")
    return items


def producer(headers: Mapping[str, str]) -> tuple[str, str, str] | None:
    """Producer-Id, -Epoch and -Seq: all three or none."""
    values = [headers.get(n) for n in ("producer-id", "producer-epoch", "producer-seq")]
    if all(v is None for v in values):
        return None
    pid, epoch, seq = values
    if pid is None or epoch is None or seq is None:
        raise ApiError(INVALID_PRODUCER, "Producer-Id, -Epoch and -Seq go together")
    if not pid.strip() or len(pid) > MAX_TOKEN_LENGTH:
        raise ApiError(INVALID_PRODUCER, f"Producer-Id must be 1 to {MAX_TOKEN_LENGTH} characters")
    for name, value in (("Producer-Epoch", epoch), ("Producer-Seq", seq)):
        # Length first: int() of thousands of digits is slow, or refused by Python.
        if not value.isascii() or not value.isdigit() or len(value) > 16 or int(value) > _MAX_SAFE:
            raise ApiError(INVALID_PRODUCER, f"{name} must be an integer from 0 to 2^53-1")
    return pid, str(int(epoch)), str(int(seq))
