"""The Vercel AI SDK's own client against real broker processes: useChat's code path, unchanged.

Each scenario runs ``tests/ai_sdk/scenario.mjs`` in Node: the ``ai`` package's ``AbstractChat``
with ``DefaultChatTransport`` (what ``useChat`` runs in a browser), installed from npm with major
versions 7 (``ai``), 6 (``ai6``) and 5 (``ai5``) side by side. What the SDK assembled is checked
against what the broker stored, read through API version 1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app_agents import CALL_ID, REASONING
from tests.helpers import new_cid
from tests.stack import REPO_ROOT, Front, Stack
from tests.tokens import AUTH, hs256

HARNESS = REPO_ROOT / "tests" / "ai_sdk"
VERSIONS = ["ai", "ai6", "ai5"]
GENERATORS = ",".join(
    [
        "refuses=tests.app_generators:refuses",
        "tools=tests.app_generators:tools_and_data",
        "pydantic_ai=tests.app_agents:pydantic_ai_weather",
        "langgraph=tests.app_agents:langgraph_weather",
    ]
)
# Long enough to abort and resume in the middle, short enough for a test.
ANSWER = {"tokens": 40, "interval_ms": 25}

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def harness() -> Path:
    if shutil.which("node") is None:
        pytest.fail("these tests need Node (20 or newer) on PATH")
    if not (HARNESS / "node_modules" / "ai").is_dir():
        pytest.fail(f"the AI SDK is not installed: run `npm ci` in {HARNESS} (.ci/run does)")
    return HARNESS


@pytest.fixture(scope="module")
def front(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    """Two fronts and one worker, open (BROKER_AUTH=none), shared by the module's scenarios."""
    stack = Stack(
        redis_url,
        "a" + uuid.uuid4().hex[:12],
        tmp_path_factory.mktemp("ai_sdk"),
        settings={"shutdown_grace_seconds": 1},
    )
    stack.start(fronts=2, workers=1, generators=GENERATORS)
    unexpected: list[str] = []
    try:
        yield stack.fronts[0]
    finally:
        unexpected = stack.close(report=False)
    if unexpected:
        pytest.fail("tracebacks in broker output:\n\n" + "\n\n".join(unexpected), pytrace=False)


def scenario(
    harness: Path,
    front: Front,
    name: str,
    *,
    sdk: str = "ai",
    chat: str | None = None,
    params: dict[str, Any] | None = None,
    **options: str,
) -> dict[str, Any]:
    """Run one scenario; returns its JSON result (and the chat id under ``"chat"``)."""
    chat = chat or new_cid("sdk")
    command = [
        "node",
        "scenario.mjs",
        "--sdk",
        sdk,
        "--base",
        front.url,
        "--chat",
        chat,
        "--scenario",
        name,
        "--params",
        json.dumps(ANSWER if params is None else params),
    ]
    for option, value in options.items():
        command += [f"--{option}", value]
    done = subprocess.run(command, cwd=harness, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, f"{name} ({sdk}) failed:\n{done.stderr}\n{done.stdout}"
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "chat": chat}


