"""Property-based checks of everything that parses outside input.

Pure parsers are checked directly; the HTTP surface (ids in paths, ``Last-Event-ID`` in header
and query, bodies, headers) is checked against a real front: whatever arrives, the answer is
a documented 4xx or a success, never a 5xx, and a refused request writes nothing.
"""

from __future__ import annotations

import asyncio
import re
import socket
import uuid
from urllib.parse import quote

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.core.ids import format_stream_id, is_valid_path_id, parse_stream_id
from tests.helpers import terminal_of
from tests.sse import open_sse
from tests.stack import Front
from workers.providers.failures import excerpt

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ERROR_STATUSES = {400, 404, 409, 413, 422}


@given(st.one_of(st.text(max_size=60), st.binary(max_size=60)))
def test_parse_stream_id_accepts_exactly_redis_ids(raw: str | bytes) -> None:
    parsed = parse_stream_id(raw)
    if parsed is None:
        return
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, seq = text.split("-")
    assert parsed == (int(ms), int(seq)) and parsed[0] < 2**64 and parsed[1] < 2**64


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_stream_ids_round_trip(ms: int, seq: int) -> None:
    assert parse_stream_id(format_stream_id((ms, seq))) == (ms, seq)


@given(st.text(max_size=200))
def test_path_ids_are_exactly_the_documented_alphabet(value: str) -> None:
    expected = 1 <= len(value) <= 128 and all(
        c.isascii() and (c.isalnum() or c in "_-") for c in value
    )
    assert is_valid_path_id(value) == expected


SECRET_ALPHABET = "abcdef0123456789-_"
TEXT_ALPHABET = "ghijklmnopqrstuvwxyz .,"


@given(
    secret=st.text(alphabet=SECRET_ALPHABET, min_size=8, max_size=80),
    before=st.text(alphabet=TEXT_ALPHABET, max_size=400),
    after=st.text(alphabet=TEXT_ALPHABET, max_size=400),
    echoed=st.integers(3, 80),
)
def test_an_excerpt_never_shows_a_secret_whole_or_cut(
    secret: str, before: str, after: str, echoed: int
) -> None:
    """Whole secrets anywhere, and a secret cut short at the end of the text or by the excerpt
    itself: nothing of three characters or more survives (the alphabets are disjoint, so any
    such run could only come from the secret)."""
    for text in (before + secret + after, before + secret[:echoed]):
        shown = excerpt(text, [secret]).replace("[redacted]", "")
        runs = re.findall(f"[{re.escape(SECRET_ALPHABET)}]{{3,}}", shown)
        assert not runs, (text, shown)
        assert len(shown) <= 300


@pytest.fixture(scope="module")
def known_cid(lone_front: Front) -> str:
    """A conversation that exists, so stream requests get past the 404."""
    cid = "props_" + uuid.uuid4().hex[:8]
    response = httpx.post(
        f"{lone_front.url}/v1/conversations/{cid}/messages", json={"content": "hi"}, trust_env=False
    )
    assert response.status_code == 202
    return cid


def _stream_status(front: Front, path: str, headers: dict[str, str]) -> int:
    """Send a GET and read only the status line: a 200 SSE stream would never end."""
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\n"
    for name, value in headers.items():
        request += f"{name}: {value}\r\n"
    with socket.create_connection(("127.0.0.1", front.port), timeout=10) as sock:
        sock.sendall((request + "\r\n").encode("latin-1"))
        head = sock.recv(64)
    return int(head.split(b" ", 2)[1])


header_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=80,
).map(str.strip)


@FUZZ
@given(value=header_values, via=st.sampled_from(["header", "query"]))
def test_any_last_event_id_gets_a_stream_or_a_400(
    lone_front: Front, known_cid: str, value: str, via: str
) -> None:
    path = f"/v1/conversations/{known_cid}/stream"
    headers: dict[str, str] = {}
    if via == "header":
        headers["Last-Event-ID"] = value
    else:
        path += "?last_event_id=" + quote(value.encode("latin-1"), safe="")
    status = _stream_status(lone_front, path, headers)
    if value == "" or parse_stream_id(value) is not None:
        assert status == 200
    else:
        assert status == 400


