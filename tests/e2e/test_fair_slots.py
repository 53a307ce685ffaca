"""A worker shares its slots fairly between subjects: subjects with many long runs cannot take
the last of them, so another subject's run starts at once instead of after theirs."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.api import Api
from tests.helpers import new_cid
from tests.stack import Stack
from tests.tokens import AUTH, hs256

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

LONG = {"tokens": 2000, "interval_ms": 100}  # 200 s: longer than the test


async def _status(api: Api, cid: str, run_id: str) -> str:
    messages = (await api.snapshot(cid)).json()["messages"]
    return next(m["status"] for m in messages if m["run_id"] == run_id)


async def _wait_status(api: Api, cid: str, run_id: str, status: str, within: float) -> None:
    deadline = time.monotonic() + within
    while (now := await _status(api, cid, run_id)) != status:
        assert time.monotonic() < deadline, f"{run_id} is {now}, not {status}, after {within}s"
        await asyncio.sleep(0.05)


async def test_a_subject_past_its_share_leaves_the_last_slot_to_another(stack: Stack) -> None:
    stack.start(fronts=1, workers=0, **AUTH)
    stack.worker(concurrency=8)  # one slot in reserve
    api = stack.fronts[0].api
    users = {name: api.bearer(hs256(name)) for name in ("alice", "bob", "carol")}
    runs: dict[str, list[tuple[str, str]]] = {name: [] for name in users}

    async def post(name: str) -> tuple[str, str]:
        cid = new_cid(name)
        run_id = (await users[name].start_run(cid, "long", **LONG))["run_id"]
        runs[name].append((cid, run_id))
        return cid, run_id

    for _ in range(4):
        await _wait_status(users["alice"], *await post("alice"), "running", 10)
    for _ in range(3):
        await _wait_status(users["bob"], *await post("bob"), "running", 10)
    # Bob's fourth would take the last slot: past his share (8 // 3), it waits.
    bob_last = await post("bob")
    await asyncio.sleep(1.5)
    assert await _status(users["bob"], *bob_last) == "queued"
    # Carol, running nothing, starts at once.
    await _wait_status(users["carol"], *await post("carol"), "running", 5)

    # A slot frees: it is the reserve again, still not for bob. Another: room, and his
    # waiting run takes it.
    for cid, run_id in runs["alice"][:2]:
        assert (await users["alice"].cancel(cid, run_id, wait=True)).status_code == 200
        if run_id == runs["alice"][0][1]:
            await asyncio.sleep(1.0)
            assert await _status(users["bob"], *bob_last) == "queued"
    await _wait_status(users["bob"], *bob_last, "running", 5)
    for name, held in runs.items():
        for cid, run_id in held:
            await users[name].cancel(cid, run_id)
