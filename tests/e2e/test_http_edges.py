"""HTTP edge cases a fuzzer found, on one real front: pipelining, transfer codings, early answers.

- Requests pipelined before a malformed one are all answered, in order, then the ``400
  malformed_request``, then the connection ends.
- A stream with a request pipelined behind it stops writing when its client goes.
- A transfer coding other than ``chunked`` gets the JSON 501.
- A large upload refused early (413) gets its whole answer, then a clean end of the
  connection, however the client sends.
- Answers the server protocol gives below the app are counted in the HTTP metrics.

Nothing of this is logged at ERROR.
"""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import new_cid
from tests.stack import Front, Stack

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
def front(stack: Stack) -> Front:
    stack.start(fronts=1, workers=0)
    return stack.fronts[0]


def _no_error_lines(front: Front) -> None:
    errors = [line for line in front.output().splitlines() if " ERROR " in line]
    assert not errors, "\n".join(errors)


async def _exchange(front: Front, data: bytes, seconds: float = 5) -> bytes:
    """Send ``data`` on one connection; everything the front answers until it closes (or
    ``seconds`` pass)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
    writer.write(data)
    received = b""
    try:
        async with asyncio.timeout(seconds):
            while chunk := await reader.read(65536):
                received += chunk
    except TimeoutError:
        pass
    writer.close()
    return received


def _statuses(received: bytes) -> list[int]:
    """The status of every answer (a body needs no line end, so the next answer's status
    line may follow it directly)."""
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", received)]


async def test_requests_pipelined_before_a_malformed_one_are_answered_first(front: Front) -> None:
    malformed = b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n"
    received = await _exchange(front, HEALTHZ + HEALTHZ + malformed + HEALTHZ)
    assert _statuses(received) == [200, 200, 400], received
    assert received.endswith(b'"malformed_request","message":"the request is not valid HTTP/1.1"}}')
    _no_error_lines(front)


async def test_a_stream_with_a_request_pipelined_behind_it_stops_when_its_client_goes(
    front: Front,
) -> None:
    cid = new_cid("piped")
    await front.api.start_run(cid, "hi", tokens=3, interval_ms=1)
    for _ in range(3):
        received = await _exchange(
            front,
            f"GET /v1/conversations/{cid}/stream HTTP/1.1\r\nHost: x\r\n\r\n".encode() + HEALTHZ,
            seconds=0.5,
        )
        assert _statuses(received) == [200]
    await asyncio.sleep(1)  # the streams' keepalives and ends, had they gone on writing
    assert front.output().count("ended=client_gone") == 3
    _no_error_lines(front)


async def test_a_transfer_coding_other_than_chunked_gets_the_json_501(front: Front) -> None:
    received = await _exchange(
        front,
        b"POST /v1/conversations/x/messages HTTP/1.1\r\nHost: x\r\n"
        b"Transfer-Encoding: gzip\r\nConnection: close\r\n\r\n",
    )
    assert _statuses(received) == [501]
    body = json.loads(received.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "unsupported_transfer_coding"
    _no_error_lines(front)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("pace", ["fast", "slow"])
async def test_a_large_upload_refused_early_gets_its_whole_413(
    front: Front, framing: str, pace: str
) -> None:
    """The client is still sending when the answer comes; it reads all of it, then the
    connection ends without a reset, as it does with a mature server."""
    size = 10 * 1024 * 1024
    head = f"POST /v1/conversations/{new_cid('big')}/messages HTTP/1.1\r\nHost: x\r\n"
    head += "Content-Type: application/json\r\n"
    head += f"Content-Length: {size}\r\n" if framing == "content-length" else ""
    head += "Transfer-Encoding: chunked\r\n" if framing == "chunked" else ""
    reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
    writer.write(head.encode() + b"\r\n")
    piece = b"x" * 65536
    received = b""

    async def send() -> None:
        sent = 0
        try:
            while sent < size:
                writer.write(
                    b"%x\r\n%s\r\n" % (len(piece), piece) if framing == "chunked" else piece
                )
                await writer.drain()
                sent += len(piece)
                await asyncio.sleep(0.02 if pace == "slow" else 0)
        except ConnectionError:
            pass  # the front stopped reading after its lingering: our upload ends here

    async def read() -> None:
        nonlocal received
        while chunk := await reader.read(65536):
            received += chunk

    async with asyncio.timeout(60):
        await asyncio.gather(send(), read())
    writer.close()
    assert _statuses(received) == [413], received[:300]
    assert json.loads(received.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "body_too_large"
    _no_error_lines(front)


async def test_answers_the_server_protocol_gives_are_counted(front: Front) -> None:
    await _exchange(front, b"GARBAGE\r\n\r\n")
    await _exchange(front, b"GET /healthz HTTP/1.1\r\n" + b"X-H: 1\r\n" * 200 + b"\r\n")
    async with httpx.AsyncClient(base_url=front.url, trust_env=False) as client:
        text = (await client.get("/metrics")).text
    counted = {
        sample.labels["status"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "broker_http_requests_total" and sample.labels["route"] == "unmatched"
    }
    assert counted.get("400") == 1 and counted.get("431") == 1, counted
