"""Durable Streams subscription wakes: how many a worker delivers per second.

One front, ``--workers`` workers, their own embedded Redis (or ``REDIS_URL``) and a webhook
receiver in this process on loopback that answers every wake ``{"done": true}`` at once (so
each delivery is also an auto-ack). ``--subscriptions`` webhook subscriptions each link one
stream. A round stops the workers (SIGSTOP), appends one message to every stream, lets the
workers go on (SIGCONT) and waits until every subscription's wake has arrived: wakes per
second is that count over the time from the workers' resumption to the last delivery, so it
measures the dispatchers (their look at each subscription, the issue script, the signed POST,
the auto-ack), not the appends. Everything it started is stopped at the end.

    .venv/bin/python -m scripts.bench.wakes --subscriptions 500 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from broker.cli.processes import Process

from .infra import redis_and_processes


class Receiver:
    """A bare HTTP/1.1 server: counts POSTs by subscription id, answers ``{"done":true}``."""

    def __init__(self) -> None:
        self.delivered: dict[str, int] = {}
        self.total = 0
        self.changed = asyncio.Event()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/wake"

    async def close(self) -> None:
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answer = b'{"done":true}'
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                marker = b'"subscription_id":"'
                start = body.find(marker) + len(marker)
                sub = body[start : body.find(b'"', start)].decode()
                self.delivered[sub] = self.delivered.get(sub, 0) + 1
                self.total += 1
                self.changed.set()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(answer)}\r\n\r\n".encode()
                    + answer
                )
                await writer.drain()
        except (
            asyncio.IncompleteReadError,
            ConnectionError,
            asyncio.LimitOverrunError,
            asyncio.CancelledError,
        ):
            pass
        finally:
            writer.close()


async def _bench(
    url: str, workers: list[Process], subscriptions: int, rounds: int, timeout: float
) -> list[float]:
    receiver = Receiver()
    hook = await receiver.start()
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        tag = uuid.uuid4().hex[:8]
        names = [f"bench-{tag}/{i}" for i in range(subscriptions)]
        gate = asyncio.Semaphore(32)

        async def each(coro_of, items):  # type: ignore[no-untyped-def]
            async def one(item):  # type: ignore[no-untyped-def]
                async with gate:
                    response = await coro_of(item)
                    response.raise_for_status()

            await asyncio.gather(*(one(item) for item in items))

        json = {"Content-Type": "application/json"}
        await each(lambda n: client.put(f"/v1/stream/{n}", headers=json), names)
        await each(
            lambda i: client.put(
                f"/v1/stream/__ds/subscriptions/bench-{tag}-{i}",
                json={"type": "webhook", "streams": [names[i]], "webhook": {"url": hook}},
            ),
            range(subscriptions),
        )
        rates = []
        for round_number in range(1, rounds + 1):
            target = receiver.total + subscriptions
            for worker in workers:
                worker.signal(signal.SIGSTOP)
            try:
                appending = time.perf_counter()
                await each(
                    lambda n: client.post(f"/v1/stream/{n}", content=b"1", headers=json), names
                )
                appended = time.perf_counter() - appending
            finally:
                for worker in workers:
                    worker.signal(signal.SIGCONT)
            started = time.perf_counter()
            deadline = started + timeout
            while receiver.total < target and time.perf_counter() < deadline:
                receiver.changed.clear()
                try:
                    await asyncio.wait_for(receiver.changed.wait(), 1)
                except TimeoutError:
                    pass
            elapsed = time.perf_counter() - started
            got = subscriptions - (target - receiver.total)
            rates.append(got / elapsed)
            print(
                f"round {round_number}: {got} wakes in {elapsed:.2f} s: "
                f"{got / elapsed:.0f} wakes/s (the appends took {appended:.2f} s)",
                flush=True,
            )
    await receiver.close()
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.wakes", description=__doc__)
    parser.add_argument("--subscriptions", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=64, help="wakes in flight per worker")
    parser.add_argument("--timeout", type=float, default=120.0, help="the longest round")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-wakes-"))
    settings = {
        "ds_webhook_allow_localhost": True,
        "ds_wake_concurrency": args.concurrency,
        "ds_max_streams_per_subscription": 10,
        "limit_ds_subscriptions_per_subject": 0,
    }
    try:
        with redis_and_processes(workdir) as (redis_url, processes):
            prefix = "bench" + uuid.uuid4().hex[:8]
            front = processes.front("broker", redis_url, prefix, settings)
            workers = [
                processes.worker(redis_url, prefix, 16, settings) for _ in range(args.workers)
            ]
            rates = asyncio.run(
                _bench(front.url, workers, args.subscriptions, args.rounds, args.timeout)
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"wakes delivered per second ({args.subscriptions} subscriptions, {args.workers} "
        f"worker(s)): median {statistics.median(rates):.0f}, best {max(rates):.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
