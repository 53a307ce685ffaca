"""The client's core without a broker: its steps driven by a scripted one, and both faces on
``httpx.MockTransport``.

The steps are checked by what they ask for (which request, which ``Last-Event-ID``, how long a
sleep), so reconnect and retry policies are pinned without waiting out a real backoff. The
faces are then checked to perform the same steps alike.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import broker.client
from broker.client import (
    AsyncBrokerClient,
    BadRequest,
    BrokerClient,
    BrokerUnavailable,
    Delta,
    NotFound,
    ReconnectFailed,
    RunCompleted,
    RunFailedError,
    StreamEndedError,
    TokenExpired,
    effects,
)
from broker.client.effects import (
    CloseStream,
    Effect,
    Emit,
    OpenStream,
    ReadBody,
    ReadChunk,
    Request,
    Run,
    Sleep,
)
from broker.core.bodies import MessageAccepted
from broker.core.events import ErrorInfo, RunFailed

ACCEPTED = {"conversation_id": "c", "message_id": "m", "run_id": "r", "event_id": "1-0"}


def _sse(event: str, event_id: str | None, **data: Any) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _delta(event_id: str, text: str, run_id: str = "r", channel: str = "content") -> bytes:
    return _sse("delta", event_id, run_id=run_id, text=text, channel=channel)


def _completed(event_id: str, run_id: str = "r") -> bytes:
    return _sse("run.completed", event_id, run_id=run_id, finish_reason="stop")


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def _error(status: int, code: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return _json(status, {"error": {"code": code, "message": code}}, headers)


class Broker:
    """Plays the broker for steps: each ``Request`` takes the next scripted answer, each
    ``OpenStream`` the next scripted connection (a status, then the pieces of its body; an
    exception among them is raised when that piece is read). Every step is recorded."""

    def __init__(
        self,
        connections: list[tuple[int, list[bytes | Exception]]] | None = None,
        answers: list[httpx.Response | Exception] | None = None,
    ) -> None:
        self.connections = list(connections or [])
        self.answers = list(answers or [])
        self.steps: list[Effect | Emit] = []
        self.items: list[Any] = []
        self._pieces: Iterator[bytes | Exception] = iter(())

    def __call__(self, effect: Effect) -> Any:
        match effect:
            case Request():
                answer = self.answers.pop(0)
                if isinstance(answer, Exception):
                    raise answer
                return answer
            case OpenStream():
                status, pieces = self.connections.pop(0)
                if status >= 400:
                    return _error(status, f"http_{status}", {"retry-after": "2"})
                self._pieces = iter(pieces)
                return httpx.Response(status)
            case ReadChunk():
                piece = next(self._pieces, None)
                if isinstance(piece, Exception):
                    raise piece
                return piece
        return None

    def perform(self, steps: effects.StreamSteps[Any]) -> Any:
        run = Run(steps)
        while (effect := run.next()) is not None:
            self.steps.append(effect)
            if isinstance(effect, Emit):
                self.items.append(effect.item)
                continue
            try:
                run.reply(self(effect))
            except Exception as exc:
                run.fail(exc)
        return run.result

    def of(self, kind: type[Any]) -> list[Any]:
        return [step for step in self.steps if isinstance(step, kind)]


@pytest.fixture
def client() -> Iterator[BrokerClient]:
    with BrokerClient("http://broker.invalid", "secret", max_attempts=3) as client:
        yield client


# ----- sending -----


def test_send_retries_an_unavailable_broker_with_the_same_idempotency_key(
    client: BrokerClient,
) -> None:
    broker = Broker(
        answers=[httpx.ConnectError("down"), _error(503, "unavailable"), _json(202, ACCEPTED)]
    )
    accepted = broker.perform(client._send_steps("c", "hi", {"params": {"tokens": 3}}))
    assert accepted == MessageAccepted(**ACCEPTED)
    requests = broker.of(Request)
    assert [s.seconds for s in broker.of(Sleep)] == [0.5, 1.0]
    assert len(requests) == 3 and len({r.headers["Idempotency-Key"] for r in requests}) == 1
    assert requests[0].path == "/v1/conversations/c/messages"
    assert requests[0].headers["Authorization"] == "Bearer secret"
    assert json.loads(requests[0].content or b"") == {"content": "hi", "params": {"tokens": 3}}


def test_send_gives_up_after_three_attempts_and_never_retries_a_refusal(
    client: BrokerClient,
) -> None:
    down = Broker(answers=[httpx.ConnectError("down")] * 3)
    with pytest.raises(BrokerUnavailable):
        down.perform(client._send_steps("c", "hi", {}))
    assert len(down.of(Request)) == 3
    refused = Broker(answers=[_error(422, "unknown_model")])
    with pytest.raises(BadRequest) as caught:
        refused.perform(client._send_steps("c", "hi", {"model": "nope"}))
    assert caught.value.code == "unknown_model" and refused.of(Sleep) == []


# ----- a stream's reconnects -----


def test_a_stream_resumes_after_its_last_event_honouring_retry(client: BrokerClient) -> None:
    broker = Broker(
        connections=[
            (200, [b"retry: 50\n\n", _delta("1-0", "Hel")]),
            (200, [_delta("1-1", "lo"), _completed("1-2")]),
        ]
    )
    broker.perform(client.stream_run("c", "r")._steps())
    opens = broker.of(OpenStream)
    assert [o.path for o in opens] == ["/v1/conversations/c/runs/r/stream"] * 2
    assert "Last-Event-ID" not in opens[0].headers and opens[1].headers["Last-Event-ID"] == "1-0"
    assert [s.seconds for s in broker.of(Sleep)] == [0.05]
    assert len(broker.of(CloseStream)) == 1  # the second connection ended the stream
    assert [type(i) for i in broker.items] == [Delta, Delta, RunCompleted]


def test_failures_back_off_and_end_in_reconnect_failed(client: BrokerClient) -> None:
    broker = Broker(
        connections=[
            (200, [_delta("1-0", "a"), httpx.ReadError("cut")]),
            (503, []),
            (200, [httpx.RemoteProtocolError("cut")]),
            (200, []),
            (500, []),
            (500, []),
            (500, []),
            (500, []),
        ]
    )
    with pytest.raises(ReconnectFailed) as caught:
        broker.perform(client.stream("c")._steps())
    assert caught.value.attempts == 3 and caught.value.last_event_id == "1-0"
    assert {o.headers.get("Last-Event-ID") for o in broker.of(OpenStream)[1:]} == {"1-0"}
    delays = [s.seconds for s in broker.of(Sleep)]
    assert 0.5 <= delays[0] <= 1.0  # a cut: jitter under the first ceiling (retry: 1 s)
    assert delays[1] == 2.0  # a 503 waits at least its Retry-After
    assert len(broker.of(ReadBody)) == 5  # every error answer is read for its code


def test_a_refusal_ends_the_stream_at_once(client: BrokerClient) -> None:
    broker = Broker(connections=[(404, [])])
    with pytest.raises(NotFound):
        broker.perform(client.stream("c")._steps())
    assert broker.of(Sleep) == []


def test_no_active_run_and_a_run_resumed_after_its_end_yield_nothing(client: BrokerClient) -> None:
    idle = Broker(connections=[(204, [])])
    idle.perform(client.stream_run("c")._steps())
    assert idle.items == [] and len(idle.of(OpenStream)) == 1
    snapshot = {
        "conversation_id": "c",
        "messages": [],
        "active_run_id": None,
        "last_event_id": "9-0",
    }
    ended = Broker(connections=[(200, [b": keepalive\n\n"])], answers=[_json(200, snapshot)])
    ended.perform(client.stream_run("c", "r", after="9-0")._steps())
    assert ended.items == [] and ended.of(Sleep) == []
    assert [r.path for r in ended.of(Request)] == ["/v1/conversations/c"]


def test_error_events_end_the_stream_with_their_exception(client: BrokerClient) -> None:
    expired = Broker(
        connections=[
            (200, [_delta("1-0", "a"), _sse("error", None, code="token_expired", message="m")])
        ]
    )
    with pytest.raises(TokenExpired) as caught:
        expired.perform(client.stream("c")._steps())
    assert caught.value.last_event_id == "1-0"
    deleted = Broker(
        connections=[(200, [_sse("error", None, code="conversation_deleted", message="m")])]
    )
    with pytest.raises(StreamEndedError) as ended:
        deleted.perform(client.stream("c")._steps())
    assert ended.value.code == "conversation_deleted"


# ----- an answer -----


def test_an_answer_folds_its_own_run_only() -> None:
    accepted = MessageAccepted(**ACCEPTED)
    events = [
        Delta("other", "no", "content"),
        Delta("r", "think", "reasoning"),
        Delta("r", "Hel", "content"),
        Delta("r", "lo", "content"),
        RunCompleted("other", "stop"),
        RunCompleted("r", "stop"),
    ]
    answer = broker.client.Answer(accepted, iter(events))  # type: ignore[arg-type]
    assert list(answer) == ["Hel", "lo"]
    assert (answer.text, answer.reasoning, answer.outcome) == ("Hello", "think", events[-1])
    cut = [Delta("r", "a", "content"), RunFailed("r", ErrorInfo("upstream_error", "gone"))]
    failed = broker.client.Answer(accepted, iter(cut))  # type: ignore[arg-type]
    with pytest.raises(RunFailedError) as caught:
        list(failed)
    assert caught.value.code == "upstream_error" and caught.value.run_id == "r"
    assert failed.text == "a" and isinstance(failed.outcome, RunFailed)


# ----- the faces -----


def _handler(calls: list[httpx.Request]) -> Callable[[httpx.Request], httpx.Response]:
    """A broker that accepts a message, then serves its run's stream in two connections: the
    first is cut after one event, the second (resumed after it) ends with the terminal event."""

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if request.method == "POST":
            return _json(202, ACCEPTED)
        if "last-event-id" not in request.headers:
            return httpx.Response(200, content=b"retry: 0\n\n" + _delta("1-0", "Hel"))
        return httpx.Response(200, content=_delta("1-1", "lo") + _completed("1-2"))

    return handle


def _check(calls: list[httpx.Request], pieces: list[str], answer: Any) -> None:
    assert pieces == ["Hel", "lo"] and answer.text == "Hello"
    assert isinstance(answer.outcome, RunCompleted)
    assert [(r.method, r.url.path, r.headers.get("last-event-id")) for r in calls] == [
        ("POST", "/v1/conversations/c/messages", None),
        ("GET", "/v1/conversations/c/runs/r/stream", None),
        ("GET", "/v1/conversations/c/runs/r/stream", "1-0"),
    ]
    assert all(r.headers["authorization"] == "Bearer secret" for r in calls)


def test_the_blocking_face_performs_the_steps() -> None:
    calls: list[httpx.Request] = []
    http = httpx.Client(
        base_url="http://broker.invalid", transport=httpx.MockTransport(_handler(calls))
    )
    with BrokerClient("http://broker.invalid", "secret", http=http) as client:
        answer = client.ask("c", "hi")
        pieces = list(answer)
    _check(calls, pieces, answer)


@pytest.mark.anyio
async def test_the_asyncio_face_performs_the_same_steps() -> None:
    calls: list[httpx.Request] = []
    http = httpx.AsyncClient(
        base_url="http://broker.invalid", transport=httpx.MockTransport(_handler(calls))
    )
    async with AsyncBrokerClient("http://broker.invalid", "secret", http=http) as client:
        answer = await client.ask("c", "hi")
        pieces = [piece async for piece in answer]
    _check(calls, pieces, answer)


def test_a_transport_failure_reaches_the_caller_as_broker_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    http = httpx.Client(base_url="http://broker.invalid", transport=httpx.MockTransport(refuse))
    with BrokerClient("http://broker.invalid", http=http) as client:
        with pytest.raises(BrokerUnavailable) as caught:
            client.snapshot("c")
    assert caught.value.reason == "ConnectError"
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


@pytest.mark.anyio
async def test_send_takes_the_same_options_on_both_faces_and_refuses_a_misspelt_one() -> None:
    calls: list[httpx.Request] = []
    options: dict[str, Any] = {"model": "simulated", "params": {"tokens": 3}}
    transport = httpx.MockTransport(_handler(calls))
    with BrokerClient(
        http=httpx.Client(base_url="http://b.invalid", transport=transport)
    ) as client:
        client.send("c", "hi", idempotency_key="k1", **options)
        with pytest.raises(TypeError, match="modle"):
            client.send("c", "hi", modle="simulated")  # type: ignore[call-arg]
    http = httpx.AsyncClient(base_url="http://b.invalid", transport=transport)
    async with AsyncBrokerClient(http=http) as aclient:
        await aclient.send("c", "hi", idempotency_key="k2", **options)
        with pytest.raises(TypeError, match="modle"):
            await aclient.send("c", "hi", modle="simulated")  # type: ignore[call-arg]
    expected = {"content": "hi", **options}
    assert [json.loads(r.content) for r in calls] == [expected, expected]
    assert [r.headers["idempotency-key"] for r in calls] == ["k1", "k2"]


def test_the_former_error_names_are_aliases() -> None:
    assert broker.client.RunFailed is RunFailedError
    assert broker.client.StreamError is StreamEndedError
    assert broker.client.RunFailedEvent is RunFailed
