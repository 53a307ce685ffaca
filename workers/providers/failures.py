"""Upstream failures and the codes a run ends with.

Every provider raises ``UpstreamFailure`` with one of these codes; ``guarded`` turns it into the
stream's final ``Failure`` chunk. Messages are built from the status, a short excerpt of the
upstream's own error text and the retry-after hint, with every secret taken out, since they end
up in a stored event that every device of the conversation reads.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import aclosing
from typing import Any

import msgspec

from workers.providers.base import Chunk, Failure

AUTH_FAILED = "auth_failed"
RATE_LIMITED = "rate_limited"
OVERLOADED = "overloaded"
BAD_REQUEST = "bad_request"
MALFORMED_CHUNK = "malformed_chunk"
STREAM_CUT = "stream_cut"
TIMEOUT_FIRST_BYTE = "timeout_first_byte"
TIMEOUT_IDLE = "timeout_idle"
UPSTREAM_ERROR = "upstream_error"

_EXCERPT_CHARS = 300
_REDACTED = "[redacted]"
_MIN_SECRET = 4  # shorter values would redact ordinary words
_MIN_FRAGMENT = 3


class UpstreamFailure(Exception):
    """The upstream call failed in a way the run must report; ``code`` is one of the above."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


def code_for_status(status: int) -> str:
    if status in (401, 403):
        return AUTH_FAILED
    if status == 429:
        return RATE_LIMITED
    if status in (503, 529):
        return OVERLOADED
    if status in (400, 404, 413, 422):
        return BAD_REQUEST
    return UPSTREAM_ERROR


def retry_after(headers: Mapping[str, str]) -> str | None:
    """The upstream's retry hint, in seconds, from ``retry-after-ms`` or ``retry-after``."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return f"{float(raw_ms) / 1000:g}"
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    raw = raw.strip()
    try:
        return f"{float(raw):g}"
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return f"{max(0, round(when.timestamp() - time.time()))}"


def error_text(body: bytes) -> str:
    """The human part of an upstream error body, whichever vendor's shape it has."""
    try:
        parsed: Any = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body.decode("utf-8", errors="replace").strip()
    if isinstance(parsed, list) and parsed:
        parsed = parsed[0]
    if isinstance(parsed, dict):
        error = parsed.get("error", parsed)
        if isinstance(error, str):
            return error
        if isinstance(error, dict):
            for key in ("message", "detail", "error"):
                value = error.get(key)
                if isinstance(value, str):
                    return value
        for key in ("message", "detail"):
            value = parsed.get(key)
            if isinstance(value, str):
                return value
    return body.decode("utf-8", errors="replace").strip()


