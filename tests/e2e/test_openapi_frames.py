"""Real answers of a live front validate against the OpenAPI document it serves: the frames of
a stream (a reset first, then a whole run) against the stream unions, and JSON bodies against
their schemas."""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema_rs
import pytest

from tests.helpers import new_cid, terminal_of
from tests.stack import Stack


def _validator(document: dict[str, Any], name: str) -> Any:
    """A JSON Schema 2020-12 validator of one component, its references resolved in the document."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    return jsonschema_rs.Draft202012Validator(schema)


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_live_frames_and_answers_match_the_document(stack: Stack) -> None:
    stack.start(fronts=1, workers=1)
    front = stack.fronts[0]
    async with httpx.AsyncClient(base_url=front.url, trust_env=False) as client:
        document = (await client.get("/openapi.json")).json()
    cid = new_cid()
    run = await front.api.start_run(cid, "hi", tokens=5, interval_ms=1, reasoning_tokens=2)
    frames: list[dict[str, Any]] = []
    async with await front.api.stream(cid, last_event_id="1-0") as stream:  # reset first
        events = await stream.read_until(terminal_of(run["run_id"]))
    for event in events:
        frame: dict[str, Any] = {"event": event.event, "data": event.json()}
        if event.id is not None:
            frame["id"] = event.id
        frames.append(frame)
    assert frames[0]["event"] == "reset"
    conversation = _validator(document, "ConversationEvent")
    for frame in frames:
        conversation.validate(frame)
    run_union = _validator(document, "RunEvent")
    for frame in frames:
        run_union.validate(frame)
    with pytest.raises(jsonschema_rs.ValidationError):
        run_union.validate({"event": "delta", "data": {"text": "no id, no run"}})
    async with httpx.AsyncClient(base_url=front.url, trust_env=False) as client:
        _validator(document, "ModelList").validate((await client.get("/v1/models")).json())
        _validator(document, "Snapshot").validate(
            (await client.get(f"/v1/conversations/{cid}")).json()
        )
        _validator(document, "ErrorBody").validate(
            (await client.get("/v1/conversations/x/runs/nope/stream")).json()
        )
