"""Identifiers: validation of outside input and ordering of Redis Stream entry IDs."""

from __future__ import annotations

import re
import secrets

from broker.core.errors import INVALID_ID, ApiError

_PATH_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_STREAM_ID = re.compile(rb"(\d{1,20})-(\d{1,20})")
_UINT64_MAX = (1 << 64) - 1

# A stream position as Redis orders it: (milliseconds, sequence).
StreamPos = tuple[int, int]
ORIGIN: StreamPos = (0, 0)
LAST_POSITION: StreamPos = (_UINT64_MAX, _UINT64_MAX)  # the largest id Redis can hold


def is_valid_path_id(value: str) -> bool:
    return _PATH_ID.fullmatch(value) is not None


def check_id(value: str, name: str) -> str:
    """``value`` when it is a valid identifier, else the 400 that names ``name``: the one check
    of every id a client sends (in a path, a body or a token)."""
    if not is_valid_path_id(value):
        raise ApiError(INVALID_ID, f"{name} must match [A-Za-z0-9_-]{{1,128}}")
    return value


def new_id(kind: str) -> str:
    """A random, URL-safe identifier such as ``r_Jk3...``; 128 bits, so never guessed."""
    return f"{kind}_{secrets.token_urlsafe(16)}"


def parse_stream_id(raw: str | bytes) -> StreamPos | None:
    """Parse ``<ms>-<seq>`` exactly as Redis writes it; anything else is None."""
    if isinstance(raw, str):
        try:
            raw = raw.encode("ascii")
        except UnicodeEncodeError:
            return None
    match = _STREAM_ID.fullmatch(raw)
    if match is None:
        return None
    ms, seq = int(match.group(1)), int(match.group(2))
    if ms > _UINT64_MAX or seq > _UINT64_MAX:
        return None
    return ms, seq


def format_stream_id(pos: StreamPos) -> str:
    return f"{pos[0]}-{pos[1]}"


def predecessor(pos: StreamPos) -> StreamPos:
    """The greatest position strictly before ``pos``: reading *after* it includes ``pos``."""
    ms, seq = pos
    if seq > 0:
        return ms, seq - 1
    if ms > 0:
        return ms - 1, _UINT64_MAX
    return ORIGIN
