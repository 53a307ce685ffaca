"""What the HTTP providers share: a catalogue entry, its upstream, its key, and chunk decoding."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar

import msgspec

from broker.core.catalogue import ModelParams, ModelSpec, ToolSpec
from workers.providers.base import Chunk, GenerationRequest
from workers.providers.failures import BAD_REQUEST, MALFORMED_CHUNK, UpstreamFailure, guarded
from workers.providers.upstream import Upstream

T = TypeVar("T")


class RemoteProvider:
    """A provider streaming from an HTTP upstream described by one catalogue entry.

    Subclasses write ``_chunks``: build the vendor's request, read its stream, yield ``Text``
    and a final ``Finish``, raise ``UpstreamFailure`` for anything else.
    """

    def __init__(self, spec: ModelSpec, upstream: Upstream, api_key: str | None) -> None:
        self.spec = spec
        self.upstream = upstream
        self.api_key = api_key or None

    def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        return guarded(self._chunks(request), self.upstream.secrets)

    def _chunks(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        raise NotImplementedError

    def params(self, request: GenerationRequest) -> ModelParams:
        try:
            return msgspec.convert(request.params, ModelParams)
        except msgspec.ValidationError as exc:
            raise UpstreamFailure(BAD_REQUEST, f"params: {exc}") from None

    def url(self, path: str) -> str:
        return self.spec.url_root() + path

    def headers(self, auth: dict[str, str]) -> dict[str, str]:
        return {**self.spec.headers, **auth}

    def body(self, built: dict[str, Any]) -> dict[str, Any]:
        """The request body: the catalogue's ``body`` fields under what this request sets."""
        return deep_merge(self.spec.body, built)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def without_none(fields: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def decode_chunk(decoder: msgspec.json.Decoder[T], data: str | bytes) -> T:
    """Decode one chunk; anything unreadable is a malformed chunk (its text is not echoed)."""
    try:
        return decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise UpstreamFailure(
            MALFORMED_CHUNK, f"the upstream sent a chunk that could not be read: {exc}"
        ) from None


def tool_arguments(text: str) -> Any:
    """A streamed call's whole arguments: the JSON value, ``{}`` for none, else the raw text.

    Models do produce invalid JSON now and then; the client gets what was said, not a failure.
    """
    if not text.strip():
        return {}
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        return text


def object_schema(tool: ToolSpec) -> dict[str, Any]:
    """The tool's argument schema, or the schema of "no arguments" when it has none."""
    return tool.parameters or {"type": "object", "properties": {}}
