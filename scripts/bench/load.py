"""The benchmark's load generator: lean SSE readers over raw sockets, in processes of their own.

A reader speaks just enough HTTP/1.1 to hold an SSE response (status line, headers, chunked
transfer coding, which uvicorn and Node use for streaming bodies) and parses each event's
``data`` JSON. A delta whose text is a ``time.time_ns()`` taken by the appender gives one
latency sample: receipt time (one clock read per socket read) minus append time.

Readers speak one of two protocols (``scripts.bench.systems``): a conversation's SSE feed
(``GET /v1/conversations/{cid}/stream``, an event is a frame with an ``id:``), or a Durable
Streams SSE read (``GET /v1/stream/{name}?offset=-1&live=sse``, an event is one message of a
``data`` event's JSON array; ``control`` events carry offsets, not events). Keeping the reader this thin,
and in separate processes, is what keeps it from being the bottleneck it measures.

The parent drives each load process over a pipe: a ``LoadPlan`` in, ``("connected", ...)`` out,
a ``Go`` in, a ``LoadResult`` out.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import msgspec

from .systems import CONVERSATION, DS

# Linux: pick the source port at connect time, so many sockets can share a source address.
_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
_CONNECT_PARALLEL = 256
_CONNECT_TIMEOUT = 30.0


@dataclass(frozen=True)
class LoadPlan:
    """What one load process does: which conversations it reads, from where, and how."""

    host: str
    port: int
    # (conversation id, Last-Event-ID or None); DS: (stream name, offset or None)
    clients: list[tuple[str, str | None]]
    source_addresses: list[str]
    connect_on_go: bool = (
        False  # a storm: connect at the window's start, measure time to first event
    )
    protocol: str = CONVERSATION


@dataclass(frozen=True)
class Go:
    """The measured window [t0, t1] and when to stop, all ``time.time_ns()`` values."""

    t0: int
    t1: int
    t_end: int


@dataclass
class LoadResult:
    connected: int = 0  # clients that received their first event
    connect_failed: int = 0
    bad_status: int = 0
    closed_early: int = 0  # clients that had their first event, closed before the end
    events: int = 0  # SSE events (frames with an id; DS: messages) received inside the window
    tokens: int = 0  # whitespace-separated words of delta texts that are not timestamps
    latencies_ns: array = field(default_factory=lambda: array("q"))
    ttfe_ns: array = field(default_factory=lambda: array("q"))
    cpu_seconds: float = 0.0


class _Delta(msgspec.Struct):
    text: str = ""


_decode_delta = msgspec.json.Decoder(_Delta).decode
_decode_messages = msgspec.json.Decoder(list[_Delta]).decode


class _Window:
    """Shared by every reader of the process: the window and the counters it fills."""

    def __init__(self, result: LoadResult, protocol: str = CONVERSATION) -> None:
        self.result = result
        self.t0 = 1 << 62
        self.t1 = 1 << 62
        # What starts a frame that holds events: the first such frame is a client's first event.
        self.mark = b"event: data\n" if protocol == DS else b"id: "
        self.frames = self._ds_frames if protocol == DS else self._conversation_frames

    def _ds_frames(self, data: bytes, now: int) -> None:
        """Account the messages of the complete ``data`` events in ``data``, received at ``now``."""
        if not (self.t0 <= now <= self.t1):
            return
        result = self.result
        t0 = self.t0
        for frame in data.split(b"\n\n"):
            if not frame.startswith(b"event: data\n"):
                continue  # control events, keepalive comments
            lines = frame.split(b"\n")[1:]
            payload = b"\n".join(
                line[6:] if line.startswith(b"data: ") else line[5:]
                for line in lines
                if line.startswith(b"data:")
            )
            messages = _decode_messages(payload)
            result.events += len(messages)
            for message in messages:
                if message.text.isdigit():
                    sent = int(message.text)
                    if sent >= t0:
                        result.latencies_ns.append(now - sent)

    def _conversation_frames(self, data: bytes, now: int) -> None:
        """Account the complete SSE frames in ``data``, all received at ``now``."""
        if not (self.t0 <= now <= self.t1):
            return
        result = self.result
        t0 = self.t0
        for frame in data.split(b"\n\n"):
            if not frame.startswith(b"id: "):
                continue  # retry:, keepalive comments, reset (no id)
            result.events += 1
            at = frame.find(b"\nevent: delta\ndata: ")
            if at < 0:
                continue
            text = _decode_delta(frame[at + 19 :]).text
            if text.isdigit():
                sent = int(text)
                if sent >= t0:  # appended inside the window: not a replay of old history
                    result.latencies_ns.append(now - sent)
            else:
                result.tokens += len(text.split())


class SseReader(asyncio.Protocol):
    """One SSE client: parses the response incrementally; keeps only what is still incomplete."""

    def __init__(self, window: _Window, request: bytes, started: int) -> None:
        self._window = window
        self._request = request
        self._started = started
        # Resolved at the first event (True), or when the response fails or closes first (False).
        self.first_event: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._head = bytearray()
        self._in_body = False
        self._chunked = True
        self._raw = bytearray()  # undecoded chunked bytes
        self._need = 0  # data bytes left of the current chunk; 0: a size line comes next
        self._skip = 0  # bytes left of the CRLF after a chunk's data
        self._sse = b""  # decoded body not yet ending in a blank line
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        if not self._in_body:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._head[:end]).lower()
            data = bytes(self._head[end + 4 :])
            self._head = bytearray()
            if not head.startswith(b"http/1.1 200"):
                self._window.result.bad_status += 1
                self.transport.close()  # type: ignore[union-attr]
                self._resolve(False)
                return
            self._in_body = True
            self._chunked = b"transfer-encoding: chunked" in head
        body = self._dechunk(data) if self._chunked else data
        if not body:
            return
        text = self._sse + body
        cut = text.rfind(b"\n\n")
        if cut < 0:
            self._sse = text
            return
        complete, self._sse = text[: cut + 2], text[cut + 2 :]
        if not self.first_event.done():
            mark = self._window.mark
            if complete.startswith(mark) or complete.find(b"\n\n" + mark) >= 0:
                self._window.result.connected += 1
                self._window.result.ttfe_ns.append(now - self._started)
                self.first_event.set_result(True)
        self._window.frames(complete, now)

    def _dechunk(self, data: bytes) -> bytes:
        """Decode chunked transfer coding incrementally; returns the body bytes completed so far."""
        raw = self._raw
        raw += data
        out: list[bytes] = []
        pos = 0
        size_of = len(raw)
        while pos < size_of:
            if self._skip:  # the CRLF that ends a chunk's data
                take = min(self._skip, size_of - pos)
                pos += take
                self._skip -= take
                continue
            if self._need == 0:
                end = raw.find(b"\r\n", pos)
                if end < 0:
                    break
                size = int(bytes(raw[pos:end]).split(b";", 1)[0], 16)
                pos = end + 2
                if size == 0:
                    self.transport.close()  # type: ignore[union-attr]
                    break
                self._need = size
            take = min(self._need, size_of - pos)
            out.append(bytes(raw[pos : pos + take]))
            pos += take
            self._need -= take
            if self._need == 0:
                self._skip = 2
        del raw[:pos]
        return b"".join(out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._resolve(False)

    def _resolve(self, value: bool) -> None:
        if not self.first_event.done():
            self.first_event.set_result(value)


def raise_nofile() -> None:
    """Every process of the benchmark may hold thousands of sockets: lift the soft fd limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _request(host: str, port: int, cid: str, last_event_id: str | None, protocol: str) -> bytes:
    if protocol == DS:  # a Durable Streams name, read from its start; offsets are not resumed
        target = f"/v1/stream/{cid}?offset={last_event_id or '-1'}&live=sse"
        last_event_id = None
    else:
        target = f"/v1/conversations/{cid}/stream"
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {host}:{port}",
        "Accept: text/event-stream",
    ]
    if last_event_id:
        lines.append(f"Last-Event-ID: {last_event_id}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _open(
    plan: LoadPlan,
    window: _Window,
    index: int,
    cid: str,
    last_event_id: str | None,
    gate: asyncio.Semaphore,
    readers: list[SseReader],
) -> None:
    """Connect one reader from one of the loopback source addresses (ports run short otherwise)."""
    loop = asyncio.get_running_loop()
    source = plan.source_addresses[index % len(plan.source_addresses)]
    async with gate:
        started = time.time_ns()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
            sock.setblocking(False)
            await asyncio.wait_for(
                loop.sock_connect(sock, (plan.host, plan.port)), _CONNECT_TIMEOUT
            )
            request = _request(plan.host, plan.port, cid, last_event_id, plan.protocol)
            _, reader = await loop.create_connection(
                lambda: SseReader(window, request, started), sock=sock
            )
        except (TimeoutError, OSError):
            sock.close()
            window.result.connect_failed += 1
            return
    readers.append(reader)


