"""The naive baseline: the SSE-over-Redis-Streams endpoint that tutorials teach.

A Starlette ``StreamingResponse`` per client whose generator replays with ``XRANGE`` from the
client's ``Last-Event-ID`` and then loops on ``XREAD BLOCK`` on a connection of its own (the
client's pool hands every blocked call its own connection), decoding and re-encoding each
event's JSON for each client. It reads the broker's keys and speaks the same SSE format, and
runs under the same uvicorn settings (uvloop, httptools), so ``python -m scripts.bench
--compare-naive`` measures the pattern, not the plumbing. The benchmark starts it as it starts
the broker's front, as a module, from the repository root.

Run: ``BROKER_REDIS_URL=... BROKER_KEY_PREFIX=... python -m scripts.bench.naive_front --port 8100``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

REDIS_URL = os.environ.get("BROKER_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("BROKER_KEY_PREFIX", "broker")
REPLAY_BATCH = 500
BLOCK_MS = 15_000

# Every blocked XREAD holds a connection of its own, so the pool must not cap them at the
# client library's default (100), and reads must outlast the block (the default is 5 s).
redis = aioredis.Redis.from_url(
    REDIS_URL,
    decode_responses=True,
    max_connections=1_000_000,
    socket_timeout=BLOCK_MS / 1000 + 5,
    client_name=f"naive:front:{os.getpid()}",
)


def events_key(cid: str) -> str:
    return f"{PREFIX}:{{{cid}}}:events"


def sse_event(entry_id: str, fields: dict[str, str]) -> str:
    data = json.dumps(json.loads(fields["d"]))
    return f"id: {entry_id}\nevent: {fields['t']}\ndata: {data}\n\n"


async def stream(request: Request) -> Response:
    cid = request.path_params["cid"]
    key = events_key(cid)
    if not await redis.exists(key):
        return JSONResponse({"error": {"code": "conversation_not_found", "message": cid}}, 404)
    last_id = (
        request.headers.get("last-event-id") or request.query_params.get("last_event_id") or "0-0"
    )

    async def events() -> AsyncIterator[str]:
        nonlocal last_id
        yield "retry: 1000\n\n"
        while True:  # replay what is stored after the client's position
            entries = await redis.xrange(key, min=f"({last_id}", max="+", count=REPLAY_BATCH)
            for entry_id, fields in entries:
                last_id = entry_id
                yield sse_event(entry_id, fields)
            if len(entries) < REPLAY_BATCH:
                break
        while True:  # then tail it
            response = await redis.xread({key: last_id}, count=100, block=BLOCK_MS)
            if not response:
                yield ": keepalive\n\n"
                continue
            for _, entries in response:
                for entry_id, fields in entries:
                    last_id = entry_id
                    yield sse_event(entry_id, fields)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"},
    )


async def readyz(request: Request) -> Response:
    await redis.ping()
    return JSONResponse({"status": "ready"})


app = Starlette(
    routes=[
        Route("/readyz", readyz),
        Route("/v1/conversations/{cid}/stream", stream),
    ]
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=3,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
