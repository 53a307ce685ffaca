"""Who the client is on the network: its address, as the connection gives it or, behind a
proxy the operator named in ``BROKER_TRUSTED_PROXIES``, as that proxy forwards it.

``X-Forwarded-For`` is anyone's to write, so it is believed only from those proxies: uvicorn's
proxy-headers middleware then puts the nearest address no trusted proxy wrote into the scope's
``client`` (and the proxy's ``X-Forwarded-Proto`` into its scheme). With none configured it is
not installed, and the header is ignored. Everything that counts per address (failed token
checks, open streams, the subject under ``BROKER_AUTH=none``) reads ``client_address``.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from starlette.types import Scope

from broker.core.settings import Settings
from broker.front.security.tokens import SecurityConfigError


def trusted_proxies(settings: Settings) -> list[str]:
    """The proxies whose forwarding headers are believed: addresses and networks, or ``*``."""
    entries = [entry.strip() for entry in settings.trusted_proxies.split(",") if entry.strip()]
    for entry in entries:
        if entry == "*":
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise SecurityConfigError(
                f"BROKER_TRUSTED_PROXIES: {entry!r} is not an address, a network (CIDR) or *"
            ) from None
    return entries


def proxy_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for the forwarding headers: on only for the configured proxies."""
    proxies = trusted_proxies(settings)
    if not proxies:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": proxies}


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"
