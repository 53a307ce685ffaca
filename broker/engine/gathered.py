"""Script calls gathered into one pipeline with the calls other tasks make at the same moment."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import anyio
import redis.exceptions

from broker.engine.connections import Client


class Gathered:
    """A script whose calls go to Redis in one pipeline with the calls other tasks of this
    process make at the same moment: the Durable Streams writes of concurrent requests (the
    append and its admission), the appends of a worker's runs whose windows close together.

    Much of what a small write costs after its HTTP handling is redis-py's work per
    command: a connection from the pool, timeouts, retries, about a hundred Python calls
    (80 to 100 us of CPU on the reference machine, against 8 us for the round trip itself),
    which a pipeline pays once for all its commands. The first call that finds nobody
    gathering gathers: it lets every task that is ready run once (those that reach a call of
    the same script join it), then sends them all, shielded from its own cancellation since
    the others wait for it, and hands each its answer or error. Alone, it is a plain call.
    """

    def __init__(self, client: Client, script: Any) -> None:
        self._client = client
        self._script = script
        self._gathering: list[_Pending] | None = None

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        gathering = self._gathering
        if gathering is not None:
            pending = _Pending(keys, args, asyncio.get_running_loop().create_future())
            gathering.append(pending)
            return await pending.answer
        gathering = self._gathering = []
        try:
            await asyncio.sleep(0)
        finally:
            self._gathering = None
            if gathering:
                own = _Pending(keys, args, asyncio.get_running_loop().create_future())
                gathering.insert(0, own)
                with anyio.CancelScope(shield=True):
                    await self._send(gathering)
        if not gathering:
            return await self._script(keys=keys, args=args)
        return gathering[0].answer.result()

    async def _send(self, batch: list[_Pending]) -> None:
        script = self._script
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for pending in batch:
                    # EVALSHA itself: a script registered on the pipeline would cost a
                    # SCRIPT EXISTS round trip first, every time.
                    pipe.evalsha(script.sha, len(pending.keys), *pending.keys, *pending.args)
                replies = await pipe.execute(raise_on_error=False)
            for pending, reply in zip(batch, replies, strict=True):
                if isinstance(reply, redis.exceptions.NoScriptError):
                    # Redis restarted and forgot the script: loaded by a plain call.
                    try:
                        reply = await script(keys=pending.keys, args=pending.args)
                    except Exception as exc:  # that call's own error, for its request
                        reply = exc
                _settle(pending.answer, reply)
        except Exception as exc:  # the pipeline failed as a whole: every call with it
            for pending in batch:
                _settle(pending.answer, exc)


@dataclass(frozen=True, slots=True)
class _Pending:
    """A call waiting to be sent with others (``Gathered``)."""

    keys: list[str]
    args: list[Any]
    answer: asyncio.Future[Any]


def _settle(answer: asyncio.Future[Any], reply: Any) -> None:
    """Give a waiting call its reply, or the error in its place (unless it stopped waiting:
    its request was cancelled)."""
    if answer.done():
        return
    if isinstance(reply, Exception):
        answer.set_exception(reply)
    else:
        answer.set_result(reply)
