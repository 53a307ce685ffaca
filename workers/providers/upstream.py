"""One streaming HTTP call to a model upstream: retries, timeouts, status mapping, framing.

The call is a context manager around the httpx response, so leaving it for any reason (the
answer ended, a failure, the run was cancelled and the provider's generator closed) closes the
response. A response abandoned mid-body is not returned to the pool: its connection is closed,
which is how the upstream learns to stop generating.

Timeouts are kept here rather than in httpx, because httpx's read timeout cannot tell the wait
for the first byte (a reasoning model may think for minutes) from silence mid-stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import msgspec

from broker.core.catalogue import ModelSpec
from broker.core.settings import Settings
from workers.providers.failures import (
    STREAM_CUT,
    TIMEOUT_FIRST_BYTE,
    TIMEOUT_IDLE,
    UPSTREAM_ERROR,
    UpstreamFailure,
    error_text,
    excerpt,
    status_failure,
)
from workers.providers.framing import NdjsonDecoder, SseDecoder, SseEvent

_ERROR_BODY_LIMIT = 64 * 1024
# Failing before any response: the request never reached a model, so trying again is safe.
_RETRYABLE = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
)


@dataclass(frozen=True, slots=True)
class CallPolicy:
    first_byte_timeout: float
    idle_timeout: float
    retries: int
    backoff: float

    @classmethod
    def for_model(cls, settings: Settings, spec: ModelSpec) -> CallPolicy:
        return cls(
            first_byte_timeout=spec.first_byte_timeout_seconds
            or settings.provider_first_byte_timeout_seconds,
            idle_timeout=spec.idle_timeout_seconds or settings.provider_idle_timeout_seconds,
            retries=max(0, settings.provider_connect_retries),
            backoff=max(0.0, settings.provider_retry_backoff_seconds),
        )


def make_client(settings: Settings) -> httpx.AsyncClient:
    """The one client a worker's providers share, so connections to an upstream are reused."""
    connect = settings.provider_connect_timeout_seconds
    return httpx.AsyncClient(
        timeout=httpx.Timeout(connect=connect, read=None, write=connect, pool=None),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
        follow_redirects=False,
    )


