"""Who may do what to a conversation, declared where each route is declared.

Every route outside the public allow-list is a ``GuardedRoute``: it names the ``Access`` it needs
to the conversation in its path and what it ``Cost``s its subject. Before the handler runs, the
guard reads the conversation's owner and counts the subject's limits in one pipelined round trip,
and refuses:

- anyone who may not read the conversation with exactly the answer for a conversation that does
  not exist (``404 conversation_not_found``, same body, same round trip): existence never leaks;
- a subject that may only read it (a ``read`` grant) with ``403 forbidden`` on a write.

The owner may do everything, from any device; an ``admin`` principal may do everything on every
conversation. With BROKER_AUTH=none nothing is checked: only the limits are counted.

A route whose conversation is not in its path (a protocol that names it in the body) gives
``GuardedRoute`` the function that finds it; the guard runs it, then admits as for any route.
Other resources owned by a subject use ``check_owner``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from enum import Enum
from typing import Any

import redis.asyncio as aioredis
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from broker.core.ids import is_valid_path_id
from broker.engine.keys import Keys
from broker.front.http.errors import ApiError
from broker.front.security.limits import Cost, Limits
from broker.front.security.principal import Principal, principal_of
from broker.front.streaming.sse import EventStreamResponse

Endpoint = Callable[[Request], Awaitable[Response]]
# Of a conversation's meta hash: who owns it, and whether it exists at all.
_META_FIELDS = ["owner", "first_id"]


class Access(Enum):
    SUBJECT = "subject"  # any authenticated principal; no conversation in the path
    READ = "read"  # stream, resume, snapshot: the owner, a read grant, an admin
    WRITE = "write"  # cancel: the owner or an admin
    POST = "post"  # a message: WRITE, or anyone when the conversation does not exist yet
    # READ, or anyone when the conversation does not exist yet: a stream that waits for it. Once
    # it exists, the stream checks READ again before it sends anything (whoever posts first
    # owns it, see ACCEPT). Like POST, it tells a taken id from a free one, nothing more.
    FOLLOW = "follow"
    # READ, except that a conversation the caller may not read is admitted as one that does not
    # exist (``Admission.exists`` False), for routes whose answer to a missing conversation is
    # not an error (the AI SDK's "nothing to resume", an empty message list).
    PEEK = "peek"


def conversation_not_found(cid: str) -> ApiError:
    """The one answer for a conversation that does not exist or that the caller may not see."""
    return ApiError(404, "conversation_not_found", f"no conversation {cid}")


def decide(principal: Principal, cid: str, access: Access, owner: str | None, exists: bool) -> None:
    """Raise unless ``principal`` may have ``access`` to conversation ``cid``, whose owner and
    existence the caller read (an ownerless conversation was created with BROKER_AUTH=none)."""
    if principal.admin or access is Access.SUBJECT or owner == principal.subject:
        return
    if access in (Access.POST, Access.FOLLOW) and not exists:
        return  # the message creates it; the store claims it atomically (see ACCEPT)
    if access in (Access.READ, Access.FOLLOW) and cid in principal.read:
        return
    if exists and cid in principal.read:
        raise ApiError(403, "forbidden", "this token may read this conversation, not write to it")
    raise conversation_not_found(cid)


def check_owner(principal: Principal, owner: str | None, missing: ApiError) -> None:
    """For other resources a subject owns: the owner and admins pass; anyone else gets the same
    ``missing`` error as a resource that does not exist."""
    if not principal.admin and owner != principal.subject:
        raise missing


def _path_cid(request: Request) -> str | None:
    cid = request.path_params.get("cid")
    if cid is not None and not is_valid_path_id(cid):
        raise ApiError(400, "invalid_id", "cid must match [A-Za-z0-9_-]{1,128}")
    return cid


class Admission:
    """What the guard found out and holds for one request."""

    __slots__ = ("exists", "stream_id", "_limits")

    def __init__(self, limits: Limits, exists: bool | None, stream_id: str | None) -> None:
        self.exists = exists  # None when the conversation was not read
        self.stream_id = stream_id
        self._limits = limits

    def release(self) -> None:
        if self.stream_id is not None:
            self._limits.leases.release(self.stream_id)
            self.stream_id = None


class Gate:
    """The checks every guarded route runs first; ``enforced`` is False with BROKER_AUTH=none."""

    def __init__(
        self, redis: aioredis.Redis, keys: Keys, limits: Limits, *, enforced: bool
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.limits = limits
        self.enforced = enforced

    def _reads_conversation(
        self, principal: Principal, access: Access, creation_counted: bool
    ) -> bool:
        if access is Access.SUBJECT:
            return False
        if self.enforced and not principal.admin:
            return True
        return access is Access.POST and creation_counted

    async def admit(
        self, principal: Principal, access: Access, cost: Cost, cid: str | None
    ) -> Admission:
        counts_creation = self.limits.counts_creation(principal)
        reads = cid is not None and self._reads_conversation(principal, access, counts_creation)
        if not reads and not self.limits.counts(principal):
            return Admission(self.limits, None, None)  # BROKER_AUTH=none, no limits: no Redis
        async with self._redis.pipeline(transaction=False) as pipe:
            if reads:
                assert cid is not None
                pipe.hmget(self._keys.conversation(cid).meta, _META_FIELDS)
            pending = await self.limits.queue(pipe, principal, cost, cid)
            replies: list[Any] = await pipe.execute()
        stream_id = None
        if pending is not None:
            stream_id = await self.limits.settle(pending, replies[-1])
        admission = Admission(self.limits, None, stream_id)
        if reads:
            assert cid is not None
            try:
                admission.exists = self._decide(principal, cid, access, replies[0])
            except ApiError:
                admission.release()
                raise
        return admission

    async def authorize(self, principal: Principal, cid: str, access: Access) -> bool:
        """Raise unless ``principal`` may have ``access`` to ``cid`` (one read); returns whether
        the conversation exists."""
        meta = self._keys.conversation(cid).meta
        return self._decide(principal, cid, access, await self._redis.hmget(meta, _META_FIELDS))

    def _decide(self, principal: Principal, cid: str, access: Access, meta: list[Any]) -> bool:
        owner, first_id = meta
        exists = first_id is not None
        if self.enforced:
            owner_subject = owner.decode() if owner else None
            if access is Access.PEEK:
                try:
                    decide(principal, cid, Access.READ, owner_subject, exists)
                except ApiError:
                    return False  # the same answer as for a conversation that does not exist
            else:
                decide(principal, cid, access, owner_subject, exists)
        return exists


# Finds the conversation a request is about when its path does not name it; raises the
# request's 4xx for input it cannot read.
Conversation = Callable[[Request], Awaitable[str]]


def _guard(
    endpoint: Endpoint, access: Access, cost: Cost, conversation: Conversation | None
) -> Endpoint:
    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        gate: Gate = request.state.services.gate
        cid = await conversation(request) if conversation is not None else _path_cid(request)
        admission = await gate.admit(principal_of(request), access, cost, cid)
        request.state.admission = admission
        try:
            response = await endpoint(request)
        except BaseException:
            admission.release()
            raise
        if isinstance(response, EventStreamResponse) and admission.stream_id is not None:
            response.also_on_close(admission.release)
        else:
            admission.release()
        return response

    return guarded


class GuardedRoute(Route):
    """A route that needs a principal with ``access`` to the conversation ``{cid}`` in its path,
    or to the one ``conversation`` finds in the request when the path does not name it."""

    def __init__(
        self,
        path: str,
        endpoint: Endpoint,
        *,
        methods: Sequence[str],
        access: Access,
        cost: Cost = Cost.REQUEST,
        conversation: Conversation | None = None,
    ) -> None:
        named = "{cid}" in path
        if access is not Access.SUBJECT and not named and conversation is None:
            raise ValueError(f"{path}: conversation access needs {{cid}} in the path")
        if named and conversation is not None:
            raise ValueError(f"{path}: the conversation is named twice, in the path and elsewhere")
        self.access = access
        self.cost = cost
        self.conversation = conversation
        super().__init__(path, _guard(endpoint, access, cost, conversation), methods=list(methods))


def admission_of(request: Request) -> Admission:
    return request.state.admission


async def authorize(request: Request, cid: str, access: Access) -> bool:
    """May this request's principal have ``access`` to conversation ``cid``? Raises the answer
    (404 ``conversation_not_found`` or 403 ``forbidden``) when not; returns whether the
    conversation exists. For adapters whose routes name a conversation another way."""
    if not is_valid_path_id(cid):
        raise ApiError(400, "invalid_id", "cid must match [A-Za-z0-9_-]{1,128}")
    gate: Gate = request.state.services.gate
    return await gate.authorize(principal_of(request), cid, access)
