"""Routes that describe themselves: each declared once, with everything the server and the
OpenAPI document need.

An ``ApiRoute`` is a Starlette route that also carries who may call it (``Access``), what it
costs its subject (``Cost``) and its ``Doc``: summary, parameters, request body type, the
answers it gives (JSON bodies by their msgspec type, event streams by their frames) and the
error codes it can answer, as entries of the one registry (``broker.core.errors``). The guard
of ``broker.front.security.access`` runs before every endpoint that is not public;
``broker.front.openapi`` reads the declarations and writes no path of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.routing import Route

from broker.front.http.docs import Doc
from broker.front.security.access import Access, Conversation, Endpoint, guard
from broker.front.security.authentication import is_public
from broker.front.security.limits import Cost


class ApiRoute(Route):
    """A route and its declaration. ``Access.PUBLIC`` routes must be on the authentication
    allow-list (``is_public``); every other route is guarded: the conversation ``{cid}`` in its
    path (or the one ``conversation`` finds in the request) is checked for ``access`` and the
    request counted for ``cost`` before the endpoint runs. ``streaming`` routes are served
    below the router, their frames passing through nothing else (``dispatch``)."""

    def __init__(
        self,
        path: str,
        endpoint: Endpoint,
        *,
        methods: Sequence[str],
        access: Access,
        doc: Doc | dict[str, Doc],
        cost: Cost = Cost.REQUEST,
        conversation: Conversation | None = None,
        streaming: bool = False,
    ) -> None:
        if access is Access.PUBLIC:
            if not is_public(path):
                raise ValueError(f"{path}: public, but authentication guards this path")
        elif is_public(path):
            raise ValueError(f"{path}: guarded, but public paths get no principal")
        self.access = access
        self.cost = cost
        self.conversation = conversation
        self.streaming = streaming
        # One Doc, or one per method where a route serves several (HEAD is GET's).
        docs = doc if isinstance(doc, dict) else {method: doc for method in methods}
        self.docs = {method.upper(): docs[method] for method in docs}
        if access is not Access.PUBLIC:
            endpoint = guard(path, endpoint, access, cost, conversation)
        super().__init__(path, endpoint, methods=list(methods))
