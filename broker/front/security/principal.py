"""Who is asking: the principal the authentication middleware puts on every non-public request.

Handlers, the access checks and the limits read it from the request; nothing else decides who a
request comes from.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from starlette.requests import HTTPConnection
from starlette.types import Scope

# How the request was authenticated; ``address`` is BROKER_AUTH=none, where the subject is the
# client's address and serves only to count limits.
Via = Literal["header", "cookie", "query", "address"]


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    subject: str
    # The application's own backend: may read and write every conversation, and meets no limit.
    admin: bool = False
    # Conversations this token may read (stream, snapshot) without owning them.
    read: frozenset[str] = frozenset()
    # The token's ``exp`` (Unix seconds, leeway included); None when nothing expires.
    expires_at: float | None = None
    via: Via = "header"


def attach(scope: Scope, principal: Principal) -> None:
    """Called once per request, by the authentication middleware."""
    scope.setdefault("state", {})["principal"] = principal


def principal_of(connection: HTTPConnection) -> Principal:
    """The request's principal; a route outside the public allow-list always has one."""
    principal = connection.scope.get("state", {}).get("principal")
    if not isinstance(principal, Principal):
        raise RuntimeError(f"no principal on {connection.url.path}: the route is public")
    return principal
