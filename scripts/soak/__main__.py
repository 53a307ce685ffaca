"""Soak: mixed load with random kills for a while, then check every conversation against Redis.

    .venv/bin/python -m scripts.soak --minutes 10
    .venv/bin/python -m scripts.soak --seconds 30 --fronts 3 --workers 3 --json soak.json

It starts what it needs: a ``redis-server`` with AOF in a temporary directory (unless
``REDIS_URL`` is set: then it works under a key prefix of its own and deletes those keys when
done), front processes and workers with short job leases. For the whole duration it posts
prompts to the simulated model, reads conversations over SSE with clients that drop their
connection at random and come back to a random front with their ``Last-Event-ID``, cancels runs,
and every few seconds SIGKILLs or SIGTERMs a random front or worker and starts another. One front
and one worker are spared (``--no-spare`` to kill those too), so that memory growth is measured
over a long-lived process.

At the end it stops the chaos, lets every run finish, and checks: each SSE connection received
exactly the stored stream after its position (in order, once each, possibly ending early); every
accepted run has exactly one terminal event and nothing after it; completed answers hold the
asked number of words; no process's memory grew without bound. It prints one summary line, the
details of any violation, and exits 1 when there is one (2 when it could not start, 130 when
interrupted). Everything it started is stopped whatever ends it, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis

from broker.embedded_redis import EmbeddedRedis

from .check import Verdict, check_all, check_memory
from .fleet import Fleet
from .load import Load, Plan

LEASE_SECONDS = 2.0
REAP_INTERVAL_SECONDS = 0.5
SHUTDOWN_GRACE_SECONDS = 2.0
# After the load: a run still open this long after the lease, the reap and the grace would
# have ended it is a run that never ends.
QUIET_MARGIN_SECONDS = 20.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, help="how long the load runs (default 1)")
    length.add_argument("--seconds", type=float, help="the same in seconds, for short runs")
    parser.add_argument("--fronts", type=int, default=2, help="front processes at any time (>= 1)")
    parser.add_argument(
        "--workers", type=int, default=2, help="worker processes at any time (>= 1)"
    )
    parser.add_argument(
        "--conversations", type=int, default=8, help="conversations written at once"
    )
    parser.add_argument("--clients", type=int, default=16, help="SSE clients, spread over them")
    parser.add_argument("--cancellers", type=int, default=1, help="tasks sending random cancels")
    parser.add_argument(
        "--runs-per-conversation",
        type=int,
        default=30,
        help="runs before a lane moves to a fresh conversation (keeps streams short)",
    )
    parser.add_argument("--max-tokens", type=int, default=40, help="largest simulated answer")
    parser.add_argument(
        "--max-interval-ms", type=int, default=25, help="slowest simulated token pace"
    )
    parser.add_argument(
        "--chaos-every",
        type=float,
        nargs=2,
        default=(2.0, 5.0),
        metavar=("MIN", "MAX"),
        help="seconds between two kills, drawn uniformly",
    )
    parser.add_argument("--no-chaos", action="store_true", help="kill nothing (a baseline)")
    parser.add_argument("--no-spare", action="store_true", help="chaos may kill every process")
    parser.add_argument(
        "--warmup", type=float, help="seconds after a start before RSS is a baseline"
    )
    parser.add_argument("--seed", type=int, help="seed of the random choices (timing still varies)")
    parser.add_argument("--json", type=Path, help="also write the counts and violations here")
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep process logs even on success"
    )
    args = parser.parse_args(argv)
    args.duration = args.seconds if args.seconds is not None else 60.0 * (args.minutes or 1.0)
    if args.warmup is None:
        args.warmup = min(30.0, args.duration / 4)
    if args.fronts < 1 or args.workers < 1 or args.conversations < 1 or args.clients < 0:
        parser.error("at least one front, one worker and one conversation")
    return args


def broker_settings() -> dict[str, Any]:
    """Short leases so that a killed worker's run ends within seconds; retention left default."""
    return {
        "lease_seconds": LEASE_SECONDS,
        "reap_interval_seconds": REAP_INTERVAL_SECONDS,
        "shutdown_grace_seconds": SHUTDOWN_GRACE_SECONDS,
        "cancel_wait_seconds": 5,
    }


@contextmanager
def redis_for_soak(workdir: Path) -> Iterator[tuple[str, str]]:
    """(url, key prefix): an embedded AOF Redis of our own, or ``REDIS_URL`` under a fresh prefix
    whose keys are deleted afterwards, so a shared Redis is left as it was found."""
    prefix = "soak" + uuid.uuid4().hex[:10]
    url = os.environ.get("REDIS_URL")
    if not url:
        with EmbeddedRedis(workdir / "redis", appendonly=True) as server:
            yield server.url, prefix
        return
    try:
        yield url, prefix
    finally:
        client = redis.Redis.from_url(url)
        try:
            for key in client.scan_iter(match=f"{prefix}:*", count=1000):
                client.delete(key)
        except redis.RedisError as exc:
            print(f"soak: could not delete keys under {prefix}: {exc}", file=sys.stderr)
        finally:
            client.close()


