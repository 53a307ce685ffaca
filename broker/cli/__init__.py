"""The ``broker`` command.

Servers: ``dev`` (everything at once), ``serve`` (a front), ``worker``, ``tap`` (every event,
for a copy elsewhere), ``doctor`` (checks of a deployment), ``token`` (a signed token for local
testing), ``webhook-keys`` (the keys that sign subscription webhooks). Clients: ``send``, ``tail``, ``cancel``, ``show``, ``list``, ``delete``, which talk
HTTP to a running broker. ``processes`` is the one launcher of broker processes (``dev``, the
tests, the benchmark and the soak).

The one composition root that knows both tiers. Each subcommand lives in a module of this
package that offers ``register(commands)``: it adds its parser and sets ``run(args, settings)``
as the parser's default, and imports what it runs only when it runs.
"""

from __future__ import annotations

import argparse
from importlib import metadata

from broker.cli import client, dev, doctor, keys, serve, tap, token, worker
from broker.core import logs
from broker.core.settings import Settings

SUBCOMMANDS = (dev, serve, worker, doctor, tap, token, keys, client)

DESCRIPTION = """\
A durable, resumable stream broker for LLM token streams, backed by Redis.

Run the servers with dev (everything on one machine) or serve and worker (any
number of each); tap copies every event elsewhere; doctor checks a deployment;
token prints a token for local testing; webhook-keys lists or rotates the
keys that sign subscription webhooks. Talk to a running broker with send,
tail, cancel, show, list and delete; they read BROKER_URL and BROKER_TOKEN.
Every server setting is a BROKER_* environment variable (docs/pages/
configuration.md lists them all)."""

EPILOG = """\
examples:
  broker dev                        Redis, a front and a worker on 127.0.0.1:8000
  broker send demo "Hello" --follow ask, and print the answer as it streams
  broker tail demo                  follow a conversation from another terminal
  broker cancel demo                stop the answer, from anywhere"""


def version() -> str:
    try:
        return metadata.version("llm-stream-broker")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="broker",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"broker {version()}", help="print the version"
    )
    commands = parser.add_subparsers(
        title="commands", dest="command", required=True, metavar="COMMAND"
    )
    for module in SUBCOMMANDS:
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    # The client commands print for people; request logs would only get in the way.
    level = "WARNING" if getattr(args, "client", False) else settings.log_level.upper()
    logs.configure(settings.log_format, level)
    args.run(args, settings)