class Body:
    """A successful streaming response, read with the first-byte and idle timeouts."""

    def __init__(
        self, response: httpx.Response, first_byte_deadline: float, idle_timeout: float
    ) -> None:
        self._response = response
        self._deadline = first_byte_deadline
        self._idle = idle_timeout

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive; a transport error mid-body is a cut stream."""
        first = True
        async with aclosing(self._response.aiter_bytes()) as pieces:
            while True:
                wait = self._deadline - anyio.current_time() if first else self._idle
                with anyio.move_on_after(max(0.0, wait)) as scope:
                    try:
                        piece = await pieces.__anext__()
                    except StopAsyncIteration:
                        return
                    except httpx.TransportError as exc:
                        raise UpstreamFailure(
                            STREAM_CUT,
                            f"the upstream connection broke mid-answer ({type(exc).__name__})",
                        ) from None
                if scope.cancelled_caught:
                    if first:
                        raise UpstreamFailure(
                            TIMEOUT_FIRST_BYTE,
                            "the upstream sent nothing before the first-byte timeout",
                        )
                    raise UpstreamFailure(
                        TIMEOUT_IDLE, f"the upstream went silent mid-answer for {self._idle:g} s"
                    )
                if piece:
                    first = False
                    yield piece

    async def sse(self, decoder: SseDecoder | None = None) -> AsyncIterator[SseEvent]:
        """Complete SSE events; the iteration ends at the end of the body. A caller that needs
        what was not an event (``decoder.stray``) passes its own decoder."""
        decoder = decoder or SseDecoder()
        async with aclosing(self.chunks()) as pieces:
            async for piece in pieces:
                for event in decoder.feed(piece):
                    yield event

    async def ndjson(self) -> AsyncIterator[bytes]:
        """Complete JSON lines; an unterminated last line counts only if it is whole JSON."""
        decoder = NdjsonDecoder()
        async with aclosing(self.chunks()) as pieces:
            async for piece in pieces:
                for line in decoder.feed(piece):
                    yield line
        rest = decoder.rest()
        if rest:
            try:
                msgspec.json.decode(rest)
            except msgspec.DecodeError:
                raise UpstreamFailure(
                    STREAM_CUT, "the upstream stream ended in the middle of a line"
                ) from None
            yield rest


class Upstream:
    """Streaming POSTs to one model's upstream, under that model's call policy.

    ``secrets`` (the API key, the extra header values) are redacted from every message built
    from upstream text.
    """

    def __init__(
        self, client: httpx.AsyncClient, policy: CallPolicy, secrets: tuple[str, ...] = ()
    ) -> None:
        self._client = client
        self._policy = policy
        self.secrets = secrets

    @asynccontextmanager
    async def post(
        self, url: str, *, headers: dict[str, str], body: dict[str, Any], expect_sse: bool = True
    ) -> AsyncIterator[Body]:
        """Send the request and yield its body once the upstream answered 2xx.

        Connection errors before a response are retried with doubling backoff; a non-2xx
        answer raises the failure its status means.
        """
        policy = self._policy
        content = msgspec.json.encode(body)
        headers = {
            "content-type": "application/json",
            "accept": "text/event-stream" if expect_sse else "application/x-ndjson",
            "accept-encoding": "identity",
            **headers,
        }
        attempt = 0
        while True:
            deadline = anyio.current_time() + policy.first_byte_timeout
            request = self._client.build_request("POST", url, headers=headers, content=content)
            response: httpx.Response | None = None
            with anyio.move_on_after(policy.first_byte_timeout) as scope:
                try:
                    response = await self._client.send(request, stream=True)
                except _RETRYABLE as exc:
                    if attempt >= policy.retries:
                        raise UpstreamFailure(
                            UPSTREAM_ERROR,
                            f"could not reach the upstream after {attempt + 1} attempt(s): "
                            f"{type(exc).__name__}: {excerpt(str(exc), self.secrets)}",
                        ) from None
                except httpx.HTTPError as exc:
                    # The request could not be sent as built (an illegal header value, a bad
                    # URL): the library's text quotes the request, headers and key included,
                    # so only the kind of error is told.
                    raise UpstreamFailure(
                        UPSTREAM_ERROR,
                        f"the upstream call failed: {type(exc).__name__} "
                        "(the request could not be sent; check the model's URL, headers and key)",
                    ) from None
            if scope.cancelled_caught:
                raise UpstreamFailure(
                    TIMEOUT_FIRST_BYTE, "the upstream did not answer before the first-byte timeout"
                )
            if response is not None:
                break
            await anyio.sleep(policy.backoff * (2**attempt))
            attempt += 1
        try:
            if response.status_code >= 300:
                raise status_failure(
                    response.status_code,
                    response.headers,
                    await self._error_body(response),
                    self.secrets,
                )
            content_type = response.headers.get("content-type", "")
            if expect_sse and content_type.startswith("application/json"):
                detail = excerpt(error_text(await self._error_body(response)), self.secrets)
                raise UpstreamFailure(
                    UPSTREAM_ERROR, f"the upstream answered JSON, not a stream: {detail}"
                )
            yield Body(response, deadline, policy.idle_timeout)
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()

    async def _error_body(self, response: httpx.Response) -> bytes:
        """Up to 64 KiB of an error answer, read within the idle timeout."""
        collected = bytearray()
        with anyio.move_on_after(self._policy.idle_timeout):
            try:
                async with aclosing(response.aiter_bytes()) as pieces:
                    async for piece in pieces:
                        collected += piece
                        if len(collected) >= _ERROR_BODY_LIMIT:
                            break
            except httpx.HTTPError:
                pass
        return bytes(collected[:_ERROR_BODY_LIMIT])
