"""The webhook: each finished run POSTed, signed, to the application, at least once.

A real receiver on loopback (``tests.receiver``) plays the application: up, down for a while,
answering errors, or hanging. Deliveries survive a worker's death, a receiver that hangs
never holds back a run, and the signature verifies with the documentation's own snippet.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from broker.core.webhook import verify_signature
from tests.helpers import new_cid, nth_delta, outbox_length, outbox_pending, terminal_of
from tests.receiver import Received, Receiver
from tests.stack import REPO_ROOT, Stack
from tests.stored import stored_events, terminals

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

SECRET = "whsec-test-5c1e0a9b7d"
FAST_RETRY = {"webhook_backoff_seconds": 0.2, "webhook_backoff_max_seconds": 1.0}
LEASE = {"lease_seconds": 1.5, "reap_interval_seconds": 0.3}
# The page whose verification snippet must run as printed.
WEBHOOKS_PAGE = REPO_ROOT / "docs" / "pages" / "webhooks.md"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    try:
        yield hook
    finally:
        hook.close()


def _webhook(receiver: Receiver, **extra: Any) -> dict[str, Any]:
    return {"webhook_url": receiver.url, "webhook_secret": SECRET, **FAST_RETRY, **extra}


async def _wait_for(condition: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        await asyncio.sleep(0.05)


def _documented_snippet() -> str:
    page = WEBHOOKS_PAGE.read_text()
    match = re.search(r"```python\n(# Verify a broker webhook.*?)```", page, re.S)
    assert match, f"the verification snippet is missing from {WEBHOOKS_PAGE}"
    return match.group(1)


def _documented_verify() -> Callable[..., bool]:
    """The verification snippet exactly as the webhooks page prints it."""
    scope: dict[str, Any] = {}
    exec(compile(_documented_snippet(), str(WEBHOOKS_PAGE), "exec"), scope)
    return scope["verify_broker_signature"]


def test_the_documented_verification_snippet_runs_as_written(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = tmp_path / "verify.py"
    script.write_text(_documented_snippet())
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout) == (0, "signature checks out\n"), done.stderr


def _by_delivery(requests: list[Received]) -> dict[str, list[Received]]:
    grouped: dict[str, list[Received]] = {}
    for request in requests:
        grouped.setdefault(request.delivery_id, []).append(request)
    return grouped


async def test_a_finished_run_is_posted_signed_with_its_merged_messages(
    stack: Stack, receiver: Receiver
) -> None:
    receiver.listen()
    stack.start(generators="weather=examples.agent:weather_agent", **_webhook(receiver))
    front = stack.fronts[0]
    cid = new_cid("hook")
    run_id = (await front.api.start_run(cid, "Weather in Paris?", model="weather"))["run_id"]
    await front.api.wait_run_finished(cid, run_id)
    await _wait_for(lambda: receiver.delivered(), what="the delivery")
    [request] = receiver.requests

    headers = request.headers
    assert headers["content-type"] == "application/json"
    assert headers["broker-delivery-id"] == run_id
    assert headers["broker-delivery-attempt"] == "1"
    assert verify_signature(SECRET, headers["broker-signature"], request.body)
    assert _documented_verify()(SECRET, headers["broker-signature"], request.body)
    assert not verify_signature("another-secret", headers["broker-signature"], request.body)
    assert not verify_signature(SECRET, headers["broker-signature"], request.body + b" ")
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", headers["broker-signature"])

    snapshot = (await front.api.snapshot(cid)).json()
    body = request.json()
    [terminal] = terminals(await _stored(stack, cid), run_id)
    assert body == {
        "type": "run.ended",
        "conversation_id": cid,
        "run_id": run_id,
        "status": "completed",
        "model": "weather",
        "user_message": snapshot["messages"][0],
        "message": snapshot["messages"][1],
        "event_id": terminal.id,
        "finish_reason": "stop",
        "usage": terminal.json()["usage"],
        "error": None,
        "truncated": False,
    }
    assert [p["type"] for p in body["message"]["parts"]] == [
        "reasoning",
        "tool_call",
        "tool_result",
        "data",
        "text",
    ]


async def _stored(stack: Stack, cid: str) -> list[Any]:
    client = redis.Redis.from_url(stack.redis_url)
    try:
        return stored_events(client, stack.prefix, cid)
    finally:
        client.close()


async def test_receiver_down_then_up_every_run_is_delivered_once(
    stack: Stack, receiver: Receiver, redis_client: redis.Redis, prefix: str
) -> None:
    """Nothing listens at first (connections refused); two workers share the deliveries."""
    stack.expect_traceback(r"RuntimeError: could not connect with")  # the failing generator's
    stack.start(
        workers=2,
        generators="raises=tests.app_generators:raises",
        **_webhook(receiver),
    )
    front = stack.fronts[0]
    expected: dict[str, str] = {}
    for index in range(6):
        cid = new_cid(f"down{index}")
        run_id = (await front.api.start_run(cid, "hello", tokens=5, interval_ms=1))["run_id"]
        expected[run_id] = "completed"
    cid = new_cid("failing")
    failing = (await front.api.start_run(cid, "hello", model="raises"))["run_id"]
    expected[failing] = "failed"
    cid = new_cid("cancelled")
    cancelled = (await front.api.start_run(cid, "hello", tokens=2000, interval_ms=5))["run_id"]
    async with await front.api.run_stream(cid, cancelled) as client:
        await client.read_until(nth_delta(2))
        assert (await front.api.cancel(cid, wait=True)).json()["status"] == "cancelled"
    expected[cancelled] = "cancelled"

    await asyncio.sleep(1.5)  # several attempts fail meanwhile
    assert receiver.requests == []
    receiver.listen()
    await _wait_for(
        lambda: {r.delivery_id for r in receiver.delivered()} == set(expected),
        what="every run delivered",
    )
    await asyncio.sleep(2.0)  # time enough for any second delivery to show up

    grouped = _by_delivery(receiver.requests)
    assert set(grouped) == set(expected)
    for run_id, requests in grouped.items():
        assert len(requests) == 1, f"run {run_id} was delivered {len(requests)} times"
        [request] = requests
        assert int(request.headers["broker-delivery-attempt"]) > 1, "it was retried"
        assert request.json()["status"] == expected[run_id]
        assert verify_signature(SECRET, request.headers["broker-signature"], request.body)
    assert outbox_pending(redis_client, prefix, "webhook") == 0
    # One notice per run: the whole cost of the webhook on the path that generates.
    assert outbox_length(redis_client, prefix) == len(expected)


async def test_a_hanging_receiver_never_holds_back_a_run(stack: Stack, receiver: Receiver) -> None:
    """One run at a time on the worker and one delivery at a time: if a delivery could hold
    a run slot, the second run would wait the minute the first delivery hangs."""
    receiver.mode = "hang"
    receiver.listen()
    stack.start(
        fronts=1,
        workers=0,
        **_webhook(receiver, webhook_timeout_seconds=60, webhook_concurrency=1),
    )
    stack.worker(concurrency=1)
    front = stack.fronts[0]
    cid = new_cid("hang")
    first_token_waits = []
    started = time.monotonic()
    for index in range(5):
        posted = time.monotonic()
        run_id = (await front.api.start_run(cid, f"question {index}", tokens=20, interval_ms=5))[
            "run_id"
        ]
        async with await front.api.run_stream(cid, run_id) as client:
            await client.read_until(nth_delta(1))
            first_token_waits.append(time.monotonic() - posted)
            events = await client.read_until(terminal_of(run_id))
        assert events[-1].event == "run.completed"
        if index == 0:
            await _wait_for(lambda: len(receiver.requests) == 1, what="the first delivery")
    elapsed = time.monotonic() - started
    assert elapsed < 20, f"five short runs took {elapsed:.1f} s"
    assert max(first_token_waits) < 5, first_token_waits
    # The receiver still holds the first delivery, unanswered, the whole time.
    assert len(receiver.requests) == 1 and receiver.requests[0].answered is None


async def test_a_run_cancelled_while_queued_and_a_run_of_a_dead_worker_are_delivered(
    stack: Stack, receiver: Receiver
) -> None:
    """Both are ended by someone other than a worker that finished them: the front's cancel,
    and the worker that reclaims the dead one's job."""
    receiver.listen()
    stack.start(fronts=1, workers=0, **_webhook(receiver), **LEASE)
    front = stack.fronts[0]
    queued_cid = new_cid("queued")
    queued = (await front.api.start_run(queued_cid, "never started"))["run_id"]
    assert (await front.api.cancel(queued_cid)).json()["status"] == "cancelled"

    doomed = stack.worker()
    await _wait_for(lambda: receiver.delivered(), what="the queued run's delivery")
    lost_cid = new_cid("lost")
    lost = (await front.api.start_run(lost_cid, "long", tokens=5000, interval_ms=5))["run_id"]
    async with await front.api.run_stream(lost_cid, lost) as client:
        await client.read_until(nth_delta(3))
        doomed.kill()
        stack.worker()
        await client.read_until(terminal_of(lost))
    await _wait_for(lambda: len(receiver.delivered()) == 2, what="the lost run's delivery")

    bodies = {r.delivery_id: r.json() for r in receiver.delivered()}
    assert bodies[queued]["status"] == "cancelled"
    assert bodies[queued]["user_message"]["content"] == "never started"
    message = bodies[queued]["message"]
    assert (message["content"], message["parts"], message["status"]) == ("", [], "cancelled")
    assert bodies[lost]["status"] == "failed"
    assert bodies[lost]["error"]["code"] == "worker_lost"
    snapshot = (await front.api.snapshot(lost_cid)).json()
    assert bodies[lost]["message"] == snapshot["messages"][1]
    assert bodies[lost]["message"]["content"]  # the partial answer


