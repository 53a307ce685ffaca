"""The metrics an operator scrapes: a real front's ``/metrics`` and a worker's port, after a
real run, parsed as Prometheus parses them."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker.embedded_redis import EmbeddedRedis
from tests.helpers import new_cid, nth_delta, terminal_of
from tests.stack import REPO_ROOT, Stack, free_port

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
DASHBOARD = REPO_ROOT / "examples" / "grafana-dashboard.json"


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(url: str) -> Samples:
    async with httpx.AsyncClient(trust_env=False, timeout=5.0) as client:
        response = await client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


async def scrape_until(url: str, done: object, timeout: float = 10.0) -> Samples:
    """Scrape until ``done(samples)`` holds: a stream's close is counted as the server sees it."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                samples = await scrape(url)
            except httpx.ConnectError:  # a worker binds its port once it has reached Redis
                await asyncio.sleep(0.05)
                continue
            if done(samples):  # type: ignore[operator]
                return samples
            await asyncio.sleep(0.05)


async def test_a_run_moves_the_front_and_worker_metrics(stack: Stack) -> None:
    port = free_port()
    stack.start(fronts=1, workers=0)
    stack.worker(worker_metrics_port=port)
    front = stack.fronts[0]
    worker_url = f"http://127.0.0.1:{port}/metrics"
    cid = new_cid("metrics")

    run = await front.api.start_run(cid, "count for me", tokens=30, interval_ms=20)
    run_id = run["run_id"]
    # Follows the answer live, then a second client reads the finished run: all replayed.
    live = await front.api.stream(cid)
    assert live.status == 200
    await live.read_until(terminal_of(run_id))
    replayed = await front.api.run_stream(cid, run_id)
    replay_events = await replayed.read_until(terminal_of(run_id))
    assert await replayed.next() is None  # a run's stream ends after its terminal
    await live.close()

    front_samples = await scrape_until(
        front.url + "/metrics",
        lambda s: (
            value(s, "broker_sse_streams_open") == 0
            and value(s, "broker_sse_streams_ended_total", reason="client_gone") == 1
        ),
    )
    assert value(front_samples, "broker_sse_events_delivered_total", mode="live") > 0
    assert value(front_samples, "broker_sse_events_delivered_total", mode="replay") >= len(
        replay_events
    )
    assert value(front_samples, "broker_sse_streams_ended_total", reason="terminal") == 1
    messages = "/v1/conversations/{cid}/messages"
    assert (
        value(
            front_samples, "broker_http_requests_total", route=messages, method="POST", status="202"
        )
        == 1
    )
    assert (
        value(
            front_samples,
            "broker_http_requests_total",
            route="/v1/conversations/{cid}/stream",
            method="GET",
            status="200",
        )
        == 1
    )
    assert (
        value(
            front_samples,
            "broker_http_request_duration_seconds_count",
            route=messages,
            method="POST",
        )
        == 1
    )

    worker_samples = await scrape_until(worker_url, lambda s: True)
    assert value(worker_samples, "broker_runs_started_total") == 1
    assert value(worker_samples, "broker_runs_ended_total", status="completed", code="") == 1
    assert value(worker_samples, "broker_run_time_to_first_token_seconds_count") == 1
    assert value(worker_samples, "broker_run_time_to_first_token_seconds_sum") > 0
    assert value(worker_samples, "broker_run_duration_seconds_count") == 1
    assert value(worker_samples, "broker_jobs_waiting") == 0
    assert value(worker_samples, "broker_runs_active") == 0

    for samples in (front_samples, worker_samples):
        for name, labels in samples:
            assert name.startswith("broker_") or not name.startswith("broker"), name
            for label, text in labels:
                assert cid not in text and run_id not in text, (name, label, text)


async def test_queued_jobs_and_their_age_are_read_at_scrape(stack: Stack) -> None:
    """With no worker taking jobs (its slots full), the queue's depth and age show them."""
    port = free_port()
    stack.start(fronts=1, workers=0)
    stack.worker(concurrency=1, worker_metrics_port=port)
    front = stack.fronts[0]
    url = f"http://127.0.0.1:{port}/metrics"
    busy_cid = new_cid("busy")
    await front.api.start_run(busy_cid, "long", tokens=400, interval_ms=20)
    await scrape_until(url, lambda s: value(s, "broker_runs_active") == 1)
    await front.api.start_run(new_cid("waits"), "queued")
    samples = await scrape_until(
        url,
        lambda s: (
            value(s, "broker_jobs_waiting") == 1 and value(s, "broker_jobs_oldest_age_seconds") > 0
        ),
    )
    assert value(samples, "broker_jobs_oldest_age_seconds") < 60
    assert (await front.api.cancel(busy_cid)).status_code in (200, 202)


