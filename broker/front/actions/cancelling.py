"""Cancel: mark the run in Redis, then tell the worker that owns it on its control channel.

The mark is what makes cancel reliable: a run still queued is ended on the spot, and a worker
that misses the control message still stops at its next append. The message only makes it fast.
"""

from __future__ import annotations

import anyio

from broker.core.bodies import CancelState
from broker.core.errors import (
    CONVERSATION_NOT_FOUND,
    FORBIDDEN,
    INVALID_QUERY,
    NO_ACTIVE_RUN,
    RUN_NOT_FOUND,
    ApiError,
)
from broker.core.events import RunCancelled, encode
from broker.core.jobs import ControlMessage
from broker.engine import Engine
from broker.engine.conversations import Cancelling, Ended

CANCEL_REASON = "user"
ACTIVE = "active"  # in a path, the run the conversation has active
_POLL_SECONDS = 0.05
# What cancelling may answer, through any protocol's route (``wait`` is read by the route).
ERRORS = (INVALID_QUERY, FORBIDDEN, CONVERSATION_NOT_FOUND, RUN_NOT_FOUND, NO_ACTIVE_RUN)


async def cancel(
    engine: Engine, cid: str, run_id: str, wait: float | None, draining: anyio.Event
) -> tuple[int, CancelState]:
    """Cancel run ``run_id`` of ``cid``, or its active run (``ACTIVE``): 409 ``no_active_run``
    when none is, 404 for a conversation that does not exist."""
    if run_id == ACTIVE:
        active = await engine.conversations.active_run(cid)
        if active is None:
            if not await engine.conversations.exists(cid):
                raise ApiError(CONVERSATION_NOT_FOUND, f"no conversation {cid}")
            raise ApiError(NO_ACTIVE_RUN, "nothing is running in this conversation")
        run_id = active
    return await cancel_run(engine, cid, run_id, wait, draining)


async def cancel_run(
    engine: Engine, cid: str, run_id: str, wait: float | None, draining: anyio.Event
) -> tuple[int, CancelState]:
    """Returns the HTTP status and body: 200 once the run has ended, else 202 'cancelling' (at
    the end of ``wait``, or at once when the process drains: the documented answer, in time for
    the server's graceful shutdown)."""
    conversations = engine.conversations
    _, data = encode(RunCancelled(run_id, reason=CANCEL_REASON))
    outcome = await conversations.cancel(cid, run_id, data)
    if isinstance(outcome, Ended):
        return 200, CancelState(run_id, outcome.state.value, outcome.event_id or None)
    if not isinstance(outcome, Cancelling):
        raise ApiError(RUN_NOT_FOUND, f"no run {run_id} in conversation {cid}")
    if outcome.worker:
        message = ControlMessage(action="cancel", conversation_id=cid, run_id=run_id)
        await engine.queue.tell_worker(outcome.worker, message)
    if wait:
        with anyio.move_on_after(wait):
            while not draining.is_set():
                record = await conversations.run(cid, run_id)
                if record is not None and record.ended:
                    return 200, CancelState(
                        run_id, record.state.value, record.terminal_event_id or None
                    )
                with anyio.move_on_after(_POLL_SECONDS):
                    await draining.wait()
    return 202, CancelState(run_id, "cancelling")
