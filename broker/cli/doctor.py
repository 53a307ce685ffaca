"""``broker doctor``: check Redis and the model catalogue the way this process would use them."""

from __future__ import annotations

import argparse
import sys

from broker.core.settings import Settings


def doctor(settings: Settings, as_json: bool) -> None:
    import msgspec

    from broker.engine.checks import run_checks

    checks = run_checks(settings)
    if as_json:
        sys.stdout.write(msgspec.json.encode(checks).decode() + "\n")
    else:
        width = max(len(check.name) for check in checks)
        for check in checks:
            print(f"{check.status:<4}  {check.name:<{width}}  {check.detail}")
    if any(check.status == "fail" for check in checks):
        raise SystemExit(1)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub = commands.add_parser(
        "doctor",
        help="check Redis and the model catalogue before going live",
        description="Check what this deployment relies on: Redis reachable, its version, its\n"
        "maxmemory-policy (an evicting one deletes conversations), persistence, cluster mode\n"
        "against BROKER_REDIS_CLUSTER, latency, the model catalogue and the provider keys\n"
        "(present or missing, never printed). One line per check: ok, warn or fail; the exit\n"
        "status is 1 when any check fails.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub.add_argument("--json", action="store_true", help="print the checks as one JSON array")
    sub.set_defaults(run=lambda args, settings: doctor(settings, args.json), client=True)