async def test_metrics_token_guards_the_front_metrics(stack: Stack) -> None:
    stack.start(fronts=1, workers=0, metrics_token="scrape-secret", auth="none")
    url = stack.fronts[0].url + "/metrics"
    async with httpx.AsyncClient(trust_env=False) as client:
        assert (await client.get(url)).status_code == 401
        wrong = await client.get(url, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = await client.get(url, headers={"Authorization": "Bearer scrape-secret"})
        assert right.status_code == 200
        assert "broker_sse_streams_open" in right.text


async def test_every_metric_the_dashboard_queries_exists(stack: Stack) -> None:
    port = free_port()
    stack.start(fronts=1, workers=0)
    stack.worker(worker_metrics_port=port)
    front = stack.fronts[0]
    cid = new_cid("dash")
    run = await front.api.start_run(cid, "hi", tokens=3)
    await front.api.wait_run_finished(cid, run["run_id"])
    # Families, not samples: a labelled metric nothing has counted yet has no sample.
    families: set[str] = set()
    for url in (front.url + "/metrics", f"http://127.0.0.1:{port}/metrics"):
        await scrape_until(url, bool)
        async with httpx.AsyncClient(trust_env=False) as client:
            text = (await client.get(url)).text
        for family in text_string_to_metric_families(text):
            families.add(family.name)
            if family.type == "counter":
                families.add(family.name + "_total")
            if family.type == "histogram":
                families |= {family.name + suffix for suffix in ("_bucket", "_count", "_sum")}

    dashboard = json.loads(Path(DASHBOARD).read_text())
    queried = {
        metric
        for panel in dashboard["panels"]
        for target in panel.get("targets", ())
        for metric in re.findall(r"\bbroker_[a-z_]+", target["expr"])
    }
    assert queried, "the dashboard queries nothing"
    assert queried <= families, sorted(queried - families)


async def test_a_failed_model_call_is_counted_by_its_code(stack: Stack) -> None:
    """A model whose endpoint refuses connections: the run fails, counted under its code."""
    port = free_port()
    closed = free_port()  # nothing listens here
    stack.start(
        fronts=1,
        workers=0,
        openai_models="unreachable",
        openai_base_url=f"http://127.0.0.1:{closed}/v1",
    )
    stack.worker(
        worker_metrics_port=port,
        openai_models="unreachable",
        openai_base_url=f"http://127.0.0.1:{closed}/v1",
        provider_connect_retries=0,
    )
    front = stack.fronts[0]
    cid = new_cid("fails")
    posted = await front.api.post_message(cid, "hello", model="unreachable")
    assert posted.status_code == 202, posted.text
    await front.api.wait_run_finished(cid, posted.json()["run_id"])
    snapshot = (await front.api.snapshot(cid)).json()
    code = snapshot["messages"][-1]["error"]["code"]

    samples = await scrape_until(
        f"http://127.0.0.1:{port}/metrics",
        lambda s: value(s, "broker_runs_ended_total", status="failed", code=code) == 1,
    )
    assert value(samples, "broker_provider_errors_total", code=code) == 1
    assert value(samples, "broker_runs_ended_total", status="completed", code="") == 0


async def test_a_lost_worker_s_job_counts_as_a_reclaimed_lease(stack: Stack) -> None:
    stack.start(fronts=1, workers=0, lease_seconds=1.5, reap_interval_seconds=0.3)
    doomed = stack.worker()
    front = stack.fronts[0]
    cid = new_cid("reclaim")
    run_id = (await front.api.start_run(cid, "long", tokens=2000, interval_ms=5))["run_id"]
    watcher = await front.api.stream(cid)
    await watcher.read_until(nth_delta(3))
    doomed.kill()
    port = free_port()
    stack.worker(worker_metrics_port=port)
    async with watcher:
        await watcher.read_until(terminal_of(run_id), timeout=30)
    samples = await scrape_until(
        f"http://127.0.0.1:{port}/metrics",
        lambda s: value(s, "broker_runs_ended_total", status="failed", code="worker_lost") == 1,
    )
    assert value(samples, "broker_leases_reclaimed_total") == 1


async def test_a_stale_position_counts_as_a_reset(stack: Stack) -> None:
    stack.start(fronts=1, workers=1)
    front = stack.fronts[0]
    cid = new_cid("reset")
    run_id = (await front.api.start_run(cid, "hi", tokens=3))["run_id"]
    await front.api.wait_run_finished(cid, run_id)
    # An id from the future is no entry of this stream: the client is told to reset.
    stream = await front.api.stream(cid, last_event_id="99999999999999-0")
    first = await stream.next()
    assert first is not None and first.event == "reset"
    await stream.close()
    samples = await scrape_until(
        front.url + "/metrics", lambda s: value(s, "broker_sse_streams_open") == 0
    )
    assert value(samples, "broker_sse_resets_total") == 1


async def test_a_worker_metrics_port_in_use_stops_the_worker_naming_it(stack: Stack) -> None:
    stack.start(fronts=0, workers=0)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = stack.worker(worker_metrics_port=port)
        assert worker.popen.wait(timeout=30) != 0
    assert "BROKER_WORKER_METRICS_PORT" in worker.output()
    assert f"127.0.0.1:{port}" in worker.output()


async def test_a_client_that_falls_behind_is_counted_and_still_gets_everything(
    stack: Stack,
) -> None:
    """A live queue of one frame: a burst of appends overflows it, and the client continues
    from Redis (counted), with no event missing."""
    stack.start(fronts=1, workers=1, client_queue_frames=1, coalesce_ms=0)
    front = stack.fronts[0]
    cid = new_cid("behind")
    first = (await front.api.start_run(cid, "warm up", tokens=1))["run_id"]
    await front.api.wait_run_finished(cid, first)
    stream = await front.api.stream(cid)
    await stream.read_until(terminal_of(first))
    # Whether a burst overflows the queue depends on how the notices arrive (many in one read,
    # or one by one on a loaded machine): a few bursts, each of which must arrive whole.
    for _ in range(5):
        run_id = (await front.api.start_run(cid, "burst", tokens=400, interval_ms=0))["run_id"]
        events = await stream.read_until(terminal_of(run_id))
        deltas = [e for e in events if e.event == "delta" and e.run_id == run_id]
        text = "".join(e.json()["text"] for e in deltas)
        assert len(text.split()) == 400
        samples = await scrape(front.url + "/metrics")
        if value(samples, "broker_sse_fell_behind_total") >= 1:
            break
    await stream.close()
    samples = await scrape_until(
        front.url + "/metrics", lambda s: value(s, "broker_sse_streams_open") == 0
    )
    assert value(samples, "broker_sse_fell_behind_total") >= 1
    assert value(samples, "broker_sse_events_delivered_total", mode="replay") > 1


async def test_a_lost_subscription_connection_counts_as_a_reconnect(
    stack: Stack, redis_client: Any
) -> None:
    port = free_port()
    stack.start(fronts=1, workers=0)
    stack.worker(worker_metrics_port=port)
    front = stack.fronts[0]
    cid = new_cid("reconnect")
    first = (await front.api.start_run(cid, "hi", tokens=2))["run_id"]
    stream = await front.api.stream(cid)
    await stream.read_until(terminal_of(first))
    await scrape_until(f"http://127.0.0.1:{port}/metrics", bool)  # the worker is up
    # This stack's subscription connections: the front's live path, the worker's control
    # channel (named after their process; other processes on this Redis are left alone).
    ours = {f"broker:front:{front.pid}", f"broker:worker:{stack.workers[0].pid}"}
    subscribed = [
        client
        for client in redis_client.client_list()
        if client["name"] in ours and "P" in client["flags"]
    ]
    assert {client["name"] for client in subscribed} == ours
    for client in subscribed:
        redis_client.client_kill_filter(_id=client["id"])
    samples = await scrape_until(
        front.url + "/metrics", lambda s: value(s, "broker_redis_reconnects_total") >= 1
    )
    assert value(samples, "broker_redis_reconnects_total") >= 1
    await scrape_until(
        f"http://127.0.0.1:{port}/metrics",
        lambda s: value(s, "broker_redis_reconnects_total") >= 1,
    )
    # The live path is back: the next answer arrives on the same stream.
    second = (await front.api.start_run(cid, "again", tokens=2))["run_id"]
    async with stream:
        await stream.read_until(terminal_of(second))


async def test_an_unreachable_redis_counts_as_redis_errors(
    stack_on: Callable[..., Stack], prefix: str, tmp_path: Path
) -> None:
    with EmbeddedRedis(tmp_path / "redis", appendonly=False) as server:
        stack = stack_on(server.url, prefix).start(fronts=1, workers=0)
        front = stack.fronts[0]
        server.kill()
        answer = await front.api.snapshot(new_cid("down"))
        assert answer.status_code == 503
    samples = await scrape(front.url + "/metrics")
    assert value(samples, "broker_redis_errors_total") >= 1
    assert (
        value(
            samples,
            "broker_http_requests_total",
            route="/v1/conversations/{cid}",
            method="GET",
            status="503",
        )
        == 1
    )
