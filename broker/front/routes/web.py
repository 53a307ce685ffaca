"""The static faces of a front: the chat page at ``/``, the browser module at ``/broker.js``,
the API reference at ``/docs``, and the files they load from ``/static/``.

The files ship inside the package (``broker/web``). They are read once, when the application
is built, and each is served from memory with a strong ETag, so a browser revalidates with a
304 and an upgrade of the package is seen at the next load.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import NamedTuple

from starlette.requests import Request
from starlette.responses import Response

from broker.core.errors import NOT_FOUND, ApiError
from broker.front.http.docs import Doc, Raw, Reply
from broker.front.routes.declare import ApiRoute
from broker.front.security.access import Access

_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

# The pages run only their own scripts and styles, talk only to their own origin, and cannot
# be framed by another site; model output is inserted as text, never as markup.
_PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class Asset(NamedTuple):
    body: bytes
    media_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Every servable file of ``broker/web``, by file name."""
    assets: dict[str, Asset] = {}
    for item in resources.files("broker.web").iterdir():
        suffix = "." + item.name.rpartition(".")[2]
        if not item.is_file() or suffix not in _MEDIA_TYPES:
            continue
        body = item.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        assets[item.name] = Asset(body, _MEDIA_TYPES[suffix], etag)
    return assets


def _serve(asset: Asset, request: Request) -> Response:
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache"}
    if asset.media_type.startswith("text/html"):
        headers["Content-Security-Policy"] = _PAGE_POLICY
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def _page(operation: str, summary: str, media_type: str, description: str) -> Doc:
    return Doc(
        operation,
        summary,
        "pages",
        replies=(
            Reply(200, description, Raw((media_type,))),
            Reply(304, "unchanged since the ETag sent in If-None-Match"),
        ),
    )


def web_routes() -> list[ApiRoute]:
    """The routes of the static faces, over the files read now."""
    assets = load_assets()

    def fixed(name: str):  # noqa: ANN202 - a Starlette endpoint
        asset = assets[name]

        async def endpoint(request: Request) -> Response:
            return _serve(asset, request)

        return endpoint

    async def asset_file(request: Request) -> Response:
        asset = assets.get(request.path_params["name"])
        if asset is None:
            raise ApiError(NOT_FOUND, "no such file")
        return _serve(asset, request)

    public = Access.PUBLIC
    return [
        ApiRoute(
            "/",
            fixed("index.html"),
            methods=["GET"],
            access=public,
            doc=_page("chatPage", "The chat page", "text/html", "the chat page"),
        ),
        ApiRoute(
            "/docs",
            fixed("docs.html"),
            methods=["GET"],
            access=public,
            doc=_page("docsPage", "This reference", "text/html", "this document, for people"),
        ),
        ApiRoute(
            "/broker.js",
            fixed("broker.js"),
            methods=["GET"],
            access=public,
            doc=_page(
                "browserModule",
                "The browser module",
                "text/javascript",
                "an ES module: openConversation, send, cancel, snapshot",
            ),
        ),
        ApiRoute(
            "/static/{name}",
            asset_file,
            methods=["GET"],
            access=public,
            doc=Doc(
                "asset",
                "A file the pages load (scripts, styles)",
                "pages",
                replies=(
                    Reply(200, "the file", Raw(("*/*",))),
                    Reply(304, "unchanged since the ETag sent in If-None-Match"),
                ),
                errors=(NOT_FOUND,),
                path_params={"name": "the file's name"},
            ),
        ),
    ]
