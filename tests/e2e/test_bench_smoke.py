"""The benchmark script still runs: every scenario, with the naive baseline, at tiny sizes.

No performance is asserted here (timings belong to ``python -m scripts.bench`` runs, not to
tests); this only keeps the script from rotting as the broker changes under it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.stack import REPO_ROOT

TINY = [
    "--compare-naive",
    "--duration",
    "1",
    "--warmup",
    "0.5",
    "--load-procs",
    "1",
    "--s1-conversations",
    "4",
    "--s1-rate",
    "20",
    "--s2-conversations",
    "2",
    "--s2-fanout",
    "3",
    "--s3-conversations",
    "2",
    "--s3-events",
    "100",
    "--s3-clients",
    "6",
    "--s4-clients",
    "20",
    "--s4-conversations",
    "4",
    "--s4-rate",
    "20",
    "--s5-runs",
    "2",
    "--s6-idle",
    "0,5",
    "--s6-tokens",
    "30",
    "--s6-interval-ms",
    "2",
]


def test_bench_runs_every_scenario(redis_url: str, prefix: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env["REDIS_URL"] = redis_url
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts.bench",
            *TINY,
            "--key-prefix",
            prefix,
            "--json",
            str(out),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "| S1 | broker |" in completed.stdout

    report = json.loads(out.read_text())
    assert report["machine"]["cores"] >= 1 and report["machine"]["redis"]
    seen = {(r["scenario"], r["system"]): r for r in report["results"]}
    streaming = ["S1", "S2/3", "S3", "S4"]
    idle = {("S6/0", "broker"), ("S6/5", "broker")}
    assert set(seen) == (
        {(s, system) for s in streaming for system in ("broker", "naive")}
        | {("S5", "broker")}
        | idle
    )
    for key in idle:
        result = seen.pop(key)
        assert result["delivered_events"] > 2, result  # message, started, deltas, completed
        assert result["front_cpu_ms_per_event"] >= 0 and result["redis_cmds_per_event_all"] > 0
        assert result["commands_by_name"]["xadd"] > 0
    for (scenario, system), result in seen.items():
        assert result["connected"] == result["clients"] > 0, (scenario, system, result)
        assert result["delivered_events"] > 0, (scenario, system)
        assert result["front_cpu_s"] >= 0 and result["front_redis_connections"] >= 1
        if scenario != "S5":
            latency = result["latency"]
            assert (
                latency is not None
                and 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
            )
            assert result["redis_cmds_per_event_front"] is not None
    assert seen[("S3", "broker")]["time_to_first_event"]["samples"] == 6
    assert seen[("S4", "broker")]["rss_per_connection_kb"] is not None
    worker = seen[("S5", "broker")]
    assert worker["tokens"] > 0 and worker["tokens_per_worker_cpu_s"] > 0
    assert worker["writes_per_token"] > 0
    assert {r["scenario"] for r in report["ratios"]} == set(streaming)


def test_wake_bench_runs(redis_url: str, tmp_path: Path) -> None:
    """``python -m scripts.bench.wakes`` at a tiny size: it starts, delivers every wake of a
    round and stops everything it started."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env["REDIS_URL"] = redis_url
    completed = subprocess.run(
        [sys.executable, "-m", "scripts.bench.wakes", "--subscriptions", "5", "--rounds", "1"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "round 1: 5 wakes" in completed.stdout
    assert "wakes delivered per second" in completed.stdout
