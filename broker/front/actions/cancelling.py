"""Cancel: mark the run in Redis, then tell the worker that owns it on its control channel.

The mark is what makes cancel reliable: a run still queued is ended on the spot, and a worker
that misses the control message still stops at its next append. The message only makes it fast.
"""

from __future__ import annotations

import anyio

from broker.core.bodies import CancelState
from broker.core.events import TERMINAL_STATUSES, RunCancelled, encode
from broker.core.jobs import Control, job_encoder
from broker.engine.conversations import Store
from broker.front.http.errors import ApiError

CANCEL_REASON = "user"
_POLL_SECONDS = 0.05


async def cancel_run(
    store: Store, cid: str, run_id: str, wait: float | None
) -> tuple[int, CancelState]:
    """Returns the HTTP status and body: 200 once the run has ended, else 202 'cancelling'."""
    _, data = encode(RunCancelled(run_id, reason=CANCEL_REASON))
    transition = await store.cancel(cid, run_id, data)
    if transition.outcome == "missing":
        raise ApiError(404, "run_not_found", f"no run {run_id} in conversation {cid}")
    if transition.outcome in ("ok", "final"):
        return 200, CancelState(run_id, transition.status, transition.event_id or None)
    if transition.worker:
        message = Control(action="cancel", conversation_id=cid, run_id=run_id)
        await store.tell_worker(transition.worker, job_encoder.encode(message))
    if wait:
        with anyio.move_on_after(wait):
            while True:
                info = await store.run_info(cid, run_id) or {}
                if info.get("status") in TERMINAL_STATUSES:
                    return 200, CancelState(run_id, info["status"], info.get("terminal_event_id"))
                await anyio.sleep(_POLL_SECONDS)
    return 202, CancelState(run_id, "cancelling")
