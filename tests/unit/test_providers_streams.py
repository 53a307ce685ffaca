"""Each provider against a fake upstream replaying its documented stream, byte for byte.

Whatever the vendor, the result is the same: reasoning on its own channel, the answer, usage, a
normalized finish reason; and a stream cut mid-way, or an error the vendor reports mid-stream,
ends in one ``Failure`` with a clear code after the text that did arrive.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from broker.core.events import Usage
from tests.upstreams import streams
from tests.upstreams.harness import API_KEY, HISTORY, ending, provider, request, run, text
from tests.upstreams.server import FakeUpstream, Reply, ndjson_reply, sse_reply
from workers.providers.base import (
    Failure,
    Finish,
    GenerationRequest,
    Text,
    ToolCallDelta,
    ToolCallWhole,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

GENERIC_SSE_RULES = {
    "extract": {
        "text": "token.text",
        "done": "details",
        "finish_reason": "details.finish_reason",
        "output_tokens": "details.generated_tokens",
    }
}
GENERIC_NDJSON_RULES = {
    "format": "ndjson",
    "extract": {
        "text": "$.delta.answer",
        "reasoning": "delta.reasoning",
        "done": "status",
        "done_value": "done",
        "input_tokens": "usage.in",
        "output_tokens": "usage.out",
        "error": "error",
    },
}


@dataclass(frozen=True)
class Case:
    kind: str
    root: str  # appended to the fake's URL to make the base URL
    path: str  # the request path the provider must use
    stream: bytes
    cut: bytes
    usage: Usage | None
    reason: str
    reasoning: str = streams.REASONING
    ndjson: bool = False
    fields: dict[str, Any] | None = None

    def reply(self, body: bytes, **kwargs: Any) -> Reply:
        return (ndjson_reply if self.ndjson else sse_reply)(body, **kwargs)


CASES = [
    Case(
        "openai_chat",
        "/v1",
        "/v1/chat/completions",
        streams.OPENAI_CHAT,
        streams.OPENAI_CHAT_CUT,
        Usage(12, 9, 5),
        "stop",
    ),
    Case(
        "openai_responses",
        "/v1",
        "/v1/responses",
        streams.OPENAI_RESPONSES,
        streams.OPENAI_RESPONSES_CUT,
        Usage(12, 30, 20),
        "stop",
    ),
    Case(
        "anthropic",
        "",
        "/v1/messages",
        streams.ANTHROPIC,
        streams.ANTHROPIC_CUT,
        Usage(12, 30),
        "stop",
    ),
    Case(
        "gemini",
        "/v1beta",
        "/v1beta/models/upstream-model:streamGenerateContent?alt=sse",
        streams.GEMINI,
        streams.GEMINI_CUT,
        Usage(12, 29, 25),
        "stop",
    ),
    Case(
        "ollama",
        "",
        "/api/chat",
        streams.OLLAMA,
        streams.OLLAMA_CUT,
        Usage(12, 9),
        "stop",
        ndjson=True,
    ),
    Case(
        "generic",
        "/generate",
        "/generate",
        streams.GENERIC_SSE,
        streams.GENERIC_SSE_CUT,
        Usage(0, 3),
        "eos_token",
        reasoning="",
        fields=GENERIC_SSE_RULES,
    ),
    Case(
        "generic",
        "/generate",
        "/generate",
        streams.GENERIC_NDJSON,
        streams.GENERIC_NDJSON_CUT,
        Usage(12, 9),
        "stop",
        ndjson=True,
        fields=GENERIC_NDJSON_RULES,
    ),
]
IDS = [
    "openai_chat",
    "openai_responses",
    "anthropic",
    "gemini",
    "ollama",
    "generic_sse",
    "generic_ndjson",
]


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("piece", [0, 7], ids=["whole", "7-byte-pieces"])
async def test_stream_is_normalized(fake: FakeUpstream, case: Case, piece: int) -> None:
    fake.reply(case.reply(case.stream, piece=piece))
    async with provider(case.kind, fake.url + case.root, **(case.fields or {})) as p:
        chunks = await run(p)
    assert text(chunks) == streams.ANSWER
    assert text(chunks, "reasoning") == case.reasoning
    if case.reasoning:
        # Reasoning comes first and is never mixed into the answer.
        channels = [c.channel for c in chunks if isinstance(c, Text)]
        assert channels == sorted(channels, key=lambda channel: channel != "reasoning")
    assert ending(chunks) == Finish(case.reason, case.usage)
    [seen] = fake.requests
    assert (seen.method, seen.path) == ("POST", case.path)


@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_stream_cut_mid_way_fails_after_the_text_that_arrived(
    fake: FakeUpstream, case: Case
) -> None:
    fake.reply(case.reply(case.cut, end="cut"))
    async with provider(case.kind, fake.url + case.root, **(case.fields or {})) as p:
        chunks = await run(p)
    failure = ending(chunks)
    assert isinstance(failure, Failure) and failure.code == "stream_cut", failure
    assert text(chunks) == "Hello"
    assert len(fake.requests) == 1, "a stream that produced text is never retried"


@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_body_ending_cleanly_before_the_end_marker_is_a_cut(
    fake: FakeUpstream, case: Case
) -> None:
    """Some servers close with a proper last chunk even when generation broke off."""
    fake.reply(case.reply(case.cut))
    async with provider(case.kind, fake.url + case.root, **(case.fields or {})) as p:
        chunks = await run(p)
    failure = ending(chunks)
    assert isinstance(failure, Failure) and failure.code == "stream_cut", failure


@pytest.mark.parametrize(
    ("kind", "root", "stream", "code", "ndjson"),
    [
        ("openai_chat", "/v1", streams.OPENAI_CHAT_ERROR, "rate_limited", False),
        ("openai_responses", "/v1", streams.OPENAI_RESPONSES_FAILED, "upstream_error", False),
        ("anthropic", "", streams.ANTHROPIC_OVERLOADED, "overloaded", False),
        ("gemini", "/v1beta", streams.GEMINI_ERROR, "overloaded", False),
        ("gemini", "/v1beta", streams.GEMINI_RAW_ERROR, "overloaded", False),
        ("ollama", "", streams.OLLAMA_ERROR, "upstream_error", True),
    ],
)
async def test_error_reported_mid_stream(
    fake: FakeUpstream, kind: str, root: str, stream: bytes, code: str, ndjson: bool
) -> None:
    fake.reply(ndjson_reply(stream) if ndjson else sse_reply(stream))
    async with provider(kind, fake.url + root) as p:
        chunks = await run(p)
    failure = ending(chunks)
    assert isinstance(failure, Failure) and failure.code == code, failure
    assert failure.message
    assert text(chunks) == "Hello"


async def test_gemini_error_as_bare_json_is_reported_with_its_own_words(
    fake: FakeUpstream,
) -> None:
    fake.reply(sse_reply(streams.GEMINI_RAW_ERROR, piece=7))
    async with provider("gemini", fake.url + "/v1beta") as p:
        failure = ending(await run(p))
    assert failure == Failure(
        "overloaded",
        "the upstream reported an error: The model is overloaded. Please try again later.",
    )


@pytest.mark.parametrize(
    ("upstream_model", "field", "override"),
    [
        ("gpt-4o", "max_tokens", ""),
        ("o3-mini", "max_completion_tokens", ""),
        ("o1", "max_completion_tokens", ""),
        ("gpt-5-mini", "max_completion_tokens", ""),
        ("openai/o4-mini", "max_completion_tokens", ""),
        ("my-o3-finetune", "max_tokens", "max_tokens"),
        ("my-reasoner", "max_completion_tokens", "max_completion_tokens"),
    ],
)
async def test_openai_reasoning_models_get_max_completion_tokens(
    fake: FakeUpstream, upstream_model: str, field: str, override: str
) -> None:
    fake.reply(sse_reply(streams.OPENAI_CHAT))
    extra = {"max_tokens_field": override} if override else {}
    req = GenerationRequest("test-model", "Greet me.", {"max_tokens": 50}, HISTORY, upstream_model)
    async with provider("openai_chat", fake.url + "/v1", **extra) as p:
        await run(p, req)
    body = fake.requests[0].json()
    other = {"max_tokens", "max_completion_tokens"} - {field}
    assert body[field] == 50 and not other & set(body), body


async def test_generic_error_path(fake: FakeUpstream) -> None:
    fake.reply(ndjson_reply(b'{"delta":{"answer":"Hello"}}\n{"error":"model crashed"}\n'))
    async with provider("generic", fake.url + "/generate", **GENERIC_NDJSON_RULES) as p:
        chunks = await run(p)
    assert ending(chunks) == Failure(
        "upstream_error", "the upstream reported an error: model crashed"
    )


async def test_generic_sse_ends_at_a_sentinel_or_an_event_name(fake: FakeUpstream) -> None:
    fake.reply(
        sse_reply(b'data: {"t":"Hello"}\n\ndata: {"t":" there!"}\n\ndata: [END]\n\n'),
        sse_reply(b'event: token\ndata: {"t":"Hello there!"}\n\nevent: end\ndata: {}\n\n'),
    )
    async with provider(
        "generic", fake.url + "/g", extract={"text": "t", "done_data": "[END]"}
    ) as p:
        first = await run(p)
    async with provider(
        "generic", fake.url + "/g", extract={"text": "t", "done_event": "end"}
    ) as p:
        second = await run(p)
    for chunks in (first, second):
        assert text(chunks) == streams.ANSWER
        assert ending(chunks) == Finish("stop", None)


async def test_openai_chat_reasoning_field_and_length_finish(fake: FakeUpstream) -> None:
    """vLLM and Ollama's /v1 call the field ``reasoning``; a cut-off answer ends with ``length``."""
    fake.reply(sse_reply(streams.OPENAI_CHAT_VLLM))
    async with provider("openai_chat", fake.url + "/v1") as p:
        chunks = await run(p)
    assert text(chunks, "reasoning") == streams.REASONING
    assert text(chunks) == streams.ANSWER
    assert ending(chunks) == Finish("length", None)


