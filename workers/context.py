"""The earlier turns of a conversation, as context for the model answering the next prompt.

Folded from the conversation's stream as its snapshot (``broker.core.snapshot``, the same view a
client renders), then cut to the newest turns that fit the configured bounds. A turn is a user
message and the answer to it; a question whose answer is empty (cancelled or failed before any
text) is left out with it, so the context alternates user and assistant as the vendors' chat
APIs expect. Reasoning is never sent back: the vendors ask for answers only.
"""

from __future__ import annotations

from broker.core.bodies import SnapshotMessage
from broker.core.settings import Settings
from broker.engine.conversations import Conversations
from workers.providers.base import Message


def _turns(messages: list[SnapshotMessage], run_id: str) -> list[tuple[Message, Message]]:
    """(question, answer) pairs before the run ``run_id`` asked for, oldest first."""
    questions: dict[str, str] = {}
    order: list[str] = []
    answers: dict[str, str] = {}
    for message in messages:
        if message.run_id == run_id:
            break
        if message.role == "user":
            questions[message.run_id] = message.content
            order.append(message.run_id)
        elif message.role == "assistant":
            answers[message.run_id] = message.content
    return [
        (Message("user", questions[run]), Message("assistant", answers[run]))
        for run in order
        if answers.get(run, "").strip() and questions[run].strip()
    ]


def bound_turns(
    turns: list[tuple[Message, Message]], max_messages: int, max_chars: int
) -> tuple[Message, ...]:
    """The newest whole turns within ``max_messages`` messages and ``max_chars`` characters."""
    kept: list[tuple[Message, Message]] = []
    messages = chars = 0
    for question, answer in reversed(turns):
        size = len(question.content) + len(answer.content)
        if messages + 2 > max_messages or chars + size > max_chars:
            break
        kept.append((question, answer))
        messages += 2
        chars += size
    return tuple(message for turn in reversed(kept) for message in turn)


async def conversation_context(
    conversations: Conversations, cid: str, run_id: str, settings: Settings
) -> tuple[Message, ...]:
    """The turns before ``run_id`` that fit ``context_max_messages`` and ``context_max_chars``."""
    if settings.context_max_messages < 2 or settings.context_max_chars <= 0:
        return ()
    snapshot = await conversations.snapshot(cid)
    if snapshot is None:
        return ()
    return bound_turns(
        _turns(snapshot.messages, run_id), settings.context_max_messages, settings.context_max_chars
    )