async def test_a_delivery_in_flight_survives_its_worker_s_death(
    stack: Stack, receiver: Receiver, redis_client: redis.Redis, prefix: str
) -> None:
    receiver.mode = "hang"
    receiver.listen()
    stack.start(fronts=1, workers=0, **_webhook(receiver, webhook_timeout_seconds=60), **LEASE)
    doomed = stack.worker()
    front = stack.fronts[0]
    cid = new_cid("dispatcher")
    run_id = (await front.api.start_run(cid, "hello", tokens=5, interval_ms=1))["run_id"]
    await _wait_for(lambda: len(receiver.requests) == 1, what="the first attempt")
    doomed.kill()
    receiver.mode = "ok"
    stack.worker()
    await _wait_for(lambda: receiver.delivered(), what="the delivery by the other worker")
    attempts = _by_delivery(receiver.requests)[run_id]
    assert len(attempts) == 2 and attempts[0].answered is None
    assert attempts[0].body == attempts[1].body
    await _wait_for(
        lambda: outbox_pending(redis_client, prefix, "webhook") == 0,
        what="the notice acknowledged",
    )


async def test_a_dispatcher_paused_past_its_lease_does_not_deliver_again(
    stack: Stack, receiver: Receiver, redis_client: redis.Redis, prefix: str
) -> None:
    """A GC pause or a frozen VM: the delivery is taken over, and the paused dispatcher, once
    it wakes, abandons it rather than taking its lease back and posting it a second time."""
    receiver.mode = "error"
    receiver.listen()
    stack.start(fronts=1, workers=0, **_webhook(receiver), **LEASE)
    paused = stack.worker()
    front = stack.fronts[0]
    cid = new_cid("paused-dispatcher")
    run_id = (await front.api.start_run(cid, "hello", tokens=3, interval_ms=1))["run_id"]
    await _wait_for(lambda: len(receiver.requests) >= 1, what="a failed first attempt")
    paused.signal(signal.SIGSTOP)
    try:
        receiver.mode = "ok"
        stack.worker()
        await _wait_for(lambda: receiver.delivered(), what="the delivery by the other worker")
    finally:
        paused.signal(signal.SIGCONT)
    # The woken dispatcher's retry comes due at once; its renewal and its retry both see that
    # the delivery is not its own any more.
    await asyncio.sleep(FAST_RETRY["webhook_backoff_max_seconds"] * 3 + LEASE["lease_seconds"])
    assert len(_by_delivery(receiver.delivered())[run_id]) == 1
    assert "was taken over; abandoning it" in paused.output()
    assert outbox_pending(redis_client, prefix, "webhook") == 0