async def test_responses_incomplete_ends_with_length(fake: FakeUpstream) -> None:
    fake.reply(sse_reply(streams.OPENAI_RESPONSES_INCOMPLETE))
    async with provider("openai_responses", fake.url + "/v1") as p:
        chunks = await run(p)
    assert ending(chunks) == Finish("length", Usage(12, 1, 0))


def _message_texts(body: dict[str, Any], kind: str) -> list[tuple[str, str]]:
    if kind == "gemini":
        return [(c["role"], c["parts"][0]["text"]) for c in body["contents"]]
    key = "input" if kind == "openai_responses" else "messages"
    return [(m["role"], m["content"]) for m in body[key]]


@pytest.mark.parametrize("case", CASES[:5], ids=IDS[:5])
async def test_request_carries_history_params_model_and_key(fake: FakeUpstream, case: Case) -> None:
    fake.reply(case.reply(case.stream))
    async with provider(case.kind, fake.url + case.root, headers={"x-extra": "1"}) as p:
        await run(p, request("Greet me.", temperature=0.5, max_tokens=64))
    [seen] = fake.requests
    body = seen.json()
    expected_roles = {
        "user": "user",
        "assistant": "model" if case.kind == "gemini" else "assistant",
    }
    assert _message_texts(body, case.kind) == [
        *((expected_roles[m.role], m.content) for m in HISTORY),
        ("user", "Greet me."),
    ]
    assert seen.headers["x-extra"] == "1"
    if case.kind == "gemini":
        assert body["generationConfig"] == {"temperature": 0.5, "maxOutputTokens": 64}
        assert seen.headers["x-goog-api-key"] == API_KEY
        assert API_KEY not in seen.path
    else:
        assert body["model"] == "upstream-model"
        assert body["stream"] is True
    if case.kind == "openai_chat":
        assert body["stream_options"] == {"include_usage": True}
        assert (body["temperature"], body["max_tokens"]) == (0.5, 64)
    if case.kind == "openai_responses":
        assert (body["temperature"], body["max_output_tokens"]) == (0.5, 64)
    if case.kind in ("openai_chat", "openai_responses"):
        assert seen.headers["authorization"] == f"Bearer {API_KEY}"
    if case.kind == "anthropic":
        assert seen.headers["x-api-key"] == API_KEY
        assert seen.headers["anthropic-version"] == "2023-06-01"
        assert (body["temperature"], body["max_tokens"]) == (0.5, 64)
    if case.kind == "ollama":
        assert body["options"] == {"temperature": 0.5, "num_predict": 64}


