"""The one SSE parser (``broker.core.sse``) against the WHATWG event-stream rules, fed in every
split.

TCP may cut a body anywhere, including inside a UTF-8 sequence or between the CR and the LF
of one line end, so each case is parsed whole, byte by byte, and split at every offset. The
client, the providers and the test suite read SSE through it; the last tests check that each
of them gets its own view of the same parse.
"""

from __future__ import annotations

import pytest

import broker.client
import broker.client.sse
from broker.core.sse import EventStreamParser, ServerSentEvent, SSEParser
from tests.sse import Event
from tests.sse import SSEParser as SuiteParser
from workers.providers.framing import SseDecoder, SseEvent


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


def test_a_cr_ending_the_body_ends_its_line_at_once() -> None:
    """The CR need not wait for a possible LF: the event it completes is dispatched now, and an
    LF opening the next piece (or a lone empty piece between them) is no second line end."""
    parser = SSEParser()
    assert parser.feed(b"data: a\r\r") == [ServerSentEvent("message", "a", None)]
    assert parser.feed(b"") == []
    assert parser.feed(b"\ndata: b\n") == []
    assert parser.feed(b"\n") == [ServerSentEvent("message", "b", None)]
    assert not parser.pending


def test_pending_tells_a_cut_body_from_a_clean_end() -> None:
    for wire, pending in [
        (b"data: whole\n\n", False),
        (b"data: whole\n\n: keepalive\n", False),
        (b"data: whole\n\n  \r", False),
        (b'data: {"half":', True),
        (b"data: one line\n", True),
        (b"event: named, no data yet\n", False),
    ]:
        for how, _, parser in _all_ways(wire):
            assert parser.pending is pending, (wire, how)


class _Pairs(EventStreamParser[tuple[str, str]]):
    def _make_event(self, event: str, data: str, own_id: str | None) -> tuple[str, str]:
        return event, data


def test_stray_lines_are_kept_up_to_the_limit_only_when_asked() -> None:
    wire = b'data: a\n\n{"error": {"code": 500}}\nfoo: bar\nid: 1\nretry: x\n: note\n\n'
    for how, events, parser in _all_ways(wire):
        assert events == [ServerSentEvent("message", "a", None)], how
        assert parser.stray == [], how
    keeping = _Pairs(stray_limit=64)
    assert keeping.feed(wire) == [("message", "a")]
    assert keeping.stray == ['{"error": {"code": 500}}', "foo: bar"]
    capped = _Pairs(stray_limit=10)
    capped.feed(b"0123456789ab\nmore\n")
    assert capped.stray == ["0123456789ab"]  # the line that reaches the limit is the last kept


def test_each_reader_gets_its_view_of_one_parse() -> None:
    wire = (
        b"retry: 1000\n\n"
        b": keepalive\n\n"
        b'id: 9-0\nevent: delta\ndata: {"text":"Hi"}\n\n'
        b'event: reset\ndata: {"reason":"trimmed"}\n\n'
        b"not a field\n"
    )
    client, providers, suite = SSEParser(), SseDecoder(), SuiteParser()
    assert client.feed(wire) == [
        ServerSentEvent("delta", '{"text":"Hi"}', "9-0"),
        ServerSentEvent("reset", '{"reason":"trimmed"}', "9-0"),
    ]
    assert providers.feed(wire) == [
        SseEvent("delta", '{"text":"Hi"}'),
        SseEvent("reset", '{"reason":"trimmed"}'),
    ]
    assert suite.feed(wire) == [
        Event("9-0", "delta", '{"text":"Hi"}'),
        Event(None, "reset", '{"reason":"trimmed"}'),  # it carried no id of its own
    ]
    assert client.comments == 1 and [text for _, text in suite.comments] == ["keepalive"]
    assert client.retry_ms == suite.retry == providers.retry_ms == 1000
    assert providers.stray == ["not a field"] and client.stray == suite.stray == []


def test_the_client_exports_the_core_parser() -> None:
    assert broker.client.SSEParser is broker.client.sse.SSEParser is SSEParser
    assert broker.client.ServerSentEvent is broker.client.sse.ServerSentEvent is ServerSentEvent
