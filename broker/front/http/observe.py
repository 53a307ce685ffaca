"""The outermost layer: a request id, the HTTP metrics and one access log line per request.

The request id comes from ``X-Request-ID`` when the client sent a usable one (a proxy's), or
is made here; it is echoed on the answer and set in a context variable, so every line logged
while the request is handled carries it. The route is matched here once, before anything else
runs, so the metrics and the log name the route's path template (never a conversation id in a
label) and every line knows the conversation. An SSE stream is logged and counted once, when
it closes: how long it lasted, how many events it sent, and why it ended.

Nothing from the query string, the headers or the body is logged: tokens, cookies and prompts
never reach a log line from here.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Sequence
from typing import Protocol

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.core import logs
from broker.core.ids import is_valid_path_id
from broker.front.http.metrics import FrontMetrics

log = logging.getLogger("broker.access")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_UNMATCHED = "unmatched"
ACCESS_KEY = "broker.access"
_PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _is_id(value: object) -> bool:
    return isinstance(value, str) and is_valid_path_id(value)


class StreamReport(Protocol):
    """What an open stream tells the access line when it closes (a feed says it)."""

    sent: int  # events sent
    ended: str  # why it ended
    fell_behind: int  # times it fell too far behind the live path


class RequestRecord:
    """What the layers below tell this one about a request: the stream it opened, if any."""

    __slots__ = ("feed",)

    def __init__(self) -> None:
        self.feed: StreamReport | None = None


def access_of(scope: Scope) -> RequestRecord | None:
    return scope.get(ACCESS_KEY)


def _static_prefix(route: BaseRoute) -> str:
    path = getattr(route, "path", None)
    return path.partition("{")[0] if isinstance(path, str) else ""


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex


class Observe:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: FrontMetrics,
        routes: Sequence[BaseRoute],
        access_log: bool = True,
    ) -> None:
        self.app = app
        self.metrics = metrics
        # Each route with the part of its path before the first parameter: a path that does
        # not start with it cannot match, and a string comparison is much cheaper than the
        # route's regular expression (a Durable Streams append would otherwise try some thirty).
        self.routes = [(route, _static_prefix(route)) for route in routes]
        self.access_log = access_log

    def _route(self, scope: Scope) -> tuple[str, str | None]:
        """The route's path template (or ``unmatched``) and the conversation in the path."""
        partial: BaseRoute | None = None
        path = scope["path"]
        # Routes match the path below root_path; with one set, every route is tried.
        rooted = bool(scope.get("root_path"))
        for route, prefix in self.routes:
            if not (rooted or path.startswith(prefix)):
                continue
            match, child = route.matches(scope)
            if match is Match.FULL:
                cid = child.get("path_params", {}).get("cid")
                # Only a well-formed id is logged: a path may carry anything, newlines too.
                return getattr(route, "path", _UNMATCHED), cid if _is_id(cid) else None
            if match is Match.PARTIAL and partial is None:
                partial = route  # the path is right, the method is not: 405
        return getattr(partial, "path", _UNMATCHED), None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        route, cid = self._route(scope)
        method = scope["method"]
        if method not in _METHODS:
            method = "other"  # a label value per invented method would grow without bound
        access = scope[ACCESS_KEY] = RequestRecord()
        request_token = logs.request_id.set(request_id)
        cid_token = logs.conversation_id.set(cid)
        status = 0
        sent = 0
        echo = (b"x-request-id", request_id.encode())

        async def observed_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), echo]
                self.metrics.request(route, method, status, time.perf_counter() - started)
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        failed = False
        try:
            await self.app(scope, receive, observed_send)
        except BaseException:
            failed = True
            raise
        finally:
            if not status:
                # No answer left (the server answers 500 for an error, or the client is gone).
                self.metrics.request(route, method, 500 if failed else 499, 0.0)
            self._finish(
                access, route, method, status or (500 if failed else 499), started, sent, failed
            )
            logs.conversation_id.reset(cid_token)
            logs.request_id.reset(request_token)

    def _finish(
        self,
        access: RequestRecord,
        route: str,
        method: str,
        status: int,
        started: float,
        sent: int,
        failed: bool,
    ) -> None:
        """Count how a stream ended, and write the request's access line."""
        feed = access.feed
        ended = ("error" if failed else feed.ended) if feed is not None else ""
        if feed is not None:
            self.metrics.stream_ended(ended)
        # Probes come every few seconds from every balancer: kept out of the INFO log.
        level = logging.DEBUG if route in _PROBES and status == 200 else logging.INFO
        if not self.access_log or not log.isEnabledFor(level):
            return
        fields: dict[str, object] = {
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            "bytes": sent,
        }
        if feed is not None:
            fields["events"] = feed.sent
            fields["ended"] = ended
            if feed.fell_behind:
                fields["fell_behind"] = feed.fell_behind
        log.log(level, "%s %s %d", method, route, status, extra={"access": fields})