@FUZZ
@given(cid=st.text(max_size=140), run=st.text(max_size=140))
def test_any_path_ids_get_a_documented_answer(lone_front: Front, cid: str, run: str) -> None:
    def segment(value: str) -> str:
        # Dots escaped too: a client library would resolve '.' and '..' before sending.
        return quote(value, safe="").replace(".", "%2E")

    with httpx.Client(base_url=lone_front.url, trust_env=False, timeout=10) as client:
        for method, path in (
            ("GET", f"/v1/conversations/{segment(cid)}"),
            ("POST", f"/v1/conversations/{segment(cid)}/cancel"),
            ("POST", f"/v1/conversations/{segment(cid)}/runs/{segment(run)}/cancel"),
        ):
            response = client.request(method, path)
            assert response.status_code < 500, (method, path, response.text)
            if not is_valid_path_id(cid):
                assert response.status_code in (400, 404), (method, path, response.text)
            if response.status_code >= 400:
                assert response.json()["error"]["code"]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.one_of(
    st.binary(max_size=300),
    st.fixed_dictionaries(
        {},
        optional={
            "content": st.one_of(st.text(max_size=30), json_values),
            "model": st.one_of(st.just("simulated"), st.text(max_size=10), json_values),
            "params": st.one_of(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "tokens": st.one_of(st.integers(-5, 200_000), json_values),
                        "interval_ms": st.one_of(st.floats(-1, 1e6, allow_nan=False), json_values),
                        "seed": json_values,
                    },
                ),
                json_values,
            ),
        },
    ).map(lambda value: httpx.Request("POST", "/", json=value).read()),
)


@FUZZ
@given(body=bodies, idempotency_key=st.one_of(st.none(), header_values))
def test_any_body_is_accepted_or_refused_without_a_trace(
    lone_front: Front, redis_url: str, body: bytes, idempotency_key: str | None
) -> None:
    cid = "body_" + uuid.uuid4().hex[:12]
    headers: dict[str, bytes] = {"Content-Type": b"application/json"}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key.encode("latin-1")
    response = httpx.post(
        f"{lone_front.url}/v1/conversations/{cid}/messages",
        content=body,
        headers=headers,
        trust_env=False,
    )
    client = redis.Redis.from_url(redis_url)
    try:
        written = list(client.scan_iter(match=f"*{{{cid}}}*"))
    finally:
        client.close()
    if response.status_code == 202:
        assert written
    else:
        assert response.status_code in ERROR_STATUSES, response.text
        assert response.json()["error"]["code"]
        assert written == [], "a refused request left keys behind"


forged_positions = st.one_of(
    # Any position but 0-0 (which means "from the beginning") is not this conversation's.
    st.tuples(st.integers(1, 2**64 - 1), st.integers(0, 2**64 - 1)).map(format_stream_id),
    st.sampled_from(
        ["18446744073709551615-18446744073709551615", "99999999999999-0", "0-1", "1-0"]
    ),
)
forgers = st.lists(
    st.tuples(
        forged_positions,
        st.sampled_from(["runs/active/stream", "stream"]),
        st.sampled_from(["header", "query"]),
    ),
    min_size=1,
    max_size=4,
)


async def _forgers_then_honest_viewers(front: Front, forged: list[tuple[str, str, str]]) -> None:
    cid = "forged_" + uuid.uuid4().hex[:8]
    run_id = (await front.api.start_run(cid, "hi"))["run_id"]  # no worker: it stays queued
    opened = []
    try:
        for position, endpoint, via in forged:
            path = f"/v1/conversations/{cid}/{endpoint}"
            if via == "query":
                path += "?last_event_id=" + quote(position, safe="")
            stream = await open_sse(
                front.url, path, last_event_id=position if via == "header" else None
            )
            opened.append(stream)
            assert stream.status == 200, (position, endpoint, via, stream.response.body)
            first = await stream.next(timeout=10)
            assert first is not None and first.event == "reset", (position, first)
        await asyncio.sleep(0.2)  # the forgers' feeds reach the shared tail first
        honest = [await front.api.stream(cid), await front.api.run_stream(cid, "active")]
        opened += honest
        for stream in honest:
            await stream.read_until(lambda e: e.event == "message", timeout=10)
        # A live event: cancelling the queued run writes its terminal at once.
        assert (await front.api.cancel(cid)).status_code == 200
        for stream in honest:
            await stream.read_until(terminal_of(run_id), timeout=5)
    finally:
        for stream in opened:
            await stream.close()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(forged=forgers)
def test_no_forged_position_holds_back_honest_viewers(
    lone_front: Front, forged: list[tuple[str, str, str]]
) -> None:
    """Several forgers at once, on both streams, subscribed first: honest viewers of the same
    conversation on the same front still get a live event."""
    asyncio.run(_forgers_then_honest_viewers(lone_front, forged))
