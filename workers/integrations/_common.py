"""What the three framework integrations share: one module, so they cannot drift apart.

- ``require``: the framework's lazy import, with an ImportError that names the extra to install.
- ``ToolCalls``: a run's tool calls as a framework streams them (argument pieces, the whole call
  once, its result once), so each integration only says what it saw.
- ``failing``: the framework's exceptions turned into ``GeneratorFailure`` with a stable code and
  a message built from fixed text (never the exception's own text, which may hold a key or a
  customer's data); cancellation and the relay's stops pass through untouched.
- ``own_task``: the framework's run in an asyncio task of its own, cancelled the way asyncio
  code expects when the run stops, and given a moment to close what it has open.
- ``history``: the conversation's earlier turns in the framework's own message type.
- ``turns_to_request`` and ``tool_specs``: what a framework's model adapter needs to ask a
  catalogue model (the broker's ``run.model``) instead of its own client.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

import anyio
import msgspec

from broker.core.events import Usage
from workers.providers.base import Failure, Message
from workers.providers.failures import code_for_status
from workers.relay import CancelRequested, RunGone
from workers.run import GeneratorFailure, Run

log = logging.getLogger(__name__)

T = TypeVar("T")

# The codes an integration ends a run with, beside the providers' HTTP codes (``auth_failed``,
# ``rate_limited``, ``overloaded``, ``bad_request``, ``upstream_error``), which a framework's model
# error with a status maps to as a built-in model's does.
TOOL_ERROR = "tool_error"
LIMIT_EXCEEDED = "limit_exceeded"
MODEL_BEHAVIOR = "model_behavior"
MODEL_TIMEOUT = "model_timeout"
GUARDRAIL = "guardrail_tripped"
AGENT_ERROR = "agent_error"

# What a client reads as a tool's error result when the tool raised: its exception's type only.
_TOOL_RAISED = "the tool raised {}"


def require(module: str, extra: str) -> ModuleType:
    """Import one of the framework's modules, or say which extra brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"this integration needs {module.split('.')[0]!r}: "
            f'pip install "llm-stream-broker[{extra}]"'
        ) from exc


# -- values ----------------------------------------------------------------------------------


def parse_arguments(text: str) -> Any:
    """A call's argument text as JSON, or the text itself when it is not JSON."""
    if not text:
        return {}
    try:
        return json.loads(text)
    except ValueError:
        return text


def jsonable(value: Any) -> Any:
    """A JSON value for an event: dataclasses, msgspec Structs, pydantic models, or text."""
    try:
        return msgspec.json.decode(msgspec.json.encode(value, enc_hook=_encode_other))
    except (TypeError, ValueError, msgspec.EncodeError):
        return str(value)


def _encode_other(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)  # pydantic models, which the frameworks return
    if callable(dump):
        return dump(mode="json")
    raise TypeError(type(value).__name__)


def usage(input_tokens: int | None, output_tokens: int | None, reasoning: int | None = None):
    """The broker's ``Usage``, or None when the framework counted nothing."""
    if not input_tokens and not output_tokens:
        return None
    return Usage(
        int(input_tokens or 0), int(output_tokens or 0), int(reasoning) if reasoning else None
    )


def history(
    messages: Sequence[Message], user: Callable[[str], T], assistant: Callable[[str], T]
) -> list[T]:
    """The earlier turns (``run.history``) as the framework's own messages, oldest first."""
    return [user(m.content) if m.role == "user" else assistant(m.content) for m in messages]


# -- tool calls ------------------------------------------------------------------------------


@dataclass
class _Call:
    name: str
    whole: bool = False
    answered: bool = False


class ToolCalls:
    """One run's tool calls, each under the framework's own call id.

    Pieces of a call's arguments go out as they stream; the whole call goes out once (the
    frameworks report it more than once: at the end of the model's stream and again when the
    tool starts); a result goes out once. A call whose tool was running when the run failed is
    answered with an error result first, so a client never shows it as still running.
    """

    def __init__(self, run: Run) -> None:
        self._run = run
        self._calls: dict[str, _Call] = {}

    def known(self, call_id: str) -> bool:
        return call_id in self._calls

    def name(self, call_id: str) -> str | None:
        call = self._calls.get(call_id)
        return call.name if call else None

    async def piece(self, call_id: str, name: str, text: str) -> None:
        call = self._calls.setdefault(call_id, _Call(name))
        if text and not call.whole:
            await self._run.tool_call_delta(call_id, call.name, text)

    async def whole(self, call_id: str, name: str, arguments: Any) -> None:
        call = self._calls.setdefault(call_id, _Call(name))
        if call.whole:
            return
        call.whole = True
        if isinstance(arguments, str):
            arguments = parse_arguments(arguments)
        await self._run.tool_call(call_id, call.name, jsonable(arguments))

    async def result(self, call_id: str, result: Any, is_error: bool = False) -> None:
        call = self._calls.setdefault(call_id, _Call("", whole=True))
        if call.answered:
            return
        call.answered = True
        await self._run.tool_result(call_id, jsonable(result), is_error)

    def running(self) -> list[str]:
        """Calls made whole and not answered: their tools were started."""
        return [cid for cid, call in self._calls.items() if call.whole and not call.answered]

    async def raised(self, exception: BaseException) -> None:
        for call_id in self.running():
            await self.result(call_id, _TOOL_RAISED.format(type(exception).__name__), True)