async def test_a_delivery_is_given_up_after_the_retry_time(
    stack: Stack, receiver: Receiver, redis_client: redis.Redis, prefix: str
) -> None:
    receiver.mode = "error"
    receiver.listen()
    stack.start(**_webhook(receiver, webhook_retry_seconds=1.5))
    front = stack.fronts[0]
    cid = new_cid("gives-up")
    run_id = (await front.api.start_run(cid, "hello", tokens=3, interval_ms=1))["run_id"]
    worker = stack.workers[0]
    await _wait_for(lambda: "gave up the webhook of run" in worker.output(), what="giving up")
    assert run_id in worker.output() and "HTTP 500" in worker.output()
    attempts = [int(r.headers["broker-delivery-attempt"]) for r in receiver.requests]
    assert attempts == list(range(1, len(attempts) + 1)) and len(attempts) >= 3
    # Doubling backoff: the gaps between attempts grow.
    times = [r.at for r in receiver.requests]
    assert times[2] - times[1] > times[1] - times[0]
    assert outbox_pending(redis_client, prefix, "webhook") == 0
    assert SECRET not in worker.output()
    assert f"127.0.0.1:{receiver.port}" not in worker.output()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"webhook_url": "http://127.0.0.1:9/hook"}, "BROKER_WEBHOOK_SECRET"),
        ({"webhook_url": "ftp://example.org/", "webhook_secret": "s"}, "BROKER_WEBHOOK_URL"),
    ],
)
async def test_a_worker_refuses_a_webhook_it_could_not_sign_or_reach(
    stack: Stack, settings: dict[str, str], message: str, tmp_path: Path
) -> None:
    stack.start(fronts=0, workers=0, **settings)
    worker = stack.worker()
    assert await asyncio.to_thread(worker.popen.wait, 30) != 0
    assert message in worker.output()


