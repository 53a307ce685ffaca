"""Who may do what to a conversation, declared where each route is declared.

Every route outside the public allow-list names the ``Access`` it needs to the conversation in
its path and what it ``Cost``s its subject (``broker.front.routes.declare``). Before the
endpoint runs, the guard reads the conversation's owner and counts the subject's limits in one
round trip, and refuses:

- anyone who may not read the conversation with exactly the answer for a conversation that does
  not exist (``404 conversation_not_found``, same body, same round trip): existence never leaks;
- a subject that may only read it (a ``read`` grant) with ``403 forbidden`` on a write.

The owner may do everything, from any device; an ``admin`` principal may do everything on every
conversation. With BROKER_AUTH=none nothing is checked: only the limits are counted.

A route whose conversation is not in its path (a protocol that names it in the body) gives the
guard the function that finds it; the guard runs it, then admits as for any route. Other
resources owned by a subject use ``check_owner``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from enum import Enum

from starlette.requests import Request
from starlette.responses import Response

from broker.core.errors import CONVERSATION_NOT_FOUND, FORBIDDEN, METHOD_NOT_ALLOWED, ApiError
from broker.core.ids import check_id
from broker.engine import Engine
from broker.engine.limits import StreamLease
from broker.front.security.authentication import is_public
from broker.front.security.limits import Cost, Limits
from broker.front.security.principal import Principal, principal_of

Endpoint = Callable[[Request], Awaitable[Response]]
# Finds the conversation a request is about when its path does not name it; raises the
# request's 4xx for input it cannot read.
Conversation = Callable[[Request], Awaitable[str]]


class Access(Enum):
    PUBLIC = "public"  # no principal: health, the API document, metrics, the page's files
    SUBJECT = "subject"  # any authenticated principal; no conversation in the path
    READ = "read"  # stream, resume, snapshot: the owner, a read grant, an admin
    WRITE = "write"  # cancel: the owner or an admin
    POST = "post"  # a message: WRITE, or anyone when the conversation does not exist yet
    # READ, or anyone when the conversation does not exist yet: a stream that waits for it. Once
    # it exists, the stream checks READ again before it sends anything (whoever posts first
    # owns it, see the accept script). Like POST, it tells a taken id from a free one, nothing
    # more.
    FOLLOW = "follow"
    # READ, except that a conversation the caller may not read is admitted as one that does not
    # exist (``Admission.exists`` False), for routes whose answer to a missing conversation is
    # not an error (the AI SDK's "nothing to resume", an empty message list).
    PEEK = "peek"


def conversation_not_found(cid: str) -> ApiError:
    """The one answer for a conversation that does not exist or that the caller may not see."""
    return ApiError(CONVERSATION_NOT_FOUND, f"no conversation {cid}")


def decide(principal: Principal, cid: str, access: Access, owner: str | None, exists: bool) -> None:
    """Raise unless ``principal`` may have ``access`` to conversation ``cid``, whose owner and
    existence the caller read (an ownerless conversation was created with BROKER_AUTH=none)."""
    if principal.admin or access is Access.SUBJECT or owner == principal.subject:
        return
    if access in (Access.POST, Access.FOLLOW) and not exists:
        return  # the message creates it; the engine claims it atomically (the accept script)
    if access in (Access.READ, Access.FOLLOW) and cid in principal.read:
        return
    if exists and cid in principal.read:
        raise ApiError(FORBIDDEN, "this token may read this conversation, not write to it")
    raise conversation_not_found(cid)


def check_owner(principal: Principal, owner: str | None, missing: ApiError) -> None:
    """For other resources a subject owns: the owner and admins pass; anyone else gets the same
    ``missing`` error as a resource that does not exist."""
    if not principal.admin and owner != principal.subject:
        raise missing


class Admission:
    """What the guard found out and holds for one request."""

    __slots__ = ("exists", "lease", "_limits")

    def __init__(self, limits: Limits, exists: bool | None, lease: StreamLease | None) -> None:
        self.exists = exists  # None when the conversation was not read
        self.lease = lease  # the open-stream lease held until the stream ends
        self._limits = limits

    def release(self) -> None:
        if self.lease is not None:
            self._limits.leases.release(self.lease)
            self.lease = None


class Gate:
    """The checks every guarded route runs first; ``enforced`` is False with BROKER_AUTH=none."""

    def __init__(self, engine: Engine, limits: Limits, *, enforced: bool) -> None:
        self._engine = engine
        self.limits = limits
        self.enforced = enforced

    def _reads_conversation(self, principal: Principal, access: Access) -> bool:
        if access is Access.SUBJECT:
            return False
        if self.enforced and not principal.admin:
            return True
        # A new conversation counts against its subject's daily limit: posting must know.
        return access is Access.POST and self.limits.creation_counter(principal) is not None

    async def admit(
        self, principal: Principal, access: Access, cost: Cost, cid: str | None
    ) -> Admission:
        reads = cid is not None and self._reads_conversation(principal, access)
        counts = self.limits.counts(principal)
        if not reads and not counts:
            return Admission(self.limits, None, None)  # BROKER_AUTH=none, no limits: no Redis
        verdict, owner = await self._engine.limits.admit(
            principal.subject if counts else None,
            self.limits.quota(cost, cid),
            owner_of=cid if reads else None,
        )
        admission = Admission(self.limits, None, self.limits.settle(verdict))
        if owner is not None:
            assert cid is not None
            try:
                admission.exists = self._decide(principal, cid, access, owner)
            except ApiError:
                admission.release()
                raise
        return admission

    async def authorize(self, principal: Principal, cid: str, access: Access) -> bool:
        """Raise unless ``principal`` may have ``access`` to ``cid`` (one read); returns whether
        the conversation exists."""
        return self._decide(principal, cid, access, await self._engine.conversations.owner(cid))

    def _decide(
        self, principal: Principal, cid: str, access: Access, owner: tuple[str | None, bool]
    ) -> bool:
        owner_subject, exists = owner
        if self.enforced:
            if access is Access.PEEK:
                try:
                    decide(principal, cid, Access.READ, owner_subject, exists)
                except ApiError:
                    return False  # the same answer as for a conversation that does not exist
            else:
                decide(principal, cid, access, owner_subject, exists)
        return exists


def guard(
    path: str, endpoint: Endpoint, access: Access, cost: Cost, conversation: Conversation | None
) -> Endpoint:
    """``endpoint`` behind the checks of ``access`` and ``cost``. An open stream's lease is
    released when the stream ends (the response calls ``admission.release`` on close)."""
    named = "{cid}" in path
    if access is not Access.SUBJECT and not named and conversation is None:
        raise ValueError(f"{path}: conversation access needs {{cid}} in the path")
    if named and conversation is not None:
        raise ValueError(f"{path}: the conversation is named twice, in the path and elsewhere")

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        path = request.scope["path"]  # as the authentication layer reads it; no URL parsed
        if is_public(path):
            # A public path (a subscription's callback, say) asked with another method lands
            # on a guarded route that matches any path: it has no principal, and the path
            # does not take that method.
            allowed = "GET, HEAD" if path.endswith(".json") else "POST"
            raise ApiError(METHOD_NOT_ALLOWED, "method not allowed here", {"Allow": allowed})
        gate: Gate = request.state.services.gate
        if conversation is not None:
            cid: str | None = await conversation(request)
        else:
            cid = request.path_params.get("cid")
            if cid is not None:
                check_id(cid, "cid")
        admission = await gate.admit(principal_of(request), access, cost, cid)
        request.state.admission = admission
        try:
            response = await endpoint(request)
        except BaseException:
            admission.release()
            raise
        on_close = getattr(response, "also_on_close", None)
        if on_close is not None and admission.lease is not None:
            on_close(admission.release)
        else:
            admission.release()
        return response

    return guarded


def admission_of(request: Request) -> Admission:
    return request.state.admission


async def authorize(request: Request, cid: str, access: Access) -> bool:
    """May this request's principal have ``access`` to conversation ``cid``? Raises the answer
    (404 ``conversation_not_found`` or 403 ``forbidden``) when not; returns whether the
    conversation exists. For routes that name a conversation another way."""
    check_id(cid, "cid")
    gate: Gate = request.state.services.gate
    return await gate.authorize(principal_of(request), cid, access)
