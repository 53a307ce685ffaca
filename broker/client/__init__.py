"""A Python client of the broker: ``BrokerClient`` (blocking) and ``AsyncBrokerClient``.

    from broker.client import BrokerClient

    with BrokerClient("http://127.0.0.1:8000") as client:
        for piece in client.ask("demo", "Tell me about streams"):
            print(piece, end="", flush=True)

Streams yield the typed event structs of ``broker.core.events`` (re-exported here), a
``Reset`` when the position was trimmed away, and ``UnknownEvent`` for event types newer
than this client. They resume by themselves after a disconnect. Errors are exceptions that
carry the broker's JSON error code (``BrokerError`` and its subclasses). ``RunFailed`` and
``StreamError`` are the former names of ``RunFailedError`` and ``StreamEndedError``, kept as
aliases; ``RunFailedEvent`` is the event struct ``broker.core.events.RunFailed``.
"""

from broker.client.aio import AsyncAnswer, AsyncBrokerClient, AsyncEventStream
from broker.client.errors import (
    BadRequest,
    BrokerError,
    BrokerUnavailable,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    ReconnectFailed,
    RunFailed,
    RunFailedError,
    ServerError,
    StreamEndedError,
    StreamError,
    TokenExpired,
    Unauthorized,
)
from broker.client.sse import ServerSentEvent, SSEParser
from broker.client.sync import Answer, BrokerClient, EventStream
from broker.client.tracking import StreamItem, UnknownEvent
from broker.core.bodies import CancelState, MessageAccepted, ModelList, Snapshot, SnapshotMessage
from broker.core.events import (
    Delta,
    ErrorInfo,
    Event,
    Reset,
    RunCancelled,
    RunCompleted,
    RunStarted,
    Usage,
    UserMessage,
)
from broker.core.events import RunFailed as RunFailedEvent

__all__ = [
    "Answer",
    "AsyncAnswer",
    "AsyncBrokerClient",
    "AsyncEventStream",
    "BadRequest",
    "BrokerClient",
    "BrokerError",
    "BrokerUnavailable",
    "CancelState",
    "Conflict",
    "Delta",
    "ErrorInfo",
    "Event",
    "EventStream",
    "Forbidden",
    "MessageAccepted",
    "ModelList",
    "NotFound",
    "RateLimited",
    "ReconnectFailed",
    "Reset",
    "RunCancelled",
    "RunCompleted",
    "RunFailed",
    "RunFailedError",
    "RunFailedEvent",
    "RunStarted",
    "SSEParser",
    "ServerError",
    "ServerSentEvent",
    "Snapshot",
    "SnapshotMessage",
    "StreamEndedError",
    "StreamError",
    "StreamItem",
    "TokenExpired",
    "Unauthorized",
    "UnknownEvent",
    "Usage",
    "UserMessage",
]
