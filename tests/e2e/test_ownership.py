"""Authorization: a conversation belongs to the subject whose message created it.

Every attempt on somebody else's conversation (read, stream, resume by header and by query,
snapshot, post, cancel; with a Bearer token and with the session cookie) gets exactly the
answer for a conversation that does not exist, and changes nothing. A ``read`` grant reads and
no more; an admin does everything. Many subjects racing to create one id end with exactly one
owner and nothing half-written. A stream outlives no token: it ends with ``token_expired``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import jwt
import pytest
import redis

from tests.api import Api, error_code
from tests.helpers import job_streams, new_cid, nth_delta, terminal_of
from tests.sse import SSEStream
from tests.stack import Stack
from tests.stored import stored_events
from tests.tokens import AUTH, hs256

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


def _meta(client: redis.Redis, prefix: str, cid: str) -> dict[bytes, bytes]:
    return client.hgetall(f"{prefix}:{{{cid}}}:meta")


def _keys_of(client: redis.Redis, prefix: str, cid: str) -> list[bytes]:
    return sorted(client.scan_iter(match=f"{prefix}:{{{cid}}}:*", count=1000))


async def _attempts(
    api: Api, cid: str, run_id: str, last_id: str, *, post: bool = True
) -> dict[str, Any]:
    """Every way of reading or writing ``cid``: name -> (status, body). (A post to a free id
    creates the conversation, so ``post`` is for taken ids only, and goes last.)"""
    results: dict[str, Any] = {}

    async def stream(name: str, opened: Any) -> None:
        s = await opened
        results[name] = (s.status, s.response.body)
        await s.close()

    async def call(name: str, response: Any) -> None:
        r = await response
        results[name] = (r.status_code, r.content)

    await asyncio.gather(
        call("snapshot", api.snapshot(cid)),
        stream("stream", api.stream(cid)),
        stream("resume-header", api.stream(cid, last_event_id=last_id)),
        stream("resume-query", api.stream(cid, query_last_event_id=last_id)),
        stream("run-stream", api.run_stream(cid, run_id)),
        stream("active-run-stream", api.run_stream(cid, "active")),
        call("cancel", api.cancel(cid)),
        call("cancel-run", api.cancel(cid, run_id)),
        call("cancel-wait", api.cancel(cid, wait=True)),
    )
    if post:
        await call("post", api.post_message(cid, "let me in"))
    return results


NOT_FOUND = 404


async def test_another_subject_gets_exactly_what_a_missing_conversation_gets(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(fronts=2, workers=1, **AUTH)
    a, b = stack.fronts
    alice = a.api.bearer(hs256("alice"))
    cid = new_cid("mine")
    run = await alice.start_run(cid, "a secret question", tokens=60, interval_ms=50)
    async with await alice.stream(cid) as seen:
        first = await seen.read_until(nth_delta(2))
    before = stored_events(redis_client, prefix, cid)
    last_id = first[-1].id or ""

    missing = new_cid("none")
    for name, bob in [
        ("bearer", b.api.bearer(hs256("bob"))),
        ("cookie", b.api.cookie(hs256("bob"))),
        ("reader-of-another", b.api.bearer(hs256("carol", read=[missing]))),
    ]:
        existing = await _attempts(bob, cid, run["run_id"], last_id)
        absent = await _attempts(bob, missing, run["run_id"], last_id, post=False)
        assert len(existing) == 10
        for attempt, (status, body) in existing.items():
            if name == "cookie" and attempt.startswith(("post", "cancel")):
                # A cookie never authorizes a change, whoever's conversation it is.
                assert status == 401, (name, attempt, body)
                assert attempt == "post" or absent[attempt][0] == 401
                continue
            assert status == NOT_FOUND, (name, attempt, status, body)
            assert json.loads(body) == {
                "error": {"code": "conversation_not_found", "message": f"no conversation {cid}"}
            }, (name, attempt)
            if attempt in ("stream", "resume-header", "resume-query"):
                # An id nobody owns may be followed before its first message (the stream
                # waits); only an id somebody owns is refused, as a POST to it is.
                assert absent[attempt][0] == 200, (name, attempt)
            elif attempt != "post":
                other_status, other_body = absent[attempt]
                assert other_status == NOT_FOUND, (name, attempt, other_status)
                assert other_body.replace(missing.encode(), cid.encode()) == body, (name, attempt)

    # Nothing any of them did reached the conversation: the run goes on and ends on its own.
    assert stored_events(redis_client, prefix, cid)[: len(before)] == before
    async with await alice.stream(cid, last_event_id=first[-1].id) as rest:
        events = await rest.read_until(terminal_of(run["run_id"]), timeout=60)
    assert events[-1].event == "run.completed"
    assert [e.event for e in events].count("message") == 0
    assert _meta(redis_client, prefix, cid)[b"owner"] == b"alice"


async def test_read_grants_read_and_admins_do_everything(stack: Stack) -> None:
    stack.start(fronts=1, workers=1, **AUTH)
    (front,) = stack.fronts
    cid = new_cid()
    alice = front.api.bearer(hs256("alice"))
    laptop_cookie = front.api.cookie(hs256("alice"))
    reader = front.api.bearer(hs256("carol", read=[cid]))
    reader_cookie = front.api.cookie(hs256("carol", read=[cid]))
    admin = front.api.bearer(hs256("backend", admin=True))

    run = await alice.start_run(cid, "hello", tokens=400, interval_ms=20)
    for api in (reader, reader_cookie, laptop_cookie, admin):
        assert (await api.snapshot(cid)).status_code == 200
        async with await api.stream(cid) as stream:
            assert stream.status == 200
            await stream.read_until(lambda e: e.event == "run.started")
        async with await api.run_stream(cid, "active") as stream:
            assert stream.status == 200
    for attempt in (
        reader.post_message(cid, "mine now?"),
        reader.cancel(cid),
        reader.cancel(cid, run["run_id"]),
    ):
        response = await attempt
        assert response.status_code == 403, response.text
        assert error_code(response) == "forbidden"
    assert (await alice.snapshot(cid)).json()["active_run_id"] == run["run_id"]

    cancelled = await admin.cancel(cid, wait=True)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert (await admin.post_message(cid, "from the backend")).status_code == 202
    # An admin writing does not take the conversation over.
    assert (await alice.cancel(cid, wait=True)).status_code == 200
    assert (await alice.post_message(cid, "still mine", tokens=2)).status_code == 202
    # A read grant for a conversation nobody has yet lets its holder create it as its owner.
    other = new_cid()
    assert (
        await front.api.bearer(hs256("dave", read=[other])).post_message(other)
    ).status_code == 202
    assert (
        await reader.bearer(hs256("carol", read=[other])).post_message(other)
    ).status_code == 403


async def test_a_cookie_alone_never_changes_anything(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(fronts=1, workers=0, **AUTH)
    (front,) = stack.fronts
    token = hs256("alice")
    cid = new_cid()
    run = await front.api.bearer(token).start_run(cid, "hi")
    before = _keys_of(redis_client, prefix, cid), stored_events(redis_client, prefix, cid)
    browser = front.api.cookie(token)
    for response in (
        await browser.post_message(cid, "forged"),
        await browser.post_message(new_cid(), "forged"),
        await browser.cancel(cid),
        await browser.cancel(cid, run["run_id"]),
        await browser.request("POST", "/v1/session"),
        await browser.request("DELETE", "/v1/session"),
    ):
        assert response.status_code == 401, response.text
        assert "Authorization header" in response.json()["error"]["message"]
    assert (_keys_of(redis_client, prefix, cid), stored_events(redis_client, prefix, cid)) == before
    assert redis_client.xlen(job_streams(prefix)[0]) == 1
    assert (await browser.snapshot(cid)).status_code == 200


async def test_many_subjects_creating_one_id_leave_exactly_one_owner(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(fronts=2, workers=0, **AUTH)
    fronts = stack.fronts
    subjects = [f"user{i}" for i in range(12)]
    for round_ in range(8):
        cid = new_cid(f"race{round_}")
        apis = [fronts[i % 2].api.bearer(hs256(s)) for i, s in enumerate(subjects)]
        responses = await asyncio.gather(
            *(
                api.post_message(cid, f"mine, says {s}")
                for api, s in zip(apis, subjects, strict=True)
            )
        )
        won = [s for s, r in zip(subjects, responses, strict=True) if r.status_code == 202]
        assert len(won) == 1, [r.status_code for r in responses]
        for response in responses:
            if response.status_code != 202:
                assert response.status_code == 404, response.text
                assert error_code(response) == "conversation_not_found"
        (winner,) = won
        accepted = next(r for r in responses if r.status_code == 202).json()
        assert _meta(redis_client, prefix, cid)[b"owner"] == winner.encode()
        events = stored_events(redis_client, prefix, cid)
        assert [(e.event, e.json()["content"]) for e in events] == [
            ("message", f"mine, says {winner}")
        ]
        assert _keys_of(redis_client, prefix, cid) == sorted(
            f"{prefix}:{{{cid}}}:{suffix}".encode()
            for suffix in ("events", "meta", f"run:{accepted['run_id']}")
        )
    # One job per conversation: every refused POST withdrew the job it had queued.
    jobs = redis_client.xrange(job_streams(prefix)[0])
    assert len(jobs) == 8


async def test_a_worker_leaves_a_withdrawn_job_untouched(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    """The race's loser queues a job, then withdraws it when the store refuses the run: a
    worker that already read it must not write into the winner's conversation."""
    stack.start(fronts=1, workers=1, **AUTH)
    (front,) = stack.fronts
    cid = new_cid()
    alice = front.api.bearer(hs256("alice"))
    await alice.wait_run_finished(cid, (await alice.start_run(cid, "hi", tokens=2))["run_id"])
    jobs = job_streams(prefix)[0]
    job = {
        "conversation_id": cid,
        "run_id": "r_never",
        "message_id": "m_1",
        "assistant_message_id": "m_2",
        "model": "simulated",
        "params": {},
        "content": "x",
    }
    withdrawn = redis_client.xadd(jobs, {"j": json.dumps(job)})
    kept = redis_client.xadd(jobs, {"j": json.dumps({**job, "run_id": "r_lost"})})
    deadline = time.monotonic() + 10
    while redis_client.xpending(jobs, "workers")["pending"] != 2:
        assert time.monotonic() < deadline, "the worker did not take the jobs"
        await asyncio.sleep(0.02)
    redis_client.xdel(jobs, withdrawn)  # as the refused POST does
    await asyncio.sleep(3)  # past the worker's wait for the run to be accepted
    assert not redis_client.exists(f"{prefix}:{{{cid}}}:run:r_never")
    # The job left behind by a front that died before accepting is fenced off, as before.
    assert redis_client.hget(f"{prefix}:{{{cid}}}:run:r_lost", "status") == b"orphaned"
    assert kept


