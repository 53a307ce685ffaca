"""Browser rules: CORS for the configured origins only, the session cookie, and the headers every
answer carries (``nosniff`` everywhere; ``no-store`` on snapshots and session answers)."""

from __future__ import annotations

import httpx
import pytest

from tests.api import error_code
from tests.helpers import new_cid
from tests.sse import open_sse
from tests.stack import Stack
from tests.tokens import AUTH, hs256

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

ALLOWED = "https://app.example"
UNKNOWN = "https://evil.example"


def _preflight(origin: str, method: str, headers: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


async def test_cors_answers_the_configured_origin_and_no_other(stack: Stack) -> None:
    stack.start(fronts=1, workers=0, **AUTH, cors_origins=f"{ALLOWED}, https://other.example")
    (front,) = stack.fronts
    alice = front.api.bearer(hs256("alice"))
    cid = new_cid()
    await alice.start_run(cid, "hi")
    stream_path = f"/v1/conversations/{cid}/stream"

    for method, path, asked in [
        ("GET", stream_path, "authorization, last-event-id"),
        (
            "POST",
            f"/v1/conversations/{cid}/messages",
            "authorization, content-type, idempotency-key",
        ),
        ("DELETE", "/v1/session", "authorization"),
    ]:
        response = await front.api.request(
            "OPTIONS", path, headers=_preflight(ALLOWED, method, asked)
        )
        assert response.status_code == 200, response.text
        assert response.headers["access-control-allow-origin"] == ALLOWED
        assert response.headers["access-control-allow-credentials"] == "true"
        allowed = {
            h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")
        }
        assert {h.strip() for h in asked.split(",")} <= allowed
        assert method in response.headers["access-control-allow-methods"]
        assert response.headers["x-content-type-options"] == "nosniff"

        refused = await front.api.request(
            "OPTIONS", path, headers=_preflight(UNKNOWN, method, asked)
        )
        assert refused.status_code == 400
        assert error_code(refused) == "cors_refused"
        assert "access-control-allow-origin" not in refused.headers
    refused = await front.api.request(
        "OPTIONS", stream_path, headers=_preflight(ALLOWED, "GET", "x-secret-header")
    )
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers

    # Simple requests: the allowed origin may read the answer (errors included), others not.
    answer = await alice.snapshot(cid)
    for headers, expect in [({"Origin": ALLOWED}, ALLOWED), ({"Origin": UNKNOWN}, None)]:
        response = await alice.request("GET", f"/v1/conversations/{cid}", headers=headers)
        assert response.status_code == 200 and response.json() == answer.json()
        assert response.headers.get("access-control-allow-origin") == expect
        assert "origin" in response.headers["vary"].lower()
        unauthorized = await front.api.request("GET", f"/v1/conversations/{cid}", headers=headers)
        assert unauthorized.status_code == 401
        assert unauthorized.headers.get("access-control-allow-origin") == expect
    exposed = response.headers["access-control-expose-headers"].lower()
    assert "retry-after" in exposed and "www-authenticate" in exposed

    async with await open_sse(
        front.url,
        stream_path,
        headers={"Origin": ALLOWED, "Authorization": f"Bearer {hs256('alice')}"},
    ) as stream:
        assert stream.status == 200
        assert stream.headers["access-control-allow-origin"] == ALLOWED
        assert stream.headers["access-control-allow-credentials"] == "true"
        assert stream.headers["x-content-type-options"] == "nosniff"


async def test_the_session_cookie_lets_a_page_stream_and_is_cleared(stack: Stack) -> None:
    stack.start(fronts=2, workers=0, **AUTH)
    front, other = stack.fronts
    token = hs256("alice", ttl=600)
    cid = new_cid()
    await front.api.bearer(token).start_run(cid, "hi")
    async with httpx.AsyncClient(base_url=front.url, trust_env=False, timeout=10) as browser:
        started = await browser.post("/v1/session", headers={"Authorization": f"Bearer {token}"})
        assert started.status_code == 204
        assert started.headers["cache-control"] == "no-store"
        cookie = started.headers["set-cookie"]
        attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
        assert cookie.startswith(f"broker_token={token};")
        assert {"httponly", "path", "samesite", "max-age"} <= attributes
        assert "secure" not in attributes  # plain http on loopback: a browser would drop it
        assert "Path=/v1/" in cookie and "samesite=lax" in cookie.lower()
        max_age = int(cookie.lower().split("max-age=")[1].split(";")[0])
        assert 590 <= max_age <= 600 + 30  # the token's lifetime (and the leeway)

        # The client now holds only the cookie, as an EventSource page does.
        async with browser.stream("GET", f"/v1/conversations/{cid}/stream") as stream:
            assert stream.status_code == 200
        assert (await browser.get(f"/v1/conversations/{cid}")).status_code == 200
        assert (await browser.post(f"/v1/conversations/{cid}/cancel")).status_code == 401

        ended = await browser.delete("/v1/session", headers={"Authorization": f"Bearer {token}"})
        assert ended.status_code == 204 and ended.headers["cache-control"] == "no-store"
        assert "max-age=0" in ended.headers["set-cookie"].lower()
        assert (await browser.get(f"/v1/conversations/{cid}")).status_code == 401

    # Logging out ended the session on the server too: a copy of the cookie, kept by anyone,
    # reads nothing more, on any front, until its token would have expired anyway.
    copied = {"Cookie": f"broker_token={token}"}
    for target in (front, other):
        refused = await target.api.request("GET", f"/v1/conversations/{cid}", headers=copied)
        assert refused.status_code == 401 and "ended" in refused.text
        async with await target.api.stream(cid, headers=copied) as stream:
            assert stream.status == 401
    # The token itself still works in the header, and its holder may start a session again.
    assert (await front.api.bearer(token).snapshot(cid)).status_code == 200
    again = await other.api.request(
        "POST", "/v1/session", headers={"Authorization": f"Bearer {token}"}
    )
    assert again.status_code == 204
    assert (
        await front.api.request("GET", f"/v1/conversations/{cid}", headers=copied)
    ).status_code == 200

    # X-Forwarded-Proto counts only from a trusted proxy: then (TLS ended at the proxy) the
    # cookie is Secure.
    forwarded = {"Authorization": f"Bearer {token}", "X-Forwarded-Proto": "https"}
    untrusted = await front.api.request("POST", "/v1/session", headers=forwarded)
    assert "secure" not in untrusted.headers["set-cookie"].lower()
    behind_tls = stack.front(trusted_proxies="127.0.0.1")
    trusted = await behind_tls.api.request("POST", "/v1/session", headers=forwarded)
    assert "secure" in trusted.headers["set-cookie"].lower()


async def test_every_answer_says_nosniff_and_snapshots_are_not_stored(stack: Stack) -> None:
    stack.start(fronts=1, workers=0)  # BROKER_AUTH=none, the tests' default
    (front,) = stack.fronts
    cid = new_cid()
    await front.api.start_run(cid, "hi")
    answers = [
        await front.api.request("GET", "/healthz"),
        await front.api.request("GET", "/openapi.json"),
        await front.api.snapshot(cid),
        await front.api.snapshot(new_cid()),
        await front.api.request("GET", "/nowhere"),
        await front.api.request("PUT", f"/v1/conversations/{cid}"),
        await front.api.request("POST", f"/v1/conversations/{cid}/messages", content=b"{"),
        await front.api.request("POST", "/v1/session"),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 404, 404, 405, 415, 204]
    for answer in answers:
        assert answer.headers["x-content-type-options"] == "nosniff", answer.request.url
    assert answers[2].headers["cache-control"] == "no-store"
    assert "set-cookie" not in answers[-1].headers  # no token, no cookie
    async with await front.api.stream(cid) as stream:
        assert stream.headers["x-content-type-options"] == "nosniff"
