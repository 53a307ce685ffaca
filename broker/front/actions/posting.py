"""Posting a user's message: the one way a run starts, for API version 1 and every adapter.

A route decodes its own body into a ``PostMessage``; from there everything is shared: the checks
of the message, the owner taken from the principal, the precheck (ownership, a retried request,
a run still active, a new conversation counted against its subject's daily limit), queueing the
job, the accept script, and withdrawing the job when the accept refuses. Every check that can refuse
runs before anything is written, so bad input changes nothing.
"""

from __future__ import annotations

import hashlib
import logging
import re

import msgspec
from starlette.requests import Request

from broker.core.bodies import MessageAccepted, PostMessage
from broker.core.catalogue import Catalogue, UnknownModel
from broker.core.errors import (
    BODY_TOO_LARGE,
    CONTENT_TOO_LARGE,
    CONVERSATION_NOT_FOUND,
    FORBIDDEN,
    IDEMPOTENCY_KEY_REUSED,
    INVALID_FIELD,
    INVALID_IDEMPOTENCY_KEY,
    MALFORMED_JSON,
    RUN_ACTIVE,
    TOO_MANY_CONVERSATIONS,
    TOO_MANY_RUNS,
    TRY_AGAIN,
    UNKNOWN_MODEL,
    UNSUPPORTED_MEDIA_TYPE,
    ApiError,
)
from broker.core.events import UserMessage, encode
from broker.core.ids import new_id, parse_stream_id
from broker.core.jobs import Job
from broker.core.settings import Settings
from broker.engine import UNAVAILABLE
from broker.engine.conversations import NOBODY, Accepted, Owner, Refused, Replay, RunActive
from broker.front.http.docs import Param
from broker.front.security.access import admission_of, conversation_not_found
from broker.front.security.principal import principal_of
from broker.front.services import Services

log = logging.getLogger(__name__)
_encoder = msgspec.json.Encoder()
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
TITLE_CHARS = 80
IDEMPOTENCY_KEY = Param(
    "Idempotency-Key",
    "header",
    {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
    "a retry with the same key and body returns the first answer",
)
# What posting a message may answer, through any protocol's route (one code path); the body's
# own errors come from the route that reads it.
ERRORS = (
    MALFORMED_JSON,
    INVALID_IDEMPOTENCY_KEY,
    FORBIDDEN,
    CONVERSATION_NOT_FOUND,
    RUN_ACTIVE,
    BODY_TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    CONTENT_TOO_LARGE,
    INVALID_FIELD,
    UNKNOWN_MODEL,
    IDEMPOTENCY_KEY_REUSED,
    TOO_MANY_RUNS,
    TOO_MANY_CONVERSATIONS,
    TRY_AGAIN,
)


def accept_window_ms(settings: Settings) -> int:
    """How long after its job is queued a run may still be accepted: well within the time the
    jobs index waits before it ends a run whose job is gone (``workers.worker``)."""
    return int(settings.lease_seconds * 1000)


def title_of(content: str) -> str:
    """A conversation's title: its first prompt on one line, cut to ``TITLE_CHARS``."""
    text = " ".join(content.split())
    return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1] + "…"


def idempotency_key_of(request: Request) -> str | None:
    """The request's ``Idempotency-Key``, checked before anything else is read."""
    key = request.headers.get("idempotency-key")
    if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
        raise ApiError(
            INVALID_IDEMPOTENCY_KEY, "Idempotency-Key must be 1 to 255 visible ASCII characters"
        )
    return key


def check_message(message: PostMessage, max_chars: int, catalogue: Catalogue) -> None:
    """Refuse a message no run could answer: empty, too long, an unknown model, bad params."""
    if not message.content.strip():
        raise ApiError(INVALID_FIELD, "content must not be empty")
    if max_chars and len(message.content) > max_chars:
        raise ApiError(CONTENT_TOO_LARGE, f"content exceeds {max_chars} characters")
    try:
        catalogue.check_params(message.model, message.params)
    except UnknownModel:
        raise ApiError(UNKNOWN_MODEL, f"unknown model {message.model!r}") from None
    except msgspec.ValidationError as exc:
        raise ApiError(INVALID_FIELD, f"params: {exc}") from None