# -- cancellation --------------------------------------------------------------------------

# How long a stopped run waits for the framework to close its model stream and its tools.
CLOSE_SECONDS = 5.0


async def own_task(work: Awaitable[T]) -> T:
    """Run ``work`` in an asyncio task of its own; when the run stops, cancel it once and wait.

    The worker stops a run by cancelling its anyio scope, and anyio cancels again at every
    ``await`` until the scope is left. The frameworks are asyncio code: on a cancel they close
    their model stream and cancel their node and tool tasks, awaiting as they go, and a second
    cancel in the middle of that cleanup leaves a tool running. Here the framework's task is
    cancelled once, as asyncio does, and awaited (bounded) before the stop goes on.
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except BaseException:
        if not task.done():
            task.cancel()
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_SECONDS):
                await asyncio.wait([task])
        raise


# -- failures --------------------------------------------------------------------------------

# Whatever stops a run from outside: the framework must never turn these into its own errors,
# and neither may the integration.
_STOPS = (CancelRequested, RunGone, GeneratorFailure)


def _stop_within(exc: BaseException) -> BaseException | None:
    """The cancellation or relay stop inside ``exc`` (itself, or one member of a group)."""
    if isinstance(exc, (anyio.get_cancelled_exc_class(), *_STOPS)):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for member in exc.exceptions:
            found = _stop_within(member)
            if found is not None:
                return found
    return None


def http_failure(status: int | None, what: str = "the model") -> Failure:
    """A model's HTTP error, with the code a built-in model's would have."""
    if status is None:
        return Failure("upstream_error", f"{what} could not be reached")
    return Failure(code_for_status(status), f"{what} answered HTTP {status}")


Classifier = Callable[[Exception], Failure | None]


@asynccontextmanager
async def failing(classify: Classifier, tools: ToolCalls, framework: str) -> AsyncIterator[None]:
    """Turn what the framework raises into ``GeneratorFailure``; let every stop through.

    ``classify`` knows the framework's own errors; an exception it does not know, raised while a
    tool was running, is that tool's (``tool_error``), anything else is ``agent_error``. The
    worker's log keeps the whole exception for the operator.
    """
    try:
        yield
    except Exception as exc:
        stop = _stop_within(exc)
        if stop is not None:
            raise stop from None
        failure = classify(exc)
        if failure is None and tools.running():
            await tools.raised(exc)
            failure = Failure(TOOL_ERROR, f"a tool raised {type(exc).__name__}")
        if failure is None:
            failure = Failure(AGENT_ERROR, f"the {framework} agent raised {type(exc).__name__}")
        log.warning("%s agent failed: %s", framework, failure.code, exc_info=exc)
        raise GeneratorFailure(failure.code, failure.message) from None


# -- catalogue models ------------------------------------------------------------------------


def turns_to_request(turns: Iterable[tuple[str, str]]) -> tuple[str, tuple[Message, ...]]:
    """A framework's transcript as a catalogue model's request: the last user text is the
    prompt, everything before it the history.

    The catalogue's providers take text turns only, so an integration flattens tool calls and
    results into text first; consecutive turns of one role are joined, since the vendors' chat
    APIs expect user and assistant to alternate.
    """
    merged: list[list[str]] = []
    for role, text in turns:
        role = "assistant" if role == "assistant" else "user"
        if not text:
            continue
        if merged and merged[-1][0] == role:
            merged[-1][1] += "\n\n" + text
        else:
            merged.append([role, text])
    if merged and merged[-1][0] == "user":
        prompt = merged.pop()[1]
    else:
        prompt = ""
    return prompt, tuple(Message(role, text) for role, text in merged)  # type: ignore[arg-type]


def tool_specs(tools: Iterable[tuple[str, str | None, dict[str, Any] | None]]) -> list[dict]:
    """The catalogue's ``params.tools`` from (name, description, JSON Schema) triples."""
    specs = []
    for name, description, parameters in tools:
        spec: dict[str, Any] = {"name": name}
        if description:
            spec["description"] = description
        if parameters:
            spec["parameters"] = parameters
        specs.append(spec)
    return specs


def tool_call_text(name: str, arguments: Any) -> str:
    """A tool call in a text transcript, for a catalogue model that takes text turns only."""
    return f"[tool call {name}: {json.dumps(jsonable(arguments), ensure_ascii=False)}]"


def tool_result_text(name: str | None, result: Any) -> str:
    value = result if isinstance(result, str) else json.dumps(jsonable(result), ensure_ascii=False)
    return f"[tool result{' ' + name if name else ''}: {value}]"
