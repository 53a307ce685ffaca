"""What operators and tools ask a front: liveness, readiness, metrics, the API document."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from broker.core.errors import UNAUTHORIZED
from broker.front.http.docs import Doc, Json, Raw, Reply
from broker.front.http.metrics import metrics_endpoint
from broker.front.routes.declare import ApiRoute
from broker.front.security.access import Access
from broker.front.services import Services

_OBJECT = Json({"type": "object"})


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    services: Services = request.state.services
    await services.engine.ping()
    return JSONResponse({"status": "ready"})


async def openapi(request: Request) -> Response:
    """The document the app generated from its routes when it was built."""
    return Response(request.app.state.openapi, media_type="application/json")


routes = [
    ApiRoute(
        "/openapi.json",
        openapi,
        methods=["GET"],
        access=Access.PUBLIC,
        doc=Doc(
            "openapi",
            "This document",
            "pages",
            replies=(Reply(200, "the OpenAPI 3.1 document", _OBJECT),),
        ),
    ),
    ApiRoute(
        "/healthz",
        healthz,
        methods=["GET"],
        access=Access.PUBLIC,
        doc=Doc(
            "healthz",
            "Liveness",
            "operations",
            replies=(Reply(200, "the process answers", _OBJECT),),
        ),
    ),
    ApiRoute(
        "/readyz",
        readyz,
        methods=["GET"],
        access=Access.PUBLIC,
        doc=Doc(
            "readyz",
            "Readiness: a Redis round trip",
            "operations",
            replies=(Reply(200, "Redis answers", _OBJECT),),
        ),
    ),
    ApiRoute(
        "/metrics",
        metrics_endpoint,
        methods=["GET"],
        access=Access.PUBLIC,
        doc=Doc(
            "metrics",
            "Prometheus metrics of this front process",
            "operations",
            "The text exposition format. Open to anyone who reaches the front unless "
            "BROKER_METRICS_TOKEN is set; then send it as `Authorization: Bearer <token>`. No "
            "label names a user or a conversation.",
            replies=(Reply(200, "the metrics", Raw(("text/plain",))),),
            errors=(UNAUTHORIZED,),
        ),
    ),
]
