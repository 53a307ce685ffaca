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


async def delete_conversation(
    engine: Engine, cid: str, cancel_wait: float, draining: anyio.Event
) -> bool:
    """Cancel the active run, waiting for its end so that its worker writes nothing after, then
    delete every key and withdraw the jobs of runs no worker started (one accepted between the
    cancel and the deletion included). Returns False when the conversation does not exist."""
    active = await engine.conversations.active_run(cid)
    if active is not None:
        try:
            await cancel_run(engine, cid, active, cancel_wait, draining)
        except ApiError:
            pass  # the run ended and went in between: nothing to cancel
    with anyio.CancelScope(shield=True):  # half a deletion helps nobody: finish it
        deleted = await engine.conversations.delete(cid)
        if deleted is None:
            return False
        await engine.index.forget(deleted.owner, cid)
        # A worker reading one of these jobs after the deletion finds it gone and writes
        # nothing; one that read it before finds neither run nor conversation, and drops it.
        for run_id, entry_id in deleted.unstarted:
            await engine.queue.withdraw(run_id, entry_id)
    return True
