#!/usr/bin/env python3
"""Benchmark of the stream broker's front tier and workers, optionally against a naive baseline.

    .venv/bin/python scripts/bench.py [--compare-naive] [--scenarios S1,S3] [--json out.json]

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
import asyncio
import json
import os
import random
import resource
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
import uuid
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import redis

from .append import AppendPlan, AppendResult, append_main
from .infra import (
    Child,
    Processes,
    RedisSample,
    connections_named,
    cpu_seconds,
    machine_cpu,
    machine_info,
    receive,
    redis_sample,
    rss_bytes,
)
from .load import Go, LoadPlan, LoadResult, load_main, raise_nofile
from .report import Report, Result, markdown, percentiles, ratios

ALL_SCENARIOS = ("S1", "S2", "S3", "S4", "S5", "S6")
SOURCE_ADDRESSES = [f"127.0.0.{i}" for i in range(2, 10)]
SETUP_TIMEOUT = 180.0


@dataclass(frozen=True)
class Workload:
    """One streaming scenario: conversations, their clients, and what the appender writes."""

    name: str
    conversations: int
    clients_per_conversation: int = 1
    rate: float = 0.0  # delta events per second per conversation
    prefill: int = 0  # events written into each conversation before the clients connect
    storm_clients: int = 0  # S3: clients that connect all at once at a random stored position
    measure_rss: bool = False

    def tag(self, system: str) -> str:
        return f"{self.name.replace('/', 'x').lower()}-{system}"


@dataclass(frozen=True)
class ScriptCost:
    """Redis commands one ``Store.append`` costs: ``per_append`` + ``per_event`` per event.

    Measured, not assumed, so the appender's writes can be taken out of the front's command
    count whatever the append script does.
    """

    per_append: int
    per_event: int


class Bench:
    def __init__(self, args: argparse.Namespace, redis_url: str, processes: Processes) -> None:
        self.args = args
        self.redis_url = redis_url
        self.processes = processes
        self.prefix = args.key_prefix or "bench" + uuid.uuid4().hex[:10]
        self.redis = redis.Redis.from_url(redis_url)
        self.front_settings = dict(parse_setting(s) for s in args.front_setting)
        self.cost = self._calibrate()

    # -- measurement helpers -------------------------------------------------------------

    def _calibrate(self) -> ScriptCost:
        """Count what one append of 1 and of 2 events costs in Redis commands, while idle."""
        from broker.core.events import Delta, RunStarted, UserMessage, encode
        from broker.core.settings import Settings
        from broker.engine.connections import redis_client
        from broker.engine.conversations import Store

        settings = Settings.from_env(
            {"BROKER_REDIS_URL": self.redis_url, "BROKER_KEY_PREFIX": self.prefix}
        )

        async def measure() -> tuple[int, int]:
            client = redis_client(settings, "bench-calibrate", max_connections=2)
            store = Store(client, settings)
            try:
                cid, run = "calibrate", "r_calibrate"
                _, data = encode(UserMessage(message_id="m_c", content="c", run_id=run))
                await store.accept(
                    cid,
                    run_id=run,
                    message_id="m_c",
                    assistant_message_id="m_a",
                    model="simulated",
                    data=data,
                    idempotency_key=None,
                    idempotency_record="",
                )
                start = await store.start_run(
                    cid, run, "bench", "bench", encode(RunStarted(run, "m_a", "simulated"))[1]
                )
                assert start.fence is not None, start
                costs = []
                sequence = 0
                for count in (1, 2, 1, 2, 1, 2):
                    before = redis_sample(self.redis)
                    sequence += 1
                    events = [encode(Delta(run, "0"))] * count
                    # As the appender's pipelined appends: no TTL renewal.
                    await store.append(cid, run, start.fence, sequence, events, refresh_ttl=False)
                    costs.append((count, redis_sample(self.redis).delta(before)))
                one = min(c for n, c in costs if n == 1)
                two = min(c for n, c in costs if n == 2)
                return one, two
            finally:
                await client.aclose()

        one, two = asyncio.run(measure())
        return ScriptCost(per_append=one - (two - one), per_event=two - one)

    @contextmanager
    def front(self, system: str) -> Iterator[Child]:
        child = self.processes.front(system, self.redis_url, self.prefix, self.front_settings)
        try:
            yield child
        finally:
            self.processes.release(child)

    def _loads(
        self, clients: list[tuple[str, str | None]], port: int, storm: bool
    ) -> list[tuple[Any, Any]]:
        """Start the load processes, each with its share of the clients, round robin."""
        count = max(1, min(self.args.load_procs, len(clients)))
        shares: list[list[tuple[str, str | None]]] = [[] for _ in range(count)]
        for i, client in enumerate(clients):
            shares[i % count].append(client)
        return [
            self.processes.helper(
                load_main,
                LoadPlan("127.0.0.1", port, share, SOURCE_ADDRESSES, connect_on_go=storm),
            )
            for share in shares
        ]

    def _stored_ids(self, cids: list[str]) -> dict[str, list[str]]:
        from broker.engine.keys import Keys

        keys = Keys(self.prefix)
        return {
            cid: [
                entry_id.decode()
                for entry_id, _ in self.redis.xrange(keys.conversation(cid).events)
            ]
            for cid in cids
        }

    # -- streaming scenarios (S1-S4) ----------------------------------------------------

    def streaming(self, workload: Workload, system: str) -> Result:
        args = self.args
        tag = workload.tag(system)
        cids = [f"{tag}-{i}" for i in range(workload.conversations)]
        total_clients = (
            workload.storm_clients or workload.conversations * workload.clients_per_conversation
        )
        note = ""
        cap = _client_cap(system)
        if total_clients > cap:
            note = f"capped at {cap:,} clients by the fd limit ({'two fds' if system == 'naive' else 'one fd'} per client)"
            total_clients = cap
        with self.front(system) as front:
            context_appends, context_events = _counters()
            appender, appender_pipe = self.processes.helper(
                append_main,
                AppendPlan(self.redis_url, self.prefix, cids, workload.rate, workload.prefill),
                context_appends,
                context_events,
            )
            receive(appender_pipe, appender, SETUP_TIMEOUT, "appender")
            if workload.storm_clients:
                stored = self._stored_ids(cids)
                rng = random.Random(7)
                clients = []
                for i in range(total_clients):
                    cid = cids[i % len(cids)]
                    clients.append((cid, rng.choice(stored[cid][:-1] or stored[cid])))
            else:
                clients = [(cids[i % len(cids)], None) for i in range(total_clients)]
            rss_before = rss_bytes(front.pid)
            loads = self._loads(clients, front.port, storm=bool(workload.storm_clients))
            for process, pipe in loads:
                receive(pipe, process, SETUP_TIMEOUT, "load")
            time.sleep(0.3)
            rss_after = rss_bytes(front.pid)

            t_go = time.time_ns() + 200_000_000
            t0 = t_go + int(args.warmup * 1e9)
            t1 = t0 + int(args.duration * 1e9)
            t_end = t1 + 300_000_000
            appender_pipe.send((t_go, t_end))
            for _, pipe in loads:
                pipe.send(Go(t0, t1, t_end))
            pids = {
                "front": [front.pid],
                "load": [p.pid for p, _ in loads],
                "appender": [appender.pid],
            }
            counters = {"appends": context_appends, "events": context_events}
            before = self._sample(pids, counters, t0)
            after = self._sample(pids, counters, t1)
            connections = connections_named(
                self.redis, f"{'broker' if system == 'broker' else 'naive'}:front:{front.pid}"
            )
            rss_end = rss_bytes(front.pid)
            load_results: list[LoadResult] = [
                receive(pipe, process, 60, "load")[1] for process, pipe in loads
            ]
            append_result: AppendResult = receive(appender_pipe, appender, 120, "appender")[1]
            self.processes.reap_helpers()

        result = self._result(
            workload.name,
            system,
            workload.conversations,
            total_clients,
            before,
            after,
            load_results,
        )
        appender_commands = (
            after.counters["appends"] - before.counters["appends"]
        ) * self.cost.per_append + (
            after.counters["events"] - before.counters["events"]
        ) * self.cost.per_event
        front_commands = after.redis.delta(before.redis) - appender_commands
        if result.delivered_events:
            result.redis_cmds_per_event_front = round(front_commands / result.delivered_events, 4)
        result.front_redis_connections = connections
        result.front_rss_mb = round(rss_end / 2**20, 1)
        if result.connected and not workload.storm_clients:  # a storm connects inside the window
            result.rss_per_connection_kb = round(
                (rss_after - rss_before) / result.connected / 1024, 1
            )
        result.appended_events = after.counters["events"] - before.counters["events"]
        result.appender_skipped = append_result.skipped
        result.appender_cpu_pct = after.cpu_pct(before, "appender")
        result.note = note
        return result

    # -- S5: a real worker ---------------------------------------------------------------

    def worker(self) -> Result:
        args = self.args
        runs = args.s5_runs
        tokens = int(args.s5_tokens_per_s * (args.warmup + args.duration + 15))
        interval_ms = 1000 / args.s5_tokens_per_s
        cids = [f"s5-broker-{i}" for i in range(runs)]
        with self.front("broker") as front:
            worker = self.processes.worker(
                self.redis_url, self.prefix, args.s5_concurrency, {"shutdown_grace_seconds": 1}
            )
            try:
                for cid in cids:
                    _post_message(front.url, cid, tokens, interval_ms)
                loads = self._loads([(cid, None) for cid in cids], front.port, storm=False)
                for process, pipe in loads:
                    receive(pipe, process, SETUP_TIMEOUT, "load")
                t0 = time.time_ns() + int(args.warmup * 1e9)
                t1 = t0 + int(args.duration * 1e9)
                t_end = t1 + 300_000_000
                for _, pipe in loads:
                    pipe.send(Go(t0, t1, t_end))
                pids = {
                    "front": [front.pid],
                    "load": [p.pid for p, _ in loads],
                    "worker": [worker.pid],
                }
                before = self._sample(pids, {}, t0)
                after = self._sample(pids, {}, t1)
                connections = connections_named(self.redis, f"broker:front:{front.pid}")
                front_rss = rss_bytes(front.pid)
                load_results = [receive(pipe, process, 60, "load")[1] for process, pipe in loads]
                self.processes.reap_helpers()
            finally:
                self.processes.release(worker)
        result = self._result("S5", "broker", runs, runs, before, after, load_results)
        result.front_redis_connections = connections
        result.front_rss_mb = round(front_rss / 2**20, 1)
        worker_cpu = after.cpu["worker"] - before.cpu["worker"]
        result.worker_cpu_s = round(worker_cpu, 3)
        result.tokens = sum(r.tokens for r in load_results)
        if result.tokens:
            scripts = after.redis.delta(before.redis, "evalsha") + after.redis.delta(
                before.redis, "eval"
            )
            result.writes_per_token = round(scripts / result.tokens, 4)
            result.xadd_per_token = round(
                after.redis.delta(before.redis, "xadd") / result.tokens, 4
            )
            result.redis_cmds_per_token = round(after.redis.delta(before.redis) / result.tokens, 4)
            if worker_cpu > 0:
                result.tokens_per_worker_cpu_s = round(result.tokens / worker_cpu, 0)
        result.note = (
            f"{runs} runs at {args.s5_tokens_per_s:g} tokens/s (offered {runs * args.s5_tokens_per_s:,.0f} "
            f"tokens/s); worker CPU {result.worker_cpu_s} s in the window"
        )
        return result

    # -- S6: idle conversations beside one busy one --------------------------------------

    def idle_conversations(self, idle: int) -> Result:
        """Cost per delivered event of one busy conversation while ``idle`` others are open.

        The idle conversations get one stored entry each (written directly, they only need to
        exist) and one open stream each; the busy one is a real run of the simulated model.
        The window is the run itself: from the POST to its terminal event in Redis.
        """
        from broker.engine.keys import Keys

        args = self.args
        keys = Keys(self.prefix)
        tag = f"s6x{idle}"
        idle_cids = [f"{tag}-idle-{i}" for i in range(idle)]
        busy = f"{tag}-busy"
        with self.redis.pipeline(transaction=False) as pipe:
            for i, cid in enumerate(idle_cids):
                pipe.xadd(
                    keys.conversation(cid).events, {b"t": b"message", b"d": b"{}", b"r": b"r_idle"}
                )
                if i % 1000 == 999:
                    pipe.execute()
            pipe.execute()
        # Keepalives are per connection, not per event: out of the window.
        settings = {**self.front_settings, "keepalive_seconds": 3600}
        child = self.processes.front("broker", self.redis_url, self.prefix, settings)
        worker = self.processes.worker(
            self.redis_url, self.prefix, 8, {"shutdown_grace_seconds": 1}
        )
        try:
            _post_message(child.url, busy, 1, 1)  # the busy conversation exists before its client
            _wait_run_ended(self.redis, keys, busy, 60)
            clients = [(cid, None) for cid in idle_cids] + [(busy, None)]
            loads = self._loads(clients, child.port, storm=False)
            for process, pipe in loads:
                receive(pipe, process, SETUP_TIMEOUT, "load")
            time.sleep(1.0)
            length_before = self.redis.xlen(keys.conversation(busy).events)
            t0 = time.time_ns()
            budget = args.s6_tokens * args.s6_interval_ms / 1000 + 60
            t_end = t0 + int(budget * 1e9)
            for _, pipe in loads:
                pipe.send(Go(t0, t_end, t_end))
            pids = {"front": [child.pid], "load": [p.pid for p, _ in loads], "worker": [worker.pid]}
            before = self._sample(pids, {}, t0)
            _post_message(child.url, busy, args.s6_tokens, args.s6_interval_ms)
            polls = _wait_run_ended(self.redis, keys, busy, budget)
            time.sleep(0.2)  # the last event reaches the client
            after = self._sample(pids, {}, time.time_ns())
            connections = connections_named(self.redis, f"broker:front:{child.pid}")
            rss = rss_bytes(child.pid)
            for process, _ in loads:
                process.kill()
            self.processes.reap_helpers()
        finally:
            self.processes.release(worker)
            self.processes.release(child)
        delivered = self.redis.xlen(keys.conversation(busy).events) - length_before
        window = (after.at - before.at) / 1e9
        front_cpu = after.cpu["front"] - before.cpu["front"]
        redis_cpu = after.redis.cpu - before.redis.cpu
        # The benchmark's own polling for the run's end is not the broker's work.
        after.redis.calls["hget"] = after.redis.calls.get("hget", 0) - polls
        commands = after.redis.delta(before.redis)
        result = Result(
            scenario=f"S6/{idle}",
            system="broker",
            conversations=idle + 1,
            clients=idle + 1,
            connected=idle + 1,
            window_s=round(window, 3),
            delivered_events=delivered,
            events_per_s=round(delivered / window, 1),
            front_cpu_s=round(front_cpu, 3),
            front_cpu_pct=after.cpu_pct(before, "front"),
            redis_cpu_pct=round(redis_cpu / window * 100, 1),
        )
        result.front_redis_connections = connections
        result.front_rss_mb = round(rss / 2**20, 1)
        if delivered:
            result.front_cpu_ms_per_event = round(front_cpu / delivered * 1000, 3)
            result.redis_cpu_ms_per_event = round(redis_cpu / delivered * 1000, 3)
            result.redis_cmds_per_event_all = round(commands / delivered, 2)
            result.commands_by_name = {
                name: round(
                    (after.redis.calls.get(name, 0) - before.redis.calls.get(name, 0)) / delivered,
                    3,
                )
                for name in sorted(set(after.redis.calls) | set(before.redis.calls))
                if after.redis.calls.get(name, 0) != before.redis.calls.get(name, 0)
            }
        result.note = f"{args.s6_tokens} tokens every {args.s6_interval_ms:g} ms; worker CPU {after.cpu['worker'] - before.cpu['worker']:.2f} s"
        return result

    # -- shared accounting ---------------------------------------------------------------

    def _sample(self, pids: dict[str, list[int]], counters: dict[str, Any], at_ns: int) -> Sample:
        _sleep_until(at_ns)
        now = time.time_ns()
        cpu = {role: sum(_cpu_or_zero(p) for p in group) for role, group in pids.items()}
        cpu["machine"], cpu["machine_total"] = machine_cpu()
        values = {name: int(counter.value) for name, counter in counters.items()}
        return Sample(now, cpu, redis_sample(self.redis), values)

    def _result(
        self,
        scenario: str,
        system: str,
        conversations: int,
        clients: int,
        before: Sample,
        after: Sample,
        loads: list[LoadResult],
    ) -> Result:
        window = (after.at - before.at) / 1e9
        delivered = sum(r.events for r in loads)
        latencies = array("q")
        ttfe = array("q")
        for r in loads:
            latencies.extend(r.latencies_ns)
            ttfe.extend(r.ttfe_ns)
        front_cpu = after.cpu["front"] - before.cpu["front"]
        commands = after.redis.delta(before.redis)
        result = Result(
            scenario=scenario,
            system=system,
            conversations=conversations,
            clients=clients,
            connected=sum(r.connected for r in loads),
            connect_failed=sum(r.connect_failed for r in loads),
            closed_early=sum(r.closed_early for r in loads),
            window_s=round(window, 3),
            delivered_events=delivered,
            events_per_s=round(delivered / window, 1),
            latency=percentiles(latencies),
            front_cpu_s=round(front_cpu, 3),
            front_cpu_pct=after.cpu_pct(before, "front"),
            load_cpu_pct=after.cpu_pct(before, "load"),
            redis_cpu_pct=round((after.redis.cpu - before.redis.cpu) / window * 100, 1),
            machine_busy_pct=round(
                (after.cpu["machine"] - before.cpu["machine"])
                / max(1e-9, after.cpu["machine_total"] - before.cpu["machine_total"])
                * 100,
                1,
            ),
            time_to_first_event=percentiles(ttfe) if scenario == "S3" else None,
        )
        if delivered:
            result.front_cpu_s_per_1k_events = round(front_cpu / delivered * 1000, 4)
            result.redis_cmds_per_event_all = round(commands / delivered, 4)
            if front_cpu > 0:
                result.events_per_front_cpu_s = round(delivered / front_cpu, 0)
        return result


@dataclass(frozen=True)
class Sample:
    at: int
    cpu: dict[str, float]
    redis: RedisSample
    counters: dict[str, int]

    def cpu_pct(self, before: Sample, role: str) -> float:
        window = (self.at - before.at) / 1e9
        return round((self.cpu.get(role, 0.0) - before.cpu.get(role, 0.0)) / window * 100, 1)


def _client_cap(system: str) -> int:
    """Clients one front can hold under the fd limit: the naive one also opens a Redis
    connection per client."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    return (hard - 1024) // (2 if system == "naive" else 1)


