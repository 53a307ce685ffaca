"""Benchmark of the broker's front tier and workers, optionally beside a naive baseline and peers.

    .venv/bin/python -m scripts.bench [--compare-naive] [--peers] [--scenarios S1,S3] [--json out.json]

It starts what it needs: a Redis on a free port (unless ``REDIS_URL`` is set), one front process
per scenario (fresh, so its CPU, RSS and connections belong to that scenario alone), the load
processes, an appender, and a worker for S5. Scenarios:

- S1 many streams: N conversations appending at R tokens/s each, one client each.
- S2 fan-out: few conversations, K clients on each, for every K in a list.
- S3 resume storm: clients connect at once with a Last-Event-ID at a random stored position of
  long conversations; time to first event.
- S4 idle: thousands of SSE connections held open, a trickle of events; RSS per connection.
- S5 worker: real worker with the simulated model; tokens per worker CPU-second, writes per token.
- S6 idle conversations: one busy conversation (a real worker, simulated tokens coalesced as
  usual, one client) while N idle conversations each hold an open stream, for every N in a
  list; front CPU, Redis CPU and Redis commands per delivered event, from the run's first
  append to its terminal event.

With ``--peers`` the peers run beside the broker, installed by ``npm ci`` from
``scripts/bench/peers/package-lock.json``: Vercel's ``resumable-stream`` (Node, on the same
Redis) and the Durable Streams reference server (``@durable-streams/server``, Node, in memory).
Its scenarios (the default with ``--peers``):

- L1 live fan-in (200 conversations x 1 client, 10,000 events/s), L2 fan-out (20 x 100
  clients, 100,000 deliveries/s offered), L3 resume storm (500 clients into 20 conversations
  of 5,000 events), L4 idle (5,000 streams over 500 conversations): S1 to S4 at these sizes,
  against the broker and resumable-stream.
- D1/N Durable Streams appends by N producers, D2 append to long-poll round trip, D3 fan-out
  to SSE subscribers, D4 idle SSE subscribers: against the broker's /v1/stream routes and the
  reference server.

Server CPU is the server process plus Redis for the systems whose state is in Redis.

Each scenario runs a warm-up, then a fixed measured window; every counter is a delta over that
window. Latency is end to end: the appender puts ``time.time_ns()`` in each delta's text and the
reader subtracts it from its receipt time. The load generator's own CPU is reported apart.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import msgspec
import redis

from .durable import ds_round_trip, ds_writes
from .harness import Bench
from .idle import idle_conversations
from .infra import Processes, install_peers, machine_info, redis_and_processes
from .load import raise_nofile
from .options import ALL_SCENARIOS, PEER_SCENARIOS, build_parser
from .report import Report, Result, markdown, ratios, side_by_side
from .streaming import serves, streaming, workloads
from .systems import peers
from .worker import worker


def scenarios_of(args: argparse.Namespace) -> list[str]:
    default = PEER_SCENARIOS if args.peers else ALL_SCENARIOS
    text = args.scenarios if args.scenarios is not None else ",".join(default)
    scenarios = [s.strip().upper() for s in text.split(",") if s.strip()]
    unknown = set(scenarios) - set(ALL_SCENARIOS) - set(PEER_SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return scenarios


def run(args: argparse.Namespace, redis_url: str, processes: Processes) -> Report:
    load_at_start = round(os.getloadavg()[0], 2)
    scenarios = scenarios_of(args)
    bench = Bench(args, redis_url, processes)
    systems = ["broker"]
    if args.compare_naive:
        systems.append("naive")
    if args.peers:
        systems += [peer.name for peer in peers()]
    results: list[Result] = []
    try:
        for scenario in scenarios:
            if scenario == "S5":
                _progress("S5 broker")
                results.append(worker(bench))
                continue
            if scenario == "S6":
                for idle in args.s6_idle:
                    _progress(f"S6/{idle} broker")
                    results.append(idle_conversations(bench, idle))
                continue
            if scenario in ("D1", "D2"):
                for name in [s for s in systems if s in ("broker", "ds-reference")]:
                    if scenario == "D2":
                        _progress(f"D2 {name}")
                        results.append(ds_round_trip(bench, name))
                        continue
                    for producers in args.d1_producers:
                        _progress(f"D1/{producers} {name}")
                        results.append(ds_writes(bench, producers, name))
                continue
            for workload in workloads(args, scenario):
                for name in systems:
                    if serves(name, workload):
                        _progress(f"{workload.name} {name}")
                        results.append(streaming(bench, workload, name))
    finally:
        _delete_prefix(bench.redis, bench.prefix)
        bench.redis.close()
    settings = {k: v for k, v in vars(args).items() if k not in ("json",)}
    with redis.Redis.from_url(redis_url) as client:
        machine = machine_info(client)
    machine["load_average_1m_at_start"] = load_at_start
    return Report(
        machine=machine,
        settings=settings,
        results=results,
        ratios=ratios(results),
        side_by_side=side_by_side(results, tuple(peer.name for peer in peers())),
    )


def _progress(text: str) -> None:
    print(f"bench: {text} ...", file=sys.stderr, flush=True)


def _delete_prefix(client: redis.Redis, prefix: str) -> None:
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            client.delete(*batch)
            batch.clear()
    if batch:
        client.delete(*batch)


def _stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the finally blocks stop every process."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    args = build_parser(__doc__.split("\n\n")[0]).parse_args(argv)
    if args.peers:
        install_peers()
    raise_nofile()
    _stop_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        with redis_and_processes(workdir) as (redis_url, processes):
            report = run(args, redis_url, processes)
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    except Exception:
        print(f"bench: failed; the processes' output is in {workdir}", file=sys.stderr)
        raise
    if args.keep_logs:
        print(f"bench: the processes' output is in {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print(markdown(report))
    if args.json:
        Path(args.json).write_bytes(msgspec.json.format(msgspec.json.encode(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
