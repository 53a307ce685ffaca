"""The HTTP side shared by the blocking and the asyncio client: paths, headers, bodies, and
turning an answer into a result or a typed exception. No I/O here."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import msgspec

from broker.client.errors import BrokerError, error_for

_encoder = msgspec.json.Encoder()

# Retried with the same Idempotency-Key, so a retry never starts a second run.
SEND_ATTEMPTS = 3


def conversation_path(cid: str) -> str:
    return f"/v1/conversations/{quote(cid, safe='')}"


def run_path(cid: str, run_id: str) -> str:
    return f"{conversation_path(cid)}/runs/{quote(run_id, safe='')}"


def cancel_path(cid: str, run_id: str | None, wait: bool) -> str:
    path = f"{run_path(cid, run_id)}/cancel" if run_id else f"{conversation_path(cid)}/cancel"
    return path + ("?wait=true" if wait else "")


def list_path(limit: int | None, cursor: str | None) -> str:
    query = {
        name: value for name, value in (("limit", limit), ("cursor", cursor)) if value is not None
    }
    return "/v1/conversations" + ("?" + urlencode(query) if query else "")


def checked_token(token: str | None) -> str | None:
    """A token fit for a header, refused here without echoing it: an HTTP library's encoding
    error would carry the whole token into a traceback or a terminal."""
    if token is not None and not (token.isascii() and token.isprintable() and " " not in token):
        raise ValueError("the token holds characters a bearer token cannot have")
    return token


def auth_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def stream_headers(token: str | None, last_event_id: str | None) -> dict[str, str]:
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache", **auth_headers(token)}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    return headers


def message_body(content: str, model: str | None, params: dict[str, Any] | None) -> bytes:
    body: dict[str, Any] = {"content": content}
    if model is not None:
        body["model"] = model
    if params:
        body["params"] = params
    return _encoder.encode(body)


def send_headers(token: str | None, idempotency_key: str | None) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Idempotency-Key": idempotency_key or uuid.uuid4().hex,
        **auth_headers(token),
    }


def retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


def error_of(response: httpx.Response) -> BrokerError:
    """The typed exception for a non-success answer whose body has been read."""
    code, message = f"http_{response.status_code}", response.reason_phrase or "refused"
    try:
        error = msgspec.json.decode(response.content)["error"]
        code, message = str(error["code"]), str(error["message"])
    except (msgspec.DecodeError, KeyError, TypeError):
        pass
    return error_for(response.status_code, code, message, retry_after(response))


def retriable(error: BrokerError) -> bool:
    """Worth trying again later as it is: overload, rate limits, a store outage."""
    return error.status == 429 or error.status >= 500
