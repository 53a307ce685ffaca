"""Authentication: one pure ASGI middleware in front of every route, default-deny.

Only the paths of the public allow-list are served without a principal; every other request,
whatever route it reaches (or none), is authenticated here first, so a route added later cannot
forget. Which conversations a principal may touch is decided where each route is declared
(``broker.front.security.access``).

Where a token may come from: the ``Authorization: Bearer`` header on any request; on ``GET`` and
``HEAD`` only, also the session cookie (``EventSource`` cannot set headers) and, when enabled,
``?access_token=``. A cookie never authorizes a request that changes state, which closes
cross-site request forgery: another site's page can make the browser send the cookie, not the
header. The query token is cut out of the query string before anything downstream sees the URL,
so no log line can carry it.

A client address whose token checks keep failing is refused unchecked for the rest of the minute
(``broker.front.security.lockout``).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from urllib.parse import parse_qsl, urlencode

from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from broker.core.errors import AUTH_UNAVAILABLE, TOO_MANY_FAILED_AUTHENTICATIONS, UNAUTHORIZED
from broker.engine import UNAVAILABLE
from broker.front.http.errors import error_response, unavailable_response
from broker.front.security.addresses import client_address
from broker.front.security.lockout import Lockout
from broker.front.security.principal import Principal, Via, attach
from broker.front.security.tokens import KeysUnavailable, TokenVerifier, Unauthorized

PUBLIC_PATHS = frozenset(
    {"/", "/healthz", "/readyz", "/openapi.json", "/docs", "/metrics", "/broker.js"}
)
PUBLIC_PREFIXES = ("/static/",)
# Durable Streams subscriptions: the signing keys, and the requests a wake's own token
# authorizes (a webhook receiver or a pull-wake worker holds no service token for them).
PUBLIC_PATTERN = re.compile(
    r"/v1/stream/__ds/(?:jwks\.json|subscriptions/[^/]+/(?:callback|ack|release))"
)
QUERY_TOKEN = "access_token"
_READS = frozenset({"GET", "HEAD"})


def is_public(path: str) -> bool:
    """Served without a principal: health, the API document, metrics, the page's assets, and
    the Durable Streams subscription requests a wake's token authorizes."""
    return (
        path in PUBLIC_PATHS
        or path.startswith(PUBLIC_PREFIXES)
        or PUBLIC_PATTERN.fullmatch(path) is not None
    )


def _without_query_token(query: bytes) -> tuple[bytes, str | None]:
    """The query string minus ``access_token``, and the token it carried (the last one wins)."""
    token = None
    kept = []
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name == QUERY_TOKEN:
            token = value
        else:
            kept.append((name, value))
    return urlencode(kept).encode("latin-1"), token


class Authentication:
    """Puts a ``Principal`` on every non-public request, or answers 401 itself.

    ``verifier`` None is BROKER_AUTH=none: the principal's subject is the client's address, used
    only to count limits, and nothing is checked.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: TokenVerifier | None,
        cookie: str,
        query_token: bool,
    ) -> None:
        self.app = app
        self._verifier = verifier
        self._cookie = cookie
        self._query_token = query_token

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """Where nothing here needs awaiting, returns the next layer's awaitable itself: an open
        stream then holds no frame of this layer (memory per idle connection)."""
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        query_token = None
        if QUERY_TOKEN.encode() in scope.get("query_string", b""):
            query, query_token = _without_query_token(scope["query_string"])
            scope = {**scope, "query_string": query}
        if is_public(scope["path"]):
            return self.app(scope, receive, send)
        if self._verifier is None:
            attach(scope, Principal(subject=client_address(scope), via="address"))
            return self.app(scope, receive, send)
        return self._authenticated(self._verifier, scope, receive, send, query_token)

    async def _authenticated(
        self,
        verifier: TokenVerifier,
        scope: Scope,
        receive: Receive,
        send: Send,
        query_token: str | None,
    ) -> None:
        address = client_address(scope)
        lockout: Lockout = scope["state"]["services"].lockout
        if (retry_after := lockout.retry_after(address)) is not None:
            response = error_response(
                TOO_MANY_FAILED_AUTHENTICATIONS,
                "too many failed token checks from this address; its tokens are not checked "
                "until the minute ends",
                {"Retry-After": str(retry_after)},
            )
            await response(scope, receive, send)
            return
        try:
            token, via = self._token(scope, query_token)
            principal = await verifier.verify(token, via)
        except Unauthorized as exc:
            challenge = 'Bearer realm="broker"'
            if exc.token_seen:
                challenge += ', error="invalid_token"'
                if not exc.authentic:  # a guess, or a forgery
                    await lockout.failed(address)
            response = error_response(UNAUTHORIZED, exc.message, {"WWW-Authenticate": challenge})
            await response(scope, receive, send)
            return
        except KeysUnavailable:
            response = error_response(
                AUTH_UNAVAILABLE,
                "the signing keys cannot be fetched; retry shortly",
                {"Retry-After": "5"},
            )
            await response(scope, receive, send)
            return
        if via == "cookie":
            # A session logged out of: its cookie reads nothing more, wherever it was copied.
            try:
                ended = await scope["state"]["services"].engine.sessions.ended(token)
            except UNAVAILABLE:
                await unavailable_response()(scope, receive, send)
                return
            if ended:
                response = error_response(
                    UNAUTHORIZED,
                    "this session was ended (logged out); start a new one",
                    {"WWW-Authenticate": 'Bearer realm="broker", error="invalid_token"'},
                )
                await response(scope, receive, send)
                return
        attach(scope, principal)
        await self.app(scope, receive, send)

    def _token(self, scope: Scope, query_token: str | None) -> tuple[str, Via]:
        header = cookies = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value.decode("latin-1")
            elif name == b"cookie":
                cookies = value.decode("latin-1")
        if header is not None:
            scheme, _, token = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthorized("the Authorization header must be 'Bearer <token>'")
            return token.strip(), "header"
        method = scope["method"]
        cookie = cookie_parser(cookies).get(self._cookie) if cookies else None
        if method in _READS:
            if cookie:
                return cookie, "cookie"
            if query_token is not None:
                if not self._query_token:
                    raise Unauthorized(
                        f"?{QUERY_TOKEN}= is turned off here; "
                        "send the token in the Authorization header",
                        token_seen=False,
                    )
                return query_token, "query"
        elif cookie or query_token is not None:
            raise Unauthorized(
                f"{method} needs the token in the Authorization header: the {self._cookie} "
                f"cookie and ?{QUERY_TOKEN}= only authorize reading",
                token_seen=False,
            )
        raise Unauthorized("no token: send 'Authorization: Bearer <token>'", token_seen=False)
