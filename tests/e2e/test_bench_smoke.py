"""The benchmark script still runs: every scenario, with the naive baseline, at tiny sizes;
and the side-by-side with the peers (Node servers, installed by npm ci), at tiny sizes too.

No performance is asserted here (timings belong to ``python -m scripts.bench`` runs, not to
tests); this only keeps the script from rotting as the broker changes under it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

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


# The peers' scenarios that each exercise code of their own: resumable-stream's live path (L1)
# and its resume storm from the ids its producer gave (L3); Durable Streams writes (D1), the
# long-poll round trip (D2), and SSE reads fed by Durable Streams appends (D3).
TINY_PEERS = [
    "--peers",
    "--scenarios",
    "L1,L3,D1,D2,D3",
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
    "--s3-conversations",
    "2",
    "--s3-events",
    "100",
    "--s3-clients",
    "6",
    "--d1-producers",
    "2",
    "--d3-subscribers",
    "5",
]


def _bench(
    arguments: list[str], redis_url: str, prefix: str, tmp_path: Path
) -> tuple[str, dict[str, Any]]:
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env["REDIS_URL"] = redis_url
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts.bench",
            *arguments,
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
    return completed.stdout, json.loads(out.read_text())


def test_bench_runs_every_scenario(redis_url: str, prefix: str, tmp_path: Path) -> None:
    stdout, report = _bench(TINY, redis_url, prefix, tmp_path)
    assert "| S1 | broker |" in stdout
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


@pytest.fixture
def peers_installed() -> None:
    """The peers' node_modules, from their lock file (the benchmark would run npm ci itself;
    done here first so that a machine without Node, or without the packages and a registry,
    skips instead of failing)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("the peers need Node and npm on PATH")
    from scripts.bench.infra import install_peers

    try:
        install_peers()
    except SystemExit as error:
        pytest.skip(f"the peers could not be installed: {error}")


def test_bench_runs_the_peers(
    peers_installed: None, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    stdout, report = _bench(TINY_PEERS, redis_url, prefix, tmp_path)
    seen = {(r["scenario"], r["system"]): r for r in report["results"]}
    assert set(seen) == {
        (scenario, system)
        for scenarios, peer in (
            (["L1", "L3"], "resumable-stream"),
            (["D1/2", "D2", "D3"], "ds-reference"),
        )
        for scenario in scenarios
        for system in ("broker", peer)
    }
    for (scenario, system), result in seen.items():
        assert result["connected"] == result["clients"] > 0, (scenario, system, result)
        assert result["delivered_events"] > 0, (scenario, system)
        assert result["failed_requests"] == 0 and result["connect_failed"] == 0, result
        assert result["events_per_server_cpu_s"] is not None, (scenario, system)
        latency = result["latency"]
        assert latency is not None and 0 < latency["p50_ms"] <= latency["p99_ms"], result
    for system in ("broker", "resumable-stream"):
        assert seen[("L3", system)]["time_to_first_event"]["samples"] == 6
        assert seen[("L1", system)]["front_redis_connections"] >= 1
    assert seen[("D3", "ds-reference")]["front_redis_connections"] == 0

    rows = {(row["peer"], row["scenario"], row["figure"]) for row in report["side_by_side"]}
    assert ("resumable-stream", "L3", "time to first event p99 ms") in rows
    assert ("ds-reference", "D1/2", "appends per server CPU-s") in rows
    assert ("ds-reference", "D2", "append to long-poll receipt p50 ms") in rows
    assert "| L1 | 4 × 1 clients, 80 events/s offered | events per server CPU-s |" in stdout
    assert "Side by side with the Durable Streams reference server" in stdout
