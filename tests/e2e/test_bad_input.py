"""Bad input gets the documented 4xx and code, and changes nothing in Redis.

One conversation exists (its run cancelled while queued, so nothing moves); every bad request
of the table is then sent to a front, and the test prefix's keys and values must be exactly as
before: same key set, same serialized values.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import redis

from tests.api import error_code
from tests.helpers import new_cid
from tests.sse import open_sse
from tests.stack import Front, Stack

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

MAX_BODY = 4096
MAX_CONTENT = 100
KNOWN = "known_conversation"
LONG_ID = "x" * 129


@dataclass(frozen=True)
class Bad:
    """One bad request and the answer the contract documents for it."""

    name: str
    method: str
    path: str
    status: int
    code: str
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    sse: bool = False  # send with an SSE client, as a browser's EventSource would

    def __str__(self) -> str:
        return self.name


def _post(name: str, body: Any, status: int, code: str, **kw: Any) -> Bad:
    return Bad(name, "POST", f"/v1/conversations/{KNOWN}/messages", status, code, json=body, **kw)


def _raw(name: str, body: bytes, status: int, code: str) -> Bad:
    return Bad(
        name,
        "POST",
        f"/v1/conversations/{KNOWN}/messages",
        status,
        code,
        content=body,
        headers={"Content-Type": "application/json"},
    )


def _stream(name: str, path: str, status: int, code: str, **headers: str) -> Bad:
    return Bad(name, "GET", path, status, code, headers=headers, sse=True)


STREAM = f"/v1/conversations/{KNOWN}/stream"
VALID = {"content": "hello"}

TABLE: list[Bad] = [
    # Identifiers in paths.
    Bad("cid too long", "GET", f"/v1/conversations/{LONG_ID}", 400, "invalid_id"),
    Bad("cid with a dot", "GET", "/v1/conversations/bad.id", 400, "invalid_id"),
    Bad("cid with a space", "GET", "/v1/conversations/bad%20id", 400, "invalid_id"),
    Bad("cid non-ascii", "GET", "/v1/conversations/caf%C3%A9", 400, "invalid_id"),
    Bad("cid with %2F", "GET", "/v1/conversations/a%2Fb/stream", 400, "invalid_id", sse=True),
    Bad("cid %2E%2E", "GET", "/v1/conversations/%2E%2E%2Fx", 400, "invalid_id"),
    Bad(
        "cid with a colon", "POST", "/v1/conversations/a:b/messages", 400, "invalid_id", json=VALID
    ),
    Bad(
        "cid with braces",
        "POST",
        "/v1/conversations/%7Bx%7D/messages",
        400,
        "invalid_id",
        json=VALID,
    ),
    Bad(
        "cid too long post",
        "POST",
        f"/v1/conversations/{LONG_ID}/messages",
        400,
        "invalid_id",
        json=VALID,
    ),
    Bad("cid bad on cancel", "POST", "/v1/conversations/a*b/cancel", 400, "invalid_id"),
    Bad(
        "cid with %2F on post",
        "POST",
        "/v1/conversations/a%2Fb/messages",
        400,
        "invalid_id",
        json=VALID,
    ),
    Bad("empty cid", "GET", "/v1/conversations//stream", 400, "invalid_id", sse=True),
    _stream("run id with a dot", f"/v1/conversations/{KNOWN}/runs/r.1/stream", 400, "invalid_id"),
    _stream(
        "run id too long", f"/v1/conversations/{KNOWN}/runs/{LONG_ID}/stream", 400, "invalid_id"
    ),
    Bad(
        "run id bad on cancel",
        "POST",
        f"/v1/conversations/{KNOWN}/runs/r%2Fx/cancel",
        400,
        "invalid_id",
    ),
    Bad(
        "run id too long cancel",
        "POST",
        f"/v1/conversations/{KNOWN}/runs/{LONG_ID}/cancel",
        400,
        "invalid_id",
    ),
    # Last-Event-ID garbage, in the header and in the query.
    _stream("lei words", STREAM, 400, "invalid_last_event_id", **{"Last-Event-ID": "abc"}),
    _stream("lei three parts", STREAM, 400, "invalid_last_event_id", **{"Last-Event-ID": "1-2-3"}),
    _stream("lei negative", STREAM, 400, "invalid_last_event_id", **{"Last-Event-ID": "-5-0"}),
    _stream(
        "lei bad seq", STREAM, 400, "invalid_last_event_id", **{"Last-Event-ID": "1731000000000-x"}
    ),
    _stream(
        "lei overflow",
        STREAM,
        400,
        "invalid_last_event_id",
        **{"Last-Event-ID": "18446744073709551616-0"},
    ),
    _stream("lei huge", STREAM, 400, "invalid_last_event_id", **{"Last-Event-ID": "9" * 40 + "-0"}),
    _stream("lei query words", STREAM + "?last_event_id=nope", 400, "invalid_last_event_id"),
    _stream("lei query special", STREAM + "?last_event_id=%2B", 400, "invalid_last_event_id"),
    _stream(
        "lei query non-ascii", STREAM + "?last_event_id=%EF%BC%91-0", 400, "invalid_last_event_id"
    ),
    _stream(
        "lei query injection", STREAM + "?last_event_id=1-0%20%2B", 400, "invalid_last_event_id"
    ),
    _stream(
        "lei on run stream",
        f"/v1/conversations/{KNOWN}/runs/active/stream",
        400,
        "invalid_last_event_id",
        **{"Last-Event-ID": "x-y"},
    ),
    # Bodies.
    _raw("oversize body", b'{"content": "' + b"a" * MAX_BODY + b'"}', 413, "body_too_large"),
    _raw("not json", b"hello there", 400, "malformed_json"),
    _raw("empty body", b"", 400, "malformed_json"),
    _raw("truncated json", b'{"content": "x"', 400, "malformed_json"),
    _raw("not utf-8", b'{"content": "\xff\xfe"}', 400, "malformed_json"),
    _post("json array", ["content", "hello"], 400, "malformed_json"),
    _post("json string", "hello", 400, "malformed_json"),
    _raw("json null", b"null", 400, "malformed_json"),
    _post("json number", 42, 400, "malformed_json"),
    # Nesting deeper than a decoder can recurse, inside the body limit (2 to 4 KB).
    _raw("deeply nested array", b"[" * 1000 + b"]" * 1000, 400, "malformed_json"),
    _raw("very deeply nested array", b"[" * 2000 + b"]" * 2000, 400, "malformed_json"),
    _raw(
        "deeply nested params",
        b'{"content": "x", "params": {"seed": ' + b"[" * 1500 + b"]" * 1500 + b"}}",
        400,
        "malformed_json",
    ),
    _raw(
        "deeply nested content",
        b'{"content": ' + b'[{"":' * 550 + b"1" + b"}]" * 550 + b"}",
        400,
        "malformed_json",
    ),
    _post("missing content", {}, 422, "invalid_field"),
    _post("only params", {"params": {"tokens": 3}}, 422, "invalid_field"),
    _post("content number", {"content": 5}, 422, "invalid_field"),
    _post("content null", {"content": None}, 422, "invalid_field"),
    _post("content list", {"content": ["a"]}, 422, "invalid_field"),
    _post("content too large", {"content": "a" * (MAX_CONTENT + 1)}, 413, "content_too_large"),
    _post("model number", {"content": "x", "model": 5}, 422, "invalid_field"),
    _post("unknown model", {"content": "x", "model": "gpt-unknown"}, 422, "unknown_model"),
    _post("params not object", {"content": "x", "params": "fast"}, 422, "invalid_field"),
    _post("params list", {"content": "x", "params": [1]}, 422, "invalid_field"),
    _post("tokens negative", {"content": "x", "params": {"tokens": -1}}, 422, "invalid_field"),
    _post("tokens text", {"content": "x", "params": {"tokens": "many"}}, 422, "invalid_field"),
    _post(
        "interval negative", {"content": "x", "params": {"interval_ms": -5}}, 422, "invalid_field"
    ),
    _post(
        "reasoning negative",
        {"content": "x", "params": {"reasoning_tokens": -1}},
        422,
        "invalid_field",
    ),
    _post(
        "unknown param", {"content": "x", "params": {"temperature_of_sun": 1}}, 422, "invalid_field"
    ),
    # Every param is bounded, a free-form one included.
    _post("seed too long", {"content": "x", "params": {"seed": "s" * 257}}, 422, "invalid_field"),
    _post(
        "idempotency key too long",
        VALID,
        400,
        "invalid_idempotency_key",
        headers={"Idempotency-Key": "k" * 300},
    ),
    _post(
        "idempotency key with space",
        VALID,
        400,
        "invalid_idempotency_key",
        headers={"Idempotency-Key": "a b"},
    ),
    # Unknown things.
    Bad(
        "unknown conversation snapshot",
        "GET",
        "/v1/conversations/nobody_here",
        404,
        "conversation_not_found",
    ),
    # (The stream of an unknown conversation waits for it: tests/e2e/test_conversations.py.)
    _stream(
        "unknown conversation active run",
        "/v1/conversations/nobody_here/runs/active/stream",
        404,
        "conversation_not_found",
    ),
    Bad(
        "unknown conversation cancel",
        "POST",
        "/v1/conversations/nobody_here/cancel",
        404,
        "conversation_not_found",
    ),
    _stream(
        "unknown run stream", f"/v1/conversations/{KNOWN}/runs/r_nope/stream", 404, "run_not_found"
    ),
    Bad(
        "unknown run cancel",
        "POST",
        f"/v1/conversations/{KNOWN}/runs/r_nope/cancel",
        404,
        "run_not_found",
    ),
    # Unknown fields are refused at the top as in params: a misspelt field is not dropped.
    _post("unknown top-level field", {"content": "x", "modle": "simulated"}, 422, "invalid_field"),
    _post("unknown param", {"content": "x", "params": {"tokenz": 3}}, 422, "invalid_field"),
    # Only JSON is read as JSON.
    Bad(
        "form body",
        "POST",
        f"/v1/conversations/{KNOWN}/messages",
        415,
        "unsupported_media_type",
        content=b'{"content": "x"}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ),
    Bad(
        "text body",
        "POST",
        f"/v1/conversations/{KNOWN}/messages",
        415,
        "unsupported_media_type",
        content=b'{"content": "x"}',
        headers={"Content-Type": "text/plain"},
    ),
    Bad(
        "no content type",
        "POST",
        f"/v1/conversations/{KNOWN}/messages",
        415,
        "unsupported_media_type",
        content=b'{"content": "x"}',
    ),
    # Paths and methods no route takes: JSON, answered where asked (no redirect).
    Bad("unknown path", "GET", "/v2/nothing", 404, "not_found"),
    Bad("trailing slash", "GET", "/v1/models/", 404, "not_found"),
    Bad("trailing slash on a probe", "GET", "/healthz/", 404, "not_found"),
    Bad("wrong method", "DELETE", "/v1/models", 405, "method_not_allowed"),
    # State conflicts.
    Bad(
        "cancel with nothing running",
        "POST",
        f"/v1/conversations/{KNOWN}/cancel",
        409,
        "no_active_run",
    ),
]


async def _chunked_oversize() -> AsyncIterator[bytes]:
    """A body with no Content-Length: the limit must hold while reading, not only up front."""
    yield b'{"content": "'
    for _ in range(MAX_BODY // 512 + 2):
        yield b"a" * 512
    yield b'"}'


def _state(client: redis.Redis, prefix: str) -> dict[bytes, bytes | None]:
    """Every key of the test prefix with its serialized value (TTL aside)."""
    return {key: client.dump(key) for key in client.scan_iter(match=f"{prefix}:*", count=1000)}


async def _send(front: Front, bad: Bad) -> tuple[int, bytes, str]:
    """Status, body and content type of the answer."""
    if bad.sse:
        stream = await open_sse(front.url, bad.path, headers=bad.headers)
        if stream.status == 200:
            await stream.close()
        return stream.status, stream.response.body, stream.headers.get("content-type", "")
    body: dict[str, Any] = {"content": bad.content} if bad.content is not None else {}
    if bad.json is not None:
        body["json"] = bad.json
    response = await front.api.request(bad.method, bad.path, headers=bad.headers, **body)
    return response.status_code, response.content, response.headers.get("content-type", "")


@pytest.fixture
async def known(stack: Stack, redis_client: redis.Redis, prefix: str) -> AsyncIterator[Front]:
    """A front with no worker and one conversation whose run was cancelled while queued."""
    stack.start(fronts=1, workers=0, max_body_bytes=MAX_BODY, max_content_chars=MAX_CONTENT)
    front = stack.fronts[0]
    await front.api.start_run(KNOWN, "the only message", tokens=3)
    cancelled = await front.api.cancel(KNOWN)
    assert cancelled.status_code == 200, cancelled.text
    yield front


async def test_bad_requests_get_their_documented_error_and_write_nothing(
    known: Front, redis_client: redis.Redis, prefix: str
) -> None:
    before = _state(redis_client, prefix)
    assert before, "the setup wrote the known conversation"
    failures = []
    for bad in TABLE:
        status, body, content_type = await _send(known, bad)
        try:
            code = error_code(httpx.Response(status, content=body))
        except (ValueError, AssertionError, KeyError, TypeError):
            code = f"<unparsable body {body[:80]!r}>"
        if (status, code) != (bad.status, bad.code) or not content_type.startswith(
            "application/json"
        ):
            failures.append(
                f"{bad}: got {status} {code} ({content_type}), want {bad.status} {bad.code}"
            )
    chunked = await known.api.request(
        "POST",
        f"/v1/conversations/{KNOWN}/messages",
        content=_chunked_oversize(),
        headers={"Content-Type": "application/json"},
    )
    if (chunked.status_code, chunked.json()["error"]["code"]) != (413, "body_too_large"):
        failures.append(f"chunked oversize body: got {chunked.status_code} {chunked.text[:200]}")
    if _state(redis_client, prefix) != before:
        failures.append("a refused request changed Redis")
    assert not failures, "\n".join(failures)


async def test_bad_requests_leave_a_new_conversation_unborn(
    known: Front, redis_client: redis.Redis, prefix: str
) -> None:
    """Refused posts to a conversation id nobody used must not create it, even partly."""
    cid = new_cid("unborn")
    before = _state(redis_client, prefix)
    for body in (
        {},
        {"content": 1},
        {"content": "x", "model": "nope"},
        {"content": "x", "params": {"tokens": -1}},
    ):
        response = await known.api.request("POST", f"/v1/conversations/{cid}/messages", json=body)
        assert 400 <= response.status_code < 500, response.text
    response = await known.api.request(
        "POST",
        f"/v1/conversations/{cid}/messages",
        content=b"[1, 2",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert _state(redis_client, prefix) == before
    assert (await known.api.snapshot(cid)).status_code == 404


async def test_a_client_leaving_mid_upload_is_one_quiet_log_line(stack: Stack) -> None:
    """Anyone can start a POST and vanish before the body ends: that is logged once per
    request, at DEBUG, with no traceback, so it cannot fill the logs."""
    stack.start(fronts=1, workers=0, log_level="DEBUG")
    (front,) = stack.fronts
    for _ in range(3):
        reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
        writer.write(
            f"POST /v1/conversations/{new_cid()}/messages HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/json\r\nContent-Length: 10000\r\n\r\n".encode()
            + b'{"content": "'
            + b"a" * 100
        )
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()
    lines: list[str] = []
    for _ in range(50):
        lines = [line for line in front.output().splitlines() if "disconnected" in line]
        if len(lines) >= 3:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # anything else it would log comes now
    output = front.output()
    assert len([line for line in output.splitlines() if "disconnected" in line]) == 3, output
    assert all(" DEBUG " in line for line in lines), lines
    assert "Traceback" not in output and " ERROR " not in output, output
