"""Upstream failures become one ``Failure`` with a clear code; cancel closes the upstream call.

Covers HTTP statuses (with the retry-after hint), malformed chunks, timeouts before the first
byte and between chunks, bounded retries of connection errors before any token, secrets kept
out of every message, and a closed (or cancelled) provider stream closing its HTTP connection,
as the fake server observes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import aclosing

import anyio
import pytest

from broker.core.settings import Settings
from tests.stack import free_port
from tests.upstreams import streams
from tests.upstreams.harness import API_KEY, ending, provider, request, run, text
from tests.upstreams.server import FakeUpstream, Reply, json_reply, ndjson_reply, sse_reply
from workers.providers.base import Failure, Text

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

# Short enough to keep the suite quick; the fake holds until the client leaves, so no test
# depends on how long anything takes.
QUICK = Settings(
    provider_first_byte_timeout_seconds=0.3,
    provider_idle_timeout_seconds=0.3,
    provider_connect_retries=2,
    provider_retry_backoff_seconds=0.01,
)


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


async def _disconnected(fake: FakeUpstream, index: int = 0) -> bool:
    return await anyio.to_thread.run_sync(fake.wait_disconnect, index, 10.0)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "bad_request"),
        (401, "auth_failed"),
        (403, "auth_failed"),
        (404, "bad_request"),
        (422, "bad_request"),
        (429, "rate_limited"),
        (500, "upstream_error"),
        (502, "upstream_error"),
        (503, "overloaded"),
        (529, "overloaded"),
    ],
)
async def test_status_codes(fake: FakeUpstream, status: int, code: str) -> None:
    fake.reply(json_reply(status, {"error": {"message": "upstream says no", "type": "x"}}))
    async with provider("openai_chat", fake.url) as p:
        chunks = await run(p)
    assert chunks == [ending(chunks)]
    failure = ending(chunks)
    assert isinstance(failure, Failure) and failure.code == code, failure
    assert f"HTTP {status}" in failure.message
    if code != "auth_failed":
        assert "upstream says no" in failure.message
    assert len(fake.requests) == 1, "an HTTP answer is never retried"


@pytest.mark.parametrize(
    ("kind", "root", "body", "headers", "hint"),
    [
        (
            "openai_chat",
            "/v1",
            {"error": {"message": "Rate limit reached", "type": "requests"}},
            {"retry-after-ms": "1500"},
            "retry after 1.5 s",
        ),
        (
            "openai_responses",
            "/v1",
            {"error": {"message": "Rate limit reached"}},
            {"retry-after": "7"},
            "retry after 7 s",
        ),
        (
            "anthropic",
            "",
            {
                "type": "error",
                "error": {
                    "type": "rate_limit_error",
                    "message": "Number of request tokens has exceeded your rate limit",
                },
            },
            {"retry-after": "20"},
            "retry after 20 s",
        ),
        (
            "gemini",
            "/v1beta",
            {
                "error": {
                    "code": 429,
                    "message": "Resource has been exhausted (e.g. check quota).",
                    "status": "RESOURCE_EXHAUSTED",
                }
            },
            {"retry-after": "3"},
            "retry after 3 s",
        ),
        (
            "gemini",
            "/v1beta",
            {
                "error": {
                    "code": 429,
                    "message": "You exceeded your current quota.",
                    "status": "RESOURCE_EXHAUSTED",
                    "details": [
                        {
                            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                            "violations": [{"quotaMetric": "generate_content_free_tier"}],
                        },
                        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"},
                    ],
                }
            },
            {},
            "retry after 7 s",
        ),
        ("ollama", "", {"error": "too many requests"}, {}, "no retry-after given"),
    ],
)
async def test_rate_limit_reports_the_retry_after(
    fake: FakeUpstream, kind: str, root: str, body: dict, headers: dict[str, str], hint: str
) -> None:
    fake.reply(json_reply(429, body, headers))
    async with provider(kind, fake.url + root) as p:
        failure = ending(await run(p))
    assert isinstance(failure, Failure) and failure.code == "rate_limited"
    assert hint in failure.message, failure.message
    assert (
        ("exhausted" in failure.message)
        or ("rate limit" in failure.message.lower())
        or ("too many" in failure.message)
        or ("quota" in failure.message)
    )


async def test_an_invalid_gemini_key_is_auth_failed(fake: FakeUpstream) -> None:
    """Gemini answers a bad key with 400 INVALID_ARGUMENT; its ErrorInfo names the key."""
    fake.reply(
        json_reply(
            400,
            {
                "error": {
                    "code": 400,
                    "message": "API key not valid. Please pass a valid API key.",
                    "status": "INVALID_ARGUMENT",
                    "details": [
                        {
                            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "API_KEY_INVALID",
                            "domain": "googleapis.com",
                            "metadata": {"service": "generativelanguage.googleapis.com"},
                        }
                    ],
                }
            },
        )
    )
    async with provider("gemini", fake.url + "/v1beta") as p:
        failure = ending(await run(p))
    assert failure == Failure("auth_failed", "the upstream refused the credentials (HTTP 400)")
    # Any other 400 stays a bad request.
    fake.reply(
        json_reply(400, {"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}})
    )
    async with provider("gemini", fake.url + "/v1beta") as p:
        assert ending(await run(p)).code == "bad_request"


async def test_anthropic_overloaded_status(fake: FakeUpstream) -> None:
    fake.reply(
        json_reply(
            529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        )
    )
    async with provider("anthropic", fake.url) as p:
        failure = ending(await run(p))
    assert failure == Failure("overloaded", "the upstream answered HTTP 529: Overloaded")


@pytest.mark.parametrize(
    ("kind", "reply"),
    [
        (
            "openai_chat",
            sse_reply(
                b'data: {"choices":[{"index":0,"delta":{"content":"Hello"}}]}\n\ndata: {"choices": [\n\n'
            ),
        ),
        ("openai_chat", sse_reply(b'data: {"choices":[{"index":0,"delta":{"content":5}}]}\n\n')),
        ("anthropic", sse_reply(b"event: message_start\ndata: not json\n\n")),
        ("ollama", ndjson_reply(b'{"message":{"content":"Hello"},"done":false}\n{"message":\n')),
    ],
    ids=["bad-json", "wrong-type", "anthropic", "ollama"],
)
async def test_malformed_chunk(fake: FakeUpstream, kind: str, reply: Reply) -> None:
    fake.reply(reply)
    async with provider(kind, fake.url) as p:
        failure = ending(await run(p))
    assert isinstance(failure, Failure) and failure.code == "malformed_chunk", failure


async def test_json_instead_of_a_stream(fake: FakeUpstream) -> None:
    fake.reply(json_reply(200, {"error": {"message": "streaming is not supported"}}))
    async with provider("openai_chat", fake.url) as p:
        failure = ending(await run(p))
    assert failure == Failure(
        "upstream_error", "the upstream answered JSON, not a stream: streaming is not supported"
    )


@pytest.mark.parametrize("hold_head", [True, False], ids=["no-head", "head-no-body"])
async def test_timeout_before_the_first_byte(fake: FakeUpstream, hold_head: bool) -> None:
    fake.reply(Reply(hold_head=hold_head, end="hold"))
    async with provider("openai_chat", fake.url, settings=QUICK) as p:
        failure = ending(await run(p))
    assert isinstance(failure, Failure) and failure.code == "timeout_first_byte", failure
    assert await _disconnected(fake), "a timed-out call must close its connection"
    assert len(fake.requests) == 1


async def test_timeout_between_chunks(fake: FakeUpstream) -> None:
    # Every event up to and including "Hello", then silence with the connection open.
    events = streams.OPENAI_CHAT.split(b"\n\n")
    first = b"\n\n".join(events[:5]) + b"\n\n"
    assert first.endswith(
        b'"Hello","reasoning_content":null},"logprobs":null,"finish_reason":null}]}\n\n'
    )
    fake.reply(sse_reply(first, end="hold"))
    async with provider("openai_chat", fake.url, settings=QUICK) as p:
        chunks = await run(p)
    failure = ending(chunks)
    assert isinstance(failure, Failure) and failure.code == "timeout_idle", failure
    assert text(chunks) == "Hello"
    assert await _disconnected(fake)


async def test_per_model_timeouts_override_the_settings(fake: FakeUpstream) -> None:
    fake.reply(Reply(end="hold"))
    async with provider(
        "openai_chat", fake.url, first_byte_timeout_seconds=0.2
    ) as p:  # FAST says 5 s
        failure = ending(await run(p))
    assert isinstance(failure, Failure) and failure.code == "timeout_first_byte"


async def test_connection_errors_before_any_token_are_retried(fake: FakeUpstream) -> None:
    fake.reply(Reply(end="drop"), Reply(end="drop"), sse_reply(streams.OPENAI_CHAT))
    async with provider("openai_chat", fake.url) as p:
        chunks = await run(p)
    assert text(chunks) == streams.ANSWER
    assert len(fake.requests) == 3


async def test_retries_are_bounded(fake: FakeUpstream) -> None:
    fake.reply(*(Reply(end="drop") for _ in range(5)))
    async with provider("openai_chat", fake.url) as p:  # two retries
        failure = ending(await run(p))
    assert isinstance(failure, Failure) and failure.code == "upstream_error"
    assert "after 3 attempt(s)" in failure.message
    assert len(fake.requests) == 3


async def test_nothing_listening() -> None:
    async with provider("anthropic", f"http://127.0.0.1:{free_port()}") as p:
        failure = ending(await run(p))
    assert isinstance(failure, Failure) and failure.code == "upstream_error"
    assert "ConnectError" in failure.message


@pytest.mark.parametrize(
    ("kind", "root", "stream", "ndjson"),
    [
        ("openai_chat", "/v1", streams.OPENAI_CHAT_CUT, False),
        ("openai_responses", "/v1", streams.OPENAI_RESPONSES_CUT, False),
        ("anthropic", "", streams.ANTHROPIC_CUT, False),
        ("gemini", "/v1beta", streams.GEMINI_CUT, False),
        ("ollama", "", streams.OLLAMA_CUT, True),
    ],
)
async def test_closing_the_stream_closes_the_upstream_connection(
    fake: FakeUpstream, kind: str, root: str, stream: bytes, ndjson: bool
) -> None:
    """What a cancel does: the worker closes the provider's iterator mid-answer."""
    fake.reply((ndjson_reply if ndjson else sse_reply)(stream, end="hold"))
    async with provider(kind, fake.url + root) as p:
        async with aclosing(p.stream(request())) as chunks:  # type: ignore[type-var]
            async for chunk in chunks:
                if isinstance(chunk, Text) and chunk.channel == "content":
                    break
        assert await _disconnected(fake)


