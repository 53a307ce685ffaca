"""Request bodies: read within the size limit, decode JSON into a wire Struct.

Every route that takes a JSON body goes through ``json_body`` (or its two halves), so every one
of them answers the same documented errors for the same bad input: 413 past the limit, 400
``malformed_json`` for anything that is not one JSON object (nesting too deep to decode
included), 415 ``unsupported_media_type`` unless ``Content-Type`` says JSON, 422
``invalid_field`` for a field of the wrong shape or a field the body does not take.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from starlette.requests import Request

from broker.core.errors import (
    BODY_TOO_LARGE,
    INVALID_FIELD,
    MALFORMED_JSON,
    UNSUPPORTED_MEDIA_TYPE,
    ApiError,
)

T = TypeVar("T")


def require_json(request: Request) -> None:
    """Refuse a body not declared as JSON: a form or text body posted by mistake (``curl -d``
    sends ``application/x-www-form-urlencoded``) would otherwise be read as JSON by accident."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json" and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        raise ApiError(
            UNSUPPORTED_MEDIA_TYPE,
            "send the body as JSON, with Content-Type: application/json",
        )


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(BODY_TOO_LARGE, f"the body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(BODY_TOO_LARGE, f"the body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def decode_json_object(body: bytes, into: type[T]) -> T:
    """Decode a JSON object into ``into`` (a msgspec Struct or another type msgspec converts).

    A body nested deeper than the interpreter's recursion limit (about 1,000 levels, a 2 KB
    body) cannot be decoded: it is malformed input like any other, not a server error.
    """
    try:
        raw: Any = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise ApiError(MALFORMED_JSON, "the body is not valid JSON") from None
    except RecursionError:
        raise ApiError(MALFORMED_JSON, "the body is nested too deeply") from None
    if not isinstance(raw, dict):
        raise ApiError(MALFORMED_JSON, "the body must be a JSON object")
    try:
        return msgspec.convert(raw, into)
    except msgspec.ValidationError as exc:
        raise ApiError(INVALID_FIELD, str(exc)) from None
    except RecursionError:
        raise ApiError(MALFORMED_JSON, "the body is nested too deeply") from None


async def json_body(request: Request, into: type[T], limit: int) -> T:
    """Read and decode a request's JSON object body: the one way routes take JSON."""
    require_json(request)
    return decode_json_object(await read_body(request, limit), into)
