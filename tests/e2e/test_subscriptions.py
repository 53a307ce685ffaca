"""Durable Streams subscriptions against real processes: fronts, workers, a webhook receiver
on loopback, a real Redis.

The conformance suite checks the protocol's shapes; these tests attempt what it cannot: every
webhook's signature checked against the published keys across a key rotation, a worker killed
mid-delivery, workers racing on one claim, a lease that lapsed, targets an attacker would
pick, another subject, and conversations waking their subscriber.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import httpx
import msgspec
import pytest
import redis.asyncio

from broker.engine.keys import Keys
from broker.protocols.durable_streams.subscriptions import Jwks, verify
from tests.api import error_code
from tests.helpers import new_cid
from tests.receiver import Receiver
from tests.stack import REPO_ROOT, Stack
from tests.tokens import AUTH, hs256

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]

JSON = {"Content-Type": "application/json"}
ROOT = "/v1/stream/"
FAST = {
    "ds_webhook_allow_localhost": True,
    "ds_webhook_timeout_seconds": 2,
    "ds_subscription_sweep_seconds": 1,
}


def _client(base_url: str, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=base_url, headers=headers, trust_env=False, timeout=15)


def _sub(subscription_id: str) -> str:
    return f"{ROOT}__ds/subscriptions/{subscription_id}"


async def _until(predicate: Any, timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate() if asyncio.iscoroutinefunction(predicate) else predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_every_webhook_is_signed_with_a_published_key_across_a_rotation(
    stack: Stack,
) -> None:
    """A receiver verifies each delivery with the JWK Set at __ds/jwks.json, by the kid of the
    signature header; a key rotated with ``broker webhook-keys rotate`` is used from the next
    deliveries on, without a restart, and the old key stays published."""
    stack.start(fronts=1, workers=1, **FAST)
    base = new_cid("signed")
    with Receiver("done") as receiver:
        async with _client(stack.fronts[0].url) as client:
            created = await client.put(
                _sub(base),
                json={"type": "webhook", "pattern": f"{base}/*", "webhook": {"url": receiver.url}},
            )
            assert created.status_code == 201, created.text
            signing = created.json()["webhook"]["signing"]
            jwks_url = signing["jwks_url"]
            keys = await client.get(jwks_url)
            assert keys.headers["content-type"].startswith("application/jwk-set+json")
            assert "max-age" in keys.headers["cache-control"]

            async def deliveries_after(count: int) -> None:
                await client.post(f"{ROOT}{base}/s", content=b'{"n":1}', headers=JSON)
                await _until(lambda: len(receiver.delivered()) >= count, what="a webhook")

            assert (await client.put(f"{ROOT}{base}/s", headers=JSON)).status_code == 201
            await deliveries_after(1)
            rotated = subprocess.run(
                [sys.executable, "-m", "broker", "webhook-keys", "rotate"],
                env=stack.env(),
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            new_kid = rotated.stdout.strip()
            assert new_kid != signing["kid"]
            await asyncio.sleep(6)  # every process reads the active key again within 5 s
            await deliveries_after(2)

            published = msgspec.convert((await client.get(jwks_url)).json(), Jwks)
            kids = {key.kid for key in published.keys}
            assert {signing["kid"], new_kid} <= kids
            used = []
            for request in receiver.delivered():
                header = request.headers["webhook-signature"]
                assert verify(header, request.body, published, time.time()), header
                used.append(header.split(",")[1].removeprefix("kid="))
            assert used[0] == signing["kid"] and used[-1] == new_kid, used
            # A forged body does not verify.
            first = receiver.delivered()[0]
            assert not verify(
                first.headers["webhook-signature"], first.body + b" ", published, time.time()
            )


async def test_a_worker_killed_mid_delivery_loses_no_wake_and_repeats_no_generation(
    stack: Stack,
) -> None:
    """The receiver holds the first delivery; its worker is killed. Another worker issues a
    new generation for the same pending work (the lapsed one's token is no longer current):
    the wake arrives, and no generation is delivered twice."""
    stack.start(fronts=1, workers=1, **FAST)
    base = new_cid("killed")
    with Receiver("hang") as receiver:
        async with _client(stack.fronts[0].url) as client:
            created = await client.put(
                _sub(base),
                json={
                    "type": "webhook",
                    "pattern": f"{base}/*",
                    "webhook": {"url": receiver.url},
                    "lease_ttl_ms": 1000,
                },
            )
            assert created.status_code == 201, created.text
            assert (
                await client.put(f"{ROOT}{base}/s", content=b'{"n":1}', headers=JSON)
            ).status_code == 201
            await _until(lambda: len(receiver.requests) >= 1, what="the first delivery")
            stack.workers[0].kill()
            receiver.mode = "done"
            stack.worker()
            await _until(lambda: receiver.delivered(), timeout=30, what="a delivery after it")
            tail = receiver.delivered()[-1].json()["streams"][0]["tail_offset"]

            async def acked() -> bool:
                body = (await client.get(_sub(base))).json()
                return body["streams"][0]["acked_offset"] == tail

            await _until(acked, what="the auto-ack")
    generations = [request.json()["generation"] for request in receiver.requests]
    assert len(generations) == len(set(generations)), generations
    assert generations == sorted(generations)


@pytest.mark.parametrize("redis_target", ["single", "cluster"], indirect=True)
async def test_pull_wake_workers_race_for_one_claim_and_a_lapsed_lease_advances_nothing(
    stack: Stack,
) -> None:
    """Also on Redis Cluster: every script is over one subscription's (or one stream's) slot,
    and what ties them together is written beside them."""
    stack.start(fronts=2, workers=1, **FAST)
    one, two = stack.fronts
    base = new_cid("pull")
    wake = f"{base}-wake"
    async with _client(one.url) as first, _client(two.url) as second:
        assert (await first.put(ROOT + wake, headers=JSON)).status_code == 201
        created = await first.put(
            _sub(base),
            json={
                "type": "pull-wake",
                "pattern": f"{base}/**",
                "wake_stream": wake,
                "lease_ttl_ms": 1000,
            },
        )
        assert created.status_code == 201, created.text
        assert (
            await first.put(f"{ROOT}{base}/a/b", content=b'{"n":1}', headers=JSON)
        ).status_code == 201

        async def woken() -> list[dict[str, Any]]:
            return (await first.get(ROOT + wake, params={"offset": "-1"})).json()

        events = await _until(woken, what="a wake event")
        assert events[0]["type"] == "wake" and events[0]["stream"] == f"{base}/a/b"

        claims = await asyncio.gather(
            *(
                client.post(_sub(base) + "/claim", json={"worker": f"w{i}"})
                for i, client in enumerate([first, second, first, second])
            )
        )
        statuses = sorted(claim.status_code for claim in claims)
        assert statuses == [200, 409, 409, 409], statuses
        winner = next(claim for claim in claims if claim.status_code == 200).json()
        for claim in claims:
            if claim.status_code == 409:
                body = claim.json()["error"]
                assert body["code"] == "ALREADY_CLAIMED"
                assert body["generation"] == winner["generation"]
                assert body["current_holder"].startswith("w")
        assert winner["generation"] == events[0]["generation"]
        tail = winner["streams"][0]["tail_offset"]
        before = (await first.get(_sub(base))).json()["streams"][0]["acked_offset"]

        # The lease lapses (1 s, never extended): the late ack is fenced and moves nothing.
        await asyncio.sleep(1.6)
        late = await second.post(
            _sub(base) + "/ack",
            headers={"Authorization": f"Bearer {winner['token']}"},
            json={
                "wake_id": winner["wake_id"],
                "generation": winner["generation"],
                "acks": [{"stream": f"{base}/a/b", "offset": tail}],
                "done": True,
            },
        )
        assert (late.status_code, late.json()["error"]["code"]) == (409, "FENCED")
        after = (await first.get(_sub(base))).json()["streams"][0]["acked_offset"]
        assert after == before != tail

        # The pending work is woken again, with a new generation, and claimed anew.
        async def rewoken() -> bool:
            return any(e["generation"] > winner["generation"] for e in await woken())

        await _until(rewoken, what="a wake after the lapsed lease")
        again = await first.post(_sub(base) + "/claim", json={"worker": "w9"})
        assert again.status_code == 200, again.text
        renewed = again.json()
        heartbeat = await first.post(
            _sub(base) + "/ack",
            headers={"Authorization": f"Bearer {renewed['token']}"},
            json={"wake_id": renewed["wake_id"], "generation": renewed["generation"]},
        )
        assert heartbeat.json() == {"ok": True, "next_wake": False}
        done = await first.post(
            _sub(base) + "/ack",
            headers={"Authorization": f"Bearer {renewed['token']}"},
            json={
                "wake_id": renewed["wake_id"],
                "generation": renewed["generation"],
                "acks": [{"stream": f"{base}/a/b", "offset": tail}],
                "done": True,
            },
        )
        assert done.json() == {"ok": True, "next_wake": False}
        assert (await first.get(_sub(base))).json()["streams"][0]["acked_offset"] == tail
        # The old token is of a past wake.
        stale = await first.post(
            _sub(base) + "/release",
            headers={"Authorization": f"Bearer {renewed['token']}"},
            json={"wake_id": renewed["wake_id"], "generation": renewed["generation"]},
        )
        assert error_code(stale) == "FENCED"


@pytest.mark.parametrize(
    "url",
    [
        "https://10.0.0.1/hook",
        "https://192.168.1.10/hook",
        "https://172.16.0.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://[fd00::1]/hook",
        "https://[::ffff:10.0.0.1]/hook",
        "https://0.0.0.0/hook",
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "https://localhost/hook",
        "http://example.com/hook",
        "ftp://example.com/hook",
    ],
)
async def test_an_ssrf_target_is_refused(stack: Stack, url: str) -> None:
    """Without the development setting, only https to a public address is a webhook: private,
    link-local (cloud metadata), loopback and other local targets are refused, by literal
    address or once resolved (``localhost``)."""
    if not stack.fronts:
        stack.start(fronts=1, workers=0)
    async with _client(stack.fronts[0].url) as client:
        refused = await client.put(
            _sub(new_cid("ssrf")),
            json={"type": "webhook", "pattern": "x/*", "webhook": {"url": url}},
        )
    assert (refused.status_code, error_code(refused)) == (400, "WEBHOOK_URL_REJECTED"), url


async def test_another_subject_can_neither_see_change_nor_claim_a_subscription(
    stack: Stack,
) -> None:
    stack.start(fronts=1, workers=1, **AUTH, **FAST)
    url = stack.fronts[0].url
    base = new_cid("private")
    async with (
        _client(url, hs256("alice")) as alice,
        _client(url, hs256("mallory")) as mallory,
    ):
        wake = f"{base}-wake"
        assert (await alice.put(ROOT + wake, headers=JSON)).status_code == 201
        assert (await alice.put(f"{ROOT}{base}/own", headers=JSON)).status_code == 201
        assert (await mallory.put(f"{ROOT}{base}/hers", headers=JSON)).status_code == 201
        body = {"type": "pull-wake", "pattern": f"{base}/*", "wake_stream": wake}
        created = await alice.put(_sub("shared-name"), json=body)
        assert created.status_code == 201, created.text
        # Alice's subscription links her streams only.
        assert [s["path"] for s in created.json()["streams"]] == [f"{base}/own"]

        missing = await mallory.get(_sub("nothing-here"))
        for attempt in (
            await mallory.get(_sub("shared-name")),
            await mallory.delete(_sub("shared-name")),
            await mallory.post(_sub("shared-name") + "/claim", json={"worker": "m"}),
            await mallory.post(_sub("shared-name") + "/streams", json={"streams": ["x"]}),
        ):
            assert (attempt.status_code, attempt.json()) == (
                404,
                missing.json()
                | {"error": {**missing.json()["error"], "message": "no subscription shared-name"}},
            )
        # Her own subscription of the same name is hers alone; it changes nothing of alice's.
        hers = await mallory.put(_sub("shared-name"), json={**body, "description": "mine"})
        assert hers.status_code == 201, hers.text
        assert [s["path"] for s in hers.json()["streams"]] == [f"{base}/hers"]
        assert (await alice.get(_sub("shared-name"))).json()["description"] is None
        # Mallory's writes wake nobody of alice's; alice's do.
        assert (
            await mallory.post(f"{ROOT}{base}/hers", content=b"1", headers=JSON)
        ).status_code == 204
        assert (
            await alice.post(f"{ROOT}{base}/own", content=b"1", headers=JSON)
        ).status_code == 204

        async def alice_woken() -> list[dict[str, Any]]:
            return (await alice.get(ROOT + wake, params={"offset": "-1"})).json()

        events = await _until(alice_woken, what="alice's wake")
        assert {e["stream"] for e in events} == {f"{base}/own"}
        claimed = await alice.post(_sub("shared-name") + "/claim", json={"worker": "a"})
        assert claimed.status_code == 200
        token = claimed.json()["token"]
        # Alice's claim token opens nothing of mallory's subscription of the same name.
        forged = await mallory.post(
            _sub("shared-name") + "/ack",
            headers={"Authorization": f"Bearer {token[:-4]}AAAA"},
            json={"wake_id": claimed.json()["wake_id"], "generation": 1, "done": True},
        )
        assert error_code(forged) == "FENCED"
        # Nor does a token whose subscription part is no digest (here one that would move a
        # key's hash tag): refused before it names any key.
        bent = await mallory.post(
            _sub("shared-name") + "/ack",
            headers={"Authorization": "Bearer u:x}" + "A" * 29 + ".sig"},
            json={"wake_id": claimed.json()["wake_id"], "generation": 1, "done": True},
        )
        assert error_code(bent) == "FENCED"
        # A subscriber cannot link a stream it may not read.
        await alice.post(_sub("shared-name") + "/streams", json={"streams": [f"{base}/hers"]})
        streams = (await alice.get(_sub("shared-name"))).json()["streams"]
        assert all(
            s["path"] != f"{base}/hers" or s["acked_offset"].startswith("0000000000000000_")
            for s in streams
        )
        await alice.delete(_sub("shared-name"))
        assert (await mallory.get(_sub("shared-name"))).status_code == 200


async def test_a_conversation_wakes_its_subscriber_on_a_message_and_a_run_end(
    stack: Stack,
) -> None:
    """A pull-wake subscription to ``conversations/*`` (the read-only views) wakes alice when
    one of her conversations gets a message and when its run ends; mallory's conversations
    wake nobody of hers."""
    stack.start(fronts=1, workers=1, **AUTH, **FAST)
    front = stack.fronts[0]
    base = new_cid("conv")
    wake = f"{base}-wake"
    alice_token = hs256("alice")
    async with _client(front.url, alice_token) as alice:
        assert (await alice.put(ROOT + wake, headers=JSON)).status_code == 201
        created = await alice.put(
            _sub(base),
            json={"type": "pull-wake", "pattern": "conversations/*", "wake_stream": wake},
        )
        assert created.status_code == 201, created.text
        cid = new_cid("c")
        await front.api.bearer(hs256("mallory")).start_run(new_cid("m"), "hers", tokens=3)
        run = await front.api.bearer(alice_token).start_run(cid, "hello", tokens=30)

        async def claimed_tail() -> tuple[str, str] | None:
            claim = await alice.post(_sub(base) + "/claim", json={"worker": "w"})
            if claim.status_code != 200:
                return None
            body = claim.json()
            pending = [s for s in body["streams"] if s["has_pending"]]
            if not pending:
                await alice.post(
                    _sub(base) + "/release",
                    headers={"Authorization": f"Bearer {body['token']}"},
                    json={"wake_id": body["wake_id"], "generation": body["generation"]},
                )
                return None
            assert [s["path"] for s in pending] == [f"conversations/{cid}"]
            await alice.post(
                _sub(base) + "/ack",
                headers={"Authorization": f"Bearer {body['token']}"},
                json={
                    "wake_id": body["wake_id"],
                    "generation": body["generation"],
                    "acks": [{"stream": pending[0]["path"], "offset": pending[0]["tail_offset"]}],
                    "done": True,
                },
            )
            return pending[0]["path"], pending[0]["tail_offset"]

        _, message_offset = await _until(claimed_tail, what="the message's wake")
        await front.api.bearer(alice_token).wait_run_finished(cid, run["run_id"])
        _, end_offset = await _until(claimed_tail, what="the run end's wake")
        assert end_offset > message_offset
        view = await alice.get(f"{ROOT}conversations/{cid}", params={"offset": "-1"})
        events = view.json()
        assert events[-1]["type"] == "run.completed"
        assert view.headers["Stream-Next-Offset"] == end_offset
        wakes = (await alice.get(ROOT + wake, params={"offset": "-1"})).json()
        assert all(w["stream"] in (None, f"conversations/{cid}") for w in wakes), wakes


async def test_subscriptions_and_their_streams_are_bounded_per_subject(stack: Stack) -> None:
    stack.start(
        fronts=1,
        workers=0,
        **AUTH,
        limit_ds_subscriptions_per_subject=2,
        ds_max_streams_per_subscription=3,
    )
    async with _client(stack.fronts[0].url, hs256("alice")) as alice:
        body = {"type": "pull-wake", "streams": ["a"], "wake_stream": "w"}
        assert (await alice.put(_sub("one"), json=body)).status_code == 201
        assert (await alice.put(_sub("two"), json=body)).status_code == 201
        assert (await alice.put(_sub("two"), json=body)).status_code == 200  # re-confirmed
        third = await alice.put(_sub("three"), json=body)
        assert (third.status_code, error_code(third)) == (429, "too_many_subscriptions")
        assert (await alice.delete(_sub("one"))).status_code == 204
        assert (await alice.put(_sub("three"), json=body)).status_code == 201

        too_many = await alice.post(_sub("two") + "/streams", json={"streams": ["b", "c", "d"]})
        assert (too_many.status_code, error_code(too_many)) == (
            413,
            "too_many_subscription_streams",
        )
        assert (
            await alice.post(_sub("two") + "/streams", json={"streams": ["b", "c"]})
        ).status_code == 204
        paths = [s["path"] for s in (await alice.get(_sub("two"))).json()["streams"]]
        assert paths == ["a", "b", "c"]
        changed = await alice.put(_sub("two"), json={**body, "lease_ttl_ms": 5000})
        assert (changed.status_code, error_code(changed)) == (409, "subscription_exists")


async def test_the_example_pull_wake_worker_prints_a_new_conversation_message(
    stack: Stack,
) -> None:
    """examples/pull_wake_worker.py, run as its docstring says, against a front and a worker."""
    stack.start(fronts=1, workers=1, **AUTH, **FAST)
    front = stack.fronts[0]
    token = hs256("alice")
    example = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "examples" / "pull_wake_worker.py"), "--once"],
        env={**stack.env(), "BROKER_URL": front.url, "TOKEN": token},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        await _until(
            lambda: example.poll() is not None or _subscribed(stack), what="the subscription"
        )
        await asyncio.sleep(0.5)
        cid = new_cid("example")
        await front.api.bearer(token).start_run(cid, "Hello from the test", tokens=3)
        output, _ = await asyncio.to_thread(example.communicate, timeout=60)
    finally:
        if example.poll() is None:
            example.kill()
            example.wait()
    assert f"conversations/{cid}: user said 'Hello from the test'" in output, output


def _subscribed(stack: Stack) -> bool:
    with httpx.Client(base_url=stack.fronts[0].url, timeout=5) as client:
        response = client.get(
            _sub("conversation-messages"), headers={"Authorization": f"Bearer {hs256('alice')}"}
        )
    return response.status_code == 200


async def test_a_deleted_subscriptions_claim_can_ack_nothing(stack: Stack) -> None:
    """Deletion tombstones a subscription: the ack of a claim taken before fails and moves no
    cursor; a subscription created again under the id starts past every old generation."""
    stack.start(fronts=1, workers=0)
    base = new_cid("tomb")
    async with _client(stack.fronts[0].url) as client:
        assert (await client.put(ROOT + base, content=b"[1]", headers=JSON)).status_code == 201
        body = {"type": "pull-wake", "streams": [base], "wake_stream": f"{base}-wake"}
        assert (await client.put(_sub(base), json=body)).status_code == 201
        appended = await client.post(ROOT + base, content=b"[2]", headers=JSON)
        claim = (await client.post(_sub(base) + "/claim", json={"worker": "w"})).json()
        assert (await client.delete(_sub(base))).status_code == 204
        late = await client.post(
            _sub(base) + "/ack",
            headers={"Authorization": f"Bearer {claim['token']}"},
            json={
                "wake_id": claim["wake_id"],
                "generation": claim["generation"],
                "acks": [{"stream": base, "offset": appended.headers["Stream-Next-Offset"]}],
                "done": True,
            },
        )
        assert error_code(late) == "FENCED"
        assert (await client.get(_sub(base))).status_code == 404
        assert (await client.put(_sub(base), json=body)).status_code == 201
        again = (await client.post(_sub(base) + "/claim", json={"worker": "w"})).json()
        assert again["generation"] > claim["generation"]
        assert again["streams"][0]["has_pending"] is False  # linked at the tail again


async def test_the_sweep_wakes_what_a_lost_mark_left_pending(stack: Stack) -> None:
    """A front that dies between an append and marking its subscriptions due (played here by
    dropping the stream's set of linked subscriptions before the append, so the append marks
    nobody) delays the wake by one sweep, it does not lose it: the sweep compares the tails
    with the cursors, marks it due and restores the set."""
    stack.start(fronts=1, workers=1, **FAST)
    base = new_cid("sweep")
    wake = f"{base}-wake"
    async with _client(stack.fronts[0].url) as client:
        assert (await client.put(ROOT + wake, headers=JSON)).status_code == 201
        assert (await client.put(ROOT + base, headers=JSON)).status_code == 201
        body = {"type": "pull-wake", "streams": [base], "wake_stream": wake}
        assert (await client.put(_sub(base), json=body)).status_code == 201
        await asyncio.sleep(0.5)  # the dispatcher's first look (nothing pending) is over
        reverse = Keys(stack.prefix).durable(base).subscriptions
        redis_client = redis.asyncio.Redis.from_url(stack.redis_url)
        async with redis_client:
            assert await redis_client.delete(reverse) == 1
            assert (await client.post(ROOT + base, content=b"[1]", headers=JSON)).status_code == 204

            async def woken() -> list[dict[str, Any]]:
                return (await client.get(ROOT + wake, params={"offset": "-1"})).json()

            events = await _until(woken, timeout=10, what="the sweep's wake")
            assert events[0]["stream"] == base
            assert await redis_client.exists(reverse)


async def test_an_append_during_a_delivery_is_woken_right_after_it(stack: Stack) -> None:
    """A write that marks a subscription while its wake is being delivered is looked at as
    soon as that delivery ends, not when a lease or the sweep comes round (the sweep is a
    minute away here)."""
    stack.start(fronts=1, workers=1, **{**FAST, "ds_subscription_sweep_seconds": 60})
    base = new_cid("during")
    with Receiver("done") as receiver:
        receiver.delay = 1.0
        async with _client(stack.fronts[0].url) as client:
            assert (await client.put(ROOT + base, headers=JSON)).status_code == 201
            body = {"type": "webhook", "streams": [base], "webhook": {"url": receiver.url}}
            assert (await client.put(_sub(base), json=body)).status_code == 201
            await asyncio.sleep(0.5)
            first = await client.post(ROOT + base, content=b"[1]", headers=JSON)
            await _until(lambda: len(receiver.requests) >= 1, what="the first delivery")
            second = await client.post(ROOT + base, content=b"[2]", headers=JSON)
            started = time.monotonic()
            await _until(lambda: len(receiver.delivered()) >= 2, timeout=20, what="the second")
            waited = time.monotonic() - started
    tails = [r.json()["streams"][0]["tail_offset"] for r in receiver.delivered()]
    assert tails == [
        first.headers["Stream-Next-Offset"],
        second.headers["Stream-Next-Offset"],
    ]
    assert waited < 4, f"the second wake came {waited:.1f} s after its append"