async def test_a_stream_ends_with_token_expired_when_its_token_expires(stack: Stack) -> None:
    stack.start(fronts=1, workers=1, **AUTH, jwt_leeway_seconds=0, keepalive_seconds=0.5)
    (front,) = stack.fronts
    owner = front.api.bearer(hs256("alice", ttl=3600))
    idle, busy = new_cid("idle"), new_cid("busy")
    done = await owner.start_run(idle, "short", tokens=2, interval_ms=1)
    run = await owner.start_run(busy, "long", tokens=2000, interval_ms=10)
    await owner.wait_run_finished(idle, done["run_id"])

    short = hs256("alice", ttl=3)
    expires = jwt.decode(short, options={"verify_signature": False})["exp"]
    streams = {
        "idle": await front.api.cookie(short).stream(idle),
        "busy": await front.api.bearer(short).stream(busy),
        "run": await front.api.bearer(short).run_stream(busy, run["run_id"]),
    }

    async def to_the_end(stream: SSEStream) -> float:
        await stream.read_to_end(timeout=15)
        return time.time()

    ends = await asyncio.gather(*(to_the_end(s) for s in streams.values()))
    for (name, stream), ended in zip(streams.items(), ends, strict=True):
        assert stream.status == 200, name
        assert stream.ending == "terminating chunk", name
        last = stream.events[-1]
        assert (last.event, last.id) == ("error", None), (name, last)
        assert last.json()["code"] == "token_expired"
        assert isinstance(last.json()["message"], str)
        # At the next keepalive (0.5 s) or delivery after the expiry, not before.
        assert expires <= ended <= expires + 2.5, (name, ended - expires)
        assert [e for e in stream.events if e.event == "error"] == [last]
        if name != "idle":
            assert not any(e.is_terminal for e in stream.events)  # cut mid-answer
        await stream.close()
    # A fresh token resumes where the expired one stopped.
    async with await owner.stream(busy, last_event_id=streams["busy"].events[-2].id) as resumed:
        await resumed.read_until(nth_delta(1))


async def test_a_stranger_costs_the_same_round_trips_for_a_taken_and_a_free_id(
    stack: Stack, redis_client: redis.Redis
) -> None:
    stack.start(fronts=1, workers=0, **AUTH)
    (front,) = stack.fronts
    cid = new_cid()
    owner = front.api.bearer(hs256("alice"))
    bob = front.api.bearer(hs256("bob"))
    await owner.start_run(cid, "hi")

    async def commands(api: Api, target: str) -> int:
        """Redis commands the front ran for one snapshot request (fewest of three tries)."""
        counts = []
        for _ in range(3):
            before = redis_client.info("stats")["total_commands_processed"]
            await api.snapshot(target)
            counts.append(redis_client.info("stats")["total_commands_processed"] - before - 1)
        return min(counts)

    taken, free = await commands(bob, cid), await commands(bob, new_cid())
    assert taken == free
    assert await commands(owner, cid) > taken  # the measure tells requests apart