async def test_cancelling_the_task_closes_the_upstream_connection(fake: FakeUpstream) -> None:
    """The worker cancels the run's scope; the provider's response must close under it."""
    fake.reply(sse_reply(streams.ANTHROPIC_CUT, end="hold"))
    got_text = anyio.Event()

    async def consume(p) -> None:  # type: ignore[no-untyped-def]
        async with aclosing(p.stream(request())) as chunks:
            async for chunk in chunks:
                if isinstance(chunk, Text) and chunk.channel == "content":
                    got_text.set()

    async with provider("anthropic", fake.url) as p:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(consume, p)
            await got_text.wait()
            tasks.cancel_scope.cancel()
        assert await _disconnected(fake)


async def test_secrets_stay_out_of_failure_messages(fake: FakeUpstream) -> None:
    echoed = {
        "error": {
            "message": f"Incorrect API key provided: {API_KEY}.",
            "type": "invalid_request_error",
        }
    }
    fake.reply(
        json_reply(401, echoed),
        json_reply(500, echoed),
        sse_reply(
            b'data: {"error":{"message":"bad key '
            + API_KEY.encode()
            + b'","type":"server_error"}}\n\n'
        ),
    )
    messages = []
    for _ in range(3):
        async with provider("openai_chat", fake.url) as p:
            failure = ending(await run(p))
        assert isinstance(failure, Failure)
        messages.append(failure.message)
    assert all(API_KEY not in message for message in messages), messages
    assert "Incorrect API key" not in messages[0], "an auth failure carries no upstream text"
    assert "[redacted]" in messages[1] and "[redacted]" in messages[2]