def stored(front: Front, cid: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The v1 snapshot: the broker's own record of the conversation."""
    response = httpx.get(f"{front.url}/v1/conversations/{cid}", headers=headers, trust_env=False)
    assert response.status_code == 200, response.text
    return response.json()


def text_of(message: dict[str, Any]) -> str:
    return "".join(p["text"] for p in message["parts"] if p["type"] == "text")


def assistant(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return [m for m in messages if m["role"] == "assistant"][-1]


_KEPT = ("type", "text", "state", "toolCallId", "input", "output", "errorText", "data")


def parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The parts as every SDK version builds them (ai 7 adds a reasoning part's id, ...)."""
    kept = []
    for part in message["parts"]:
        kept.append({k: v for k, v in part.items() if k in _KEPT})
        if part["type"].startswith("data-"):
            kept[-1]["id"] = part["id"]
    return kept


def test_an_unknown_chat_has_nothing_to_resume(harness: Path, front: Front) -> None:
    cid = new_cid("unknown")
    response = httpx.get(f"{front.url}/v1/ai-sdk/chat/{cid}/stream", trust_env=False)
    assert (response.status_code, response.content) == (204, b"")
    result = scenario(harness, front, "resume-unknown", chat=cid)
    assert (result["status"], result["error"], result["messages"]) == ("ready", None, [])
    messages = httpx.get(f"{front.url}/v1/ai-sdk/chat/{cid}/messages", trust_env=False)
    assert (messages.status_code, messages.json()) == (200, [])


@pytest.mark.parametrize("sdk", VERSIONS)
def test_stop_then_resume_rebuilds_the_stored_answer(harness: Path, front: Front, sdk: str) -> None:
    """stop() drops the connection mid-answer (the run goes on); resumeStream() in the same
    client replays the whole message: the stored text, once, under the same message id."""
    result = scenario(harness, front, "abort-resume", sdk=sdk)
    snapshot = stored(front, result["chat"])
    answer = snapshot["messages"][-1]
    assert answer["status"] == "completed"  # dropping the connection cancelled nothing
    assert len(answer["content"].split()) == ANSWER["tokens"]

    assert result["stopped"] == "ready"
    first = result["first"]
    assert first["id"] == answer["message_id"]
    assert 0 < len(text_of(first).split()) < ANSWER["tokens"]
    assert answer["content"].startswith(text_of(first))

    assert (result["status"], result["error"]) == ("ready", None)
    assert [m["role"] for m in result["messages"]] == ["user", "assistant"]
    rebuilt = assistant(result["messages"])
    assert rebuilt["id"] == answer["message_id"]
    assert parts(rebuilt) == [
        {"type": "step-start"},
        {"type": "text", "text": answer["content"], "state": "done"},
    ]
    resumed = result["resumedChunks"]
    assert resumed[:3] == ["start", "start-step", "text-start"]
    assert resumed[-3:] == ["text-end", "finish-step", "finish"]


@pytest.mark.parametrize("sdk", ["ai", "ai5"])
def test_a_reload_renders_the_messages_then_resumes_with_the_cookie_or_header(
    harness: Path, front: Front, sdk: str
) -> None:
    result = scenario(harness, front, "reload-resume", sdk=sdk)
    answer = stored(front, result["chat"])["messages"][-1]
    loaded = result["loaded"]["messages"]
    assert [m["role"] for m in loaded] == ["user", "assistant"]
    assert loaded[1]["id"] == answer["message_id"]
    assert answer["content"].startswith(text_of(loaded[1]))
    assert [m["id"] for m in result["messages"]] == [m["id"] for m in loaded]
    assert text_of(result["messages"][1]) == answer["content"]
    assert parts(result["messages"][1])[1]["state"] == "done"


def test_a_second_device_resumes_while_the_first_reads(harness: Path, front: Front) -> None:
    result = scenario(harness, front, "second-reader")
    answer = stored(front, result["chat"])["messages"][-1]
    first, second = assistant(result["a"]["messages"]), assistant(result["b"]["messages"])
    assert first["id"] == second["id"] == answer["message_id"]
    assert parts(first) == parts(second)
    assert text_of(second) == answer["content"]
    assert result["b"]["chunks"][0] == "start"


def test_after_the_run_ended_there_is_nothing_to_resume_and_messages_has_it_all(
    harness: Path, front: Front
) -> None:
    result = scenario(harness, front, "after-finish")
    assert result["b"]["chunks"] == []  # 204: no stream was read
    assert result["b"]["status"] == "ready"
    loaded = result["loaded"]["messages"]
    assert result["b"]["messages"] == loaded
    # What GET /messages rebuilds from the log is what the SDK built from the stream.
    sent = result["a"]["messages"]
    assert [parts(m) for m in loaded] == [parts(m) for m in sent]
    assert assistant(loaded)["id"] == assistant(sent)["id"]


@pytest.mark.parametrize("sdk", VERSIONS)
def test_stop_from_another_client_ends_the_stream_with_abort(
    harness: Path, front: Front, sdk: str
) -> None:
    result = scenario(harness, front, "stop-from-other", sdk=sdk)
    assert result["stop"]["status"] in (200, 202)
    assert result["chunks"][-3:] == ["text-end", "abort", "finish"]
    assert (result["status"], result["error"]) == ("ready", None)
    answer = stored(front, result["chat"])["messages"][-1]
    assert answer["status"] == "cancelled"
    assert text_of(assistant(result["messages"])) == answer["content"]


def test_the_wire_a_replay_sends_is_the_first_delivery_byte_for_byte(front: Front) -> None:
    """Two readers of one run, one from its POST and one resuming halfway: the same bytes."""
    cid = new_cid("bytes")
    body = {
        "id": cid,
        "messages": [{"role": "user", "parts": [{"type": "text", "text": "hello"}]}],
        "params": {"tokens": 30, "interval_ms": 20, "reasoning_tokens": 5},
    }
    first: list[bytes] = []
    halfway = threading.Event()

    def post() -> None:
        with httpx.stream(
            "POST", f"{front.url}/v1/ai-sdk/chat", json=body, trust_env=False, timeout=30
        ) as response:
            assert response.status_code == 200
            assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
            assert response.headers["content-type"].startswith("text/event-stream")
            for chunk in response.iter_bytes():
                first.append(chunk)
                if b"text-delta" in b"".join(first):
                    halfway.set()

    reader = threading.Thread(target=post)
    reader.start()
    assert halfway.wait(20)
    resumed = httpx.get(f"{front.url}/v1/ai-sdk/chat/{cid}/stream", trust_env=False, timeout=30)
    reader.join(30)
    assert resumed.status_code == 200
    assert resumed.content == b"".join(first)
    frames = resumed.content.split(b"\n\n")
    assert frames[-2:] == [b"data: [DONE]", b""]
    chunks = [json.loads(f.removeprefix(b"data: ")) for f in frames[:-2]]
    types = [c["type"] for c in chunks]
    assert types[:3] == ["start", "start-step", "reasoning-start"]
    assert types[-3:] == ["text-end", "finish-step", "finish"]
    run = stored(front, cid)["messages"][-1]
    assert chunks[0]["messageId"] == run["message_id"]
    assert chunks[-1] == {"type": "finish", "finishReason": "stop"}
    ids = {c["id"] for c in chunks if "id" in c}
    assert ids == {f"{run['run_id']}-0", f"{run['run_id']}-1"}


def test_reasoning_arrives_as_reasoning_parts(harness: Path, front: Front) -> None:
    result = scenario(
        harness, front, "send", params={"tokens": 8, "interval_ms": 5, "reasoning_tokens": 6}
    )
    answer = stored(front, result["chat"])["messages"][-1]
    assert parts(assistant(result["messages"])) == [
        {"type": "step-start"},
        {"type": "reasoning", "text": answer["reasoning"], "state": "done"},
        {"type": "text", "text": answer["content"], "state": "done"},
    ]


@pytest.mark.parametrize("sdk", VERSIONS)
def test_a_failed_run_puts_the_chat_in_its_error_state(
    harness: Path, front: Front, sdk: str
) -> None:
    result = scenario(harness, front, "send", sdk=sdk, model="refuses")
    assert result["status"] == "error"
    assert result["error"] == "quota_exceeded: You have used up today's questions."
    assert result["chunks"][:3] == ["start", "start-step", "error"]


def test_a_second_message_while_one_is_answered_is_the_409_the_sdk_shows(
    harness: Path, front: Front
) -> None:
    result = scenario(harness, front, "conflict")
    assert result["b"]["status"] == "error"
    error = json.loads(result["b"]["error"])
    assert error["error"]["code"] == "run_active"
    assert result["a"]["chunks"][-2:] == ["abort", "finish"]


@pytest.mark.parametrize("sdk", VERSIONS)
def test_tool_calls_and_data_become_the_sdks_parts(harness: Path, front: Front, sdk: str) -> None:
    result = scenario(harness, front, "send", sdk=sdk, model="tools")
    assert (result["status"], result["error"]) == ("ready", None)
    message = assistant(result["messages"])
    run_id = stored(front, result["chat"])["messages"][-1]["run_id"]
    assert parts(message) == [
        {"type": "step-start"},
        {"type": "reasoning", "text": "The user wants the weather.", "state": "done"},
        {"type": "text", "text": "Let me look. ", "state": "done"},
        {
            "type": "tool-weather",
            "toolCallId": "call_weather",
            "state": "output-available",
            "input": {"city": "Paris"},
            "output": {"celsius": 21},
        },
        {
            "type": "tool-clock",
            "toolCallId": "call_clock",
            "state": "output-error",
            "input": {"zone": "CET"},
            "errorText": "the clock is broken",
        },
        {
            "type": "data-citation",
            "id": f"{run_id}-4",
            "data": {"url": "https://weather.example/paris", "title": "Paris"},
        },
        {"type": "text", "text": "It is 21 degrees in Paris.", "state": "done"},
    ]
    assert "tool-input-delta" in result["chunks"]
    loaded = httpx.get(f"{front.url}/v1/ai-sdk/chat/{result['chat']}/messages", trust_env=False)
    assert parts(assistant(loaded.json())) == parts(message)


@pytest.mark.parametrize("framework", ["pydantic_ai", "langgraph"])
def test_an_agent_s_tool_call_becomes_a_tool_part_through_use_chat(
    harness: Path, front: Front, framework: str
) -> None:
    """A framework's run (tests/app_agents.py) as useChat builds it: the call under the
    framework's own id, with its input and output; a graph's node changes as data parts."""
    result = scenario(harness, front, "send", model=framework, params={"words": 2})
    assert (result["status"], result["error"]) == ("ready", None)
    message = assistant(result["messages"])
    kept = [p for p in parts(message) if not p["type"].startswith("data-")]
    assert kept == [
        {"type": "step-start"},
        {"type": "reasoning", "text": REASONING, "state": "done"},
        {
            "type": "tool-get_weather",
            "toolCallId": CALL_ID,
            "state": "output-available",
            "input": {"city": "Paris"},
            "output": {"city": "Paris", "sky": "sunny", "celsius": 21},
        },
        {"type": "text", "text": "In Paris it is sunny. word0 word1 ", "state": "done"},
    ]
    nodes = [p["data"] for p in parts(message) if p["type"] == "data-node"]
    assert nodes == (
        [] if framework == "pydantic_ai" else [{"name": n} for n in ("agent", "tools", "agent")]
    )
    loaded = httpx.get(f"{front.url}/v1/ai-sdk/chat/{result['chat']}/messages", trust_env=False)
    assert parts(assistant(loaded.json())) == parts(message)


def test_regenerate_answers_the_last_question_again(harness: Path, front: Front) -> None:
    result = scenario(harness, front, "regenerate", params={"tokens": 6, "interval_ms": 5})
    assert (result["status"], result["error"]) == ("ready", None)
    first, second = result["firstAnswer"], assistant(result["messages"])
    assert [m["role"] for m in result["messages"]] == ["user", "assistant"]
    assert second["id"] != first["id"]
    # The log is append-only: the question is asked a second time and both answers stay.
    loaded = result["loaded"]["messages"]
    assert [m["role"] for m in loaded] == ["user", "assistant", "user", "assistant"]
    assert [loaded[1]["id"], loaded[3]["id"]] == [first["id"], second["id"]]
    assert text_of(loaded[0]) == text_of(loaded[2]) == "Tell me about streams"


def _post(front: Front, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        f"{front.url}/v1/ai-sdk/chat",
        content=body if isinstance(body, bytes) else json.dumps(body),
        headers={"content-type": "application/json", **(headers or {})},
        trust_env=False,
    )


def test_bad_chat_requests_are_refused_and_write_nothing(front: Front) -> None:
    cid = new_cid("bad")
    user = [{"role": "user", "parts": [{"type": "text", "text": "hi"}]}]
    cases = [
        (b"not json", 400, "malformed_json"),
        ([1, 2], 400, "malformed_json"),
        ({"messages": user}, 422, "invalid_field"),
        ({"id": "a/b", "messages": user}, 400, "invalid_id"),
        ({"id": cid, "messages": user, "trigger": "resume"}, 422, "invalid_field"),
        ({"id": cid, "messages": []}, 422, "invalid_field"),
        ({"id": cid, "messages": [{"role": "assistant", "parts": []}]}, 422, "invalid_field"),
        ({"id": cid, "messages": [{"role": "user", "parts": []}]}, 422, "invalid_field"),
        ({"id": cid, "messages": user, "model": "nope"}, 422, "unknown_model"),
        ({"id": cid, "messages": user, "params": {"tokens": "many"}}, 422, "invalid_field"),
    ]
    for body, status, code in cases:
        response = _post(front, body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]["code"] == code, body
    assert httpx.get(f"{front.url}/v1/conversations/{cid}", trust_env=False).status_code == 404


def test_with_tokens_the_chat_is_its_owners_alone(harness: Path, stack: Stack) -> None:
    """BROKER_AUTH=jwt: the Bearer header through the transport's headers, the session cookie
    for the page's GET requests; anyone else sees a chat that does not exist."""
    stack.start(fronts=1, workers=1, **AUTH)
    front = stack.fronts[0]
    alice = hs256("alice")
    result = scenario(harness, front, "reload-resume", token=alice, cookie=alice)
    answer = stored(front, result["chat"], {"Authorization": f"Bearer {alice}"})["messages"][-1]
    assert text_of(result["messages"][1]) == answer["content"]

    cid = result["chat"]
    bob = {"Authorization": f"Bearer {hs256('bob')}"}
    for headers in (bob, {"Cookie": f"broker_token={hs256('bob')}"}):
        nothing = httpx.get(f"{front.url}/v1/ai-sdk/chat/{cid}/stream", headers=headers)
        assert nothing.status_code == 204  # as for a chat that does not exist
        listed = httpx.get(f"{front.url}/v1/ai-sdk/chat/{cid}/messages", headers=headers)
        assert listed.json() == []
    user = [{"role": "user", "parts": [{"type": "text", "text": "mine now"}]}]
    taken = _post(front, {"id": cid, "messages": user}, bob)
    assert (taken.status_code, taken.json()["error"]["code"]) == (404, "conversation_not_found")
    stop = httpx.post(f"{front.url}/v1/ai-sdk/chat/{cid}/stop", headers=bob)
    assert stop.status_code == 404
    anonymous = _post(front, {"id": new_cid("anon"), "messages": user})
    assert anonymous.status_code == 401
    # A cookie never posts: the page needs the header for that.
    cookie = _post(
        front, {"id": new_cid("c"), "messages": user}, {"Cookie": f"broker_token={alice}"}
    )
    assert cookie.status_code == 401
    assert len(stored(front, cid, {"Authorization": f"Bearer {alice}"})["messages"]) == 2


def test_the_example_asks_then_shows_the_conversation(
    harness: Path, front: Front, tmp_path: Path
) -> None:
    """examples/ai_sdk/chat.mjs, run as its README says (with the harness's install of ai 7)."""
    (tmp_path / "chat.mjs").write_text((REPO_ROOT / "examples/ai_sdk/chat.mjs").read_text())
    (tmp_path / "node_modules").symlink_to(harness / "node_modules")
    cid = new_cid("example")
    env = {"PATH": os.environ["PATH"], "BROKER_URL": front.url}

    def run(*args: str) -> str:
        done = subprocess.run(
            ["node", "chat.mjs", cid, *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    asked = run("Tell me about streams")
    answer = stored(front, cid)["messages"][-1]["content"]
    assert f"assistant: {answer}\n" in asked
    shown = run()
    assert shown.splitlines()[:2] == ["user: Tell me about streams", f"assistant: {answer}"]
