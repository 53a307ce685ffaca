"""CORS: which pages on other origins may call the API, and what they may send and read."""

from __future__ import annotations

from collections.abc import Awaitable

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from broker.core.errors import CORS_REFUSED
from broker.core.settings import Settings
from broker.front.http.errors import error_response
from broker.front.security.tokens import SecurityConfigError

# What a page may send: the token, a resume position, a retry key, and the Durable Streams
# request headers; and what it may read back, the Durable Streams response headers included.
ALLOWED_HEADERS = (
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "Last-Event-ID",
    "If-None-Match",
    "Stream-Seq",
    "Stream-TTL",
    "Stream-Expires-At",
    "Stream-Closed",
    "Producer-Id",
    "Producer-Epoch",
    "Producer-Seq",
    "Stream-Forked-From",
    "Stream-Fork-Offset",
    "Stream-Fork-Sub-Offset",
)
EXPOSED_HEADERS = (
    "Retry-After",
    "WWW-Authenticate",
    "X-Request-ID",
    "ETag",
    "Location",
    "Stream-Next-Offset",
    "Stream-Cursor",
    "Stream-Up-To-Date",
    "Stream-Closed",
    "Stream-TTL",
    "Stream-Expires-At",
    "Stream-SSE-Data-Encoding",
    "Producer-Epoch",
    "Producer-Seq",
    "Producer-Expected-Seq",
    "Producer-Received-Seq",
)
ALLOWED_METHODS = ("GET", "HEAD", "PUT", "POST", "DELETE")


class Cors(CORSMiddleware):
    """Starlette's CORS middleware, with two changes: a refused preflight gets the API's JSON
    error, and a request without ``Origin`` (not from a page on another origin) is handed on as
    it is, without a wrapper around every frame of its stream or a frame of this layer."""

    def __call__(  # type: ignore[override]
        self, scope: Scope, receive: Receive, send: Send
    ) -> Awaitable[None]:
        if scope["type"] == "http" and not any(name == b"origin" for name, _ in scope["headers"]):
            return self.app(scope, receive, send)
        return super().__call__(scope, receive, send)

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code == 200:
            return response
        # Starlette keeps the allow-headers on a refusal; a refused preflight grants nothing.
        refused = bytes(response.body).decode().removeprefix("Disallowed CORS ")
        return error_response(
            CORS_REFUSED,
            f"this cross-origin request is not allowed ({refused})",
            {"Vary": response.headers["vary"]},
        )


def cors_options(settings: Settings) -> dict[str, object]:
    """Exact origins only (no wildcard: credentials are allowed, for the session cookie)."""
    origins = [o.strip().rstrip("/") for o in settings.cors_origins.split(",") if o.strip()]
    if "*" in origins:
        raise SecurityConfigError("BROKER_CORS_ORIGINS lists exact origins; '*' is not allowed")
    return {
        "allow_origins": origins,
        "allow_methods": ALLOWED_METHODS,
        "allow_headers": ALLOWED_HEADERS,
        "allow_credentials": True,
        "expose_headers": EXPOSED_HEADERS,
        "max_age": 600,
    }
