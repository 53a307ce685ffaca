"""``broker token``: print a token signed with BROKER_JWT_SECRET, for local testing and scripts."""

from __future__ import annotations

import argparse
import re
import time

from broker.core.settings import Settings

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``1h``, ``7d`` -> seconds."""
    match = re.fullmatch(r"(\d+)([smhd]?)", text.strip())
    if match is None or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 15m, 1h, 7d)")
    return int(match.group(1)) * _UNITS[match.group(2) or "s"]


def make_token(settings: Settings, subject: str, ttl: int, read: list[str], admin: bool) -> str:
    import jwt

    from broker.core.ids import is_valid_path_id

    if not settings.jwt_secret:
        raise SystemExit("broker token: BROKER_JWT_SECRET is not set")
    bad = [cid for cid in read if not is_valid_path_id(cid)]
    if bad:
        raise SystemExit(f"broker token: not conversation ids: {', '.join(bad)}")
    algorithms = [a.strip() for a in settings.jwt_algorithms.split(",") if a.strip()]
    algorithm = next((a for a in algorithms if a.startswith("HS")), "HS256")
    now = int(time.time())
    claims: dict[str, object] = {"sub": subject, "iat": now, "exp": now + ttl}
    if read:
        claims["read"] = read
    if admin:
        claims["admin"] = True
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    return jwt.encode(claims, settings.jwt_secret, algorithm=algorithm)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub = commands.add_parser("token", help="print a token signed with BROKER_JWT_SECRET")
    sub.add_argument("--sub", required=True, help="the subject: who the token is for")
    sub.add_argument("--ttl", type=parse_ttl, default=3600, help="lifetime, e.g. 15m, 1h (1h)")
    sub.add_argument(
        "--read", nargs="+", default=[], metavar="CID", help="conversations it may only read"
    )
    sub.add_argument("--admin", action="store_true", help="may do everything everywhere")
    sub.set_defaults(
        run=lambda args, settings: print(
            make_token(settings, args.sub, args.ttl, args.read, args.admin)
        )
    )
