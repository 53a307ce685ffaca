"""The benchmark's command-line options."""

from __future__ import annotations

import argparse

ALL_SCENARIOS = ("S1", "S2", "S3", "S4", "S5", "S6")
# Issue 21's side-by-side with the peers: L1-L4 over the conversation feed (resumable-stream),
# D1-D4 over Durable Streams (the reference server).
PEER_SCENARIOS = ("L1", "L2", "L3", "L4", "D1", "D2", "D3", "D4")


def parse_setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep:
        raise SystemExit(f"--front-setting wants NAME=VALUE, got {text!r}")
    return name.lower().removeprefix("broker_"), value


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def build_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m scripts.bench",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--scenarios",
        default=None,
        help=f"comma-separated, e.g. S1,S3 (default: {','.join(ALL_SCENARIOS)}; with --peers, "
        f"{','.join(PEER_SCENARIOS)})",
    )
    p.add_argument(
        "--compare-naive",
        action="store_true",
        help="also run the naive baseline (scripts/bench/naive_front.py) on the same workload",
    )
    p.add_argument(
        "--peers",
        action="store_true",
        help="also run the peers on every scenario they serve, and print the "
        "side-by-side tables: resumable-stream (Node, on the benchmark's Redis) on L1-L4 "
        "(and S1-S4), the Durable Streams reference server (Node, in memory) on D1-D4; "
        "installed by npm ci from scripts/bench/peers/package-lock.json when needed",
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
        "--s4-rate",
        type=float,
        default=10.0,
        help="events/s over all S4 (L4, D4) conversations (a trickle)",
    )
    p.add_argument("--l2-fanout", type=int, default=100, help="L2: clients per conversation")
    p.add_argument(
        "--l2-max-events", type=float, default=100_000, help="L2: cap on offered deliveries per s"
    )
    p.add_argument("--l4-clients", type=int, default=5000, help="L4 and D4: idle streams")
    p.add_argument("--l4-conversations", type=int, default=500, help="L4 and D4")
    p.add_argument(
        "--d1-producers",
        type=_int_list,
        default=[1, 8, 64],
        help="D1: concurrent Durable Streams producers, a list",
    )
    p.add_argument("--d3-streams", type=int, default=1, help="D3: Durable Streams fanned out")
    p.add_argument(
        "--d3-subscribers", type=int, default=1000, help="D3: SSE subscribers over all streams"
    )
    p.add_argument(
        "--d3-rate",
        type=float,
        default=10.0,
        help="D3: appends/s per stream (10 x 1,000 subscribers: L1's 10,000 deliveries/s)",
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