async def test_catalogue_body_fields_are_merged_under_the_request(fake: FakeUpstream) -> None:
    fake.reply(sse_reply(streams.GEMINI))
    thinking = {
        "generationConfig": {"thinkingConfig": {"includeThoughts": True}, "temperature": 0.1}
    }
    async with provider("gemini", fake.url + "/v1beta", body=thinking) as p:
        await run(p, request(temperature=0.9))
    assert fake.requests[0].json()["generationConfig"] == {
        "thinkingConfig": {"includeThoughts": True},
        "temperature": 0.9,
    }


async def test_anthropic_max_tokens_defaults_from_the_catalogue(fake: FakeUpstream) -> None:
    fake.reply(sse_reply(streams.ANTHROPIC))
    async with provider("anthropic", fake.url, max_tokens=1234) as p:
        await run(p)
    assert fake.requests[0].json()["max_tokens"] == 1234


WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The forecast for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
TOOL_CASES = [
    ("openai_chat", "/v1", streams.OPENAI_CHAT_TOOLS, "call_Vx8mQ2", Usage(40, 18)),
    ("openai_responses", "/v1", streams.OPENAI_RESPONSES_TOOLS, "call_Vx8mQ2", Usage(40, 18, 0)),
    ("anthropic", "", streams.ANTHROPIC_TOOLS, "toolu_01Vx8mQ2", Usage(40, 18)),
    ("gemini", "/v1beta", streams.GEMINI_TOOLS, "call_1", Usage(40, 18)),
]


