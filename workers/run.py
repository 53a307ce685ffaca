"""What an application's generator gets: the run's input, and the calls that emit its output.

A generator is ``async def agent(run: Run) -> None``. Everything it emits goes through the
same coalescing relay as a built-in model's tokens: an emit gathers the output in the
generator's own task and returns without a task switch; the run's timer appends it. Each emit
is also a cancellation point: once the run is cancelled (from any device), the next emit or any
other ``await`` raises the cancellation into the generator, its ``finally`` blocks run, and the
worker appends ``run.cancelled``.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any

from broker.core.events import Usage
from workers.providers.base import (
    Chunk,
    DataValue,
    Failure,
    Finish,
    GenerationRequest,
    Message,
    Output,
    Provider,
    Text,
    ToolCallDelta,
    ToolCallWhole,
    ToolOutput,
)
from workers.relay import Generation, Outcome

# What a generator needs, importable from this one module.
__all__ = [
    "Chunk",
    "DataValue",
    "Failure",
    "Finish",
    "GeneratorFailure",
    "Message",
    "Run",
    "Text",
    "ToolCallDelta",
    "ToolCallWhole",
    "ToolOutput",
    "Usage",
]


class GeneratorFailure(Exception):
    """Raise it to end the run with ``run.failed`` carrying this code and message as they are.

    Any other exception ends the run with the code ``generator_error`` and only the
    exception's type in the message: its text may hold what no client should read.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


class Run:
    """One run of a generator: its input, its output calls, and how it finished.

    ``finish_reason`` (default ``"stop"``) and ``usage`` go into ``run.completed`` when the
    generator returns.
    """

    def __init__(
        self,
        generation: Generation,
        request: GenerationRequest,
        *,
        conversation_id: str,
        run_id: str,
        models: Mapping[str, Provider],
        upstream_names: Mapping[str, str],
    ) -> None:
        self._generation = generation
        self._models = models
        self._upstream_names = upstream_names
        self.conversation_id = conversation_id
        self.run_id = run_id
        self.model_name = request.model
        self.prompt = request.content
        self.history: tuple[Message, ...] = request.history
        self.params: dict[str, Any] = request.params
        self.finish_reason = "stop"
        self.usage: Usage | None = None

    # -- output ------------------------------------------------------------------------------

    async def text(self, text: str) -> None:
        """Append to the answer."""
        await self._emit(Text(text))

    async def reasoning(self, text: str) -> None:
        """Append to the reasoning shown apart from the answer."""
        await self._emit(Text(text, "reasoning"))

    async def tool_call_delta(self, call_id: str, name: str, arguments_delta: str) -> None:
        """Stream the next piece of a call's arguments (JSON text); end with ``tool_call``."""
        await self._emit(ToolCallDelta(call_id, name, arguments_delta))

    async def tool_call(self, call_id: str, name: str, arguments: Any) -> None:
        """Record a whole tool call: after its streamed pieces, or on its own."""
        await self._emit(ToolCallWhole(call_id, name, arguments))

    async def tool_result(self, call_id: str, result: Any, is_error: bool = False) -> None:
        """Record what a tool call gave back: any JSON value, or text."""
        await self._emit(ToolOutput(call_id, result, is_error))

    async def data(self, name: str, value: Any) -> None:
        """Send a named JSON value (citations, progress, UI state) to the client."""
        await self._emit(DataValue(name, value))

    async def emit(self, output: Output) -> None:
        """Emit any output chunk (what the named calls above build)."""
        await self._emit(output)

    def new_call_id(self) -> str:
        return "call_" + secrets.token_urlsafe(9)

    async def _emit(self, output: Output) -> None:
        self._generation.add(output)
        await self._generation.emitted()

    # -- catalogue models ----------------------------------------------------------------

    @property
    def models(self) -> list[str]:
        """The catalogue models this generator may call."""
        return sorted(self._models)

    def model(
        self,
        name: str,
        *,
        prompt: str | None = None,
        history: tuple[Message, ...] | list[Message] | None = None,
        params: dict[str, Any] | None = None,
    ) -> AsyncIterator[Chunk]:
        """Stream one answer of a catalogue model: ``Text``, tool calls, then ``Finish`` or
        ``Failure``. Nothing reaches the client unless forwarded (``forward``) or emitted.

        By default the model answers this run's prompt with its history and no params.
        Closing the iterator (or the run being cancelled) closes the model call.
        """
        provider = self._models.get(name)
        if provider is None:
            raise LookupError(f"no catalogue model {name!r} (generators cannot call generators)")
        request = GenerationRequest(
            name,
            self.prompt if prompt is None else prompt,
            dict(params or {}),
            self.history if history is None else tuple(history),
            self._upstream_names.get(name, name),
        )
        return provider.stream(request)

    async def forward(self, chunks: AsyncIterator[Chunk]) -> Finish | Failure:
        """Relay a model's text, reasoning and tool calls into this run as they come.

        Returns how the model's answer ended; a model failure is returned, not raised, so the
        generator decides (``raise GeneratorFailure(failure.code, failure.message)`` to pass it
        on). A stream that ends without either counts as a failure.
        """
        return await self._generation.relay(chunks)

    async def collect(
        self, chunks: AsyncIterator[Chunk]
    ) -> tuple[str, list[ToolCallWhole], Outcome]:
        """Read a model's answer without forwarding it: its text, its whole tool calls, its end."""
        text: list[str] = []
        calls: list[ToolCallWhole] = []
        async with aclosing(chunks):
            async for chunk in chunks:
                if isinstance(chunk, (Finish, Failure)):
                    return "".join(text), calls, chunk
                if isinstance(chunk, Text) and chunk.channel == "content":
                    text.append(chunk.text)
                elif isinstance(chunk, ToolCallWhole):
                    calls.append(chunk)
        return "".join(text), calls, Failure("provider_error", "the model's stream ended early")
