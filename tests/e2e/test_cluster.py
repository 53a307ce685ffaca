"""Redis Cluster: a master killed mid-stream and its replica promoted; the queue and control
channels spread over the shards; a cancel reaching the worker that owns the run.

The failover test makes the loss certain instead of hoping for it: the replica is paused and its
replication link cut while its master goes on acknowledging writes that clients receive, then
the master is killed and the replica, promoted, lacks them. Every client must end with exactly the stored stream: the lost
events it had seen are answered with ``reset``, never left in place as a silent gap.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

import pytest
import redis

from broker.core.finished import notice_decoder
from broker.embedded_redis import EmbeddedCluster
from broker.engine.keys import Keys
from tests.conftest import RedisTarget
from tests.helpers import new_cid, terminal_of
from tests.sse import Event, open_sse
from tests.stack import Stack
from tests.stored import assert_in_order, assert_no_duplicates, stored_events, terminals

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(240)]


async def _follow(
    front_url: str, cid: str, run_id: str, timeout: float = 120
) -> tuple[list[Event], int]:
    """A client as an app would write one: it reconnects with its last id whenever the stream
    ends or fails, and on ``reset`` drops what it holds. Returns its view and its resets."""
    view: list[Event] = []
    resets = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = view[-1].id if view else None
        try:
            stream = await open_sse(
                front_url, f"/v1/conversations/{cid}/stream", last_event_id=last, timeout=5
            )
        except (OSError, TimeoutError):
            await asyncio.sleep(0.2)
            continue
        async with stream:
            if stream.status != 200:
                await asyncio.sleep(0.2)
                continue
            try:
                while (event := await stream.next(timeout=30)) is not None:
                    if event.event == "reset":
                        view.clear()
                        resets += 1
                        continue
                    view.append(event)
                    if terminal_of(run_id)(event):
                        return view, resets
            except (OSError, TimeoutError):
                pass
    raise AssertionError(f"no terminal event for {run_id} within {timeout}s")


async def test_a_master_killed_mid_stream_leaves_every_client_with_the_stored_stream(
    redis_cluster: EmbeddedCluster, stack_on: Callable[..., Stack], prefix: str
) -> None:
    stack = stack_on(redis_cluster.url, prefix, {"redis_cluster": "true"})
    stack.start(fronts=2, workers=1, coalesce_ms=0)
    cid = new_cid("failover")
    events_key = Keys(prefix).conversation(cid).events
    master, replicas = redis_cluster.master_of(events_key)
    assert replicas, "the failover needs a replica"
    client = redis.RedisCluster.from_url(redis_cluster.url)
    try:
        run_id = (
            await stack.fronts[0].api.start_run(
                cid, "through a failover", tokens=1500, interval_ms=4
            )
        )["run_id"]
        followers = [
            asyncio.create_task(_follow(stack.fronts[i % 2].url, cid, run_id)) for i in range(6)
        ]
        async with asyncio.timeout(30):
            while client.xlen(events_key) < 100:
                await asyncio.sleep(0.05)
        # Writes the replica will never have: it is paused and its replication link cut, while
        # its master goes on acknowledging writes that clients receive.
        for replica in replicas:
            redis_cluster.signal(replica, signal.SIGSTOP)
        with redis.Redis(port=master) as master_client:
            master_client.client_kill_filter(_type="replica")
        await asyncio.sleep(0.5)
        redis_cluster.kill(master)
        for replica in replicas:
            redis_cluster.signal(replica, signal.SIGCONT)
        results = await asyncio.gather(*followers)
        client.close()
        client = redis.RedisCluster(host="127.0.0.1", port=redis_cluster.live_ports()[0])
        stored = stored_events(client, prefix, cid)
    finally:
        client.close()
        if master not in redis_cluster.processes:
            # Back as a replica of the promoted one, for the tests that follow.
            redis_cluster.start_node(master)
            redis_cluster.wait_healthy()

    assert len(terminals(stored, run_id)) == 1
    for view, _ in results:
        assert_no_duplicates(view)
        assert_in_order(view)
        assert view == stored, f"a client ended with {len(view)} events, {len(stored)} stored"
    assert any(resets for _, resets in results), (
        "events acknowledged before the failover were lost, yet no client was told to reset"
    )


def test_the_jobs_queue_spreads_over_every_master(redis_cluster: EmbeddedCluster) -> None:
    keys = Keys("spread", job_shards=8)
    owners = {redis_cluster.master_of(stream)[0] for stream in keys.job_streams}
    assert len(owners) == redis_cluster.masters, "some master carries none of the queue"
    assert len(set(keys.job_streams)) == 8


@pytest.mark.parametrize("redis_target", ["cluster"], indirect=True)
async def test_the_outbox_spreads_over_every_master_and_keeps_each_conversations_order(
    stack: Stack,
    redis_client: redis.Redis,
    prefix: str,
    redis_cluster: EmbeddedCluster,
) -> None:
    """Every run's end writes a notice; on one key, one master would take them all."""
    stack.start(fronts=1, workers=1)
    (front,) = stack.fronts
    cids = [new_cid("out") for _ in range(12)]
    runs: dict[str, list[str]] = {cid: [] for cid in cids}
    for _ in range(2):
        for cid in cids:
            run_id = (await front.api.start_run(cid, "hi", tokens=3, interval_ms=0))["run_id"]
            runs[cid].append(run_id)
            async with await front.api.run_stream(cid, run_id) as stream:
                await stream.read_to_end(timeout=30)
    keys = Keys(prefix, job_shards=8)
    notices: dict[str, list[tuple[str, str]]] = {}  # shard -> (cid, run_id), in stream order
    for shard in keys.outbox_streams:
        for _, fields in redis_client.xrange(shard):
            notice = notice_decoder.decode(fields[b"n"])
            notices.setdefault(shard, []).append((notice.conversation_id, notice.run_id))
    assert sum(map(len, notices.values())) == 2 * len(cids), "one notice per run"
    owners = {redis_cluster.master_of(shard)[0] for shard in notices}
    assert len(owners) == redis_cluster.masters, "some master took none of the runs' ends"
    for cid in cids:
        shards = [shard for shard, held in notices.items() if any(c == cid for c, _ in held)]
        assert len(shards) == 1, f"{cid}'s notices are split over {shards}"
        assert [r for c, r in notices[shards[0]] if c == cid] == runs[cid], "out of order"


