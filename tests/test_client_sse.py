"""The Python client's SSE parser against the WHATWG event-stream rules, fed in every split.

TCP may cut a body anywhere, including inside a UTF-8 sequence or between the CR and the LF
of one line end, so each case is parsed whole, byte by byte, and split at every offset.
"""

from __future__ import annotations

import pytest

from broker.client.sse import ServerSentEvent, SSEParser


def _all_ways(wire: bytes) -> list[tuple[str, list[ServerSentEvent], SSEParser]]:
    runs = []
    parser = SSEParser()
    runs.append(("whole", parser.feed(wire), parser))
    parser = SSEParser()
    runs.append(("bytes", [e for b in wire for e in parser.feed(bytes([b]))], parser))
    for cut in range(1, len(wire)):
        parser = SSEParser()
        runs.append((f"cut {cut}", parser.feed(wire[:cut]) + parser.feed(wire[cut:]), parser))
    return runs


CASES = {
    "multi-line data joined with LF": (
        b"event: delta\ndata: one\ndata: two\ndata:\ndata: four\n\n",
        [ServerSentEvent("delta", "one\ntwo\n\nfour", None)],
    ),
    "CRLF, CR and LF line ends, mixed": (
        b"id: 1-0\r\nevent: a\r\ndata: x\r\n\r\nid: 1-1\revent: b\rdata: y\r\rid: 1-2\nevent: c\ndata: z\n\n",
        [
            ServerSentEvent("a", "x", "1-0"),
            ServerSentEvent("b", "y", "1-1"),
            ServerSentEvent("c", "z", "1-2"),
        ],
    ),
    "comments are skipped": (
        b": keepalive\n\n:another\ndata: after\n\n",
        [ServerSentEvent("message", "after", None)],
    ),
    "a leading byte order mark is dropped, a later one is data": (
        b"\xef\xbb\xbfdata: first\n\ndata: \xef\xbb\xbfsecond\n\n",
        [
            ServerSentEvent("message", "first", None),
            ServerSentEvent("message", "\ufeffsecond", None),
        ],
    ),
    "an id with no data sets the position, dispatches nothing": (
        b"id: 5-0\n\nevent: reset\ndata: {}\n\n",
        [ServerSentEvent("reset", "{}", "5-0")],
    ),
    "an id with NUL is ignored; the last id stays in force": (
        b"id: 7-0\ndata: a\n\nid: 8\x00-0\ndata: b\n\n",
        [ServerSentEvent("message", "a", "7-0"), ServerSentEvent("message", "b", "7-0")],
    ),
    "only one space after the colon is dropped; no colon means an empty value": (
        b"data:  two spaces\n\ndata\n\n",
        [ServerSentEvent("message", " two spaces", None), ServerSentEvent("message", "", None)],
    ),
    "unknown fields are ignored; an unfinished event at the end is dropped": (
        b"foo: bar\ndata: kept\n\ndata: never dispatched",
        [ServerSentEvent("message", "kept", None)],
    ),
    "UTF-8 split anywhere": (
        "data: naïve — 日本 🎉\n\n".encode(),
        [ServerSentEvent("message", "naïve — 日本 🎉", None)],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_whatwg_case_in_every_split(name: str) -> None:
    wire, expected = CASES[name]
    for how, events, _ in _all_ways(wire):
        assert events == expected, f"{name}, {how}"


def test_retry_takes_digits_only() -> None:
    for how, _, parser in _all_ways(b"retry: 2500\n\nretry: 12x\n\nretry: -1\n\n"):
        assert parser.retry_ms == 2500, how
    parser = SSEParser()
    parser.feed(b"retry: 50\n\n")
    assert parser.retry_ms == 50


def test_the_broker_wire_as_served() -> None:
    wire = (
        b"retry: 1000\n\n"
        b'event: reset\ndata: {"reason":"trimmed","earliest_event_id":"9-0"}\n\n'
        b'id: 9-0\nevent: message\ndata: {"message_id":"m","content":"hi","run_id":"r","role":"user"}\n\n'
        b": keepalive\n\n"
        b'id: 9-1\nevent: delta\ndata: {"run_id":"r","text":"Hello","channel":"content"}\n\n'
    )
    for how, events, parser in _all_ways(wire):
        assert [(e.event, e.id) for e in events] == [
            ("reset", None),
            ("message", "9-0"),
            ("delta", "9-1"),
        ], how
        assert parser.retry_ms == 1000 and parser.comments == 1 and parser.last_event_id == "9-1"
