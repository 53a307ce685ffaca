"""What every scenario shares: fronts and load processes to start, and accounting around a window.

A ``Bench`` holds one benchmark run's Redis, key prefix and processes; a scenario starts its
front and its load processes through it, takes a ``Sample`` at each end of its measured window,
and turns the two into a ``Result``.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request
import uuid
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis

from broker.cli.processes import Front

from .append import calibrate
from .infra import Processes, RedisSample, cpu_seconds, machine_cpu, redis_sample
from .load import LoadPlan, LoadResult, load_main
from .options import parse_setting
from .report import Result, percentiles
from .systems import CONVERSATION, DS, System

SOURCE_ADDRESSES = [f"127.0.0.{i}" for i in range(2, 10)]
SETUP_TIMEOUT = 180.0
# The broker's front for Durable Streams scenarios (see Bench.front).
_DS_OPEN = (("ds_sse_seconds", 3600), ("max_streams_per_conversation", 1_000_000))


class Bench:
    """One benchmark run's shared state: its Redis and key prefix, the processes it started,
    and what an append costs in Redis commands."""

    def __init__(self, args: argparse.Namespace, redis_url: str, processes: Processes) -> None:
        self.args = args
        self.redis_url = redis_url
        self.processes = processes
        self.prefix = args.key_prefix or "bench" + uuid.uuid4().hex[:10]
        self.redis = redis.Redis.from_url(redis_url)
        self.front_settings = dict(parse_setting(s) for s in args.front_setting)
        self.cost = calibrate(redis_url, self.prefix, lambda: redis_sample(self.redis).total)

    # -- measurement helpers -------------------------------------------------------------

    @contextmanager
    def front(self, system: str | System, protocol: str = CONVERSATION) -> Iterator[Front]:
        """A fresh server of ``system`` for one scenario, stopped at its end.

        For Durable Streams reads the broker's front is given no reason to end them inside a
        scenario: SSE reads last an hour (not ``BROKER_DS_SSE_SECONDS``' minute) and one
        stream may have as many readers as the scenario has (not 1,000 per front).
        """
        settings = dict(self.front_settings)
        if protocol == DS:
            settings = {**dict(_DS_OPEN), **settings}
        child = self.processes.front(system, self.redis_url, self.prefix, settings)
        try:
            yield child
        finally:
            self.processes.release(child)

    def loads(
        self,
        clients: list[tuple[str, str | None]],
        port: int,
        storm: bool,
        protocol: str = CONVERSATION,
    ) -> list[tuple[Any, Any]]:
        """Start the load processes, each with its share of the clients, round robin."""
        count = max(1, min(self.args.load_procs, len(clients)))
        shares: list[list[tuple[str, str | None]]] = [[] for _ in range(count)]
        for i, client in enumerate(clients):
            shares[i % count].append(client)
        return [
            self.processes.helper(
                load_main,
                LoadPlan(
                    "127.0.0.1",
                    port,
                    share,
                    SOURCE_ADDRESSES,
                    connect_on_go=storm,
                    protocol=protocol,
                ),
            )
            for share in shares
        ]

    def stored_ids(self, cids: list[str]) -> dict[str, list[str]]:
        from broker.engine.keys import Keys

        keys = Keys(self.prefix)
        return {
            cid: [
                entry_id.decode()
                for entry_id, _ in self.redis.xrange(keys.conversation(cid).events)
            ]
            for cid in cids
        }

    def sample(self, pids: dict[str, list[int]], counters: dict[str, Any], at_ns: int) -> Sample:
        sleep_until(at_ns)
        now = time.time_ns()
        cpu = {role: sum(cpu_or_zero(p) for p in group) for role, group in pids.items()}
        cpu["machine"], cpu["machine_total"] = machine_cpu()
        values = {name: int(counter.value) for name, counter in counters.items()}
        return Sample(now, cpu, redis_sample(self.redis), values)

    def result(
        self,
        scenario: str,
        system: str,
        conversations: int,
        clients: int,
        before: Sample,
        after: Sample,
        loads: list[LoadResult],
        *,
        uses_redis: bool = True,
    ) -> Result:
        """What the window measured. ``uses_redis``: the system keeps its state in Redis, so
        Redis's CPU is part of its server CPU."""
        window = (after.at - before.at) / 1e9
        delivered = sum(r.events for r in loads)
        latencies = array("q")
        ttfe = array("q")
        for r in loads:
            latencies.extend(r.latencies_ns)
            ttfe.extend(r.ttfe_ns)
        front_cpu = after.cpu["front"] - before.cpu["front"]
        redis_cpu = after.redis.cpu - before.redis.cpu
        server_cpu = front_cpu + (redis_cpu if uses_redis else 0.0)
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
            server_cpu_s=round(server_cpu, 3),
            front_cpu_pct=after.cpu_pct(before, "front"),
            load_cpu_pct=after.cpu_pct(before, "load"),
            redis_cpu_pct=round((after.redis.cpu - before.redis.cpu) / window * 100, 1),
            machine_busy_pct=round(
                (after.cpu["machine"] - before.cpu["machine"])
                / max(1e-9, after.cpu["machine_total"] - before.cpu["machine_total"])
                * 100,
                1,
            ),
            time_to_first_event=percentiles(ttfe) if scenario in ("S3", "L3") else None,
        )
        if delivered:
            result.front_cpu_s_per_1k_events = round(front_cpu / delivered * 1000, 4)
            result.redis_cmds_per_event_all = round(commands / delivered, 4)
            if front_cpu > 0:
                result.events_per_front_cpu_s = round(delivered / front_cpu, 0)
            if server_cpu > 0:
                result.events_per_server_cpu_s = round(delivered / server_cpu, 0)
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


def cpu_or_zero(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError:
        return 0.0


def sleep_until(t_ns: int) -> None:
    delay = (t_ns - time.time_ns()) / 1e9
    if delay > 0:
        time.sleep(delay)


def post_message(base_url: str, cid: str, tokens: int, interval_ms: float) -> None:
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
