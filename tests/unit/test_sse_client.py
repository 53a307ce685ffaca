"""The test suite's own SSE client: every other test trusts its parsing, so it is checked first.

Pure byte-level checks, fed in every possible split, since TCP may cut the stream anywhere.
"""

from __future__ import annotations

from tests.sse import Event, SSEParser, _Dechunker

WIRE = (
    b"retry: 1000\n\n"
    b'id: 1731000000000-0\nevent: delta\ndata: {"text":"Hello"}\n\n'
    b": keepalive\n\n"
    b'event: reset\ndata: {"reason":"trimmed"}\n\n'
    b"id: 1731000000000-1\r\nevent: message\r\ndata: line one\r\ndata: line two\r\n\r\n"
    b"id: 1731000000001-0\revent: run.completed\rdata:{}\r\r\n"
)
EXPECTED = [
    Event("1731000000000-0", "delta", '{"text":"Hello"}'),
    Event(None, "reset", '{"reason":"trimmed"}'),
    Event("1731000000000-1", "message", "line one\nline two"),
    Event("1731000000001-0", "run.completed", "{}"),
]


def _parse_in_pieces(data: bytes, cut: int) -> tuple[list[Event], SSEParser]:
    parser = SSEParser()
    events = parser.feed(data[:cut]) + parser.feed(data[cut:])
    return events, parser


def test_parser_handles_every_split_point() -> None:
    for cut in range(len(WIRE) + 1):
        events, parser = _parse_in_pieces(WIRE, cut)
        assert events == EXPECTED, f"split at {cut}"
        assert parser.retry == 1000
        assert [text for _, text in parser.comments] == ["keepalive"]
        assert parser.last_event_id == "1731000000001-0"


def test_parser_byte_by_byte() -> None:
    parser = SSEParser()
    events = [event for byte in WIRE for event in parser.feed(bytes([byte]))]
    assert events == EXPECTED


def _chunked(body: bytes, size: int) -> bytes:
    out = b"".join(
        b"%x;ext=1\r\n" % len(body[i : i + size]) + body[i : i + size] + b"\r\n"
        for i in range(0, len(body), size)
    )
    return out + b"0\r\n\r\n"


def test_dechunker_reassembles_any_split() -> None:
    encoded = _chunked(WIRE, 7)
    for cut in range(len(encoded) + 1):
        dechunker = _Dechunker()
        body = dechunker.feed(encoded[:cut]) + dechunker.feed(encoded[cut:])
        assert body == WIRE, f"split at {cut}"
        assert dechunker.done


def test_dechunker_stops_at_the_last_chunk() -> None:
    dechunker = _Dechunker()
    assert dechunker.feed(b"3\r\nabc\r\n") == b"abc"
    assert not dechunker.done
    assert dechunker.feed(b"0\r\n\r\n") == b""
    assert dechunker.done