def _counters() -> tuple[Any, Any]:
    import multiprocessing

    context = multiprocessing.get_context("fork")
    return context.Value("q", 0), context.Value("q", 0)


def _cpu_or_zero(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError:
        return 0.0


def _sleep_until(t_ns: int) -> None:
    delay = (t_ns - time.time_ns()) / 1e9
    if delay > 0:
        time.sleep(delay)


def _post_message(base_url: str, cid: str, tokens: int, interval_ms: float) -> None:
    body = json.dumps(
        {
            "content": f"bench {cid}",
            "model": "simulated",
            "params": {"tokens": tokens, "interval_ms": interval_ms},
        }
    ).encode()
    request = urllib.request.Request(
        f"{base_url}/v1/conversations/{cid}/messages",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 202:
            raise RuntimeError(f"bench: POST message answered {response.status}")


def _wait_run_ended(client: redis.Redis, keys: Any, cid: str, timeout: float) -> int:
    """Poll until the conversation has no active run (its terminal event is stored); returns
    how many HGETs that took, so they can be left out of the command counts."""
    deadline = time.monotonic() + timeout
    meta = keys.conversation(cid).meta
    time.sleep(0.05)
    polls = 1
    while client.hget(meta, "active_run"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench: the run of {cid} did not end within {timeout:.0f}s")
        time.sleep(0.02)
        polls += 1
    return polls


def parse_setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep:
        raise SystemExit(f"--front-setting wants NAME=VALUE, got {text!r}")
    return name.lower().removeprefix("broker_"), value


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--scenarios", default=",".join(ALL_SCENARIOS), help="comma-separated, e.g. S1,S3"
    )
    p.add_argument(
        "--compare-naive",
        action="store_true",
        help="also run scripts/naive_front.py on the same workload",
    )
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument(
        "--duration", type=float, default=10.0, help="measured window per scenario, seconds"
    )
    p.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of load before the window opens"
    )
    p.add_argument(
        "--keep-logs", action="store_true", help="keep the started processes' output files"
    )
    p.add_argument(
        "--key-prefix", default="", help="namespace of the benchmark's keys (default: a fresh one)"
    )
    p.add_argument("--load-procs", type=int, default=2, help="load generator processes")
    p.add_argument(
        "--front-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a BROKER_* setting for the front, e.g. client_queue_frames=4096",
    )
    p.add_argument("--s1-conversations", type=int, default=200)
    p.add_argument(
        "--s1-rate",
        type=float,
        default=50.0,
        help="tokens (delta events) per second per conversation",
    )
    p.add_argument("--s2-conversations", type=int, default=20)
    p.add_argument(
        "--s2-fanout",
        type=_int_list,
        default=[10, 100, 250],
        help="clients per conversation, a list",
    )
    p.add_argument(
        "--s2-rate",
        type=float,
        default=50.0,
        help="events/s per conversation, lowered to fit --s2-max-events",
    )
    p.add_argument(
        "--s2-max-events", type=float, default=40_000, help="cap on offered deliveries per second"
    )
    p.add_argument("--s3-conversations", type=int, default=20)
    p.add_argument("--s3-events", type=int, default=5000, help="events stored in each conversation")
    p.add_argument("--s3-clients", type=int, default=500)
    p.add_argument(
        "--s3-rate", type=float, default=5.0, help="live events/s per conversation during the storm"
    )
    p.add_argument("--s4-clients", type=int, default=10_000)
    p.add_argument("--s4-conversations", type=int, default=1000)
    p.add_argument(
        "--s4-rate", type=float, default=10.0, help="events/s over all S4 conversations (a trickle)"
    )
    p.add_argument("--s5-runs", type=int, default=32, help="concurrent runs on the one worker")
    p.add_argument(
        "--s5-tokens-per-s", type=float, default=200.0, help="tokens/s of each simulated run"
    )
    p.add_argument("--s5-concurrency", type=int, default=64)
    p.add_argument(
        "--s6-idle",
        type=_int_list,
        default=[0, 1000, 5000, 10_000],
        help="idle open conversations beside the busy one, a list",
    )
    p.add_argument("--s6-tokens", type=int, default=3000, help="tokens of the busy run")
    p.add_argument(
        "--s6-interval-ms", type=float, default=2.0, help="the simulated model's interval"
    )
    return p


def workloads(args: argparse.Namespace, scenario: str) -> list[Workload]:
    if scenario == "S1":
        return [Workload("S1", args.s1_conversations, 1, args.s1_rate)]
    if scenario == "S2":
        out = []
        for fanout in args.s2_fanout:
            rate = min(args.s2_rate, args.s2_max_events / (args.s2_conversations * fanout))
            out.append(Workload(f"S2/{fanout}", args.s2_conversations, fanout, rate))
        return out
    if scenario == "S3":
        return [
            Workload(
                "S3",
                args.s3_conversations,
                rate=args.s3_rate,
                prefill=args.s3_events,
                storm_clients=args.s3_clients,
            )
        ]
    if scenario == "S4":
        per = max(1, args.s4_clients // args.s4_conversations)
        return [
            Workload(
                "S4",
                args.s4_conversations,
                per,
                args.s4_rate / args.s4_conversations,
                measure_rss=True,
            )
        ]
    return []


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
                results.append(bench.worker())
                continue
            if scenario == "S6":
                for idle in args.s6_idle:
                    _progress(f"S6/{idle} broker")
                    results.append(bench.idle_conversations(idle))
                continue
            for workload in workloads(args, scenario):
                for system in systems:
                    _progress(f"{workload.name} {system}")
                    results.append(bench.streaming(workload, system))
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
    args = build_parser().parse_args(argv)
    raise_nofile()
    _stop_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    processes = Processes(workdir)
    embedded = None
    try:
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            from broker.embedded_redis import EmbeddedRedis

            embedded = EmbeddedRedis(workdir / "redis", appendonly=False).start()
            redis_url = embedded.url
        report = run(args, redis_url, processes)
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    except Exception:
        print(f"bench: failed; the processes' output is in {workdir}", file=sys.stderr)
        raise
    else:
        if args.keep_logs:
            print(f"bench: the processes' output is in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    finally:
        processes.close()
        if embedded is not None:
            embedded.stop()
    print(markdown(report))
    if args.json:
        Path(args.json).write_bytes(msgspec.json.format(msgspec.json.encode(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
