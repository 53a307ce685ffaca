"""``broker tap``: every event of every conversation as JSON lines, through a consumer group."""

from __future__ import annotations

import argparse
import sys

from broker.core.settings import Settings


async def _print(settings: Settings, group: str, consumer: str | None, claim_after: float) -> None:
    from broker.engine import Engine
    from broker.engine.tap import Tap, tap_encoder

    engine = Engine(settings, "tap", max_connections=2, socket_timeout=None)
    out = sys.stdout.buffer
    try:
        tap = Tap(
            engine.client, settings, group=group, consumer=consumer, claim_after_seconds=claim_after
        )
        async for event in tap.events():
            # Written and flushed before the next event is asked for: only then is a run's
            # notice acknowledged, so nothing is lost if this process or its reader dies.
            out.write(tap_encoder.encode(event) + b"\n")
            out.flush()
    finally:
        await engine.aclose()


def tap(settings: Settings, group: str, consumer: str | None, claim_after: float) -> None:
    import anyio

    from broker.core.finished import tap_group

    try:
        tap_group(group)
    except ValueError as exc:
        raise SystemExit(f"broker tap: --group: {exc}") from None
    try:
        anyio.run(_print, settings, group, consumer, claim_after)
    except (KeyboardInterrupt, BrokenPipeError):
        # The reader went away (`broker tap | head`), or Ctrl-C: a quiet end, nothing lost.
        sys.stderr.close()
        raise SystemExit(0) from None


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub = commands.add_parser(
        "tap", help="print every event of every conversation as JSON lines (a consumer group)"
    )
    sub.add_argument("--group", default="default", help="the consumer group (default: default)")
    sub.add_argument(
        "--consumer", default=None, help="this consumer's name in the group (default: host:pid)"
    )
    sub.add_argument(
        "--claim-after",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="take over runs another consumer has held this long without progress",
    )
    sub.set_defaults(
        run=lambda args, settings: tap(settings, args.group, args.consumer, args.claim_after)
    )
