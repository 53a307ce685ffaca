"""``broker webhook-keys``: the Ed25519 keys that sign Durable Streams subscription webhooks.

The first key is made in Redis by whichever process needs one first; ``rotate`` makes a new one
active without restarting anything (every front and worker reads the active key again within
5 seconds) and keeps the old one published at ``__ds/jwks.json`` for the replay window;
``list`` prints the published key ids, the active one first.
"""

from __future__ import annotations

import argparse

import anyio

from broker.core.settings import Settings


async def _run(settings: Settings, action: str) -> None:
    from broker.engine import Engine

    engine = Engine(settings, "keys")
    try:
        await engine.connect()
        subscriptions = engine.subscriptions
        if action == "rotate":
            print(await subscriptions.rotate_signing_key())
            return
        active, _ = await subscriptions.signing_key()
        kids = [key.kid for key in (await subscriptions.jwks()).keys]
        for kid in sorted(kids, key=lambda k: k != active):
            print(kid + (" (active)" if kid == active else ""))
    finally:
        await engine.aclose()


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub = commands.add_parser(
        "webhook-keys", help="list or rotate the keys that sign subscription webhooks"
    )
    sub.add_argument("action", choices=["list", "rotate"], help="list the keys, or rotate")
    sub.set_defaults(run=lambda args, settings: anyio.run(_run, settings, args.action))