async def test_missing_key_variable_sends_no_credentials(fake: FakeUpstream) -> None:
    fake.reply(json_reply(401, {"error": {"message": "no key"}}))
    async with provider("openai_chat", fake.url, key=None) as p:
        failure = ending(await run(p))
    assert isinstance(failure, Failure) and failure.code == "auth_failed"
    assert "authorization" not in fake.requests[0].headers


def _fragments(secret: str, size: int = 6) -> set[str]:
    """Every run of ``size`` consecutive characters of a secret: none may show anywhere."""
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


def _leaked(secret: str, message: str) -> list[str]:
    return sorted(f for f in _fragments(secret.strip()) if f in message)


@pytest.mark.parametrize("offset", [272, 280, 290, 296])
async def test_a_key_crossing_the_excerpt_cut_is_redacted_whole(
    fake: FakeUpstream, offset: int
) -> None:
    """Upstream text is cut to a short excerpt; a key that crosses the cut must not leave
    its first characters behind."""
    fake.reply(json_reply(500, {"error": {"message": "e" * offset + " " + API_KEY + " tail"}}))
    async with provider("openai_chat", fake.url) as p:
        failure = ending(await run(p))
    assert isinstance(failure, Failure) and failure.code == "upstream_error"
    assert not _leaked(API_KEY, failure.message), failure.message
    assert "[redacted]" in failure.message


