"""A pull-wake worker that reacts to new conversation messages, with nothing but httpx.

It subscribes (idempotently) to ``conversations/*``: every conversation the token's subject
owns, those created later included. The broker appends a wake event to the worker's wake
stream whenever one of them has new events (a user's message, a run's end); the worker
long-polls that stream, claims the subscription (of several workers racing, one wins; the
others get ``409 ALREADY_CLAIMED`` and go back to waiting), reads each woken conversation from
its acked offset through the read-only conversation view, handles what is new, and acks the
offsets it handled with ``done``. A worker that dies holding a claim loses nothing: its lease
lapses and the work is woken again.

    BROKER_AUTH=jwt BROKER_JWT_SECRET=... broker dev     # a broker
    TOKEN=$(broker token --sub alice) python examples/pull_wake_worker.py
    broker send demo "Hello" --token "$TOKEN"             # the worker prints it, and the answer

Options: ``--url`` (``BROKER_URL``, default http://127.0.0.1:8000), ``--name`` (the worker's
name in claims), ``--once`` (handle one wake and exit).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from typing import Any

import httpx

SUBSCRIPTION = "conversation-messages"
WAKE_STREAM = "wakes/conversation-messages"
ROOT = "/v1/stream/"


def setup(client: httpx.Client) -> str:
    """Create the wake stream and the subscription (both idempotent); the wake stream's tail,
    from where to wait."""
    created = client.put(ROOT + WAKE_STREAM, headers={"Content-Type": "application/json"})
    if created.status_code not in (200, 201):
        sys.exit(f"could not create the wake stream: {created.status_code} {created.text}")
    subscription = client.put(
        f"{ROOT}__ds/subscriptions/{SUBSCRIPTION}",
        json={
            "type": "pull-wake",
            "pattern": "conversations/*",
            "wake_stream": WAKE_STREAM,
            "lease_ttl_ms": 60_000,
            "description": "print new conversation messages",
        },
    )
    if subscription.status_code not in (200, 201):
        sys.exit(f"could not subscribe: {subscription.status_code} {subscription.text}")
    return created.headers["Stream-Next-Offset"]


def wait_for_wake(client: httpx.Client, offset: str) -> str:
    """Long-poll the wake stream until a wake event comes; the offset after it."""
    while True:
        response = client.get(
            ROOT + WAKE_STREAM, params={"offset": offset, "live": "long-poll"}, timeout=90
        )
        if response.status_code == 200 and any(
            event.get("subscription_id") == SUBSCRIPTION for event in response.json()
        ):
            return response.headers["Stream-Next-Offset"]
        if response.status_code in (200, 204):
            offset = response.headers["Stream-Next-Offset"]
            continue
        response.raise_for_status()


def handle(path: str, events: list[dict[str, Any]]) -> None:
    """What the application does with a conversation's new events: here, print them."""
    for event in events:
        data = event["data"]
        if event["type"] == "message":
            print(f"{path}: user said {data['content']!r}", flush=True)
        elif event["type"] == "run.completed":
            print(f"{path}: run {data['run_id']} completed", flush=True)
        elif event["type"] in ("run.failed", "run.cancelled"):
            print(f"{path}: run {data['run_id']} ended: {event['type']}", flush=True)


def read_from(client: httpx.Client, path: str, offset: str, tail: str) -> list[dict[str, Any]]:
    """A conversation's events after ``offset`` up to ``tail``, reading on page by page."""
    events: list[dict[str, Any]] = []
    while offset < tail:
        response = client.get(ROOT + path, params={"offset": offset})
        response.raise_for_status()
        events += response.json()
        offset = response.headers["Stream-Next-Offset"]
        if response.headers.get("Stream-Up-To-Date") == "true":
            break
    return events


def work_once(client: httpx.Client, name: str) -> int:
    """Claim, handle every pending conversation, ack: how many were handled (0 when another
    worker won, or nothing was pending)."""
    claim = client.post(f"{ROOT}__ds/subscriptions/{SUBSCRIPTION}/claim", json={"worker": name})
    if claim.status_code == 409:
        holder = claim.json()["error"].get("current_holder")
        print(f"({holder} has this wake)", flush=True)
        return 0
    claim.raise_for_status()
    wake = claim.json()
    auth = {"Authorization": f"Bearer {wake['token']}"}
    acks = []
    for stream in wake["streams"]:
        if not stream["has_pending"]:
            continue
        events = read_from(client, stream["path"], stream["acked_offset"], stream["tail_offset"])
        handle(stream["path"], events)
        acks.append({"stream": stream["path"], "offset": stream["tail_offset"]})
    acked = client.post(
        f"{ROOT}__ds/subscriptions/{SUBSCRIPTION}/ack",
        # The claim's token, not the service token: it is valid for this wake only.
        headers=auth,
        json={
            "wake_id": wake["wake_id"],
            "generation": wake["generation"],
            "acks": acks,
            "done": True,
        },
    )
    if acked.status_code == 409:
        print("the lease lapsed before the ack: the work will be woken again", flush=True)
        return 0
    acked.raise_for_status()
    return len(acks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("BROKER_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--name", default=f"{socket.gethostname()}:{os.getpid()}")
    parser.add_argument("--once", action="store_true", help="handle one wake, then exit")
    args = parser.parse_args()
    token = os.environ.get("TOKEN", "")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=args.url, headers=headers, timeout=30) as client:
        offset = setup(client)
        # Work woken before this worker started waits for a claim: take it first.
        if work_once(client, args.name) and args.once:
            return
        print(f"{args.name}: waiting for wakes on {WAKE_STREAM}", flush=True)
        while True:
            offset = wait_for_wake(client, offset)
            if work_once(client, args.name) and args.once:
                return


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
    except httpx.HTTPError as exc:
        sys.exit(json.dumps({"error": str(exc)}))
