"""Any other streaming source, SSE or NDJSON, read through extraction rules.

The request is ``POST base_url`` (the full URL) with ``{"model", "messages", "stream": true}``
and the client's params, under the catalogue's ``body`` fields; the key, when there is one, goes
in ``api_key_header`` after ``api_key_prefix``. Each chunk's JSON is read through the entry's
``[extract]`` paths (see ``broker.core.catalogue.Extraction``): answer text, reasoning text, the end
condition, and optionally the finish reason, token counts and an error field. Without an end
condition the end of the body ends the answer, and a cut cannot be told from an end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import msgspec

from broker.core.catalogue import Extraction, ModelSpec
from broker.core.events import Usage
from workers.providers.base import Chunk, Finish, GenerationRequest, Text
from workers.providers.failures import (
    MALFORMED_CHUNK,
    STREAM_CUT,
    UPSTREAM_ERROR,
    UpstreamFailure,
    excerpt,
)
from workers.providers.paths import Path, lookup, parse_path
from workers.providers.remote import RemoteProvider, without_none
from workers.providers.upstream import Body, Upstream


class _Rules:
    """The extraction rules with their paths parsed once."""

    def __init__(self, extract: Extraction) -> None:
        def path(raw: str | None) -> Path | None:
            return parse_path(raw) if raw else None

        self.text = path(extract.text)
        self.reasoning = path(extract.reasoning)
        self.done = path(extract.done)
        self.done_value = extract.done_value
        self.done_data = extract.done_data
        self.done_event = extract.done_event
        self.finish_reason = path(extract.finish_reason)
        self.input_tokens = path(extract.input_tokens)
        self.output_tokens = path(extract.output_tokens)
        self.error = path(extract.error)
        self.has_end = bool(self.done or self.done_data is not None or self.done_event)


def _get(document: Any, path: Path | None) -> Any:
    return lookup(document, path) if path is not None else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class GenericProvider(RemoteProvider):
    def __init__(self, spec: ModelSpec, upstream: Upstream, api_key: str | None) -> None:
        super().__init__(spec, upstream, api_key)
        assert spec.extract is not None  # the catalogue refuses a generic model without one
        self._rules = _Rules(spec.extract)

    async def _frames(self, response: Body) -> AsyncIterator[tuple[str | None, str | bytes]]:
        """(SSE event name or None, data) per frame, whichever framing the entry names."""
        if self.spec.format == "ndjson":
            async with aclosing(response.ndjson()) as lines:
                async for line in lines:
                    yield None, line
        else:
            async with aclosing(response.sse()) as events:
                async for event in events:
                    yield event.event, event.data

    async def _chunks(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        rules = self._rules
        params = self.params(request)
        body = self.body(
            {
                "model": request.upstream_model,
                "messages": [{"role": m.role, "content": m.content} for m in request.messages],
                "stream": True,
                **without_none(
                    {
                        "temperature": params.temperature,
                        "top_p": params.top_p,
                        "max_tokens": params.max_tokens,
                    }
                ),
            }
        )
        auth = (
            {self.spec.api_key_header: self.spec.api_key_prefix + self.api_key}
            if self.api_key
            else {}
        )
        ended = False
        reason: str | None = None
        input_tokens: int | None = None
        output_tokens: int | None = None
        async with self.upstream.post(
            self.spec.base_url,
            headers=self.headers(auth),
            body=body,
            expect_sse=self.spec.format == "sse",
        ) as response:
            async with aclosing(self._frames(response)) as frames:
                async for event_name, data in frames:
                    if rules.done_event and event_name == rules.done_event:
                        ended = True
                        break
                    if (
                        rules.done_data is not None
                        and isinstance(data, str)
                        and data.strip() == rules.done_data
                    ):
                        ended = True
                        break
                    try:
                        document = msgspec.json.decode(data)
                    except msgspec.DecodeError as exc:
                        raise UpstreamFailure(
                            MALFORMED_CHUNK,
                            f"the upstream sent a chunk that could not be read: {exc}",
                        ) from None
                    error = _get(document, rules.error)
                    if error:
                        detail = excerpt(str(error), self.upstream.secrets)
                        raise UpstreamFailure(
                            UPSTREAM_ERROR, f"the upstream reported an error: {detail}"
                        )
                    reasoning = _get(document, rules.reasoning)
                    if isinstance(reasoning, str) and reasoning:
                        yield Text(reasoning, "reasoning")
                    text = _get(document, rules.text)
                    if isinstance(text, str) and text:
                        yield Text(text)
                    found_reason = _get(document, rules.finish_reason)
                    if isinstance(found_reason, str) and found_reason:
                        reason = found_reason
                    input_tokens = _count(_get(document, rules.input_tokens)) or input_tokens
                    output_tokens = _count(_get(document, rules.output_tokens)) or output_tokens
                    if rules.done is not None:
                        value = lookup(document, rules.done)
                        if (
                            (value == rules.done_value)
                            if rules.done_value is not None
                            else bool(value)
                        ):
                            ended = True
                            break
        if rules.has_end and not ended:
            raise UpstreamFailure(STREAM_CUT, "the upstream stream ended before its end condition")
        usage = None
        if input_tokens is not None or output_tokens is not None:
            usage = Usage(input_tokens or 0, output_tokens or 0)
        yield Finish(reason or "stop", usage)
