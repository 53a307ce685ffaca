"""Log lines for people (``text``) or for a log pipeline (``json``, one object per line).

Which request, conversation and run a line is about travels in context variables: a front sets
the request id (and the conversation, once routed) for everything its request handling logs, a
worker sets the conversation and run for everything its run logs. Context variables follow
the work into the tasks it starts, so no call passes them along and no line forgets them.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar

import msgspec

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
conversation_id: ContextVar[str | None] = ContextVar("conversation_id", default=None)
run_id: ContextVar[str | None] = ContextVar("run_id", default=None)

FORMATS = ("text", "json")
_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LogLine(msgspec.Struct, omit_defaults=True):
    ts: str
    level: str
    logger: str
    msg: str
    request_id: str | None = None
    cid: str | None = None
    run_id: str | None = None
    # The access log's fields (``broker.access``), passed as ``extra={"access": {...}}``.
    access: dict[str, object] | None = None
    exc: str | None = None


class JsonFormatter(logging.Formatter):
    """One JSON object per record; a traceback goes into ``exc``, never onto extra lines."""

    _encoder = msgspec.json.Encoder()

    def format(self, record: logging.LogRecord) -> str:
        seconds = time.gmtime(record.created)
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", seconds) + f".{int(record.msecs):03d}Z"
        line = LogLine(
            ts=ts,
            level=record.levelname,
            logger=record.name,
            msg=record.getMessage(),
            request_id=request_id.get(),
            cid=conversation_id.get(),
            run_id=run_id.get(),
            access=getattr(record, "access", None),
            exc=self.formatException(record.exc_info) if record.exc_info else None,
        )
        return self._encoder.encode(line).decode()


class TextFormatter(logging.Formatter):
    """The classic line, with the request, conversation and run appended when known."""

    def __init__(self) -> None:
        super().__init__(_TEXT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = [
            f"{name}={value}"
            for name, value in (
                ("request_id", request_id.get()),
                ("cid", conversation_id.get()),
                ("run_id", run_id.get()),
            )
            if value
        ]
        access = getattr(record, "access", None)
        if access:
            context += [f"{name}={value}" for name, value in access.items()]
        return text + (" [" + " ".join(context) + "]" if context else "")


def configure(log_format: str, level: str) -> None:
    """Send every logger's lines (uvicorn's too) to stderr in ``log_format``."""
    if log_format not in FORMATS:
        raise SystemExit(f"BROKER_LOG_FORMAT must be text or json, not {log_format!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
