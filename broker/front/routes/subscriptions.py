"""Durable Streams subscriptions: ``/v1/stream/__ds/subscriptions/:id`` and the signing keys.

Routed before the streams themselves (the protocol reserves ``__ds``). A subscription belongs
to the subject that created it, in a namespace of its own: another subject's request for the
same id is about its own subscription, so it can neither read, change, claim from nor learn
the existence of anyone else's. A subscriber links only streams it may read (with
BROKER_AUTH=jwt: its own, or every one for an admin), conversations included
(``conversations/<cid>``).

``callback``, ``ack`` and ``release`` carry no service token: the wake's own bearer token (the
webhook's ``callback_token``, the claim's ``token``) authorizes them, checked against the
current wake in the script that applies them.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
from urllib.parse import unquote

import anyio
import msgspec
from starlette.requests import Request
from starlette.responses import Response

from broker.core.errors import (
    ALREADY_CLAIMED,
    FENCED,
    INVALID_FIELD,
    INVALID_OFFSET,
    INVALID_SUBSCRIPTION,
    MALFORMED_JSON,
    SUBSCRIPTION_EXISTS,
    SUBSCRIPTION_NOT_FOUND,
    TOO_MANY_SUBSCRIPTION_STREAMS,
    TOO_MANY_SUBSCRIPTIONS,
    UNSUPPORTED_MEDIA_TYPE,
    WEBHOOK_URL_REJECTED,
    ApiError,
)
from broker.core.ids import StreamPos
from broker.engine.keys import subscription_digest
from broker.engine.subscriptions import Subscription, Subscriptions, digest_of_token
from broker.front.http.bodies import json_body
from broker.front.http.docs import Doc, Json, Raw, Reply
from broker.front.routes.declare import ApiRoute
from broker.front.security.access import Access
from broker.front.security.principal import principal_of
from broker.front.services import Services
from broker.protocols.durable_streams import offsets
from broker.protocols.durable_streams.subscriptions import (
    JWKS_MEDIA_TYPE,
    PULL_WAKE,
    WEBHOOK,
    AckAnswer,
    AckRequest,
    Claimed,
    ClaimRequest,
    Jwks,
    Signing,
    StreamLink,
    StreamsRequest,
    SubscriptionRequest,
    SubscriptionView,
    WakeStream,
    WebhookView,
    address_allowed,
    check_id,
    check_webhook_url,
    normalize,
    stream_path,
)

ROOT = "/v1/stream/"
BASE = ROOT + "__ds/subscriptions/{id}"
_BODY_LIMIT = 256 * 1024
_encoder = msgspec.json.Encoder()


def _json(body: msgspec.Struct, status: int = 200) -> Response:
    return Response(_encoder.encode(body), status, media_type="application/json", headers=_NO_STORE)


_NO_STORE = {"Cache-Control": "no-store"}


def _services(request: Request) -> Services:
    return request.state.services


def _subscriptions(request: Request) -> Subscriptions:
    return _services(request).engine.subscriptions


def _owner(request: Request) -> tuple[str, bool]:
    """Whose namespace the request is in: its subject (nobody's without authentication)."""
    principal = principal_of(request)
    if not _services(request).gate.enforced:
        return "", False
    return principal.subject, principal.admin


def _id(request: Request) -> str:
    return check_id(request.path_params["id"])


def _not_found(subscription_id: str) -> ApiError:
    return ApiError(SUBSCRIPTION_NOT_FOUND, f"no subscription {subscription_id}")


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


async def _view(request: Request, subscription: Subscription) -> SubscriptionView:
    config = subscription.config
    states = await _subscriptions(request).states(subscription)
    webhook = None
    if config.webhook_url is not None:
        kid, _ = await _subscriptions(request).signing_key()
        webhook = WebhookView(
            config.webhook_url,
            Signing("ed25519", kid, f"{subscription.base_url}{ROOT}__ds/jwks.json"),
        )
    status = "active" if subscription.status != "failed" else "failed"
    return SubscriptionView(
        id=subscription.id,
        subscription_id=subscription.id,
        type=config.type,
        pattern=config.pattern,
        streams=[
            StreamLink(state.path, state.kind, offsets.encode(state.acked))  # type: ignore[arg-type]
            for state in states
        ],
        webhook=webhook,
        wake_stream=config.wake_stream,
        lease_ttl_ms=config.lease_ttl_ms,
        created_at=_iso(subscription.created_ms),
        status=status,
        description=config.description,
    )


def _iso(ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


async def _check_webhook(request: Request, url: str) -> None:
    """https to a public address (development: localhost too), also once resolved."""
    allow = _services(request).settings.ds_webhook_allow_localhost
    host, port = check_webhook_url(url, allow_localhost=allow)
    try:
        ipaddress.ip_address(host.strip("[]"))
        return  # a literal address was checked already
    except ValueError:
        pass
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise ApiError(WEBHOOK_URL_REJECTED, "the webhook's host does not resolve") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not address_allowed(address, allow_localhost=allow):
            raise ApiError(
                WEBHOOK_URL_REJECTED, "the webhook's host resolves to a private or local address"
            )


async def put_subscription(request: Request) -> Response:
    subscription_id = _id(request)
    body = await json_body(request, SubscriptionRequest, _BODY_LIMIT)
    config = normalize(body)
    if config.webhook_url is not None:
        await _check_webhook(request, config.webhook_url)
    owner, admin = _owner(request)
    settings = _services(request).settings
    subscriptions = _subscriptions(request)
    if len(config.streams) > settings.ds_max_streams_per_subscription:
        raise ApiError(TOO_MANY_SUBSCRIPTION_STREAMS, "too many streams for one subscription")
    limit = settings.limit_ds_subscriptions_per_subject
    existing = await subscriptions.get(owner, subscription_id)
    if existing is None and limit and not admin and await subscriptions.count_of(owner) >= limit:
        raise ApiError(TOO_MANY_SUBSCRIPTIONS, f"{limit} subscriptions exist already")
    put = await subscriptions.put(owner, admin, subscription_id, config, _base_url(request))
    if put.outcome == "different":
        raise ApiError(SUBSCRIPTION_EXISTS, "the subscription exists with another configuration")
    subscription = await subscriptions.get(owner, subscription_id)
    if subscription is None:
        raise _not_found(subscription_id)  # deleted meanwhile
    return _json(await _view(request, subscription), 201 if put.outcome == "created" else 200)


async def get_subscription(request: Request) -> Response:
    subscription_id = _id(request)
    owner, _ = _owner(request)
    subscription = await _subscriptions(request).get(owner, subscription_id)
    if subscription is None:
        raise _not_found(subscription_id)
    return _json(await _view(request, subscription))


async def delete_subscription(request: Request) -> Response:
    subscription_id = _id(request)
    owner, _ = _owner(request)
    if not await _subscriptions(request).delete(owner, subscription_id):
        raise _not_found(subscription_id)
    return Response(status_code=204)


async def _own(request: Request) -> Subscription:
    subscription_id = _id(request)
    owner, _ = _owner(request)
    subscription = await _subscriptions(request).get(owner, subscription_id)
    if subscription is None:
        raise _not_found(subscription_id)
    return subscription


async def add_streams(request: Request) -> Response:
    subscription = await _own(request)
    body = await json_body(request, StreamsRequest, _BODY_LIMIT)
    paths = sorted({stream_path(path) for path in body.streams})
    new = [path for path in paths if path not in subscription.links]
    limit = _services(request).settings.ds_max_streams_per_subscription
    if len(subscription.links) + len(new) > limit:
        raise ApiError(TOO_MANY_SUBSCRIPTION_STREAMS, f"a subscription links at most {limit}")
    refused = await _subscriptions(request).link(
        subscription.digest, subscription.owner, subscription.admin, paths, kind="e"
    )
    if refused:
        raise ApiError(TOO_MANY_SUBSCRIPTION_STREAMS, f"a subscription links at most {limit}")
    return Response(status_code=204)


async def remove_stream(request: Request) -> Response:
    subscription = await _own(request)
    path = stream_path(unquote(request.path_params["path"]))
    if not await _subscriptions(request).unlink(subscription.digest, path):
        raise _not_found(subscription.id)
    return Response(status_code=204)


def _wake_streams(states: list) -> list[WakeStream]:  # type: ignore[type-arg]
    return [
        WakeStream(
            state.path,
            state.kind,
            offsets.encode(state.acked),
            offsets.encode(state.tail if state.tail is not None else state.acked),
            state.pending,
        )
        for state in states
    ]


async def claim(request: Request) -> Response:
    subscription = await _own(request)
    body = await json_body(request, ClaimRequest, _BODY_LIMIT)
    if subscription.config.type != PULL_WAKE:
        raise ApiError(INVALID_SUBSCRIPTION, "only a pull-wake subscription is claimed")
    worker = body.worker.strip()[:255] or "worker"
    subscriptions = _subscriptions(request)
    claimed = await subscriptions.claim(subscription.digest, worker)
    if claimed.outcome == "claimed":
        raise ApiError(
            ALREADY_CLAIMED,
            "another worker holds this subscription's lease",
            fields={"current_holder": claimed.holder, "generation": claimed.generation},
        )
    if claimed.outcome != "ok":
        raise _not_found(subscription.id)
    states = await subscriptions.states(subscription)
    return _json(
        Claimed(
            claimed.wake_id,
            claimed.generation,
            claimed.token,
            _wake_streams(states),
            subscription.config.lease_ttl_ms,
        )
    )


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(FENCED, "this request needs the wake's token as Authorization: Bearer")
    return token.strip()


async def _acknowledge(request: Request, mode: str) -> Response:
    """The callback of a webhook, or the ack / release of a pull-wake claim."""
    subscription_id = _id(request)
    token = _bearer(request)
    body = await json_body(request, AckRequest, _BODY_LIMIT)
    acks: list[tuple[str, StreamPos]] = []
    for ack in body.acks:
        position = offsets.decode(ack.offset)
        if position is None:
            raise ApiError(INVALID_OFFSET, f"not an offset of this server: {ack.offset!r}")
        acks.append((stream_path(ack.stream), position))
    subscriptions = _subscriptions(request)
    digest = digest_of_token(token)  # checked before it names a key
    subscription = await subscriptions.load(digest) if digest is not None else None
    expected = (WEBHOOK,) if mode == "callback" else (PULL_WAKE,)
    if (
        subscription is None
        or subscription.id != subscription_id
        or subscription.config.type not in expected
        or digest != subscription_digest(subscription.owner, subscription_id)
    ):
        raise ApiError(FENCED, "this token is not of a current wake of this subscription")
    # An ack never moves a cursor past its stream's tail.
    states = {state.path: state for state in await subscriptions.states(subscription)}
    for path, position in acks:
        state = states.get(path)
        if state is None or state.tail is None or position > state.tail:
            raise ApiError(INVALID_OFFSET, f"{path} is not linked, or the offset is past its tail")
    outcome, _ = await subscriptions.acknowledge(
        token,
        body.generation,
        body.wake_id,
        mode,
        body.done,
        acks if mode != "release" else [],
    )
    if outcome == "fenced":
        raise ApiError(FENCED, "stale wake: generation, wake_id or token, or its lease lapsed")
    if mode == "release":
        return Response(status_code=204)
    next_wake = False
    if outcome == "released":
        acked = dict(acks)
        next_wake = any(
            state.tail is not None and state.tail > max(state.acked, acked.get(path, state.acked))
            for path, state in states.items()
        )
    return _json(AckAnswer(True, next_wake))


async def callback(request: Request) -> Response:
    return await _acknowledge(request, "callback")


async def ack(request: Request) -> Response:
    return await _acknowledge(request, "ack")


async def release(request: Request) -> Response:
    return await _acknowledge(request, "release")


async def jwks(request: Request) -> Response:
    keys: Jwks = await _subscriptions(request).jwks()
    return Response(
        _encoder.encode(keys),
        media_type=JWKS_MEDIA_TYPE,
        headers={"Cache-Control": "public, max-age=300"},
    )


_TAG = "durable-streams"
_ID = {"id": "the subscription's id: 1 to 128 of [A-Za-z0-9._-], in the caller's namespace"}
_COMMON = (INVALID_SUBSCRIPTION, MALFORMED_JSON, INVALID_FIELD, UNSUPPORTED_MEDIA_TYPE)
_WAKE_ERRORS = (FENCED, INVALID_OFFSET, MALFORMED_JSON, INVALID_FIELD, UNSUPPORTED_MEDIA_TYPE)

routes = [
    ApiRoute(
        ROOT + "__ds/jwks.json",
        jwks,
        methods=["GET"],
        access=Access.PUBLIC,
        doc=Doc(
            "getWebhookKeys",
            "The public keys of the webhook signatures (a JWK Set, cacheable for 5 minutes)",
            _TAG,
            replies=(
                Reply(
                    200,
                    "the JWK Set: `keys`, each an Ed25519 JWK (kty OKP, crv Ed25519, kid, use "
                    "sig, alg EdDSA, x)",
                    Raw(
                        (JWKS_MEDIA_TYPE,),
                        {
                            "type": "object",
                            "properties": {"keys": {"type": "array", "items": {"type": "object"}}},
                            "required": ["keys"],
                        },
                    ),
                ),
            ),
        ),
    ),
    ApiRoute(
        BASE,
        put_subscription,
        methods=["PUT"],
        access=Access.SUBJECT,
        doc=Doc(
            "putSubscription",
            "Create a subscription (201), or re-confirm an identical one (200)",
            _TAG,
            "A webhook or pull-wake subscription to a `pattern` of stream paths and/or "
            "explicit `streams`; matching streams that exist are linked at their tail.",
            body=Json(SubscriptionRequest),
            replies=(
                Reply(201, "created", Json(SubscriptionView)),
                Reply(200, "it existed with the same configuration", Json(SubscriptionView)),
            ),
            errors=(
                *_COMMON,
                WEBHOOK_URL_REJECTED,
                SUBSCRIPTION_EXISTS,
                TOO_MANY_SUBSCRIPTIONS,
                TOO_MANY_SUBSCRIPTION_STREAMS,
            ),
            path_params=_ID,
        ),
    ),
    ApiRoute(
        BASE,
        get_subscription,
        methods=["GET"],
        access=Access.SUBJECT,
        doc=Doc(
            "getSubscription",
            "A subscription: its configuration, status and each stream's acked offset",
            _TAG,
            replies=(Reply(200, "the subscription", Json(SubscriptionView)),),
            errors=(INVALID_SUBSCRIPTION, SUBSCRIPTION_NOT_FOUND),
            path_params=_ID,
        ),
    ),
    ApiRoute(
        BASE,
        delete_subscription,
        methods=["DELETE"],
        access=Access.SUBJECT,
        doc=Doc(
            "deleteSubscription",
            "Delete (tombstone) a subscription: its wakes' tokens fail from now on",
            _TAG,
            replies=(Reply(204, "deleted"),),
            errors=(INVALID_SUBSCRIPTION, SUBSCRIPTION_NOT_FOUND),
            path_params=_ID,
        ),
    ),
    ApiRoute(
        BASE + "/streams",
        add_streams,
        methods=["POST"],
        access=Access.SUBJECT,
        doc=Doc(
            "addSubscriptionStreams",
            "Link streams explicitly, at their tail (idempotent)",
            _TAG,
            body=Json(StreamsRequest),
            replies=(Reply(204, "linked"),),
            errors=(*_COMMON, SUBSCRIPTION_NOT_FOUND, TOO_MANY_SUBSCRIPTION_STREAMS),
            path_params=_ID,
        ),
    ),
    ApiRoute(
        BASE + "/streams/{path:path}",
        remove_stream,
        methods=["DELETE"],
        access=Access.SUBJECT,
        doc=Doc(
            "removeSubscriptionStream",
            "Remove an explicit link (a glob link stays; idempotent)",
            _TAG,
            replies=(Reply(204, "removed"),),
            errors=(INVALID_SUBSCRIPTION, SUBSCRIPTION_NOT_FOUND),
            path_params={**_ID, "path": "the stream path, URL-encoded"},
        ),
    ),
    ApiRoute(
        BASE + "/claim",
        claim,
        methods=["POST"],
        access=Access.SUBJECT,
        doc=Doc(
            "claimSubscription",
            "A pull-wake worker claims the subscription's wake: one wins, the others get "
            "`409 ALREADY_CLAIMED`",
            _TAG,
            body=Json(ClaimRequest),
            replies=(Reply(200, "claimed: the wake, its token and lease", Json(Claimed)),),
            errors=(*_COMMON, SUBSCRIPTION_NOT_FOUND, ALREADY_CLAIMED),
            path_params=_ID,
        ),
    ),
    ApiRoute(
        BASE + "/callback",
        callback,
        methods=["POST"],
        access=Access.PUBLIC,
        doc=Doc(
            "subscriptionCallback",
            "A webhook receiver acks (Authorization: Bearer <callback_token>)",
            _TAG,
            body=Json(AckRequest),
            replies=(Reply(200, "applied", Json(AckAnswer)),),
            errors=_WAKE_ERRORS,
            path_params=_ID,
        ),
    ),
    ApiRoute(
        BASE + "/ack",
        ack,
        methods=["POST"],
        access=Access.PUBLIC,
        doc=Doc(
            "subscriptionAck",
            "A pull-wake worker acks, or extends its lease (Authorization: Bearer <token>)",
            _TAG,
            body=Json(AckRequest),
            replies=(Reply(200, "applied", Json(AckAnswer)),),
            errors=_WAKE_ERRORS,
            path_params=_ID,
        ),
    ),
    ApiRoute(
        BASE + "/release",
        release,
        methods=["POST"],
        access=Access.PUBLIC,
        doc=Doc(
            "subscriptionRelease",
            "A pull-wake worker gives its claim back without acking",
            _TAG,
            body=Json(AckRequest),
            replies=(Reply(204, "released"),),
            errors=_WAKE_ERRORS,
            path_params=_ID,
        ),
    ),
]
