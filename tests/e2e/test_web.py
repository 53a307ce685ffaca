"""The static faces over HTTP: the page, the browser module, /docs and their assets, served
from the package with the headers a browser relies on; and /v1/models, which names models
without revealing how they are reached."""

from __future__ import annotations

import re

import httpx
import pytest

from broker.front.routes.web import load_assets
from tests.stack import Stack

pytestmark = pytest.mark.timeout(60)


def test_pages_module_and_assets_are_served_with_their_types_and_policy(stack: Stack) -> None:
    stack.start(fronts=1, workers=0)
    with httpx.Client(base_url=stack.fronts[0].url, trust_env=False) as client:
        page = client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "connect-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        # Everything the page loads is served here: no CDN, no build step.
        loaded = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert loaded and all(
            url.startswith("/") or url.startswith("data:") or url.startswith("#") for url in loaded
        )
        for url in loaded:
            if url.startswith("/") and url != "/docs":
                assert client.get(url).status_code == 200, url

        module = client.get("/broker.js")
        assert module.headers["content-type"] == "text/javascript; charset=utf-8"
        for name in ("openConversation", "send", "cancel", "snapshot"):
            assert re.search(rf"export (async )?function {name}\b", module.text), name
        page_script = client.get("/static/page.js").text
        assert 'from "/broker.js"' in page_script
        assert "fetch(" not in page_script and "EventSource" not in page_script, (
            "broker.js is the page's only network code"
        )

        docs = client.get("/docs")
        assert docs.status_code == 200 and "/static/docs.js" in docs.text

        again = client.get("/broker.js", headers={"If-None-Match": module.headers["etag"]})
        assert again.status_code == 304 and again.content == b""

        missing = client.get("/static/nope.js")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        assert client.get("/static/__init__.py").status_code == 404
        assert client.get("/static/..%2F__init__.py").status_code == 404


def test_the_package_ships_every_file_the_pages_load() -> None:
    assert {
        "index.html",
        "broker.js",
        "page.js",
        "style.css",
        "docs.html",
        "docs.js",
        "docs.css",
    } <= set(load_assets())


def test_models_lists_names_only(stack: Stack) -> None:
    stack.start(
        fronts=1,
        workers=0,
        openai_models="fast=gpt-4.1-nano",
        openai_base_url="http://127.0.0.1:9/secret-path/v1",
    )
    with httpx.Client(base_url=stack.fronts[0].url, trust_env=False) as client:
        response = client.get("/v1/models")
    assert response.status_code == 200
    assert response.json() == {
        "default": "simulated",
        "models": [{"name": "simulated"}, {"name": "fast"}],
    }
    assert "secret-path" not in response.text and "gpt-4.1-nano" not in response.text
