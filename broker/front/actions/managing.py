"""A subject's conversations: the list of those it owns, and deleting one (the right to erasure).

The list comes from the owner's index (``broker.engine.index``), which skips conversations
that expired or changed hands. The cursor is the position of the last entry of a page (its
score and id), so a page is not shifted by conversations that move to the top in between.
"""

from __future__ import annotations

import base64
import binascii

import anyio

from broker.core.bodies import ConversationPage, ConversationSummary
from broker.core.errors import INVALID_CURSOR, INVALID_QUERY, ApiError
from broker.engine import Engine
from broker.front.actions.cancelling import cancel_run

DEFAULT_PAGE = 20
MAX_PAGE = 100
_MAX_SCORE = 2**53  # scores are milliseconds; Redis holds them exactly below this


def encode_cursor(score: int, cid: str) -> str:
    return base64.urlsafe_b64encode(f"{score}:{cid}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        score, cid = raw.split(":", 1)
        if not score.isascii() or not 0 <= int(score) < _MAX_SCORE:
            raise ValueError(score)
        return int(score), cid
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ApiError(INVALID_CURSOR, "cursor must be a next_cursor this API returned") from None


def page_size(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_PAGE:
        raise ApiError(INVALID_QUERY, f"limit must be an integer from 1 to {MAX_PAGE}")
    return int(raw)


async def list_conversations(
    engine: Engine, subject: str, limit: int, cursor: tuple[int, str] | None
) -> ConversationPage:
    """One page of ``subject``'s conversations ('' for those nobody owns), after ``cursor``."""
    listed, more = await engine.index.page(subject, limit, cursor)
    page = [
        ConversationSummary(
            conversation_id=item.conversation_id,
            title=item.summary.title,
            created_at=item.summary.first[0],
            last_activity_at=item.last_activity_ms,
            active_run_id=item.summary.active_run,
        )
        for item in listed
    ]
    next_cursor = None
    if more and page:
        last = page[-1]
        next_cursor = encode_cursor(last.last_activity_at, last.conversation_id)
    return ConversationPage(page, next_cursor)


async def delete_conversation(engine: Engine, cid: str, cancel_wait: float) -> bool:
    """Cancel the active run, waiting for its end so that its worker writes nothing after, then
    delete every key. Returns False when the conversation does not exist."""
    conversations = engine.conversations
    active = await conversations.active_run(cid)
    unstarted_job = None
    if active is not None:
        try:
            await cancel_run(engine, cid, active, cancel_wait)
        except ApiError:
            pass  # the run ended and went in between: nothing to cancel
        record = await conversations.run(cid, active)
        if record is not None and not record.worker and record.job_entry:
            # Ended before any worker started it (none can now): its job is still queued, and
            # a worker reading it after the deletion would mark the run orphaned, a key of the
            # conversation again. Withdrawn, as posting withdraws the job of a refused run.
            unstarted_job = record.job_entry
    with anyio.CancelScope(shield=True):  # half a deletion helps nobody: finish it
        owner = await conversations.delete(cid)
        if owner is not None:
            await engine.index.forget(owner, cid)
        if active is not None and unstarted_job is not None:
            await engine.queue.withdraw(active, unstarted_job)
    return owner is not None
