"""The access line and the metrics name a request's route: the prefix filter of ``Observe``
must name exactly the route a full walk of the routes would, for every route of the real
application, with and without a ``root_path``."""

from __future__ import annotations

import pytest
from starlette.routing import Match

from broker.core.settings import Settings
from broker.front.app import create_app
from broker.front.http.metrics import FrontMetrics
from broker.front.http.observe import Observe

_PATHS = [
    "/healthz",
    "/metrics",
    "/v1/conversations",
    "/v1/conversations/c1",
    "/v1/conversations/c1/stream",
    "/v1/conversations/c1/runs/r_1/stream",
    "/v1/ai-sdk/chat/c1/stream",
    "/v1/stream/__ds/jwks.json",
    "/v1/stream/__ds/subscriptions/s1/streams/a/b",
    "/v1/stream/conversations/c1",
    "/v1/stream/a/b/c",
    "/",
    "/static/app.css",
    "/nowhere",
    "/v1/conversations/c1/unknown",
]


def _walk(routes: list, scope: dict) -> tuple[str, str | None]:
    """What ``Observe`` answered before it filtered by prefix: every route, in order."""
    partial = None
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            return route.path, child.get("path_params", {}).get("cid")
        if match is Match.PARTIAL and partial is None:
            partial = route
    return getattr(partial, "path", "unmatched"), None


@pytest.fixture(scope="module")
def observe() -> Observe:
    app = create_app(Settings(auth="none"))
    return Observe(app, metrics=FrontMetrics(), routes=app.routes)


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
@pytest.mark.parametrize("path", _PATHS)
def test_the_route_is_the_one_a_full_walk_finds(observe: Observe, path: str, method: str) -> None:
    routes = [route for route, _ in observe.routes]
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
    assert observe._route(scope) == _walk(routes, scope)


def test_a_root_path_tries_every_route(observe: Observe) -> None:
    """Behind a root path the routes see the path below it; none is skipped by its prefix."""
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/v1/conversations/c1/stream",
        "root_path": "/api",
        "headers": [],
    }
    routes = [route for route, _ in observe.routes]
    assert observe._route(scope) == _walk(routes, scope)
    assert observe._route(scope)[0] == "/v1/conversations/{cid}/stream"
