"""``broker worker``: one worker process."""

from __future__ import annotations

import argparse
import os

from broker.core.settings import Settings


def worker(settings: Settings, concurrency: int | None) -> None:
    import logging

    import anyio

    # httpx logs every request's URL at INFO; a webhook URL may carry a token.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.root.level))

    # Imported here: the front tier never loads the worker runtime.
    from workers.worker import Worker

    if concurrency is not None:
        settings = Settings.from_env({**os.environ, "BROKER_WORKER_CONCURRENCY": str(concurrency)})
    from broker.engine.checks import warn_at_start
    from broker.engine.connections import wait_until_reachable

    # A Redis that never answered stops the worker at once, naming it; an outage after start
    # is ridden out (the worker retries its reads and writes).
    wait_until_reachable(settings, "broker worker")
    warn_at_start(settings, "broker worker")
    anyio.run(Worker(settings).run, backend_options={"use_uvloop": True})


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub = commands.add_parser(
        "worker",
        help="run one worker process (the model calls)",
        description="Run one worker process: it takes runs from Redis (BROKER_REDIS_URL), calls\n"
        "the models and appends their events. Run as many as you like.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub.add_argument(
        "--concurrency",
        type=int,
        default=None,
        metavar="N",
        help="runs at once in this process (default: BROKER_WORKER_CONCURRENCY, 64)",
    )
    sub.set_defaults(run=lambda args, settings: worker(settings, args.concurrency))
