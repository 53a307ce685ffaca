"""S5: a real worker running the simulated model; tokens per worker CPU-second, writes per token."""

from __future__ import annotations

import time

from .harness import SETUP_TIMEOUT, Bench, post_message
from .infra import connections_named, receive, rss_bytes
from .load import Go
from .report import Result


def worker(bench: Bench) -> Result:
    args = bench.args
    runs = args.s5_runs
    tokens = int(args.s5_tokens_per_s * (args.warmup + args.duration + 15))
    interval_ms = 1000 / args.s5_tokens_per_s
    cids = [f"s5-broker-{i}" for i in range(runs)]
    with bench.front("broker") as front:
        worker = bench.processes.worker(
            bench.redis_url, bench.prefix, args.s5_concurrency, {"shutdown_grace_seconds": 1}
        )
        try:
            for cid in cids:
                post_message(front.url, cid, tokens, interval_ms)
            loads = bench.loads([(cid, None) for cid in cids], front.port, storm=False)
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
            before = bench.sample(pids, {}, t0)
            after = bench.sample(pids, {}, t1)
            connections = connections_named(bench.redis, f"broker:front:{front.pid}")
            front_rss = rss_bytes(front.pid)
            load_results = [receive(pipe, process, 60, "load")[1] for process, pipe in loads]
            bench.processes.reap_helpers()
        finally:
            bench.processes.release(worker)
    result = bench.result("S5", "broker", runs, runs, before, after, load_results)
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
        result.xadd_per_token = round(after.redis.delta(before.redis, "xadd") / result.tokens, 4)
        result.redis_cmds_per_token = round(after.redis.delta(before.redis) / result.tokens, 4)
        if worker_cpu > 0:
            result.tokens_per_worker_cpu_s = round(result.tokens / worker_cpu, 0)
    result.note = (
        f"{runs} runs at {args.s5_tokens_per_s:g} tokens/s "
        f"(offered {runs * args.s5_tokens_per_s:,.0f} tokens/s); "
        f"worker CPU {result.worker_cpu_s} s in the window"
    )
    return result
