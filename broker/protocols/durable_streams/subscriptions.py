"""Durable Streams subscriptions (the protocol's sections 6 and 7) on the wire: the requests
and answers of the subscription routes, a request checked and normalized into its
configuration, the webhook URL rules that need no network, and a receiver's check of a
signature. What the engine and the workers share with it (the configuration and its hash,
globs, wake shapes, signing) is ``broker.core.subscriptions``; the state lives in the engine
(``broker.engine.subscriptions``), the routes in the front (``broker.front.routes.
subscriptions``), the deliveries in the workers (``workers.wakes``).
"""

from __future__ import annotations

import base64
import ipaddress
import re
from typing import Literal
from urllib.parse import urlsplit

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.core.errors import INVALID_SUBSCRIPTION, WEBHOOK_URL_REJECTED, ApiError
from broker.core.subscriptions import (
    DEV_LOOPBACK,
    PULL_WAKE,
    SIGNATURE_HEADER,
    WEBHOOK,
    Config,
    Jwks,
    WakeStream,
    address_allowed,
)

__all__ = ["PULL_WAKE", "SIGNATURE_HEADER", "WEBHOOK", "Config", "Jwks", "WakeStream"]

DEFAULT_LEASE_TTL_MS = 30_000
MIN_LEASE_TTL_MS = 1_000
MAX_LEASE_TTL_MS = 600_000
JWKS_MEDIA_TYPE = "application/jwk-set+json"
# Subscription ids: like the API's other identifiers, plus dots.
_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
MAX_PATH_LENGTH = 1024
MAX_DESCRIPTION = 1024


class WebhookConfig(msgspec.Struct, forbid_unknown_fields=True):
    url: str


class SubscriptionRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``PUT {stream-root}/__ds/subscriptions/:id``."""

    type: Literal["webhook", "pull-wake"]
    pattern: str | None = None
    streams: list[str] | None = None
    webhook: WebhookConfig | None = None
    wake_stream: str | None = None
    lease_ttl_ms: int = DEFAULT_LEASE_TTL_MS
    description: str | None = None


class StreamsRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST .../subscriptions/:id/streams``."""

    streams: list[str]


class Ack(msgspec.Struct, forbid_unknown_fields=True):
    stream: str
    offset: str


class AckRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``/callback``, ``/ack`` and ``/release`` (``release`` takes no acks)."""

    wake_id: str
    generation: int
    acks: list[Ack] = []
    done: bool = False


class ClaimRequest(msgspec.Struct, forbid_unknown_fields=True):
    worker: str


class StreamLink(msgspec.Struct):
    """One linked stream, as GET shows it."""

    path: str
    link_type: Literal["glob", "explicit"]
    acked_offset: str


class Signing(msgspec.Struct):
    alg: str
    kid: str
    jwks_url: str


class WebhookView(msgspec.Struct):
    url: str
    signing: Signing


class SubscriptionView(msgspec.Struct):
    """A subscription as ``GET`` (and ``PUT``) answer it; never any secret."""

    id: str
    subscription_id: str
    type: str
    pattern: str | None
    streams: list[StreamLink]
    webhook: WebhookView | None
    wake_stream: str | None
    lease_ttl_ms: int
    created_at: str
    status: str
    description: str | None


class Claimed(msgspec.Struct):
    wake_id: str
    generation: int
    token: str
    streams: list[WakeStream]
    lease_ttl_ms: int


class AckAnswer(msgspec.Struct):
    ok: bool
    next_wake: bool


def check_id(value: str) -> str:
    if not _ID.fullmatch(value):
        raise ApiError(INVALID_SUBSCRIPTION, "a subscription id is 1 to 128 of [A-Za-z0-9._-]")
    return value


def stream_path(value: str) -> str:
    """A stream-root-relative path, normalized (no leading or trailing slash)."""
    path = value.strip().strip("/")
    if (
        not path
        or len(path) > MAX_PATH_LENGTH
        or any(part in ("", ".", "..") for part in path.split("/"))
        or path == "__ds"
        or path.startswith("__ds/")
    ):
        raise ApiError(INVALID_SUBSCRIPTION, f"not a stream path: {value!r}")
    return path


def _pattern(value: str) -> str:
    pattern = value.strip().strip("/")
    parts = pattern.split("/")
    if not pattern or len(pattern) > MAX_PATH_LENGTH or any(p in ("", ".", "..") for p in parts):
        raise ApiError(INVALID_SUBSCRIPTION, f"not a pattern of stream paths: {value!r}")
    for part in parts:
        if "*" in part and part not in ("*", "**"):
            raise ApiError(INVALID_SUBSCRIPTION, "`*` and `**` stand for whole path segments")
    return pattern


def normalize(request: SubscriptionRequest) -> Config:
    """The configuration a request asks for, checked; raises 400 ``invalid_subscription``."""
    pattern = _pattern(request.pattern) if request.pattern is not None else None
    streams = tuple(sorted({stream_path(s) for s in request.streams or ()}))
    if pattern is None and not streams:
        raise ApiError(INVALID_SUBSCRIPTION, "give a pattern, streams, or both")
    if not MIN_LEASE_TTL_MS <= request.lease_ttl_ms <= MAX_LEASE_TTL_MS:
        raise ApiError(INVALID_SUBSCRIPTION, "lease_ttl_ms is from 1000 to 600000")
    if request.description is not None and len(request.description) > MAX_DESCRIPTION:
        raise ApiError(INVALID_SUBSCRIPTION, f"a description is at most {MAX_DESCRIPTION} chars")
    webhook_url = wake_stream = None
    if request.type == WEBHOOK:
        if request.webhook is None or request.wake_stream is not None:
            raise ApiError(INVALID_SUBSCRIPTION, "a webhook subscription takes webhook.url only")
        webhook_url = request.webhook.url.strip()
    else:
        if request.wake_stream is None or request.webhook is not None:
            raise ApiError(INVALID_SUBSCRIPTION, "a pull-wake subscription takes wake_stream only")
        wake_stream = stream_path(request.wake_stream)
    return Config(
        type=request.type,
        pattern=pattern,
        streams=streams,
        webhook_url=webhook_url,
        wake_stream=wake_stream,
        lease_ttl_ms=request.lease_ttl_ms,
        description=request.description,
    )


# Webhook URLs ---------------------------------------------------------------------------------

LOCAL_HOSTS = ("localhost",)


def check_webhook_url(url: str, *, allow_localhost: bool) -> tuple[str, int]:
    """The host and port of a webhook URL a subscription may use, or 400
    ``WEBHOOK_URL_REJECTED``: https only, except ``http://localhost`` and ``http://127.0.0.x``
    when ``allow_localhost`` (development); no literal private, link-local, loopback or other
    local address. Names are resolved and checked again by the caller (``address_allowed``)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ApiError(WEBHOOK_URL_REJECTED, "the webhook URL is not a URL") from None
    host = (parts.hostname or "").lower()
    if not host or parts.username or parts.password or len(url) > 2048:
        raise ApiError(WEBHOOK_URL_REJECTED, "the webhook URL needs a host and no credentials")
    local = host in LOCAL_HOSTS or _is_dev_loopback(host)
    if parts.scheme == "http":
        if not (allow_localhost and local):
            raise ApiError(WEBHOOK_URL_REJECTED, "a webhook URL must use https")
    elif parts.scheme != "https":
        raise ApiError(WEBHOOK_URL_REJECTED, "a webhook URL must use https")
    if local and not allow_localhost:
        raise ApiError(WEBHOOK_URL_REJECTED, "local webhook targets are refused")
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None and not address_allowed(literal, allow_localhost=allow_localhost):
        raise ApiError(WEBHOOK_URL_REJECTED, "private, loopback and local addresses are refused")
    return host, port or (443 if parts.scheme == "https" else 80)


def _is_dev_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return isinstance(address, ipaddress.IPv4Address) and address in DEV_LOOPBACK


# Signing ----------------------------------------------------------------------------------------


def verify(header: str, body: bytes, keys: Jwks, now: float, window: float = 300) -> bool:
    """Check a ``Webhook-Signature`` as a receiver should: the key by ``kid`` from the JWK
    Set, the timestamp within ``window`` seconds, the signature over the raw body."""
    match = re.fullmatch(r"t=(\d+),kid=([^,]+),ed25519=([A-Za-z0-9_-]+)", header)
    if not match:
        return False
    timestamp, kid, signature = match.groups()
    key = next((k for k in keys.keys if k.kid == kid), None)
    if key is None or abs(now - int(timestamp)) > window:
        return False
    public = Ed25519PublicKey.from_public_bytes(
        base64.urlsafe_b64decode(key.x + "=" * (-len(key.x) % 4))
    )
    try:
        public.verify(
            base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)),
            timestamp.encode() + b"." + body,
        )
    except Exception:  # noqa: BLE001 (cryptography raises InvalidSignature, or a decode error)
        return False
    return True