def make_plan(args: argparse.Namespace) -> Plan:
    return Plan(
        conversations=args.conversations,
        clients=args.clients,
        runs_per_conversation=args.runs_per_conversation,
        prompt_pause=(0.05, 1.0),
        cancel_pause=(0.2, 1.2),
        chaos_pause=tuple(args.chaos_every),  # type: ignore[arg-type]
        read_for=(0.3, 6.0),
        max_tokens=args.max_tokens,
        max_interval_ms=args.max_interval_ms,
    )


async def start_fleet(load: Load, fronts: int, workers: int, spare: bool) -> None:
    """The first processes; the first front and worker are the spared ones."""
    started = [load.fleet.spawn("front", spared=spare and i == 0) for i in range(fronts)]
    for i in range(workers):
        load.fleet.spawn("worker", spared=spare and i == 0)
    for front in started:
        if not await load.fleet.wait_ready(front):
            raise RuntimeError(f"{front.name} did not become ready:\n{front.log_tail()}")


async def stored_conversations(client: aioredis.Redis, prefix: str) -> list[str]:
    """Every conversation under the soak's prefix, found in Redis rather than in our own notes:
    a run accepted by a front whose answer never reached us is checked all the same."""
    found = set()
    async for key in client.scan_iter(match=f"{prefix}:{{*}}:meta", count=1000):
        found.add(key.decode()[len(prefix) + 2 : -len("}:meta")])
    return sorted(found)


async def wait_quiet(load: Load, redis_url: str, prefix: str, bound: float) -> list[str]:
    """Wait until no conversation has an active run; any still open after ``bound`` is flagged.
    Returns every conversation found."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        conversations = await stored_conversations(client, prefix)
        deadline = time.monotonic() + bound
        while True:
            active = {}
            for cid in conversations:
                run_id = await client.hget(f"{prefix}:{{{cid}}}:meta", "active_run")
                if run_id:
                    active[cid] = run_id.decode()
            if not active or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
        for cid, run_id in active.items():
            info = await client.hgetall(f"{prefix}:{{{cid}}}:run:{run_id}")
            fields = {k.decode(): v.decode() for k, v in info.items()}
            load.problem(
                f"{cid} run {run_id}: still active {bound:.0f}s after the load stopped: {fields}"
                + explain(load, run_id, fields.get("message_event_id", ""))
            )
        return conversations
    finally:
        await client.aclose()


def explain(load: Load, run_id: str, message_event_id: str) -> str:
    """What the soak saw around a run: failed POST attempts before its 202, and chaos nearby."""
    lines = [f"POST attempt failed: {f}" for f in load.post_failures.get(run_id, [])]
    if run_id not in load.accepted:
        lines.append("no 202 for this run reached the soak")
    ms = message_event_id.partition("-")[0]
    if ms.isdigit():
        lines += [f"chaos: {line}" for line in load.chaos_near(int(ms))]
    return "".join("\n" + line for line in lines)


async def final_catch_up(load: Load, redis_url: str, prefix: str) -> None:
    """Every client reconnects once more with its last id and must reach the end of the stream."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        targets: dict[str, str] = {}
        for cid in {cid for cid, _ in load.last_ids.values() if cid}:
            last = await client.xrevrange(f"{prefix}:{{{cid}}}:events", count=1)
            if last:
                targets[cid] = last[0][0].decode()
    finally:
        await client.aclose()
    await asyncio.gather(
        *(
            load.catch_up(index, cid, after, targets[cid])
            for index, (cid, after) in load.last_ids.items()
            if cid in targets and after != targets[cid]
        )
    )


async def run_load(load: Load, args: argparse.Namespace, redis_url: str, prefix: str) -> None:
    """Start the fleet, run traffic and chaos for the duration, then let everything settle."""
    await start_fleet(load, args.fronts, args.workers, not args.no_spare)
    monitor = asyncio.create_task(load.monitor(1.0))
    traffic = [asyncio.create_task(load.prompter(slot)) for slot in load.slots]
    traffic += [asyncio.create_task(load.canceller()) for _ in range(args.cancellers)]
    traffic += [asyncio.create_task(load.client(i)) for i in range(args.clients)]
    chaos = None if args.no_chaos else asyncio.create_task(load.chaos())
    try:
        await asyncio.sleep(args.duration)
        load.stop_chaos.set()
        load.stop.set()
        if chaos is not None:
            await chaos  # lets a replacement in progress come up before the checks
        for task in traffic:
            task.cancel()
        await asyncio.gather(*traffic, return_exceptions=True)
        bound = (
            2 * LEASE_SECONDS
            + REAP_INTERVAL_SECONDS
            + SHUTDOWN_GRACE_SECONDS
            + QUIET_MARGIN_SECONDS
        )
        load.conversations = await wait_quiet(load, redis_url, prefix, bound)
        await final_catch_up(load, redis_url, prefix)
        load.fleet.sample_rss()
    finally:
        monitor.cancel()
        for task in [*traffic, *([chaos] if chaos else [])]:
            task.cancel()
        await load.close()