@pytest.mark.parametrize("redis_target", ["single", "cluster"], indirect=True)
async def test_a_cancel_reaches_the_worker_that_owns_the_run_at_once(
    stack: Stack, redis_client: redis.Redis, prefix: str, redis_target: RedisTarget
) -> None:
    """Appends so rare that only the control message can stop the run quickly: each of the
    two workers has its own channel, and the cancel must find the right one."""
    stack.start(fronts=1, workers=2, coalesce_ms=10_000)
    (front,) = stack.fronts
    cids = [new_cid("ctl") for _ in range(4)]
    runs = [
        (await front.api.start_run(cid, "slow", tokens=2000, interval_ms=5))["run_id"]
        for cid in cids
    ]
    for cid in cids:
        async with await front.api.stream(cid) as stream:
            await stream.read_until(lambda e: e.event == "run.started", timeout=30)
    keys = Keys(prefix)
    owners = [
        redis_client.hget(keys.conversation(c).run(r), "worker")
        for c, r in zip(cids, runs, strict=True)
    ]
    assert all(owners), "every run is running on a worker"
    for cid, run in zip(cids, runs, strict=True):
        started = time.monotonic()
        response = await front.api.cancel(cid, wait=True)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "cancelled"
        assert time.monotonic() - started < 3, "the run stopped only at its next append"
        async with await front.api.run_stream(cid, run) as run_stream:
            assert (await run_stream.read_to_end(timeout=10))[-1].event == "run.cancelled"
