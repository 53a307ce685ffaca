"""Plain JSON requests against one front process, plus small helpers shared by the tests.

Each call opens its own short-lived client, so a helper works from any event loop and never
keeps a connection that would blur a test about connection counts. ``trust_env=False`` keeps
every request on loopback whatever proxy variables the machine has.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from tests.sse import SSEStream, open_sse


def events_key(prefix: str, cid: str) -> str:
    """The Redis Stream of a conversation, as the contract names it (hash-tagged)."""
    return f"{prefix}:{{{cid}}}:events"


class Api:
    """The v1 HTTP API of one front process, as one client: ``headers`` go with every request."""

    def __init__(self, base_url: str, headers: Mapping[str, str] | None = None) -> None:
        self.base_url = base_url
        self.headers = dict(headers or {})

    def bearer(self, token: str) -> Api:
        """The same API, as a client that sends ``token`` in the Authorization header."""
        return Api(self.base_url, {**self.headers, "Authorization": f"Bearer {token}"})

    def cookie(self, token: str, name: str = "broker_token") -> Api:
        """The same API, as a browser holding the session cookie (and no header)."""
        return Api(self.base_url, {**self.headers, "Cookie": f"{name}={token}"})

    def _headers(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        return {**self.headers, **(extra or {})}

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 15.0,
    ) -> httpx.Response:
        async with httpx.AsyncClient(
            base_url=self.base_url, trust_env=False, timeout=timeout
        ) as client:
            return await client.request(
                method, path, json=json, content=content, headers=self._headers(headers)
            )

    async def post_message(
        self,
        cid: str,
        content: str = "hello",
        *,
        model: str | None = None,
        headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> httpx.Response:
        body: dict[str, Any] = {"content": content}
        if model is not None:
            body["model"] = model
        if params:
            body["params"] = params
        return await self.request(
            "POST", f"/v1/conversations/{cid}/messages", json=body, headers=headers
        )

    async def start_run(self, cid: str, content: str = "hello", **params: Any) -> dict[str, Any]:
        """Post a message that must be accepted; returns the 202 body."""
        response = await self.post_message(cid, content, **params)
        assert response.status_code == 202, response.text
        return response.json()

    async def snapshot(self, cid: str) -> httpx.Response:
        return await self.request("GET", f"/v1/conversations/{cid}")

    async def cancel(
        self, cid: str, run_id: str | None = None, *, wait: bool = False
    ) -> httpx.Response:
        path = f"/v1/conversations/{cid}"
        path += f"/runs/{run_id}/cancel" if run_id else "/cancel"
        if wait:
            path += "?wait=true"
        return await self.request("POST", path)

    async def stream(
        self,
        cid: str,
        *,
        last_event_id: str | None = None,
        query_last_event_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> SSEStream:
        path = f"/v1/conversations/{cid}/stream"
        if query_last_event_id is not None:
            path += "?last_event_id=" + quote(query_last_event_id, safe="")
        return await open_sse(
            self.base_url, path, last_event_id=last_event_id, headers=self._headers(headers)
        )

    async def run_stream(
        self,
        cid: str,
        run_id: str,
        *,
        last_event_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> SSEStream:
        path = f"/v1/conversations/{cid}/runs/{run_id}/stream"
        return await open_sse(
            self.base_url, path, last_event_id=last_event_id, headers=self._headers(headers)
        )

    async def wait_run_finished(self, cid: str, run_id: str, timeout: float = 30.0) -> None:
        """Poll the snapshot until the run is no longer active (no stream needed)."""
        async with asyncio.timeout(timeout):
            while True:
                response = await self.snapshot(cid)
                if response.status_code == 200 and response.json()["active_run_id"] != run_id:
                    return
                await asyncio.sleep(0.05)


def error_code(response: httpx.Response) -> str:
    """The ``error.code`` of an error body, checking the body's documented shape on the way."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"].get("message"), str), body
    return body["error"]["code"]
