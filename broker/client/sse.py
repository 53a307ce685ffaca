"""The client's parser of ``text/event-stream``: the one in ``broker.core.sse``, under the names
this package has always exported."""

from broker.core.sse import ServerSentEvent, SSEParser

__all__ = ["SSEParser", "ServerSentEvent"]
