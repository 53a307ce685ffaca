"""A subject's conversations: the list of those it owns, and deleting one (the right to erasure).

The list reads the owner's index (a sorted set by latest message, see ``Store.index``), then the
conversations' own meta hashes for what it shows: the index is in another hash slot, so it is
only a pointer, and an entry whose conversation expired or changed hands since is skipped and
removed here. The cursor is the position of the last entry of a page (its score and id), so a
page is not shifted by conversations that move to the top in between.
"""

from __future__ import annotations

import base64
import binascii

import anyio

from broker.core.bodies import ConversationPage, ConversationSummary
from broker.core.ids import parse_stream_id
from broker.engine.conversations import Store
from broker.front.actions.cancelling import cancel_run
from broker.front.http.errors import ApiError

TITLE_CHARS = 80
DEFAULT_PAGE = 20
MAX_PAGE = 100
_READ_AHEAD = 16  # index entries read per round trip beyond what the page still needs
_FIELDS = ["first_id", "title", "active_run", "owner"]
_MAX_SCORE = 2**53  # scores are milliseconds; Redis holds them exactly below this


def title_of(content: str) -> str:
    """A conversation's title: its first prompt on one line, cut to ``TITLE_CHARS``."""
    text = " ".join(content.split())
    return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1] + "…"


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
        raise ApiError(
            400, "invalid_cursor", "cursor must be a next_cursor this API returned"
        ) from None


def page_size(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_PAGE:
        raise ApiError(400, "invalid_query", f"limit must be an integer from 1 to {MAX_PAGE}")
    return int(raw)


async def list_conversations(
    store: Store, subject: str, limit: int, cursor: tuple[int, str] | None
) -> ConversationPage:
    """One page of ``subject``'s conversations ('' for those nobody owns), after ``cursor``."""
    key = store.keys.owned(subject)
    top: int | str = cursor[0] if cursor is not None else "+inf"
    found: list[ConversationSummary] = []
    stale: list[str] = []
    offset = 0
    while len(found) <= limit:
        want = limit + 1 - len(found) + _READ_AHEAD
        raw = await store.redis.zrevrangebyscore(
            key, top, "-inf", start=offset, num=want, withscores=True
        )
        offset += len(raw)
        entries = [(member.decode(), int(score)) for member, score in raw]
        if cursor is not None:
            # Equal scores come in descending id order: the last page ended at the cursor's id.
            entries = [(c, s) for c, s in entries if s != cursor[0] or c < cursor[1]]
        metas = []
        if entries:
            async with store.redis.pipeline(transaction=False) as pipe:
                for cid, _ in entries:
                    pipe.hmget(store.conversation(cid).meta, _FIELDS)
                metas = await pipe.execute()
        for (cid, score), (first_id, title, active, owner) in zip(entries, metas, strict=True):
            first = parse_stream_id(first_id) if first_id else None
            if first is None or (owner or b"").decode() != subject:
                stale.append(cid)  # expired, or deleted and created again by someone else
                continue
            found.append(
                ConversationSummary(
                    conversation_id=cid,
                    title=(title or b"").decode(),
                    created_at=first[0],
                    last_activity_at=score,
                    active_run_id=active.decode() if active else None,
                )
            )
        if len(raw) < want:
            break
    if stale:
        await store.redis.zrem(key, *stale)
    next_cursor = None
    if len(found) > limit:
        last = found[limit - 1]
        next_cursor = encode_cursor(last.last_activity_at, last.conversation_id)
    return ConversationPage(found[:limit], next_cursor)


async def delete_conversation(store: Store, cid: str, cancel_wait: float) -> bool:
    """Cancel the active run, waiting for its end so that its worker writes nothing after, then
    delete every key. Returns False when the conversation does not exist."""
    active = await store.active_run(cid)
    unstarted_job = None
    if active is not None:
        try:
            await cancel_run(store, cid, active, cancel_wait)
        except ApiError:
            pass  # the run ended and went in between: nothing to cancel
        info = await store.run_info(cid, active) or {}
        if "worker" not in info and info.get("job_entry"):
            # Ended before any worker started it (none can now): its job is still queued, and
            # a worker reading it after the deletion would mark the run orphaned, a key of the
            # conversation again. Withdrawn, as posting withdraws the job of a refused run.
            unstarted_job = info["job_entry"]
    with anyio.CancelScope(shield=True):  # half a deletion helps nobody: finish it
        owner = await store.delete(cid)
        if active is not None and unstarted_job is not None:
            await store.redis.xdel(store.keys.job_stream(active), unstarted_job)
    return owner is not None
