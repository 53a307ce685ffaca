"""The webhook a finished run is POSTed to: its body, and its signature.

The body is built from the stored run by the same fold as the snapshot, so the receiver gets
the message exactly as clients render it. The signature is HMAC-SHA256 over
``"<unix seconds>.<raw body>"`` with the shared secret, sent as
``Broker-Signature: t=<unix seconds>,v1=<hex>``; the timestamp lets a receiver refuse an old
request replayed by someone who captured it. ``Broker-Delivery-Id`` (the run id) is the same
on every attempt, so a receiver can tell a retry from a new run.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Literal
from urllib.parse import urlsplit

import msgspec

from broker.core.bodies import SnapshotMessage
from broker.core.entries import entry_event
from broker.core.events import (
    ErrorInfo,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunStarted,
    Usage,
    UserMessage,
)
from broker.core.finished import FinishedRun
from broker.core.snapshot import AnswerFold, assistant_message, user_message

# As for an HS256 signing key (RFC 7518 §3.2): a secret at least as long as the hash.
MIN_SECRET_BYTES = 32

SIGNATURE_HEADER = "Broker-Signature"
DELIVERY_ID_HEADER = "Broker-Delivery-Id"
ATTEMPT_HEADER = "Broker-Delivery-Attempt"


class RunWebhook(msgspec.Struct, frozen=True):
    """What the webhook receives when a run has ended."""

    type: Literal["run.ended"]
    conversation_id: str
    run_id: str
    status: str  # completed, cancelled or failed
    model: str
    # The user's message that asked for the run, and the assistant's answer (empty when the
    # run was cancelled before it started), both as the snapshot merges them.
    user_message: SnapshotMessage | None
    message: SnapshotMessage
    event_id: str  # the terminal event's id in the conversation stream
    finish_reason: str | None
    usage: Usage | None
    error: ErrorInfo | None
    # True when retention had trimmed the run's first events before they could be read.
    truncated: bool


webhook_encoder = msgspec.json.Encoder()


def setting_errors(url: str, secret: str) -> list[str]:
    """What keeps the webhook settings from working (a worker refuses to start on them); none
    when no webhook is configured."""
    if not url:
        return []
    errors = []
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok:
        errors.append("BROKER_WEBHOOK_URL must be an http:// or https:// URL")
    if not secret:
        errors.append("BROKER_WEBHOOK_SECRET must be set when BROKER_WEBHOOK_URL is")
    return errors


def setting_warnings(url: str, secret: str) -> list[str]:
    """What works but should not go live: a short secret, a signed body sent in clear text."""
    if not url or setting_errors(url, secret):
        return []
    warnings = []
    if len(secret.encode()) < MIN_SECRET_BYTES:
        warnings.append(
            f"BROKER_WEBHOOK_SECRET is {len(secret.encode())} bytes; use at least "
            f"{MIN_SECRET_BYTES} random bytes, or a receiver's signatures can be guessed"
        )
    if urlsplit(url).scheme == "http" and urlsplit(url).hostname not in ("localhost", "127.0.0.1"):
        warnings.append(
            "BROKER_WEBHOOK_URL is plain http: finished answers cross the network unencrypted"
        )
    return warnings


def webhook_body(run: FinishedRun) -> RunWebhook:
    prompt: SnapshotMessage | None = None
    answer = AnswerFold(assistant_message(run.assistant_message_id, run.run_id, run.status))
    finish_reason: str | None = None
    usage: Usage | None = None
    error: ErrorInfo | None = None
    for entry in run.entries:
        event = entry_event(entry)
        if isinstance(event, UserMessage):
            prompt = user_message(event, run.status)
        elif isinstance(event, RunStarted):
            answer.message.message_id = event.message_id
        elif isinstance(event, RunCompleted):
            finish_reason, usage = event.finish_reason, event.usage
        elif isinstance(event, RunFailed):
            error = event.error
            answer.add(event)
        elif not isinstance(event, RunCancelled):
            answer.add(event)
    return RunWebhook(
        type="run.ended",
        conversation_id=run.conversation_id,
        run_id=run.run_id,
        status=run.status,
        model=run.model,
        user_message=prompt,
        message=answer.result(),
        event_id=run.terminal_event_id,
        finish_reason=finish_reason,
        usage=usage,
        error=error,
        truncated=not run.complete,
    )


def signature(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``Broker-Signature`` header value for ``body``, signed now (or at ``timestamp``)."""
    t = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify_signature(
    secret: str,
    header: str,
    body: bytes,
    *,
    tolerance_seconds: float = 300,
    now: float | None = None,
) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` within ``tolerance_seconds`` of now."""
    fields = dict(part.strip().split("=", 1) for part in header.split(",") if "=" in part)
    t, given = fields.get("t", ""), fields.get("v1", "")
    if not t.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(t)) > tolerance_seconds:
        return False
    expected = hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given)
