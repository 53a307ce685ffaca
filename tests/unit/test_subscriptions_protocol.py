"""The pure part of Durable Streams subscriptions: globs, the configuration's hash, webhook
URL and address rules, signatures and their keys, the retry backoff."""

from __future__ import annotations

import ipaddress
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.core.errors import ApiError
from broker.core.subscriptions import (
    Jwks,
    address_allowed,
    backoff_seconds,
    jwk,
    key_id,
    literal_prefix,
    matches,
    public_bytes,
    sign,
)
from broker.protocols.durable_streams.subscriptions import (
    SubscriptionRequest,
    WebhookConfig,
    check_webhook_url,
    normalize,
    verify,
)


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("events/*", "events/a", True),
        ("events/*", "events/a/b", False),
        ("events/*", "events", False),
        ("events/**", "events", True),
        ("events/**", "events/a/b/c", True),
        ("**/log", "a/b/log", True),
        ("**/log", "log", True),
        ("a/*/c", "a/b/c", True),
        ("a/*/c", "a/b/d", False),
        ("conversations/*", "conversations/c_1", True),
        ("*", "x", True),
        ("*", "x/y", False),
    ],
)
def test_globs_match_whole_segments(pattern: str, path: str, expected: bool) -> None:
    assert matches(pattern, path) is expected


def test_a_patterns_literal_prefix_narrows_the_listing() -> None:
    assert literal_prefix("events/*") == "events/"
    assert literal_prefix("a/b/**/c") == "a/b/"
    assert literal_prefix("**") == ""
    assert literal_prefix("exact/path") == "exact/path"


def _request(**fields: object) -> SubscriptionRequest:
    base: dict[str, object] = {"type": "webhook", "webhook": WebhookConfig("https://x.example/h")}
    return SubscriptionRequest(**{**base, **fields})  # type: ignore[arg-type]


def test_the_configuration_hash_is_of_the_normalized_configuration() -> None:
    one = normalize(_request(pattern="events/*", streams=["b", "/a/", "a"]))
    two = normalize(_request(pattern="/events/*/", streams=["a", "b"]))
    assert one == two and one.digest == two.digest
    assert one.streams == ("a", "b") and one.lease_ttl_ms == 30_000
    assert normalize(_request(pattern="events/*", description="x")).digest != one.digest
    assert normalize(_request(pattern="events/*", lease_ttl_ms=1000)).digest != one.digest


@pytest.mark.parametrize(
    "fields",
    [
        {},  # neither pattern nor streams
        {"pattern": "events/a*"},
        {"pattern": "events//a"},
        {"streams": ["__ds/x"]},
        {"streams": ["a/../b"]},
        {"pattern": "x", "lease_ttl_ms": 999},
        {"pattern": "x", "lease_ttl_ms": 600_001},
        {"pattern": "x", "wake_stream": "w"},
    ],
)
def test_a_configuration_the_protocol_does_not_allow_is_refused(fields: dict) -> None:
    with pytest.raises(ApiError) as refused:
        normalize(_request(**fields))
    assert refused.value.code == "invalid_subscription"


@pytest.mark.parametrize(
    ("url", "dev", "allowed"),
    [
        ("https://hooks.example.com/x", False, True),
        ("https://8.8.8.8/x", False, True),
        ("http://hooks.example.com/x", False, False),
        ("http://127.0.0.1:8080/x", False, False),
        ("http://127.0.0.1:8080/x", True, True),
        ("http://127.0.0.9/x", True, True),
        ("http://127.0.1.1/x", True, False),
        ("http://localhost/x", True, True),
        ("https://localhost/x", False, False),
        ("https://10.1.2.3/x", True, False),
        ("https://169.254.169.254/x", True, False),
        ("https://[fe80::1]/x", False, False),
        ("https://[::ffff:192.168.0.1]/x", False, False),
        ("https://user:pw@hooks.example.com/x", False, False),
        ("gopher://hooks.example.com/x", False, False),
    ],
)
def test_webhook_urls(url: str, dev: bool, allowed: bool) -> None:
    if allowed:
        check_webhook_url(url, allow_localhost=dev)
    else:
        with pytest.raises(ApiError) as refused:
            check_webhook_url(url, allow_localhost=dev)
        assert refused.value.code == "WEBHOOK_URL_REJECTED"


@pytest.mark.parametrize(
    ("address", "dev", "allowed"),
    [
        ("93.184.216.34", False, True),
        ("10.0.0.1", False, False),
        ("172.31.255.255", False, False),
        ("192.168.0.1", False, False),
        ("100.64.0.1", False, False),  # shared address space (carrier-grade NAT)
        ("169.254.169.254", False, False),
        ("127.0.0.1", False, False),
        ("127.0.0.1", True, True),
        ("0.0.0.0", True, False),
        ("::1", True, True),
        ("::1", False, False),
        ("fd12::1", False, False),
        ("::ffff:10.0.0.1", False, False),
        ("224.0.0.1", False, False),
    ],
)
def test_resolved_addresses(address: str, dev: bool, allowed: bool) -> None:
    assert address_allowed(ipaddress.ip_address(address), allow_localhost=dev) is allowed


def test_a_signature_verifies_with_its_published_key_only() -> None:
    private, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    published = Jwks([jwk(public_bytes(private))])
    kid = key_id(public_bytes(private))
    assert kid.startswith("ds_") and published.keys[0].kid == kid
    now = int(time.time())
    header = sign(private, kid, b'{"a":1}', now)
    assert verify(header, b'{"a":1}', published, now)
    assert not verify(header, b'{"a":2}', published, now)
    assert not verify(header, b'{"a":1}', published, now + 301)  # outside the replay window
    forged = sign(other, kid, b'{"a":1}', now)
    assert not verify(forged, b'{"a":1}', published, now)
    unknown = sign(other, key_id(public_bytes(other)), b'{"a":1}', now)
    assert not verify(unknown, b'{"a":1}', published, now)


def test_backoff_doubles_from_1_to_60_seconds_with_20_percent_jitter() -> None:
    assert [backoff_seconds(n, 0) for n in (1, 2, 3, 6, 7, 20)] == [1, 2, 4, 32, 60, 60]
    assert backoff_seconds(1, -1) == pytest.approx(0.8)
    assert backoff_seconds(10, 1) == pytest.approx(72)
