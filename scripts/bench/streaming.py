"""The streaming scenarios, S1 to S4: an appender writes, load processes read over SSE.

Each scenario is one or more ``Workload``s, run against the broker's front and, with
``--compare-naive``, against the naive baseline on the same workload.
"""

from __future__ import annotations

import argparse
import random
import resource
import time
from dataclasses import dataclass
from typing import Any

from .append import AppendPlan, AppendResult, append_main
from .harness import SETUP_TIMEOUT, Bench
from .infra import connections_named, receive, rss_bytes
from .load import Go, LoadResult
from .report import Result


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


def streaming(bench: Bench, workload: Workload, system: str) -> Result:
    args = bench.args
    tag = workload.tag(system)
    cids = [f"{tag}-{i}" for i in range(workload.conversations)]
    total_clients = (
        workload.storm_clients or workload.conversations * workload.clients_per_conversation
    )
    note = ""
    cap = _client_cap(system)
    if total_clients > cap:
        fds = "two fds" if system == "naive" else "one fd"
        note = f"capped at {cap:,} clients by the fd limit ({fds} per client)"
        total_clients = cap
    with bench.front(system) as front:
        context_appends, context_events = _counters()
        appender, appender_pipe = bench.processes.helper(
            append_main,
            AppendPlan(bench.redis_url, bench.prefix, cids, workload.rate, workload.prefill),
            context_appends,
            context_events,
        )
        receive(appender_pipe, appender, SETUP_TIMEOUT, "appender")
        if workload.storm_clients:
            stored = bench.stored_ids(cids)
            rng = random.Random(7)
            clients = []
            for i in range(total_clients):
                cid = cids[i % len(cids)]
                clients.append((cid, rng.choice(stored[cid][:-1] or stored[cid])))
        else:
            clients = [(cids[i % len(cids)], None) for i in range(total_clients)]
        rss_before = rss_bytes(front.pid)
        loads = bench.loads(clients, front.port, storm=bool(workload.storm_clients))
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
        before = bench.sample(pids, counters, t0)
        after = bench.sample(pids, counters, t1)
        connections = connections_named(
            bench.redis, f"{'broker' if system == 'broker' else 'naive'}:front:{front.pid}"
        )
        rss_end = rss_bytes(front.pid)
        load_results: list[LoadResult] = [
            receive(pipe, process, 60, "load")[1] for process, pipe in loads
        ]
        append_result: AppendResult = receive(appender_pipe, appender, 120, "appender")[1]
        bench.processes.reap_helpers()

    result = bench.result(
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
    ) * bench.cost.per_append + (
        after.counters["events"] - before.counters["events"]
    ) * bench.cost.per_event
    front_commands = after.redis.delta(before.redis) - appender_commands
    if result.delivered_events:
        result.redis_cmds_per_event_front = round(front_commands / result.delivered_events, 4)
    result.front_redis_connections = connections
    result.front_rss_mb = round(rss_end / 2**20, 1)
    if result.connected and not workload.storm_clients:  # a storm connects inside the window
        result.rss_per_connection_kb = round((rss_after - rss_before) / result.connected / 1024, 1)
    result.appended_events = after.counters["events"] - before.counters["events"]
    result.appender_skipped = append_result.skipped
    result.appender_cpu_pct = after.cpu_pct(before, "appender")
    result.note = note
    return result


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
