"""Managing conversations: the caller's list, deletion (the right to erasure), and the stream of a
conversation that does not exist yet, which waits for its first message.

Every attempt on somebody else's conversation gets the answer for one that does not exist and
changes nothing; a deletion leaves no key behind, and the worker of the cancelled run writes
nothing after it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import pytest
import redis

from broker.front.actions.managing import encode_cursor
from tests.api import Api, error_code
from tests.helpers import job_streams, new_cid, nth_delta, terminal_of
from tests.stack import Stack, base_environment
from tests.tokens import AUTH, hs256

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]
# The owner's index is in another hash slot than the conversation; deletion is one script over
# the conversation's slot: both hold on Redis Cluster too.
ON_BOTH = pytest.mark.parametrize("redis_target", ["single", "cluster"], indirect=True)


def _keys_of(client: redis.Redis, prefix: str, cid: str) -> list[bytes]:
    return sorted(client.scan_iter(match=f"{prefix}:{{{cid}}}:*", count=1000))


async def _list(api: Api, query: str = "") -> Any:
    response = await api.request("GET", "/v1/conversations" + query)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return response.json()


async def _list_all(api: Api, limit: int) -> list[dict[str, Any]]:
    """Every page of the caller's list, following the cursors."""
    found: list[dict[str, Any]] = []
    page = await _list(api, f"?limit={limit}")
    while True:
        assert len(page["conversations"]) <= limit
        found += page["conversations"]
        if page["next_cursor"] is None:
            return found
        page = await _list(api, f"?limit={limit}&cursor={page['next_cursor']}")


async def _finished(api: Api, cid: str, content: str) -> dict[str, Any]:
    run = await api.start_run(cid, content, tokens=2, interval_ms=1)
    await api.wait_run_finished(cid, run["run_id"])
    return run


@ON_BOTH
async def test_the_list_is_mine_newest_first_in_pages(stack: Stack) -> None:
    stack.start(fronts=1, workers=1, **AUTH)
    (front,) = stack.fronts
    alice = front.api.bearer(hs256("alice"))
    bob = front.api.bearer(hs256("bob"))

    cids = [new_cid("list") for _ in range(5)]
    long_prompt = "word " * 60
    for i, cid in enumerate(cids):
        await _finished(alice, cid, long_prompt if i == 0 else f"question {i}\n  on two lines")
        await asyncio.sleep(0.005)  # distinct milliseconds: the order is then exactly known
    await _finished(alice, cids[1], "a later message moves it to the top")
    active = await alice.start_run(cids[3], "still answering", tokens=400, interval_ms=20)
    await bob.start_run(new_cid("bobs"), "bob's own", tokens=2, interval_ms=1)

    expected = [cids[3], cids[1], cids[4], cids[2], cids[0]]
    for limit in (1, 2, 5, 100):
        listed = await _list_all(alice, limit)
        assert [c["conversation_id"] for c in listed] == expected, limit
    listed = {c["conversation_id"]: c for c in await _list_all(alice, 20)}
    first = listed[cids[0]]
    assert len(first["title"]) == 80 and first["title"].endswith("…")
    assert first["title"].startswith("word word")
    assert listed[cids[2]]["title"] == "question 2 on two lines"  # the first prompt, on one line
    assert listed[cids[1]]["title"] == "question 1 on two lines"  # not the later message
    assert listed[cids[3]]["active_run_id"] == active["run_id"]
    assert listed[cids[4]]["active_run_id"] is None
    for summary in listed.values():
        assert 0 < summary["created_at"] <= summary["last_activity_at"]
    assert listed[cids[1]]["created_at"] < listed[cids[1]]["last_activity_at"]

    # Nobody else sees any of mine; an admin's list is its own too.
    assert [c["title"] for c in (await _list(bob))["conversations"]] == ["bob's own"]
    admin = front.api.bearer(hs256("backend", admin=True))
    assert (await _list(admin))["conversations"] == []
    # A cookie may list (a GET), like it may read.
    assert len((await _list(front.api.cookie(hs256("alice"))))["conversations"]) == 5

    for query, code in [
        ("?limit=0", "invalid_query"),
        ("?limit=101", "invalid_query"),
        ("?limit=x", "invalid_query"),
        ("?limit=%C2%B2", "invalid_query"),  # a digit to str.isdigit, not to int()
        ("?cursor=%25%25", "invalid_cursor"),
        ("?cursor=bm90LWEtY3Vyc29y", "invalid_cursor"),
        ("?cursor=" + encode_cursor(10**400, "x"), "invalid_cursor"),  # no score Redis takes
    ]:
        response = await alice.request("GET", "/v1/conversations" + query)
        assert response.status_code == 400, query
        assert error_code(response) == code, query
    assert (await front.api.request("GET", "/v1/conversations")).status_code == 401