async def test_a_key_echoed_cut_short_at_the_excerpt_end_is_redacted(fake: FakeUpstream) -> None:
    """The upstream echoes only the start of the key, right where the excerpt ends."""
    fake.reply(json_reply(400, {"error": {"message": "e" * 280 + " " + API_KEY[:15]}}))
    async with provider("openai_chat", fake.url) as p:
        failure = ending(await run(p))
    assert isinstance(failure, Failure)
    assert not _leaked(API_KEY, failure.message), failure.message


async def test_a_request_that_cannot_be_sent_names_no_header(fake: FakeUpstream) -> None:
    """A key pasted with a trailing newline makes an illegal header; the HTTP library's error
    quotes that header, key included, in a form redaction does not recognize."""
    async with provider("openai_chat", fake.url, key=API_KEY + "\n") as p:
        failure = ending(await run(p))
    assert isinstance(failure, Failure) and failure.code == "upstream_error"
    assert not _leaked(API_KEY, failure.message), failure.message
    assert "Bearer" not in failure.message
    assert not fake.requests


async def test_extra_request_headers_echoed_by_the_upstream_are_redacted(
    fake: FakeUpstream,
) -> None:
    token = "org-token-5e4d3c2b1a09"
    fake.reply(json_reply(400, {"error": {"message": f"unknown organization {token}"}}))
    async with provider("openai_chat", fake.url, headers={"x-org-token": token}) as p:
        failure = ending(await run(p))
    assert isinstance(failure, Failure) and failure.code == "bad_request"
    assert fake.requests[0].headers["x-org-token"] == token
    assert not _leaked(token, failure.message), failure.message
