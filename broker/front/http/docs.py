"""What a route says of itself, for the OpenAPI document: its ``Doc``.

Summary, parameters, request body type, the answers it gives (JSON bodies by their msgspec
type, event streams by their frames) and the error codes it can answer, as entries of the one
registry (``broker.core.errors``). Routes carry their ``Doc`` (``broker.front.routes.declare``);
``broker.front.openapi`` turns them into the document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from broker.core.errors import ErrorCode


@dataclass(frozen=True)
class Json:
    """A JSON body of ``type``: a msgspec Struct (or a list of one), or a schema as a dict."""

    type: Any
    description: str = ""


@dataclass(frozen=True)
class Frame:
    """One kind of event of a stream: its ``event:`` name (None: data-only), the type of its
    ``data``, and whether it is stored (then it carries an ``id:``)."""

    event: str | None
    data: Any
    description: str
    stored: bool = False


@dataclass(frozen=True)
class Events:
    """A ``text/event-stream`` answer: the union ``name`` of its frames."""

    name: str
    frames: tuple[Frame, ...]
    description: str = ""


@dataclass(frozen=True)
class Raw:
    """Any other body, by media type (``*/*``: any)."""

    media_types: tuple[str, ...]
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})


Body = Json | Events | Raw


@dataclass(frozen=True)
class Reply:
    status: int
    description: str
    body: Body | None = None
    headers: tuple[str, ...] = ()  # headers it carries, e.g. ("Cache-Control: no-store",)


@dataclass(frozen=True)
class Param:
    name: str
    where: Literal["query", "header"]
    schema: dict[str, Any]
    description: str
    required: bool = False


@dataclass(frozen=True)
class Doc:
    operation_id: str
    summary: str
    tag: str
    description: str = ""
    params: tuple[Param, ...] = ()
    body: Json | Raw | None = None
    body_required: bool = True
    replies: tuple[Reply, ...] = ()
    errors: tuple[ErrorCode, ...] = ()
    # Descriptions of path parameters that differ from the usual ones (see openapi).
    path_params: dict[str, str] = field(default_factory=dict)
