"""The streaming scenarios: an appender writes, load processes read over SSE.

Each scenario is one or more ``Workload``s, run against the broker's front and, on the same
workload, against the naive baseline (``--compare-naive``) and the peers that serve its
protocol (``--peers``):

- S1 to S4, and L1 to L4 (the same code at the sizes of the side-by-side with the peers),
  over the conversation feed: the broker, the naive front, resumable-stream.
- D3 (fan-out: one stream, 1,000 subscribers) and D4 (L4's idle streams), over Durable
  Streams SSE reads fed by Durable Streams appends: the broker's /v1/stream routes, the
  reference server.
"""

from __future__ import annotations

import argparse
import random
import resource
import time
from dataclasses import dataclass
from typing import Any

from .append import DS as DS_TARGET
from .append import ENGINE, RESUMABLE_STREAM, AppendPlan, AppendResult, append_main
from .harness import SETUP_TIMEOUT, Bench
from .infra import connections_named, receive, rss_bytes
from .load import Go, LoadResult
from .report import Result
from .systems import CONVERSATION, DS, System, system


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
    protocol: str = CONVERSATION

    def tag(self, system: str) -> str:
        return f"{self.name.replace('/', 'x').lower()}-{system}"


def workloads(args: argparse.Namespace, scenario: str) -> list[Workload]:
    """The workloads of a streaming scenario; L1 and L3 are S1 and S3 (their flags, whose
    defaults are the side-by-side sizes), L2 and L4 are S2 and S4 at the side-by-side sizes
    (flags of their own), D3 is a fan-out and D4 is L4, over Durable Streams."""
    if scenario in ("S1", "L1"):
        return [Workload(scenario, args.s1_conversations, 1, args.s1_rate)]
    if scenario == "S2":
        return [
            _fanout(f"S2/{fanout}", args, fanout, args.s2_max_events) for fanout in args.s2_fanout
        ]
    if scenario == "L2":
        return [_fanout("L2", args, args.l2_fanout, args.l2_max_events)]
    if scenario in ("S3", "L3"):
        return [
            Workload(
                scenario,
                args.s3_conversations,
                rate=args.s3_rate,
                prefill=args.s3_events,
                storm_clients=args.s3_clients,
            )
        ]
    if scenario == "S4":
        return [_idle("S4", args.s4_clients, args.s4_conversations, args.s4_rate)]
    if scenario == "L4":
        return [_idle("L4", args.l4_clients, args.l4_conversations, args.s4_rate)]
    if scenario == "D3":
        per = max(1, args.d3_subscribers // args.d3_streams)
        return [Workload("D3", args.d3_streams, per, args.d3_rate, protocol=DS)]
    if scenario == "D4":
        return [_idle("D4", args.l4_clients, args.l4_conversations, args.s4_rate, DS)]
    return []


def _fanout(name: str, args: argparse.Namespace, fanout: int, max_events: float) -> Workload:
    rate = min(args.s2_rate, max_events / (args.s2_conversations * fanout))
    return Workload(name, args.s2_conversations, fanout, rate)


def _idle(
    name: str, clients: int, conversations: int, rate: float, protocol: str = CONVERSATION
) -> Workload:
    per = max(1, clients // conversations)
    return Workload(
        name, conversations, per, rate / conversations, measure_rss=True, protocol=protocol
    )


def serves(name: str, workload: Workload) -> bool:
    return workload.protocol in system(name).protocols


def _target(serving: System, workload: Workload) -> str:
    """Who the appender writes to: what the system reads its events from."""
    if workload.protocol == DS:
        return DS_TARGET
    return RESUMABLE_STREAM if serving.name == "resumable-stream" else ENGINE


def streaming(bench: Bench, workload: Workload, name: str) -> Result:
    args = bench.args
    serving = system(name)
    tag = workload.tag(name)
    cids = [f"{tag}-{i}" for i in range(workload.conversations)]
    total_clients = (
        workload.storm_clients or workload.conversations * workload.clients_per_conversation
    )
    note = ""
    cap = _client_cap(name)
    if total_clients > cap:
        fds = "two fds" if name == "naive" else "one fd"
        note = f"capped at {cap:,} clients by the fd limit ({fds} per client)"
        total_clients = cap
    target = _target(serving, workload)
    with bench.front(serving, workload.protocol) as front:
        context_appends, context_events = _counters()
        plan = AppendPlan(
            bench.redis_url,
            bench.prefix,
            cids,
            workload.rate,
            workload.prefill,
            target=target,
            base_url=front.url,
        )
        appender, appender_pipe = bench.processes.helper(
            append_main, plan, context_appends, context_events
        )
        _, positions = receive(appender_pipe, appender, SETUP_TIMEOUT, "appender")
        if workload.storm_clients:
            if workload.protocol == DS:
                raise SystemExit("bench: a resume storm over Durable Streams is not implemented")
            stored = positions if positions is not None else bench.stored_ids(cids)
            rng = random.Random(7)
            clients = []
            for i in range(total_clients):
                cid = cids[i % len(cids)]
                clients.append((cid, rng.choice(stored[cid][:-1] or stored[cid])))
        else:
            clients = [(cids[i % len(cids)], None) for i in range(total_clients)]
        rss_before = rss_bytes(front.pid)
        loads = bench.loads(
            clients, front.port, storm=bool(workload.storm_clients), protocol=workload.protocol
        )
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
        connections = (
            connections_named(bench.redis, f"{serving.redis_client}:front:{front.pid}")
            if serving.redis_client
            else 0
        )
        rss_end = rss_bytes(front.pid)
        load_results: list[LoadResult] = [
            receive(pipe, process, 60, "load")[1] for process, pipe in loads
        ]
        append_result: AppendResult = receive(appender_pipe, appender, 120, "appender")[1]
        bench.processes.reap_helpers()

    result = bench.result(
        workload.name,
        name,
        workload.conversations,
        total_clients,
        before,
        after,
        load_results,
        uses_redis=serving.uses_redis,
    )
    # Only the engine writer's appends are Redis commands of the benchmark's own; the others
    # are the server's work (the peer's producer, the front's Durable Streams appends).
    appender_commands = (
        (after.counters["appends"] - before.counters["appends"]) * bench.cost.per_append
        + (after.counters["events"] - before.counters["events"]) * bench.cost.per_event
        if target == ENGINE
        else 0
    )
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
    result.offered_events_per_s = round(
        workload.rate * workload.conversations * workload.clients_per_conversation, 1
    )
    result.note = note
    return result


def _client_cap(name: str) -> int:
    """Clients one front can hold under the fd limit: the naive one also opens a Redis
    connection per client."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    return (hard - 1024) // (2 if name == "naive" else 1)


def _counters() -> tuple[Any, Any]:
    import multiprocessing

    context = multiprocessing.get_context("fork")
    return context.Value("q", 0), context.Value("q", 0)
