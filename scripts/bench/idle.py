"""S6: one busy conversation beside idle open ones; what each delivered event costs."""

from __future__ import annotations

import time
from typing import Any

import redis

from .harness import SETUP_TIMEOUT, Bench, post_message
from .infra import connections_named, receive, rss_bytes
from .load import Go
from .report import Result


def idle_conversations(bench: Bench, idle: int) -> Result:
    """Cost per delivered event of one busy conversation while ``idle`` others are open.

    The idle conversations get one stored entry each (written directly, they only need to
    exist) and one open stream each; the busy one is a real run of the simulated model.
    The window is the run itself: from the POST to its terminal event in Redis.
    """
    from broker.engine.keys import Keys

    args = bench.args
    keys = Keys(bench.prefix)
    tag = f"s6x{idle}"
    idle_cids = [f"{tag}-idle-{i}" for i in range(idle)]
    busy = f"{tag}-busy"
    with bench.redis.pipeline(transaction=False) as pipe:
        for i, cid in enumerate(idle_cids):
            pipe.xadd(
                keys.conversation(cid).events, {b"t": b"message", b"d": b"{}", b"r": b"r_idle"}
            )
            if i % 1000 == 999:
                pipe.execute()
        pipe.execute()
    # Keepalives are per connection, not per event: out of the window.
    settings = {**bench.front_settings, "keepalive_seconds": 3600}
    child = bench.processes.front("broker", bench.redis_url, bench.prefix, settings)
    worker = bench.processes.worker(bench.redis_url, bench.prefix, 8, {"shutdown_grace_seconds": 1})
    try:
        post_message(child.url, busy, 1, 1)  # the busy conversation exists before its client
        _wait_run_ended(bench.redis, keys, busy, 60)
        clients = [(cid, None) for cid in idle_cids] + [(busy, None)]
        loads = bench.loads(clients, child.port, storm=False)
        for process, pipe in loads:
            receive(pipe, process, SETUP_TIMEOUT, "load")
        time.sleep(1.0)
        length_before = bench.redis.xlen(keys.conversation(busy).events)
        t0 = time.time_ns()
        budget = args.s6_tokens * args.s6_interval_ms / 1000 + 60
        t_end = t0 + int(budget * 1e9)
        for _, pipe in loads:
            pipe.send(Go(t0, t_end, t_end))
        pids = {"front": [child.pid], "load": [p.pid for p, _ in loads], "worker": [worker.pid]}
        before = bench.sample(pids, {}, t0)
        post_message(child.url, busy, args.s6_tokens, args.s6_interval_ms)
        polls = _wait_run_ended(bench.redis, keys, busy, budget)
        time.sleep(0.2)  # the last event reaches the client
        after = bench.sample(pids, {}, time.time_ns())
        connections = connections_named(bench.redis, f"broker:front:{child.pid}")
        rss = rss_bytes(child.pid)
        for process, _ in loads:
            process.kill()
        bench.processes.reap_helpers()
    finally:
        bench.processes.release(worker)
        bench.processes.release(child)
    delivered = bench.redis.xlen(keys.conversation(busy).events) - length_before
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
    worker_cpu = after.cpu["worker"] - before.cpu["worker"]
    result.note = (
        f"{args.s6_tokens} tokens every {args.s6_interval_ms:g} ms; worker CPU {worker_cpu:.2f} s"
    )
    return result


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