async def soak(fleet: Fleet, args: argparse.Namespace, rng: random.Random) -> Load | None:
    """Run the load and return what it recorded; None when interrupted (Ctrl-C or SIGTERM)."""
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, main.cancel)
    load = Load(fleet, make_plan(args), rng)
    try:
        await run_load(load, args, fleet.redis_url, fleet.prefix)
        return load
    except asyncio.CancelledError:
        return None
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def verdict_of(load: Load, redis_url: str, prefix: str, warmup: float) -> Verdict:
    client = redis.Redis.from_url(redis_url)
    try:
        verdict = check_all(client, prefix, load.conversations, load.connections, load.accepted)
    finally:
        client.close()
    check_memory(load.fleet.procs, warmup, verdict)
    verdict.violations[:0] = load.problems
    return verdict


def counts_of(load: Load, verdict: Verdict, duration: float) -> dict[str, Any]:
    stats: Counter[str] = load.stats
    clients_seen = len({c.client for c in load.connections})
    return {
        "minutes": round(duration / 60, 2),
        "runs": verdict.counts["runs"],
        "completed": verdict.counts["completed"],
        "cancelled": verdict.counts["cancelled"],
        "failed": verdict.counts["failed"],
        "reconnects": max(0, len(load.connections) - clients_seen),
        "events_checked": verdict.counts["events_checked"],
        "kills": stats["kills"],
        "terms": stats["terms"],
        "restarts": stats["restarts"],
        "violations": len(verdict.violations),
        "conversations": len(load.conversations),
        "posts": stats["posts"],
        "accepted": stats["accepted"],
        "run_active_409": stats["run_active"],
        "cancel_requests": stats["cancels"],
        "failed_worker_lost": verdict.counts["failed_worker_lost"],
        "failed_worker_shutdown": verdict.counts["failed_worker_shutdown"],
        "http_503": stats["http_503"],
        "http_retries": stats["http_retries"],
        "stream_errors": stats["stream_errors"],
        "streams_ended_by_server": stats["server_ended"],
        "entries": verdict.counts["entries"],
        "rss_judged": verdict.counts["rss_judged"],
        "rss_max_mb": verdict.counts["rss_max_mb"],
    }


def summary_line(counts: dict[str, Any]) -> str:
    keys = (
        "runs",
        "completed",
        "cancelled",
        "failed",
        "reconnects",
        "events_checked",
        "kills",
        "terms",
        "restarts",
        "violations",
    )
    return f"soak: {counts['minutes']:.1f} min, " + ", ".join(f"{k}={counts[k]}" for k in keys)


def report(load: Load, verdict: Verdict, args: argparse.Namespace, workdir: Path) -> int:
    counts = counts_of(load, verdict, args.duration)
    print(summary_line(counts), flush=True)
    for violation in verdict.violations[:50]:
        print("  violation: " + violation.replace("\n", "\n    "))
    if len(verdict.violations) > 50:
        print(f"  ... and {len(verdict.violations) - 50} more")
    if args.json is not None:
        args.json.write_text(
            json.dumps({"counts": counts, "violations": verdict.violations}, indent=2)
        )
    if verdict.violations:
        (workdir / "chaos.log").write_text("".join(line + "\n" for line in load.timeline))
        print(f"  process logs and chaos.log (times in epoch ms, as in entry ids): {workdir}")
    return 1 if verdict.violations else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    code = 2
    try:
        with redis_for_soak(workdir) as (redis_url, prefix):
            fleet = Fleet(redis_url, prefix, workdir, broker_settings())
            try:
                load = asyncio.run(soak(fleet, args, rng))
            except KeyboardInterrupt:
                load = None
            except Exception as exc:  # a set-up failure: say so, keep the logs, stop everything
                print(f"soak: could not run: {exc!r}\n  process logs: {workdir}", file=sys.stderr)
                return code
            finally:
                fleet.stop_all()
            if load is None:
                print("soak: interrupted; every process stopped", file=sys.stderr)
                code = 130
                return code
            code = report(load, verdict_of(load, redis_url, prefix, args.warmup), args, workdir)
            return code
    finally:
        if code in (0, 130) and not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