async def test_the_example_receiver_keeps_each_run_once_in_sqlite(
    stack: Stack, tmp_path: Path
) -> None:
    """The documented example, as written: the receiver verifies, then upserts by run id."""
    import json
    import subprocess
    import sys

    import httpx

    from tests.stack import free_port

    port = free_port()
    db = tmp_path / "answers.db"
    script = str(REPO_ROOT / "examples" / "webhook_receiver.py")
    env = {"WEBHOOK_SECRET": "change-me", "PATH": "/usr/bin:/bin"}
    log = open(tmp_path / "receiver.log", "wb")
    receiver = subprocess.Popen(
        [sys.executable, script, "--port", str(port), "--db", str(db)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}/runs"
        async with httpx.AsyncClient(trust_env=False) as client:
            await _wait_for(lambda: (tmp_path / "receiver.log").read_text() != "", what="start")
            forged = await client.post(url, content=b"{}", headers={"broker-signature": "t=1,v1=0"})
            assert forged.status_code == 401
        stack.start(webhook_url=url, webhook_secret="change-me", **FAST_RETRY)
        front = stack.fronts[0]
        cid = new_cid("sqlite")
        run_id = (await front.api.start_run(cid, "Hello", tokens=5, interval_ms=1))["run_id"]
        answer = await _wait_snapshot_answer(front, cid)

        def stored() -> list[dict[str, Any]]:
            out = subprocess.run(
                [sys.executable, script, "--show", "--db", str(db)],
                capture_output=True,
                check=True,
                env=env,
            ).stdout
            return [json.loads(line) for line in out.splitlines()]

        await _wait_for(lambda: len(stored()) == 1, what="the stored run")
        assert stored() == [{"run_id": run_id, "status": "completed", "q": "Hello", "a": answer}]
    finally:
        receiver.terminate()
        receiver.wait(10)
        log.close()


async def _wait_snapshot_answer(front: Any, cid: str) -> str:
    deadline = time.monotonic() + 30
    while True:
        snapshot = (await front.api.snapshot(cid)).json()
        if snapshot["active_run_id"] is None and len(snapshot["messages"]) == 2:
            return snapshot["messages"][1]["content"]
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
