"""The session cookie, for browser pages: ``EventSource`` cannot send an Authorization header.

A page posts its token once to ``POST /v1/session``; the HttpOnly cookie it gets back then
authorizes its ``GET`` requests (streams, snapshots) until the token expires. Posting messages
and cancelling still need the header, so another site cannot act with the cookie.

``DELETE /v1/session`` (logging out) clears the cookie and ends its session on the server too:
the token it carried is refused as a cookie until it expires, so a copy of the cookie kept
elsewhere reads nothing more (``broker.engine.sessions``).
"""

from __future__ import annotations

import ipaddress
import math
import time

from starlette.requests import Request
from starlette.responses import Response

from broker.front.security.headers import NO_STORE
from broker.front.security.principal import principal_of
from broker.front.security.tokens import KeysUnavailable, Unauthorized
from broker.front.services import Services

COOKIE_PATH = "/v1/"


def _plain_http_on_loopback(request: Request) -> bool:
    """Only then may the cookie go without ``Secure``: a browser drops a Secure cookie set over
    plain http, and local development has no TLS."""
    if request.url.scheme != "http" or request.client is None:
        return False
    try:
        return ipaddress.ip_address(request.client.host).is_loopback
    except ValueError:
        return False


async def start_session(request: Request) -> Response:
    """204, setting the cookie to the Bearer token this request was authenticated with."""
    principal = principal_of(request)
    response = Response(status_code=204, headers=NO_STORE)
    if principal.via != "header":
        return response  # BROKER_AUTH=none: there is no token to keep
    token = request.headers["authorization"].strip().partition(" ")[2].strip()
    services: Services = request.state.services
    await services.engine.sessions.start(token)  # its holder may begin again after a logout
    max_age = 0
    if principal.expires_at is not None:
        max_age = max(0, math.floor(principal.expires_at - time.time()))
    response.set_cookie(
        request.state.services.settings.session_cookie,
        token,
        max_age=max_age,
        path=COOKIE_PATH,
        secure=not _plain_http_on_loopback(request),
        httponly=True,
        samesite="lax",
    )
    return response


async def end_session(request: Request) -> Response:
    """204, clearing the cookie and ending its session: its token is refused as a cookie from
    now until it expires."""
    services: Services = request.state.services
    cookie = request.cookies.get(services.settings.session_cookie)
    if cookie and services.verifier is not None:
        try:
            ended = await services.verifier.verify(cookie, "cookie")
        except (Unauthorized, KeysUnavailable):
            pass  # not a token that opens anything: nothing to end
        else:
            if ended.expires_at is not None:
                await services.engine.sessions.end(cookie, ended.expires_at)
    response = Response(status_code=204, headers=NO_STORE)
    response.delete_cookie(
        request.state.services.settings.session_cookie,
        path=COOKIE_PATH,
        secure=not _plain_http_on_loopback(request),
        httponly=True,
        samesite="lax",
    )
    return response
