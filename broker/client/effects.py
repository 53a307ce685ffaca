"""The I/O that the client's steps ask for, and how a face performs steps.

The calls of ``broker.client.core`` are generators that yield these requests and receive their
results; ``Run`` advances one such generator for a face, which does the I/O in between. Nothing
here decides anything: the blocking and the asyncio face differ only in how they do the I/O.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx

from broker.client.tracking import StreamItem

T = TypeVar("T")
H = TypeVar("H", httpx.Client, httpx.AsyncClient)
It = TypeVar("It")


@dataclass(frozen=True, slots=True)
class Request:
    """Send a request and read its whole answer; the result is the ``httpx.Response``."""

    method: str
    path: str
    headers: dict[str, str]
    content: bytes | None = None


@dataclass(frozen=True, slots=True)
class OpenStream:
    """Send a GET whose answer is read piece by piece; the result is the ``httpx.Response``, its
    body unread. It stays open until ``CloseStream``, a failure, or the end of the steps."""

    path: str
    headers: dict[str, str]
    timeout: httpx.Timeout


@dataclass(frozen=True, slots=True)
class ReadBody:
    """Read the whole body of the open answer (an error's, to know its code)."""


@dataclass(frozen=True, slots=True)
class ReadChunk:
    """The next piece of the open answer's body; None once the body has ended."""


@dataclass(frozen=True, slots=True)
class CloseStream:
    """Done with the open answer."""


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Emit:
    """Hand ``item`` to the caller of a stream; the steps go on when the caller asks for more."""

    item: StreamItem


Effect = Request | OpenStream | ReadBody | ReadChunk | CloseStream | Sleep
Steps = Generator[Effect, Any, T]
StreamSteps = Generator[Effect | Emit, Any, T]


class Run(Generic[T]):
    """Steps being performed: ``next`` gives the next step, after which the face reports what
    it got (``reply``) or what it raised (``fail``); ``result`` once ``next`` gave None."""

    def __init__(self, steps: StreamSteps[T]) -> None:
        self._steps = steps
        self._reply: Any = None
        self._failure: Exception | None = None
        self.result: T

    def next(self) -> Effect | Emit | None:
        reply, failure = self._reply, self._failure
        self._reply = self._failure = None
        try:
            if failure is not None:
                return self._steps.throw(failure)
            return self._steps.send(reply)
        except StopIteration as done:
            self.result = done.value
            return None

    def reply(self, value: Any) -> None:
        self._reply = value

    def fail(self, error: Exception) -> None:
        """The step raised ``error``: it is raised in the steps, where they asked for it."""
        self._failure = error


class PerformerCore(Generic[H, It]):
    """What a face's performer of steps holds: its HTTP client, and the answer an
    ``OpenStream`` opened, with the iterator ``It`` of its body's pieces. That answer stays open
    until ``CloseStream``, a failure, or the end of the steps."""

    def __init__(self, http: H) -> None:
        self._http: H = http
        self._response: httpx.Response | None = None
        self._chunks: It | None = None
