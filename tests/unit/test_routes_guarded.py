"""Every route of the real application is either public or declares the access it needs.

The authentication middleware already refuses every non-public path without a principal; this
walk makes sure no route reaches a conversation without saying who may: a route added later
(an adapter, a listing) that is not declared (``ApiRoute``), or declared public off the
allow-list, fails here.
"""

from __future__ import annotations

import pytest
from starlette.routing import BaseRoute, Mount, Route

from broker.core.settings import Settings
from broker.front.app import create_app
from broker.front.http.docs import Doc
from broker.front.routes.declare import ApiRoute
from broker.front.security.access import Access
from broker.front.security.authentication import is_public


def _unguarded(routes: list[BaseRoute], prefix: str = "") -> list[str]:
    """Paths that are neither public nor guarded, and guarded routes that cannot work."""
    problems: list[str] = []
    for route in routes:
        if isinstance(route, Mount):
            if not is_public(prefix + route.path + "/"):
                problems += _unguarded(route.routes, prefix + route.path)
            continue
        path = prefix + getattr(route, "path", "?")
        if isinstance(route, ApiRoute):
            public = route.access is Access.PUBLIC
            if public != is_public(path):
                problems.append(f"{path}: declared public, or guarded, against the allow-list")
            elif "{cid}" in path and route.access is Access.SUBJECT:
                problems.append(f"{path}: names a conversation without declaring access to it")
        elif not is_public(path):
            problems.append(f"{path}: neither public nor guarded")
    return problems


def test_every_route_is_public_or_declares_its_access() -> None:
    app = create_app(Settings(auth="none"))
    assert _unguarded(app.routes) == []
    guarded = [r for r in app.routes if isinstance(r, ApiRoute) and r.access is not Access.PUBLIC]
    assert {r.path for r in guarded} >= {
        "/v1/conversations/{cid}",
        "/v1/conversations/{cid}/messages",
        "/v1/conversations/{cid}/stream",
        "/v1/conversations/{cid}/cancel",
        "/v1/conversations/{cid}/runs/{run_id}/stream",
        "/v1/conversations/{cid}/runs/{run_id}/cancel",
        "/v1/ai-sdk/chat",
        "/v1/ai-sdk/chat/{cid}/stream",
        "/v1/ai-sdk/chat/{cid}/stop",
        "/v1/ai-sdk/chat/{cid}/messages",
    }
    # The chat POST names its conversation in the body; the guard still admits it.
    chat = next(r for r in guarded if r.path == "/v1/ai-sdk/chat")
    assert (chat.access, chat.conversation is not None) == (Access.POST, True)


def test_the_walk_finds_a_forgotten_route() -> None:
    """A check that cannot fail is no check."""

    async def endpoint(request: object) -> None:
        return None

    doc = Doc("x", "x", "x")
    forgotten = [
        Route("/v1/conversations/{cid}/export", endpoint),
        Mount("/v2", routes=[Route("/things", endpoint)]),
        ApiRoute(
            "/v1/conversations/{cid}/x", endpoint, methods=["GET"], access=Access.SUBJECT, doc=doc
        ),
    ]
    assert len(_unguarded(forgotten)) == 3
    with pytest.raises(ValueError):
        ApiRoute("/healthz", endpoint, methods=["GET"], access=Access.SUBJECT, doc=doc)
    with pytest.raises(ValueError):
        ApiRoute("/v1/things", endpoint, methods=["GET"], access=Access.PUBLIC, doc=doc)
    with pytest.raises(ValueError):
        ApiRoute("/v1/chat", endpoint, methods=["POST"], access=Access.POST, doc=doc)
    assert _unguarded([Route("/healthz", endpoint), Mount("/static", routes=[])]) == []
