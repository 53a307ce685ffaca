"""The ``broker`` command: ``dev`` (everything at once), ``serve`` (a front), ``worker``,
``tap`` (every event, for a copy elsewhere), ``token`` (a signed token for local testing).

The one composition root that knows both tiers. Each subcommand lives in a module of this
package that offers ``register(commands)``: it adds its parser and sets ``run(args, settings)``
as the parser's default, and imports what it runs only when it runs.
"""

from __future__ import annotations

import argparse
import logging

from broker.cli import dev, serve, tap, token, worker
from broker.core.settings import Settings

SUBCOMMANDS = (dev, serve, worker, tap, token)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="broker", description="A durable, resumable stream broker for LLM token streams."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.register(commands)
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    args.run(args, settings)
