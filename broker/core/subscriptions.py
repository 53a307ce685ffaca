"""Durable Streams subscriptions, what the engine, the workers and the front share (pure):
a subscription's normalized configuration and its hash, the path globs, the wake's wire
shapes, Ed25519 webhook signatures and the JWK Set of their keys, the addresses a webhook may
go to, and the retry backoff. The requests and answers of the routes are the protocol's
(``broker.protocols.durable_streams.subscriptions``).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from typing import Literal

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

WEBHOOK = "webhook"
PULL_WAKE = "pull-wake"
SIGNATURE_HEADER = "Webhook-Signature"


class Config(msgspec.Struct, frozen=True, kw_only=True):
    """A subscription's normalized configuration: what its hash covers."""

    type: str
    pattern: str | None
    streams: tuple[str, ...]
    webhook_url: str | None
    wake_stream: str | None
    lease_ttl_ms: int
    description: str | None

    @property
    def digest(self) -> str:
        """The hash an identical re-confirmation must match (sorted keys, no spaces)."""
        canonical = msgspec.json.encode(msgspec.to_builtins(self), order="sorted")
        return hashlib.sha256(canonical).hexdigest()


class WakeStream(msgspec.Struct):
    """One linked stream in a wake: where its cursor is and where the stream ends."""

    path: str
    link_type: Literal["glob", "explicit"]
    acked_offset: str
    tail_offset: str
    has_pending: bool


class WebhookWake(msgspec.Struct):
    """The body of a webhook delivery."""

    subscription_id: str
    wake_id: str
    generation: int
    streams: list[WakeStream]
    callback_url: str
    callback_token: str


class WakeEvent(msgspec.Struct):
    """A pull-wake subscription's event in its wake stream."""

    type: str
    subscription_id: str
    stream: str | None
    generation: int
    ts: int


class WebhookAnswer(msgspec.Struct):
    """What a webhook receiver may answer: ``{"done": true}`` acks the whole wake."""

    done: bool = False


class Jwk(msgspec.Struct):
    kty: str
    crv: str
    kid: str
    use: str
    alg: str
    x: str


class Jwks(msgspec.Struct):
    keys: list[Jwk]


def matches(pattern: str, path: str) -> bool:
    """Whether ``path`` matches the glob: ``*`` is one segment, ``**`` zero or more."""
    return _match(pattern.split("/"), path.split("/"))


def _match(pattern: list[str], path: list[str]) -> bool:
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_match(rest, path[i:]) for i in range(len(path) + 1))
    if not path:
        return False
    return (head == "*" or head == path[0]) and _match(rest, path[1:])


def literal_prefix(pattern: str) -> str:
    """The segments before the first wildcard, with their slash: every match starts so."""
    literal: list[str] = []
    for part in pattern.split("/"):
        if part in ("*", "**"):
            return "/".join(literal) + "/" if literal else ""
        literal.append(part)
    return pattern


# Webhook targets ------------------------------------------------------------------------------

DEV_LOOPBACK = ipaddress.ip_network("127.0.0.0/24")


def address_allowed(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, *, allow_localhost: bool
) -> bool:
    """Whether a webhook may be sent to ``address``: a global one, or 127.0.0.x (and ::1) in
    development. Private (RFC 1918, unique local), link-local (cloud metadata), loopback,
    multicast, reserved and unspecified addresses are refused; so is an IPv4-mapped one of
    those."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if allow_localhost and (
        (isinstance(address, ipaddress.IPv4Address) and address in DEV_LOOPBACK)
        or address == ipaddress.IPv6Address("::1")
    ):
        return True
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


# Signing ----------------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_bytes(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def private_bytes(private: Ed25519PrivateKey) -> bytes:
    return private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def key_id(public: bytes) -> str:
    """``ds_`` and the key's RFC 7638 JWK thumbprint: stable, and derived from the key."""
    canonical = b'{"crv":"Ed25519","kty":"OKP","x":"' + _b64url(public).encode() + b'"}'
    return "ds_" + _b64url(hashlib.sha256(canonical).digest())


def jwk(public: bytes) -> Jwk:
    return Jwk("OKP", "Ed25519", key_id(public), "sig", "EdDSA", _b64url(public))


def sign(private: Ed25519PrivateKey, kid: str, body: bytes, timestamp: int) -> str:
    """The ``Webhook-Signature`` header: Ed25519 over ``<timestamp>.<raw body>``."""
    signature = private.sign(str(timestamp).encode() + b"." + body)
    return f"t={timestamp},kid={kid},ed25519={_b64url(signature)}"


def backoff_seconds(attempt: int, jitter: float) -> float:
    """The wait before retry ``attempt`` (1 for the first): 1 s doubling up to 60 s, with
    ``jitter`` in [-1, 1] spreading it by up to 20 %."""
    base = min(60.0, float(2 ** max(0, attempt - 1)))
    return base * (1 + 0.2 * jitter)