def _google_details(body: bytes) -> list[dict[str, Any]]:
    """``error.details`` of a Google API error body (``google.rpc.Status``), else empty."""
    try:
        parsed: Any = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return []
    if isinstance(parsed, list) and parsed:
        parsed = parsed[0]
    error = parsed.get("error") if isinstance(parsed, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def google_retry_delay(body: bytes) -> str | None:
    """The ``RetryInfo.retryDelay`` of a Google API error (``"7s"``, ``"0.5s"``), in seconds:
    Gemini's 429 says when to retry there, not in a ``Retry-After`` header."""
    for detail in _google_details(body):
        delay = detail.get("retryDelay")
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo") and isinstance(delay, str):
            try:
                return f"{float(delay.removesuffix('s')):g}"
            except ValueError:
                return None
    return None


def google_key_refused(body: bytes) -> bool:
    """Whether a Google API error names the API key as the cause (``API_KEY_INVALID``,
    ``API_KEY_EXPIRED``...): Gemini answers a bad key with 400, not 401."""
    return any(
        str(detail.get("@type", "")).endswith("google.rpc.ErrorInfo")
        and str(detail.get("reason", "")).startswith("API_KEY_")
        for detail in _google_details(body)
    )


def status_failure(
    status: int, headers: Mapping[str, str], body: bytes, secrets: Iterable[str] = ()
) -> UpstreamFailure:
    """The failure for a non-2xx answer."""
    code = code_for_status(status)
    if code == BAD_REQUEST and google_key_refused(body):
        code = AUTH_FAILED
    if code == AUTH_FAILED:
        # Some vendors echo part of the key back; their text is left out altogether.
        return UpstreamFailure(code, f"the upstream refused the credentials (HTTP {status})")
    message = f"the upstream answered HTTP {status}"
    detail = excerpt(error_text(body), secrets)
    if detail:
        message += f": {detail}"
    if code == RATE_LIMITED:
        hint = retry_after(headers) or google_retry_delay(body)
        message += f" (retry after {hint} s)" if hint is not None else " (no retry-after given)"
    return UpstreamFailure(code, message)


def excerpt(text: str, secrets: Iterable[str] = ()) -> str:
    """One short line of upstream text, with every secret taken out before it is cut.

    Cutting first would leave the start of a secret that crosses the cut; and a secret the
    upstream itself echoed cut short can still end the excerpt, so a trailing fragment that
    begins a secret is taken out too.
    """
    secrets = tuple(s for s in secrets if len(s) >= _MIN_SECRET)
    text = redact(" ".join(text.split()), secrets)
    if len(text) <= _EXCERPT_CHARS:
        return _redact_cut_fragment(text, secrets)
    kept = text[: _EXCERPT_CHARS - 1]
    # A cut through a redaction marker keeps the whole marker rather than half of one.
    marker_start = text.rfind(_REDACTED, 0, len(kept) + len(_REDACTED) - 1)
    if marker_start >= 0 and marker_start + len(_REDACTED) > len(kept):
        kept = text[: marker_start + len(_REDACTED)]
    return _redact_cut_fragment(kept, secrets) + "…"


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if len(secret) >= _MIN_SECRET:
            text = text.replace(secret, _REDACTED)
    return text


def _redact_cut_fragment(text: str, secrets: tuple[str, ...]) -> str:
    """Replace a tail of ``text`` that is the beginning of a secret (of 3 characters or more)."""
    for secret in secrets:
        for size in range(min(len(secret) - 1, len(text)), _MIN_FRAGMENT - 1, -1):
            if text.endswith(secret[:size]):
                return text[:-size] + _REDACTED
    return text


def request_secrets(api_key: str | None, headers: Mapping[str, str]) -> tuple[str, ...]:
    """What must never show in a message: the key (also as sent, trimmed) and every value of
    the catalogue's extra request headers, which may carry credentials of their own."""
    found = [api_key, api_key.strip()] if api_key else []
    found += headers.values()
    return tuple(dict.fromkeys(s for s in found if len(s) >= _MIN_SECRET))


async def guarded(chunks: AsyncIterator[Chunk], secrets: tuple[str, ...]) -> AsyncIterator[Chunk]:
    """Relay a provider's chunks; an ``UpstreamFailure`` becomes the final ``Failure`` chunk.

    Closing this iterator closes the provider's, which closes its HTTP response.
    """
    async with aclosing(chunks):
        try:
            async for chunk in chunks:
                if isinstance(chunk, Failure):
                    chunk = Failure(chunk.code, redact(chunk.message, secrets))
                yield chunk
        except UpstreamFailure as failure:
            yield Failure(failure.code, redact(failure.message, secrets))


def code_for_error_type(kind: str | None) -> str:
    """The failure code for an error reported inside a stream, from the vendor's error type."""
    kind = (kind or "").lower()
    if "rate_limit" in kind or "resource_exhausted" in kind or "quota" in kind:
        return RATE_LIMITED
    if "overload" in kind or "unavailable" in kind:
        return OVERLOADED
    if "auth" in kind or "permission" in kind or "unauthenticated" in kind:
        return AUTH_FAILED
    if "invalid" in kind or "not_found" in kind or "too_large" in kind:
        return BAD_REQUEST
    return UPSTREAM_ERROR