@pytest.mark.parametrize(("kind", "root", "stream", "call_id", "usage"), TOOL_CASES)
@pytest.mark.parametrize("piece", [0, 7], ids=["whole", "7-byte-pieces"])
async def test_tool_calls_stream_through_as_pieces_then_whole(
    fake: FakeUpstream, kind: str, root: str, stream: bytes, call_id: str, usage: Usage, piece: int
) -> None:
    fake.reply(sse_reply(stream, piece=piece))
    async with provider(kind, fake.url + root) as p:
        chunks = await run(p, request("Weather in Paris?", tools=[WEATHER_TOOL]))
    assert text(chunks) == streams.TOOL_TEXT
    pieces = [c for c in chunks if isinstance(c, ToolCallDelta) and c.name == "get_weather"]
    wholes = [c for c in chunks if isinstance(c, ToolCallWhole)]
    assert wholes[0] == ToolCallWhole(call_id, "get_weather", {"city": "Paris"})
    if kind == "gemini":
        assert pieces == []  # Gemini sends a call whole
    else:
        assert len(pieces) == 2
        assert {c.call_id for c in pieces} == {call_id}
        assert "".join(c.arguments_delta for c in pieces) == streams.TOOL_ARGUMENTS
        # The pieces come before their whole call, which comes before the end.
        assert chunks.index(pieces[-1]) < chunks.index(wholes[0])
    if kind == "openai_chat":
        assert wholes[1] == ToolCallWhole("call_Tq4nB7", "get_time", {})
    else:
        assert len(wholes) == 1
    assert ending(chunks) == Finish("tool_calls", usage)


@pytest.mark.parametrize(("kind", "root", "stream", "call_id", "usage"), TOOL_CASES)
async def test_tools_go_upstream_in_each_vendor_s_shape(
    fake: FakeUpstream, kind: str, root: str, stream: bytes, call_id: str, usage: Usage
) -> None:
    fake.reply(sse_reply(stream))
    bare = {"name": "get_time"}  # no description, no parameters
    async with provider(kind, fake.url + root) as p:
        await run(p, request("Weather in Paris?", tools=[WEATHER_TOOL, bare]))
    body = fake.requests[0].json()
    schema = WEATHER_TOOL["parameters"]
    empty = {"type": "object", "properties": {}}
    description = WEATHER_TOOL["description"]
    expected = {
        "openai_chat": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": description,
                    "parameters": schema,
                },
            },
            {"type": "function", "function": {"name": "get_time", "parameters": empty}},
        ],
        "openai_responses": [
            {
                "type": "function",
                "name": "get_weather",
                "description": description,
                "parameters": schema,
            },
            {"type": "function", "name": "get_time", "parameters": empty},
        ],
        "anthropic": [
            {"name": "get_weather", "description": description, "input_schema": schema},
            {"name": "get_time", "input_schema": empty},
        ],
        "gemini": [
            {
                "functionDeclarations": [
                    {"name": "get_weather", "description": description, "parameters": schema},
                    {"name": "get_time", "parameters": empty},
                ]
            }
        ],
    }
    assert body["tools"] == expected[kind]


@pytest.mark.parametrize("case", CASES[:4], ids=IDS[:4])
async def test_no_tools_means_no_tools_field(fake: FakeUpstream, case: Case) -> None:
    fake.reply(case.reply(case.stream))
    async with provider(case.kind, fake.url + case.root) as p:
        await run(p)
    assert "tools" not in fake.requests[0].json()


async def test_arguments_that_are_not_json_reach_the_client_as_text(fake: FakeUpstream) -> None:
    broken = streams.ANTHROPIC_TOOLS.replace(b': \\"Paris\\"}', b': \\"Par')
    fake.reply(sse_reply(broken))
    async with provider("anthropic", fake.url) as p:
        chunks = await run(p, request(tools=[WEATHER_TOOL]))
    [whole] = [c for c in chunks if isinstance(c, ToolCallWhole)]
    assert whole.arguments == '{"city": "Par'
