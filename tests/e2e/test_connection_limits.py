"""Bounds on what one connection can make a front hold: request heads and idle connections.

A request head (request line and headers) larger than ``BROKER_MAX_HEADER_BYTES``, or with more
than ``BROKER_MAX_HEADER_COUNT`` headers, is answered 431 and the connection closed, without the
front buffering what follows; a head not complete within ``BROKER_HEADER_TIMEOUT_SECONDS`` is
answered 408; a connection with no request in flight for ``BROKER_IDLE_CONNECTION_SECONDS`` is
closed. An SSE stream is never idle: it outlives all of these.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from tests.helpers import new_cid, terminal_of
from tests.stack import Front, Stack

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

LIMITS = {
    "max_header_bytes": 8192,
    "max_header_count": 50,
    "header_timeout_seconds": 1.0,
    "idle_connection_seconds": 1.0,
}


def _rss_mb(front: Front) -> float:
    for line in Path(f"/proc/{front.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def _answer(reader: asyncio.StreamReader, timeout: float = 10) -> tuple[int, bytes]:
    """The status and body of a response (read as it arrives, as a client that is still
    sending would read an early answer)."""
    async with asyncio.timeout(timeout):
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 "), head[:200]
        length = next(
            int(line.split(b":")[1])
            for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        )
        body = await reader.readexactly(length)
    return int(head.split(b" ")[1]), body


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sent before it closed the connection, within ``seconds``."""
    async with asyncio.timeout(seconds):
        return await reader.read()


def _error_code(body: bytes) -> str:
    document = json.loads(body)
    assert set(document) == {"error"}
    return document["error"]["code"]


@pytest.fixture
def front(stack: Stack) -> Front:
    stack.start(fronts=1, workers=0, **LIMITS)
    return stack.fronts[0]


async def test_a_huge_header_is_refused_with_431_without_being_buffered(front: Front) -> None:
    before = _rss_mb(front)
    reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
    answer = asyncio.ensure_future(_answer(reader))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
    sent = 0
    try:
        while sent < 64 * 1024 * 1024 and not answer.done():  # up to 64 MB, 64 KB at a time
            writer.write(b"a" * 65536)
            await writer.drain()
            sent += 65536
            # drain() does not yield while the socket takes everything (the front reads and
            # drops a refused connection's bytes for a moment), so let the reader see the answer
            await asyncio.sleep(0)
    except ConnectionError:
        pass  # refused and closed long before the end
    status, body = await answer
    writer.close()
    assert status == 431 and _error_code(body) == "headers_too_large"
    assert sent < 32 * 1024 * 1024, "the front kept reading a header past its limit"
    assert _rss_mb(front) - before < 20, "the front buffered the header"


async def test_too_many_headers_are_refused_with_431(front: Front) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
    headers = "".join(f"X-H{i}: {i}\r\n" for i in range(60))
    writer.write(f"GET /healthz HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
    status, body = await _answer(reader)
    writer.close()
    assert status == 431 and _error_code(body) == "headers_too_large"


@pytest.mark.parametrize(
    "request_bytes",
    [b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nHost x\r\n\r\n", b"GET /\x00 HTTP/1.1\r\n\r\n"],
    ids=["not http", "header without colon", "nul in target"],
)
async def test_malformed_http_is_answered_in_the_error_shape(
    front: Front, request_bytes: bytes
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
    writer.write(request_bytes)
    status, body = await _answer(reader)
    writer.close()
    assert status == 400 and _error_code(body) == "malformed_request"


async def test_a_head_that_never_ends_is_answered_408_in_time(front: Front) -> None:
    """One header line now and then (slowloris): the deadline counts from the first byte."""
    reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
    started = time.monotonic()
    writer.write(b"GET /healthz HTTP/1.1\r\n")

    async def trickle() -> None:
        for i in range(100):
            await asyncio.sleep(0.2)
            writer.write(f"X-Slow-{i}: 1\r\n".encode())

    task = asyncio.ensure_future(trickle())
    try:
        status, body = await _answer(reader, timeout=10)
    finally:
        task.cancel()
        writer.close()
    assert status == 408 and _error_code(body) == "request_timeout"
    assert time.monotonic() - started < 4


async def test_a_stalled_head_after_an_answered_request_is_answered_408(front: Front) -> None:
    """The same bound on a kept-alive connection: its second request stops mid-head."""
    reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _ = await _answer(reader)
    assert status == 200
    await asyncio.sleep(0.5)  # within the idle time
    started = time.monotonic()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    status, body = await _answer(reader)
    writer.close()
    assert status == 408 and _error_code(body) == "request_timeout"
    assert 0.8 < time.monotonic() - started < 3


async def test_silent_and_slow_connections_are_all_closed(front: Front) -> None:
    """Connections that send nothing, or half a head, are closed: none is held for ever."""
    connections = []
    for i in range(120):
        reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
        if i % 2:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: ")
        connections.append((reader, writer))
    try:
        outcomes = await asyncio.gather(
            *(_closed_within(reader, 6) for reader, _ in connections), return_exceptions=True
        )
    finally:
        for _, writer in connections:
            writer.close()
    held = [o for o in outcomes if isinstance(o, BaseException)]
    assert not held, f"{len(held)} of {len(connections)} connections were still open"
    assert all(o == b"" for o in outcomes[0::2]), "a silent connection got an answer"
    assert all(o.startswith(b"HTTP/1.1 408") for o in outcomes[1::2])  # type: ignore[union-attr]


async def test_an_idle_keep_alive_connection_is_closed(front: Front) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    started = time.monotonic()
    rest = await _closed_within(reader, 5)
    writer.close()
    assert rest.endswith(b'{"status":"ok"}'), rest
    assert time.monotonic() - started < 3


async def test_ordinary_requests_and_a_long_stream_are_not_affected(stack: Stack) -> None:
    """Headers near the limits pass, and an SSE stream open far longer than the header and
    idle timeouts goes on receiving events."""
    stack.start(fronts=1, workers=1, keepalive_seconds=0.5, **LIMITS)
    (front,) = stack.fronts
    cid = new_cid("long")
    many = {f"X-H{i}": "v" * 100 for i in range(40)}  # 40 headers, about 4.5 KB
    response = await front.api.post_message(cid, "hi", headers=many, tokens=40, interval_ms=100)
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    async with await front.api.stream(cid) as stream:
        await stream.read_until(terminal_of(run_id), timeout=30)  # about 4 s
        await stream.wait_comments(len(stream.parser.comments) + 3, timeout=5)
    assert [e.event for e in stream.events][-1] == "run.completed"
