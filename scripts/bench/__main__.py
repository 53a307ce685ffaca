"""Benchmark of the stream broker's front tier and workers, optionally against a naive baseline.

    .venv/bin/python -m scripts.bench [--compare-naive] [--scenarios S1,S3] [--json out.json]

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

from .harness import Bench
from .idle import idle_conversations
from .infra import Processes, machine_info, redis_and_processes
from .load import raise_nofile
from .options import ALL_SCENARIOS, build_parser
from .report import Report, Result, markdown, ratios
from .streaming import streaming, workloads
from .worker import worker


def run(args: argparse.Namespace, redis_url: str, processes: Processes) -> Report:
    load_at_start = round(os.getloadavg()[0], 2)
    bench = Bench(args, redis_url, processes)
    scenarios = [s.strip().upper() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(scenarios) - set(ALL_SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))}")
    systems = ["broker", "naive"] if args.compare_naive else ["broker"]
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
            for workload in workloads(args, scenario):
                for system in systems:
                    _progress(f"{workload.name} {system}")
                    results.append(streaming(bench, workload, system))
    finally:
        _delete_prefix(bench.redis, bench.prefix)
        bench.redis.close()
    settings = {k: v for k, v in vars(args).items() if k not in ("json",)}
    with redis.Redis.from_url(redis_url) as client:
        machine = machine_info(client)
    machine["load_average_1m_at_start"] = load_at_start
    return Report(machine=machine, settings=settings, results=results, ratios=ratios(results))


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
