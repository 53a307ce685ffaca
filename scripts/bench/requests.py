"""Small requests: what each costs a front's CPU, and how fast they return.

The SSE scenarios of ``python -m scripts.bench`` measure streaming; this measures the other hot
path, plain request/response over keep-alive connections, two ways:

- ``network``: one front, its own embedded Redis (or ``REDIS_URL``), a lean asyncio client in
  this process on loopback, a fixed duration: ``GET /healthz`` (the HTTP layer alone) and
  ``POST /v1/conversations/{cid}/messages`` with a small body (the HTTP layer, JSON decoding
  and two Redis writes; no worker runs, so the runs stay queued). Everything it started is
  stopped at the end.
- ``protocol``: the front's HTTP protocol alone, in this process, against uvicorn's plain
  httptools protocol it extends: the same requests (an SSE GET with ``Last-Event-ID`` and a
  small POST) fed to each over a stub transport to a trivial app, alternately, in CPU time,
  the best of several rounds. On a shared machine this tells the protocols' own cost apart
  from everything else running.

    .venv/bin/python -m scripts.bench.requests --duration 10 --connections 32
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from .infra import cpu_seconds, redis_and_processes

_BODY = b'{"content": "hello there", "params": {"tokens": 5}}'


def _request(kind: str, prefix: str) -> bytes:
    if kind == "healthz":
        return b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n"
    cid = f"{prefix}_{uuid.uuid4().hex[:16]}"
    return (
        f"POST /v1/conversations/{cid}/messages HTTP/1.1\r\nHost: bench\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(_BODY)}\r\n\r\n"
    ).encode() + _BODY


async def _connection(
    port: int,
    kind: str,
    prefix: str,
    until: float,
    latencies: list[float],
    statuses: dict[int, int],
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.monotonic() < until:
            sent = time.perf_counter()
            writer.write(_request(kind, prefix))
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - sent)
            status = int(head.split(b" ", 2)[1])
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def _load(
    port: int, kind: str, connections: int, seconds: float
) -> tuple[list[float], dict[int, int]]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    until = time.monotonic() + seconds
    prefix = "bench" + uuid.uuid4().hex[:6]
    await asyncio.gather(
        *(_connection(port, kind, prefix, until, latencies, statuses) for _ in range(connections))
    )
    return latencies, statuses


def measure(
    port: int, pid: int, kind: str, connections: int, seconds: float, warmup: float
) -> dict[str, float]:
    asyncio.run(_load(port, kind, connections, warmup))
    cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
    latencies, statuses = asyncio.run(_load(port, kind, connections, seconds))
    cpu = cpu_seconds(pid) - cpu_before
    wall = time.monotonic() - wall_before
    if set(statuses) - {200, 202}:
        raise RuntimeError(f"bench: unexpected answers {statuses}")
    latencies.sort()
    return {
        "requests_per_s": len(latencies) / wall,
        "front_cpu_us_per_request": cpu / len(latencies) * 1e6,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


_SSE_GET = (
    b"GET /v1/conversations/c_0123456789abcdef/stream HTTP/1.1\r\nHost: broker.example\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0\r\nAccept: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\nLast-Event-ID: 1731000000000-42\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\n\r\n"
)
_SMALL_POST = (
    b"POST /v1/conversations/c_0123456789abcdef/messages HTTP/1.1\r\nHost: broker.example\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(_BODY), _BODY)
)


class _StubTransport:
    """Enough of an asyncio transport for a protocol to answer requests into a counter."""

    def __init__(self) -> None:
        self.written = 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 8000) if name in ("sockname", "peername") else default

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return False

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: object) -> None:
        pass


async def _app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
    if scope["type"] != "http":
        return
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )  # type: ignore[operator]
    await send({"type": "http.response.body", "body": b"ok"})  # type: ignore[operator]


async def _protocol_cost(bounded: bool, request: bytes, count: int) -> float:
    """CPU µs per request of one protocol answering ``count`` requests on one connection."""
    import functools

    import uvicorn
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    from broker.core.settings import Settings
    from broker.front.http.server import BoundedHttpToolsProtocol, HttpLimits

    config = uvicorn.Config(_app, lifespan="off", access_log=False, log_level="warning")
    config.load()
    factory = (
        functools.partial(BoundedHttpToolsProtocol, limits=HttpLimits.from_settings(Settings()))
        if bounded
        else HttpToolsProtocol
    )
    protocol = factory(config=config, server_state=ServerState(), app_state={})
    transport = _StubTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    started = time.process_time()
    for _ in range(count):
        protocol.data_received(request)
        while protocol.server_state.tasks:
            await asyncio.sleep(0)
    elapsed = time.process_time() - started
    protocol.connection_lost(None)
    return elapsed / count * 1e6


def compare_protocols(count: int, rounds: int) -> None:
    print("| request | plain httptools CPU µs | bounded CPU µs | difference |")
    print("|---|---:|---:|---:|")
    for name, request in (("SSE GET", _SSE_GET), ("small POST", _SMALL_POST)):
        costs: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(rounds):
            for bounded in (False, True):
                costs[bounded].append(asyncio.run(_protocol_cost(bounded, request, count)))
        plain, ours = min(costs[False]), min(costs[True])
        print(f"| {name} | {plain:.1f} | {ours:.1f} | {(ours - plain) / plain:+.1%} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench.requests", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per kind")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--kinds", default="healthz,post")
    parser.add_argument("--mode", choices=["network", "protocol", "both"], default="both")
    parser.add_argument("--protocol-requests", type=int, default=20_000, help="per round")
    parser.add_argument("--protocol-rounds", type=int, default=7)
    args = parser.parse_args(argv)
    if args.mode in ("protocol", "both"):
        compare_protocols(args.protocol_requests, args.protocol_rounds)
    if args.mode == "protocol":
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="bench-requests-"))
    try:
        with redis_and_processes(workdir) as (redis_url, processes):
            front = processes.front("broker", redis_url, "bench" + uuid.uuid4().hex[:8], {})
            print("| kind | requests/s | front CPU µs per request | p50 ms | p99 ms |")
            print("|---|---:|---:|---:|---:|")
            for kind in args.kinds.split(","):
                result = measure(
                    front.port, front.pid, kind, args.connections, args.duration, args.warmup
                )
                print(
                    f"| {kind} | {result['requests_per_s']:,.0f} | "
                    f"{result['front_cpu_us_per_request']:.0f} | {result['p50_ms']:.2f} | "
                    f"{result['p99_ms']:.2f} |",
                    flush=True,
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