async def post_message(
    request: Request, cid: str, message: PostMessage, idempotency_key: str | None
) -> MessageAccepted:
    """Append the user's message to ``cid`` and start a run that a worker generates.

    Returns the accepted message (for a retry with the same ``idempotency_key``, the first
    answer); raises the refusal as an ``ApiError`` (409 ``run_active``, 404 for somebody else's
    conversation, 429 when a new conversation is over the daily limit, ...).
    """
    services: Services = request.state.services
    conversations = services.engine.conversations
    check_message(message, services.settings.max_content_chars, services.catalogue)
    principal = principal_of(request)
    owner = Owner(principal.subject, principal.admin) if services.gate.enforced else NOBODY
    limits = services.gate.limits
    # The guard read the conversation if its owner is checked or its creation counted.
    counter = limits.creation_counter(principal) if admission_of(request).exists is False else None

    run_id, message_id, answer_id = new_id("r"), new_id("m"), new_id("m")
    _, data = encode(UserMessage(message_id=message_id, content=message.content, run_id=run_id))
    fingerprint = hashlib.sha256(_encoder.encode(message)).hexdigest()
    # A new conversation is counted in the same round trip as the checks before queueing, and
    # given back unless it is created: a refused creation does not count towards the limit.
    refused, created = await conversations.precheck(
        cid, idempotency_key, owner, created_counter=counter
    )
    kept = False
    try:
        if refused is not None:
            return _refusal(cid, refused, fingerprint)
        if created is not None:
            limits.check_creation(created)
        accepted = await _queue_and_accept(
            services,
            cid,
            message,
            owner,
            principal.subject,
            run_id,
            message_id,
            answer_id,
            data,
            fingerprint,
            idempotency_key,
        )
        if not isinstance(accepted, Accepted):
            return _refusal(cid, accepted, fingerprint)
        kept = True
    finally:
        if counter is not None and created is not None and not kept:
            await limits.give_back_creation(counter)
    position = parse_stream_id(accepted.event_id)
    assert position is not None
    try:
        await services.engine.index.record(accepted.owner, cid, position[0])
    except UNAVAILABLE:
        # The run is accepted and goes on; only the owner's list misses it until its next
        # message.
        log.warning("could not add a conversation to its owner's list: Redis unreachable")
    try:
        # Durable Streams subscriptions to `conversations/<cid>`: linked when they match it
        # (a new conversation), woken by the new message.
        await services.engine.subscriptions.stream_created(
            "conversations/" + cid, accepted.owner, index=False
        )
    except UNAVAILABLE:
        log.warning("could not wake the subscriptions of %s: Redis unreachable", cid)
    return MessageAccepted(cid, message_id, run_id, accepted.event_id)


async def _queue_and_accept(
    services: Services,
    cid: str,
    message: PostMessage,
    owner: Owner,
    subject: str,
    run_id: str,
    message_id: str,
    answer_id: str,
    data: bytes,
    fingerprint: str,
    idempotency_key: str | None,
) -> Accepted | RunActive | Replay | Refused:
    """Queue the run's job, then accept the run; a refused run's job is withdrawn."""
    # The job goes first: once the run is accepted, its job already exists, so a front that
    # dies in between leaves at most a job for a run that never was, which a worker drops.
    job = Job(
        conversation_id=cid,
        run_id=run_id,
        message_id=message_id,
        assistant_message_id=answer_id,
        model=message.model,
        params=message.params,
        content=message.content,
        subject=subject,
    )
    job_entry = await services.engine.queue.enqueue(job)
    accepted = await services.engine.conversations.accept(
        cid,
        run_id=run_id,
        message_id=message_id,
        assistant_message_id=answer_id,
        model=message.model,
        data=data,
        idempotency_key=idempotency_key,
        idempotency_record=f"{fingerprint}\n{run_id}\n{message_id}",
        owner=owner,
        title=title_of(message.content),
        job_entry=job_entry,
        # The job's id is the time Redis queued it: a run is not accepted once a worker may
        # have given its job up (see accept.lua).
        deadline_ms=int(job_entry.partition("-")[0]) + accept_window_ms(services.settings),
    )
    if not isinstance(accepted, Accepted):
        # A worker that already read the job finds it gone and leaves the run's keys untouched.
        await services.engine.queue.withdraw(run_id, job_entry)
    return accepted


def _refusal(cid: str, refused: RunActive | Replay | Refused, fingerprint: str) -> MessageAccepted:
    """A POST that starts nothing: the first answer to a retry, or the error."""
    match refused:
        case Replay(record):
            first_fingerprint, first_run, first_message, first_event = record.split("\n")
            if first_fingerprint != fingerprint:
                raise ApiError(
                    IDEMPOTENCY_KEY_REUSED, "this Idempotency-Key was used with another body"
                )
            return MessageAccepted(cid, first_message, first_run, first_event)
        case Refused.NOT_OWNER:
            # Somebody else's: the same answer as everywhere a conversation may not be seen.
            # (The id is taken, so a POST cannot answer like a conversation that does not exist.)
            raise conversation_not_found(cid)
        case RunActive(active):
            raise ApiError(RUN_ACTIVE, f"run {active} of this conversation has not finished")
    raise ApiError(TRY_AGAIN, "the run could not be queued in time", {"Retry-After": "1"})