async def test_the_list_skips_and_forgets_conversations_that_expired(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(fronts=1, workers=1, **AUTH)
    alice = stack.fronts[0].api.bearer(hs256("alice"))
    kept, gone = new_cid("kept"), new_cid("gone")
    await _finished(alice, gone, "soon gone")
    await _finished(alice, kept, "kept")
    for key in _keys_of(redis_client, prefix, gone):  # as retention would
        redis_client.delete(key)
    assert [c["conversation_id"] for c in (await _list(alice))["conversations"]] == [kept]
    index = [k for k in redis_client.scan_iter(match=f"{prefix}:*:conversations")]
    assert len(index) == 1
    assert redis_client.zrange(index[0], 0, -1) == [kept.encode()]
    assert 0 < redis_client.pttl(index[0])  # the index itself expires with its conversations


async def test_without_auth_conversations_are_everyones(stack: Stack) -> None:
    stack.start(fronts=1, workers=1, auth="none")
    api = stack.fronts[0].api
    first, second = new_cid("anon"), new_cid("anon")
    await _finished(api, first, "one")
    await asyncio.sleep(0.005)
    await _finished(api, second, "two")
    listed = [c["conversation_id"] for c in (await _list(api))["conversations"]]
    assert listed[:2] == [second, first]
    assert (await api.request("DELETE", f"/v1/conversations/{first}")).status_code == 204
    listed = [c["conversation_id"] for c in (await _list(api))["conversations"]]
    assert first not in listed and second in listed


@ON_BOTH
async def test_delete_cancels_the_run_ends_streams_and_leaves_nothing(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    stack.start(fronts=2, workers=1, **AUTH)
    a, b = stack.fronts
    alice = a.api.bearer(hs256("alice"))
    cid = new_cid("erase")
    await _finished(alice, cid, "an earlier question")
    key_retried = await alice.post_message(
        cid, "the running one", headers={"Idempotency-Key": "k1"}, tokens=2000, interval_ms=20
    )
    assert key_retried.status_code == 202
    run_id = key_retried.json()["run_id"]
    before = _keys_of(redis_client, prefix, cid)
    assert any(b":idem:" in key for key in before) and any(b":run:" in key for key in before)

    async with await b.api.bearer(hs256("alice")).stream(cid) as watcher:
        await watcher.read_until(lambda e: e.event == "delta" and e.run_id == run_id)

        # Nobody else may delete it: the same answer as a conversation that does not exist.
        missing = new_cid("none")
        for other in (
            b.api.bearer(hs256("bob")),
            b.api.bearer(hs256("carol", read=[missing])),
        ):
            refused = await other.request("DELETE", f"/v1/conversations/{cid}")
            absent = await other.request("DELETE", f"/v1/conversations/{missing}")
            assert refused.status_code == absent.status_code == 404
            assert refused.content == absent.content.replace(missing.encode(), cid.encode())
        reader = b.api.bearer(hs256("dave", read=[cid]))
        refused = await reader.request("DELETE", f"/v1/conversations/{cid}")
        assert refused.status_code == 403 and error_code(refused) == "forbidden"
        cookie = await b.api.cookie(hs256("alice")).request("DELETE", f"/v1/conversations/{cid}")
        assert cookie.status_code == 401
        assert _keys_of(redis_client, prefix, cid) == before

        deleted = await alice.request("DELETE", f"/v1/conversations/{cid}")
        assert deleted.status_code == 204, deleted.text
        ending = await watcher.read_to_end(timeout=15)

    # The run was cancelled first (its end is the last stored event the stream saw), then the
    # stream ended with the deletion.
    assert ending[-1].event == "error"
    assert ending[-1].json()["code"] == "conversation_deleted"
    assert ending[-1].id is None
    assert [e.event for e in ending if e.is_terminal] == ["run.cancelled"]
    assert terminal_of(run_id)(next(e for e in ending if e.is_terminal))

    assert _keys_of(redis_client, prefix, cid) == []
    await asyncio.sleep(0.5)  # the worker of the cancelled run had its chance to write
    assert _keys_of(redis_client, prefix, cid) == []
    assert (await alice.snapshot(cid)).status_code == 404
    assert cid not in [c["conversation_id"] for c in (await _list(alice))["conversations"]]
    again = await alice.request("DELETE", f"/v1/conversations/{cid}")
    assert again.status_code == 404 and error_code(again) == "conversation_not_found"
    # A method the path does not take is refused with every method it does take.
    put = await alice.request("PUT", f"/v1/conversations/{cid}")
    assert put.status_code == 405 and error_code(put) == "method_not_allowed"
    assert {m.strip() for m in put.headers["allow"].split(",")} == {"GET", "HEAD", "DELETE"}
    # The id is free again: a new conversation, whose first message creates it afresh.
    reborn = await b.api.bearer(hs256("bob")).start_run(cid, "mine now", tokens=2, interval_ms=1)
    assert reborn["run_id"] != run_id


async def test_a_worker_mid_run_does_not_bring_a_deleted_conversation_back(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    """Keys deleted under a running worker (no cancel reached it): its appends write nothing."""
    stack.start(fronts=1, workers=1, **AUTH)
    alice = stack.fronts[0].api.bearer(hs256("alice"))
    cid = new_cid("under")
    run = await alice.start_run(cid, "long", tokens=400, interval_ms=10)
    async with await alice.stream(cid) as seen:
        await seen.read_until(nth_delta(2))
    # At once, as a deletion does: deleted one by one, an append between two deletions would
    # still find the run's hash and write.
    redis_client.delete(*_keys_of(redis_client, prefix, cid))
    await asyncio.sleep(0.5)  # some 50 appends' worth
    assert _keys_of(redis_client, prefix, cid) == []
    assert run["run_id"]


@ON_BOTH
async def test_a_stream_opened_before_the_first_message_waits_for_it(stack: Stack) -> None:
    stack.start(fronts=2, workers=1, keepalive_seconds=0.2, **AUTH)
    a, b = stack.fronts
    alice = a.api.bearer(hs256("alice"))
    cid = new_cid("fresh")

    async with await b.api.cookie(hs256("alice")).stream(cid) as follower:
        assert follower.status == 200
        await follower.wait_comments(2, timeout=10)  # open, kept alive, nothing yet
        run = await alice.start_run(cid, "first words", tokens=5, interval_ms=1)
        events = await follower.read_until(terminal_of(run["run_id"]))
    assert [e.event for e in events][:2] == ["message", "run.started"]
    assert events[0].id == run["event_id"]
    assert events[-1].event == "run.completed"

    # Somebody else's id is not followed: 404, as before.
    refused = await b.api.bearer(hs256("bob")).stream(cid)
    assert refused.status == 404
    assert refused.response.json()["error"]["code"] == "conversation_not_found"

    # A fresh id nobody owns may be followed by anyone, but whoever posts first owns it: the
    # follower who is not the owner gets nothing of it.
    contested = new_cid("contested")
    async with await b.api.bearer(hs256("bob")).stream(contested) as bobs:
        assert bobs.status == 200
        await bobs.wait_comments(1, timeout=10)
        await alice.start_run(contested, "alice's secret", tokens=2, interval_ms=1)
        ending = await bobs.read_to_end(timeout=15)
    assert [e.event for e in ending] == ["error"]
    assert ending[0].json()["code"] == "conversation_not_found"


async def test_the_prompt_of_a_cancelled_run_says_cancelled(stack: Stack) -> None:
    stack.start(fronts=1, workers=1, **AUTH)
    alice = stack.fronts[0].api.bearer(hs256("alice"))
    cid = new_cid("status")
    done = await _finished(alice, cid, "answered")
    run = await alice.start_run(cid, "stopped", tokens=400, interval_ms=20)
    async with await alice.stream(cid) as seen:
        await seen.read_until(lambda e: e.event == "delta" and e.run_id == run["run_id"])
    snap = (await alice.snapshot(cid)).json()
    assert snap["messages"][2]["status"] == "running", snap
    cancelled = await alice.cancel(cid, wait=True)
    assert cancelled.json()["status"] == "cancelled"
    messages = (await alice.snapshot(cid)).json()["messages"]
    assert [(m["role"], m["run_id"], m["status"]) for m in messages] == [
        ("user", done["run_id"], "completed"),
        ("assistant", done["run_id"], "completed"),
        ("user", run["run_id"], "cancelled"),
        ("assistant", run["run_id"], "cancelled"),
    ]


def test_the_clients_list_and_delete(stack: Stack) -> None:
    """The Python client's calls and ``broker list`` / ``broker delete``, as their users run them."""
    from broker.client import BrokerClient, NotFound, StreamError

    stack.start(fronts=1, workers=1, **AUTH)
    url = stack.fronts[0].url
    token = hs256("alice")
    cids = [new_cid("cli") for _ in range(3)]
    with BrokerClient(url, token) as client:
        for i, cid in enumerate(cids):
            accepted = client.send(cid, f"prompt {i}", params={"tokens": 2, "interval_ms": 1})
            client.cancel(cid, accepted.run_id, wait=True)
            time.sleep(0.005)
        first = client.list_conversations(limit=2)
        assert [c.conversation_id for c in first.conversations] == cids[::-1][:2]
        rest = client.list_conversations(limit=2, cursor=first.next_cursor)
        assert [c.conversation_id for c in rest.conversations] == cids[:1]
        assert rest.next_cursor is None

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "broker", *args],
                env={**base_environment(), "BROKER_URL": url, "BROKER_TOKEN": token},
                capture_output=True,
                text=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
            )

        listed = cli("list")
        assert listed.returncode == 0, listed.stderr
        lines = listed.stdout.splitlines()
        assert [line.split()[0] for line in lines] == cids[::-1]
        assert lines[0].endswith("prompt 2")
        assert [line.split()[0] for line in cli("list", "--limit", "1").stdout.splitlines()] == [
            cids[2]
        ]

        # A stream following the conversation ends with the deletion, as an exception.
        stream = client.stream(cids[0])
        assert next(stream) is not None
        deleted = cli("delete", cids[0])
        assert deleted.returncode == 0, deleted.stderr
        with pytest.raises(StreamError) as ended:
            for _ in stream:
                pass
        assert ended.value.code == "conversation_deleted"
        with pytest.raises(NotFound):
            client.delete_conversation(cids[0])
        client.delete_conversation(cids[1])
        assert [c.conversation_id for c in client.list_conversations().conversations] == [cids[2]]
        again = cli("delete", cids[1])
        assert again.returncode == 1 and "no conversation" in again.stderr


async def test_deleting_a_run_no_worker_started_withdraws_its_job(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    """A queued run is ended by the deletion; a worker that comes later finds no job to mark
    orphaned, so nothing of the conversation comes back."""
    stack.start(fronts=1, workers=0, **AUTH)
    alice = stack.fronts[0].api.bearer(hs256("alice"))
    cid = new_cid("queued")
    await alice.start_run(cid, "nobody answers yet")
    assert sum(redis_client.xlen(stream) for stream in job_streams(prefix)) == 1
    assert (await alice.request("DELETE", f"/v1/conversations/{cid}")).status_code == 204
    assert sum(redis_client.xlen(stream) for stream in job_streams(prefix)) == 0
    assert _keys_of(redis_client, prefix, cid) == []
    stack.worker()
    await asyncio.sleep(2)  # longer than a worker waits for a run it has the job of
    assert _keys_of(redis_client, prefix, cid) == []


@ON_BOTH
async def test_deleting_a_conversation_from_before_the_meta_named_its_keys(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    """Conversations stored by an earlier version have no ``key:`` fields: their keys are found
    by a scan instead, and all go."""
    stack.start(fronts=1, workers=1, **AUTH)
    alice = stack.fronts[0].api.bearer(hs256("alice"))
    cid = new_cid("legacy")
    first = await alice.post_message(
        cid, "old", headers={"Idempotency-Key": "k"}, tokens=2, interval_ms=1
    )
    await alice.wait_run_finished(cid, first.json()["run_id"])
    await _finished(alice, cid, "older")
    meta = f"{prefix}:{{{cid}}}:meta"
    named = [f for f in redis_client.hkeys(meta) if f.startswith(b"key:")]
    assert len(named) == 3  # two runs, one idempotency record
    redis_client.hdel(meta, *named)
    assert (await alice.request("DELETE", f"/v1/conversations/{cid}")).status_code == 204
    assert _keys_of(redis_client, prefix, cid) == []
