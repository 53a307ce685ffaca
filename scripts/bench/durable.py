"""Durable Streams writes: the broker's /v1/stream routes against the
protocol's reference server, under one load generator.

- D1/N: N producers, each appending 100-byte JSON messages to a stream of its own as fast as
  its answers come back (one keep-alive HTTP/1.1 connection each, no pipelining): appends/s,
  appends per server CPU-second, append p50/p99.
- D2: the protocol's own benchmark round trip (its ``append and receive via long-poll``): a
  reader sends ``GET ?offset=<its offset>&live=long-poll``, a producer appends 100 bytes at
  once on another connection, and the time from the append's start to the long-poll answer's
  arrival is one sample; the reader then waits at the new offset. As in the protocol's
  benchmark the stream is ``application/octet-stream`` and the read is not known to be
  parked at the server before the append: either order is a round trip a client sees.

D3 (fan-out) and D4 (idle subscribers) are streaming scenarios (``streaming.py``) over
Durable Streams SSE reads. Both servers run fresh for every scenario, the broker's front with
the benchmark's open, unlimited settings.
"""

from __future__ import annotations

import asyncio
import resource
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe

from .append import ds_message
from .client import Connection, expect
from .harness import SETUP_TIMEOUT, Bench
from .infra import connections_named, receive
from .load import Go, LoadResult, raise_nofile
from .report import Result
from .systems import DS, system

WRITES = "writes"
ROUND_TRIP = "round-trip"
_ROUND_TRIP_BYTES = 100
# D2 measures latency, not throughput: round trips one after another with this much between
# their starts, so that the servers are not saturated by the measurement itself.
_ROUND_TRIP_PACE_NS = 10_000_000
_JSON = {"Content-Type": "application/json"}
_OCTETS = {"Content-Type": "application/octet-stream"}


@dataclass(frozen=True)
class DsPlan:
    """One D1/D2 load process: its server, its streams (one per producer), what it does."""

    base_url: str
    paths: list[str]
    mode: str  # WRITES or ROUND_TRIP


def ds_writes(bench: Bench, producers: int, name: str) -> Result:
    """D1/``producers`` against one system."""
    paths = [f"/v1/stream/d1x{producers}-{name}-{i}" for i in range(producers)]
    result = _run(bench, f"D1/{producers}", name, paths, WRITES)
    result.note = (
        "a stream per producer, 100-byte JSON appends, each sent when the last is answered"
    )
    return result


def ds_round_trip(bench: Bench, name: str) -> Result:
    """D2 against one system."""
    result = _run(bench, "D2", name, [f"/v1/stream/d2-{name}"], ROUND_TRIP)
    result.note = (
        "an append of 100 bytes (octet-stream) to the answer of a long-poll at the offset, "
        f"one every {_ROUND_TRIP_PACE_NS / 1e6:g} ms at most"
    )
    return result


def _run(bench: Bench, scenario: str, name: str, paths: list[str], mode: str) -> Result:
    args = bench.args
    serving = system(name)
    count = max(1, min(args.load_procs, len(paths))) if mode == WRITES else 1
    with bench.front(serving, DS) as front:
        helpers = [
            bench.processes.helper(ds_main, DsPlan(front.url, paths[i::count], mode))
            for i in range(count)
        ]
        for process, pipe in helpers:
            receive(pipe, process, SETUP_TIMEOUT, "Durable Streams load")
        t0 = time.time_ns() + 200_000_000 + int(args.warmup * 1e9)
        t1 = t0 + int(args.duration * 1e9)
        t_end = t1 + 300_000_000
        for _, pipe in helpers:
            pipe.send(Go(t0, t1, t_end))
        pids = {"front": [front.pid], "load": [p.pid for p, _ in helpers]}
        before = bench.sample(pids, {}, t0)
        after = bench.sample(pids, {}, t1)
        connections = (
            connections_named(bench.redis, f"{serving.redis_client}:front:{front.pid}")
            if serving.redis_client
            else 0
        )
        loads: list[LoadResult] = [
            receive(pipe, process, 60, "Durable Streams load")[1] for process, pipe in helpers
        ]
        bench.processes.reap_helpers()
    result = bench.result(
        scenario, name, len(paths), len(paths), before, after, loads, uses_redis=serving.uses_redis
    )
    result.failed_requests = sum(r.bad_status for r in loads)
    result.front_redis_connections = connections
    return result


async def _produce(connection: Connection, path: str, go: Go, result: LoadResult) -> None:
    """Append until the end, one at a time; count and time those inside the window."""
    while True:
        start = time.time_ns()
        if start >= go.t_end:
            return
        response = await connection.request("POST", path, _JSON, ds_message(str(start)))
        if response.status not in (200, 204):
            result.bad_status += 1
            continue
        if start >= go.t0 and response.at_ns <= go.t1:
            result.events += 1
            result.latencies_ns.append(response.at_ns - start)


async def _round_trips(
    reader: Connection, writer: Connection, path: str, offset: str, go: Go, result: LoadResult
) -> None:
    body = b"x" * _ROUND_TRIP_BYTES
    next_start = time.time_ns()
    while next_start < go.t_end:
        delay = (next_start - time.time_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        poll = reader.send("GET", f"{path}?offset={offset}&live=long-poll")
        start = time.time_ns()
        next_start = start + _ROUND_TRIP_PACE_NS
        appended = await writer.request("POST", path, _OCTETS, body)
        answer = await poll
        if appended.status not in (200, 204) or answer.status != 200:
            result.bad_status += 1
        offset = answer.headers.get("stream-next-offset", offset)
        if start >= go.t0 and answer.at_ns <= go.t1:
            result.events += 1
            result.latencies_ns.append(answer.at_ns - start)


async def _main(pipe: Pipe, plan: DsPlan) -> None:
    result = LoadResult()
    headers = _JSON if plan.mode == WRITES else _OCTETS
    connections = [await Connection.open(plan.base_url) for _ in plan.paths]
    offsets: list[str] = []
    for connection, path in zip(connections, plan.paths, strict=True):
        created = expect(
            await connection.request("PUT", path, headers), 200, 201, what=f"PUT {path}"
        )
        offsets.append(created.headers.get("stream-next-offset", "-1"))
    result.connected = len(connections)
    pipe.send(("ready", len(connections)))
    go: Go = await asyncio.to_thread(pipe.recv)
    if plan.mode == WRITES:
        await asyncio.gather(
            *(
                _produce(connection, path, go, result)
                for connection, path in zip(connections, plan.paths, strict=True)
            )
        )
    else:
        reader = await Connection.open(plan.base_url)
        await _round_trips(reader, connections[0], plan.paths[0], offsets[0], go, result)
        reader.close()
    for connection in connections:
        connection.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result.cpu_seconds = usage.ru_utime + usage.ru_stime
    pipe.send(("result", result))


def ds_main(pipe: Pipe, plan: DsPlan) -> None:
    """Entry point of a D1/D2 load process."""
    raise_nofile()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_main(pipe, plan))