async def _connect_all(plan: LoadPlan, window: _Window) -> list[SseReader]:
    """Open every client; returns once each has its first event (or failed, or timed out)."""
    gate = asyncio.Semaphore(_CONNECT_PARALLEL)
    readers: list[SseReader] = []
    await asyncio.gather(
        *(
            _open(plan, window, i, cid, lei, gate, readers)
            for i, (cid, lei) in enumerate(plan.clients)
        )
    )
    pending = [r.first_event for r in readers if not r.first_event.done()]
    if pending:
        await asyncio.wait(pending, timeout=_CONNECT_TIMEOUT)
    window.result.connect_failed += sum(
        1 for r in readers if not r.first_event.done() or not r.first_event.result()
    )
    return readers


async def _sleep_until(t_ns: int) -> None:
    delay = (t_ns - time.time_ns()) / 1e9
    if delay > 0:
        await asyncio.sleep(delay)


async def _run(conn: Connection, plan: LoadPlan) -> None:
    result = LoadResult()
    window = _Window(result, plan.protocol)
    readers: list[SseReader] = []
    if not plan.connect_on_go:
        readers = await _connect_all(plan, window)
    conn.send(("connected", result.connected, result.connect_failed))
    go: Go = await asyncio.to_thread(conn.recv)
    window.t0, window.t1 = go.t0, go.t1
    if plan.connect_on_go:
        await _sleep_until(go.t0)
        readers = await _connect_all(plan, window)
    await _sleep_until(go.t_end)
    # Of the clients that got their first event: a client refused at once is a connect_failed.
    result.closed_early = sum(
        1
        for r in readers
        if r.first_event.done()
        and r.first_event.result()
        and (r.transport is None or r.transport.is_closing())
    )
    for reader in readers:
        if reader.transport is not None:
            reader.transport.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result.cpu_seconds = usage.ru_utime + usage.ru_stime
    conn.send(("result", result))


def load_main(conn: Connection, plan: LoadPlan) -> None:
    """Entry point of a load process."""
    raise_nofile()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_run(conn, plan))
