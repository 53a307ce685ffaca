"""Tool calls, tool results and data parts: their wire shapes, and how a message folds them.

These shapes are a contract with every client (the SSE table in the README, the OpenAPI
union), so the exact JSON is asserted, not just a round trip.
"""

from __future__ import annotations

import msgspec
import pytest

from broker.core.bodies import SnapshotMessage
from broker.core.events import (
    EVENT_TYPES,
    Data,
    Delta,
    Event,
    RunCompleted,
    ToolCall,
    ToolResult,
    decode,
    encode,
)
from broker.core.snapshot import AnswerFold, assistant_message
from broker.front.app import all_routes
from broker.front.openapi import build


@pytest.mark.parametrize(
    ("event", "name", "json"),
    [
        (
            ToolCall("r1", "c1", "get_weather", arguments_delta='{"ci'),
            "tool.call",
            {"run_id": "r1", "call_id": "c1", "name": "get_weather", "arguments_delta": '{"ci'},
        ),
        (
            ToolCall("r1", "c1", "get_weather", arguments={"city": "Paris"}),
            "tool.call",
            {
                "run_id": "r1",
                "call_id": "c1",
                "name": "get_weather",
                "arguments": {"city": "Paris"},
            },
        ),
        (
            # null is a value like any other: it is sent, not taken for "unset".
            ToolCall("r1", "c1", "now", arguments=None),
            "tool.call",
            {"run_id": "r1", "call_id": "c1", "name": "now", "arguments": None},
        ),
        (
            ToolResult("r1", "c1", {"temp_c": 21}),
            "tool.result",
            {"run_id": "r1", "call_id": "c1", "result": {"temp_c": 21}, "is_error": False},
        ),
        (
            ToolResult("r1", "c1", "no such city", is_error=True),
            "tool.result",
            {"run_id": "r1", "call_id": "c1", "result": "no such city", "is_error": True},
        ),
        (
            Data("r1", "citations", [{"url": "https://example.org"}]),
            "data",
            {"run_id": "r1", "name": "citations", "value": [{"url": "https://example.org"}]},
        ),
    ],
)
def test_new_events_have_the_documented_json(event: Event, name: str, json: object) -> None:
    encoded_name, data = encode(event)
    assert encoded_name == name
    assert msgspec.json.decode(data) == json
    assert decode(name, data) == event


def test_the_openapi_document_lists_the_new_events() -> None:
    schemas = build(all_routes())["components"]["schemas"]
    for cls in (ToolCall, ToolResult, Data):
        assert cls.__name__ in schemas
    assert set(EVENT_TYPES) >= {"tool.call", "tool.result", "data"}
    part_types = {
        ref["$ref"].rsplit("/", 1)[1]
        for ref in schemas["SnapshotMessage"]["properties"]["parts"]["items"]["anyOf"]
    }
    assert part_types == {"TextPart", "ReasoningPart", "ToolCallPart", "ToolResultPart", "DataPart"}


def _fold(*events: Event) -> dict[str, object]:
    fold = AnswerFold(assistant_message("m1", "r1", "running"))
    for event in events:
        fold.add(event)
    return msgspec.to_builtins(fold.result())


def test_a_message_folds_its_parts_in_order() -> None:
    message = _fold(
        Delta("r1", "The user", "reasoning"),
        Delta("r1", " asks.", "reasoning"),
        Delta("r1", "Let me"),
        Delta("r1", " look."),
        ToolCall("r1", "c1", "get_weather", arguments_delta='{"city":'),
        Delta("r1", " (one moment)"),
        ToolCall("r1", "c1", "get_weather", arguments_delta=' "Paris"}'),
        ToolCall("r1", "c1", "get_weather", arguments={"city": "Paris"}),
        ToolResult("r1", "c1", {"temp_c": 21}),
        Data("r1", "card", {"city": "Paris", "temp_c": 21}),
        Delta("r1", "It is 21 °C."),
        RunCompleted("r1", "stop"),  # not part of the message: changes nothing
    )
    assert message["content"] == "Let me look. (one moment)It is 21 °C."
    assert message["reasoning"] == "The user asks."
    assert message["parts"] == [
        {"type": "reasoning", "text": "The user asks."},
        {"type": "text", "text": "Let me look."},
        {
            "type": "tool_call",
            "call_id": "c1",
            "name": "get_weather",
            "arguments": {"city": "Paris"},
        },
        {"type": "text", "text": " (one moment)"},
        {"type": "tool_result", "call_id": "c1", "result": {"temp_c": 21}, "is_error": False},
        {"type": "data", "name": "card", "value": {"city": "Paris", "temp_c": 21}},
        {"type": "text", "text": "It is 21 °C."},
    ]


def test_a_call_cut_off_mid_arguments_keeps_the_text_that_arrived() -> None:
    message = _fold(
        ToolCall("r1", "c1", "search", arguments_delta='{"q": "bro'),
        ToolCall("r1", "c2", "now", arguments={}),
    )
    assert message["parts"] == [
        {"type": "tool_call", "call_id": "c1", "name": "search", "arguments": '{"q": "bro'},
        {"type": "tool_call", "call_id": "c2", "name": "now", "arguments": {}},
    ]
    assert message["content"] == "" and message["reasoning"] == ""


def test_a_message_without_parts_keeps_its_old_fields() -> None:
    """Clients written before parts existed read content and reasoning as before."""
    message = SnapshotMessage("m1", "assistant", "hi", "", "r1", "completed")
    assert msgspec.to_builtins(message) == {
        "message_id": "m1",
        "role": "assistant",
        "content": "hi",
        "reasoning": "",
        "run_id": "r1",
        "status": "completed",
        "parts": [],
        "error": None,
    }
