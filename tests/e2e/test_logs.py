"""Logs as an operator's pipeline reads them: one JSON object per line, each request's lines
carrying its request id, and never a credential or a prompt in any process's output."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest

from tests.helpers import new_cid, terminal_of
from tests.stack import Stack
from tests.tokens import AUTH, SECRET, hs256

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


def json_lines(output: str) -> list[dict[str, Any]]:
    lines = []
    for line in output.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"a log line that is not JSON: {line!r}")
        assert isinstance(record, dict), line
        assert {"ts", "level", "logger", "msg"} <= record.keys(), record
        lines.append(record)
    return lines


def access_line(lines: list[dict[str, Any]], request_id: str) -> dict[str, Any] | None:
    for record in lines:
        if record["logger"] == "broker.access" and record.get("request_id") == request_id:
            return record
    return None


async def test_json_logs_carry_request_ids_and_never_a_secret(stack: Stack) -> None:
    stack.start(fronts=1, workers=1, log_format="json", jwt_query_token="true", **AUTH)
    front = stack.fronts[0]
    token = hs256("log-reader-" + uuid.uuid4().hex[:8])
    marker = "PROMPT-MARKER-" + uuid.uuid4().hex
    cid = new_cid("logs")

    posted = await front.api.bearer(token).post_message(
        cid, f"please repeat {marker}", headers={"X-Request-ID": "req-post-1"}, tokens=5
    )
    assert posted.status_code == 202, posted.text
    assert posted.headers["x-request-id"] == "req-post-1"
    run_id = posted.json()["run_id"]

    stream = await front.api.cookie(token).stream(cid, headers={"X-Request-ID": "req-stream-1"})
    assert stream.status == 200
    assert stream.headers["x-request-id"] == "req-stream-1"
    await stream.read_until(terminal_of(run_id))
    await stream.close()

    async with httpx.AsyncClient(base_url=front.url, trust_env=False) as client:
        queried = await client.get(
            f"/v1/conversations/{cid}?access_token={token}",
            headers={"X-Request-ID": "req-query-1"},
        )
        assert queried.status_code == 200, queried.text
        # An id that is too long (or has unsafe characters) is replaced, not logged.
        unusable = "x" * 300
        replaced = await client.get("/healthz", headers={"X-Request-ID": unusable})
        assert replaced.headers["x-request-id"] != unusable
        assert len(replaced.headers["x-request-id"]) == 32

    # The stream's line is written when the server sees it close; the worker's at the run's end.
    async with asyncio.timeout(10):
        while True:
            front_lines = json_lines(front.output())
            worker_lines = json_lines(stack.workers[0].output())
            if access_line(front_lines, "req-stream-1") and any(
                r.get("run_id") == run_id for r in worker_lines
            ):
                break
            await asyncio.sleep(0.05)

    post_line = access_line(front_lines, "req-post-1")
    assert post_line is not None
    assert post_line["cid"] == cid
    assert post_line["access"]["status"] == 202
    assert post_line["access"]["route"] == "/v1/conversations/{cid}/messages"
    stream_line = access_line(front_lines, "req-stream-1")
    assert stream_line is not None
    assert stream_line["access"]["events"] > 0
    assert stream_line["access"]["ended"] == "client_gone"
    assert stream_line["access"]["duration_ms"] > 0
    query_line = access_line(front_lines, "req-query-1")
    assert query_line is not None and query_line["access"]["status"] == 200

    run_lines = [r for r in worker_lines if r.get("run_id") == run_id]
    assert run_lines and all(r["cid"] == cid for r in run_lines)

    for process in stack.processes:
        output = process.output()
        for secret in (token, marker, SECRET):
            assert secret not in output, f"{process.name} logged a secret"


async def test_the_access_log_can_be_turned_off(stack: Stack) -> None:
    stack.start(fronts=1, workers=0, log_format="json", access_log="false")
    front = stack.fronts[0]
    response = await front.api.request("GET", "/v1/models", headers={"X-Request-ID": "quiet-1"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "quiet-1"  # still echoed
    missing = await front.api.request("GET", "/nowhere", headers={"X-Request-ID": "quiet-2"})
    assert missing.status_code == 404
    stack.fronts[0].stop()
    lines = json_lines(front.output())
    assert not [r for r in lines if r["logger"] == "broker.access"], lines


async def test_what_a_client_invents_stays_out_of_labels_and_lines(stack: Stack) -> None:
    """A forged line in a path, or an invented method, never becomes a log line or a label."""
    stack.start(fronts=1, workers=0, log_format="json")
    front = stack.fronts[0]
    async with httpx.AsyncClient(base_url=front.url, trust_env=False) as client:
        forged = await client.get("/v1/conversations/x%0A%7B%22level%22%3A%22ERROR%22%7D")
        assert forged.status_code in (400, 404)
        invented = await client.request("PURGE", "/v1/models")
        assert invented.status_code == 405
        metrics = (await client.get("/metrics")).text
    assert 'method="PURGE"' not in metrics
    assert 'method="other"' in metrics
    stack.fronts[0].stop()
    lines = json_lines(front.output())
    assert not [r for r in lines if r["level"] == "ERROR"], lines
    assert all(r.get("cid") is None for r in lines if r["logger"] == "broker.access"), lines
