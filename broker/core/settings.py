"""One settings object, read from ``BROKER_*`` environment variables.

Every process (front, worker, ``broker dev``) builds it once at start-up and passes it down;
nothing reads the environment anywhere else.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Annotated

import msgspec


def redacted_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` and without its query (redis-py also reads
    ``?password=`` there): fit for a log line or a terminal."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest = rest.split("?", 1)[0]
    credentials, at, host = rest.rpartition("@")
    if not at:
        return f"{scheme}://{host}"
    user, colon, _ = credentials.partition(":")
    return f"{scheme}://{user}:***@{host}" if colon else f"{scheme}://{user}@{host}"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every ``BROKER_<FIELD>`` setting. Each field's description is the one the configuration
    page of the documentation shows (``documented_fields``), so it is written for operators."""

    redis_url: Annotated[
        str,
        msgspec.Meta(
            description="The Redis every process shares. `broker dev` starts an embedded one "
            "when this is unset. With `BROKER_REDIS_CLUSTER`, any node of the cluster."
        ),
    ] = "redis://127.0.0.1:6379/0"
    redis_wait_seconds: Annotated[
        float,
        msgspec.Meta(
            ge=0,
            description="How long `broker serve` waits at start for Redis to answer before it "
            "exits, naming the address it tried.",
        ),
    ] = 10.0
    key_prefix: Annotated[
        str,
        msgspec.Meta(
            description="Namespace of every key and channel, so several deployments (or test "
            "runs) can share one Redis."
        ),
    ] = "broker"
    # Retention
    stream_maxlen: Annotated[
        int,
        msgspec.Meta(
            description="Retention: the approximate cap of entries per conversation stream "
            "(`XADD MAXLEN ~`); also the retention of Durable Streams."
        ),
    ] = 20_000
    idle_ttl_seconds: Annotated[
        int,
        msgspec.Meta(
            description="Retention: a conversation nobody wrote to for this long disappears."
        ),
    ] = 7 * 24 * 3600
    idempotency_ttl_seconds: Annotated[
        int,
        msgspec.Meta(description="How long an `Idempotency-Key` is remembered."),
    ] = 24 * 3600
    # SSE
    keepalive_seconds: Annotated[
        float,
        msgspec.Meta(
            description="An SSE stream sends a `: keepalive` comment after this much silence."
        ),
    ] = 15.0
    retry_ms: Annotated[
        int,
        msgspec.Meta(
            description="The SSE `retry:` a browser waits before it reconnects after a dropped "
            "stream."
        ),
    ] = 1000
    replay_batch: Annotated[
        int,
        msgspec.Meta(
            description="Entries per `XRANGE` during replay and catch-up (a client's first "
            "read takes 50)."
        ),
    ] = 500
    client_queue_frames: Annotated[
        int,
        msgspec.Meta(
            description="Live frames queued for one SSE client before it is switched to "
            "reading Redis at its own pace."
        ),
    ] = 2048
    redis_pool_size: Annotated[
        int,
        msgspec.Meta(
            description="Redis connections per process (per node on a cluster); a front also "
            "holds one subscription connection per shard."
        ),
    ] = 32
    max_streams_per_conversation: Annotated[
        int,
        msgspec.Meta(
            description="Open SSE streams of one conversation on one front process; more get "
            "`429 too_many_streams`."
        ),
    ] = 1000
    max_streams_per_address: Annotated[
        int,
        msgspec.Meta(
            ge=0,
            description="Open SSE streams from one client address on one front process, "
            "whatever tokens they carry; more get `429 too_many_streams` (`0`: no bound). "
            "Behind a proxy, the address is the one it forwards (`BROKER_TRUSTED_PROXIES`).",
        ),
    ] = 256
    max_streams: Annotated[
        int,
        msgspec.Meta(
            ge=0,
            description="Open SSE streams on one front process in all; more get "
            "`503 front_full`, for a load balancer to send elsewhere (`0`: no bound).",
        ),
    ] = 20_000
    # Live path and Redis Cluster
    redis_cluster: Annotated[
        bool,
        msgspec.Meta(
            description="`true`: `BROKER_REDIS_URL` names a node of a Redis Cluster (7 or "
            "newer); every process uses the cluster client, sharded pub/sub and a jobs queue "
            "spread over the shards."
        ),
    ] = False
    job_shards: Annotated[
        int,
        msgspec.Meta(
            ge=0,
            le=1024,
            description="Streams of the jobs queue, and of the outbox of finished runs; `0` "
            "picks 1 on a single Redis and 8 on a cluster.",
        ),
    ] = 0
    live_ping_seconds: Annotated[
        float,
        msgspec.Meta(
            gt=0,
            description="A subscription connection that has not answered a PING for twice "
            "this long is replaced, and every stream it carried re-checks its position in "
            "Redis.",
        ),
    ] = 5.0
    # Requests
    max_body_bytes: Annotated[
        int,
        msgspec.Meta(description="The largest request body; more is `413 body_too_large`."),
    ] = 1 << 20
    max_content_chars: Annotated[
        int,
        msgspec.Meta(
            description="The longest prompt, in characters; more is `413 content_too_large` "
            "(`0`: no limit)."
        ),
    ] = 200_000
    cancel_wait_seconds: Annotated[
        float,
        msgspec.Meta(
            description="How long `cancel?wait=true`, and a deletion of a conversation with a "
            "run in progress, wait for the run's terminal event."
        ),
    ] = 10.0
    # Durable Streams (/v1/stream/...)
    ds_long_poll_seconds: Annotated[
        float,
        msgspec.Meta(
            gt=0,
            description="Durable Streams: how long a `live=long-poll` read waits for data "
            "before its `204`.",
        ),
    ] = 30.0
    ds_sse_seconds: Annotated[
        float,
        msgspec.Meta(
            gt=0,
            description="Durable Streams: how long a `live=sse` read stays open before the "
            "server ends it and the client resumes at its offset.",
        ),
    ] = 60.0
    ds_read_max_bytes: Annotated[
        int,
        msgspec.Meta(
            ge=1,
            description="Durable Streams: the most bytes of messages one read answers with "
            "(catch-up, long-poll, an SSE `data` event), at least one message whatever its "
            "size; the rest follows from its `Stream-Next-Offset`.",
        ),
    ] = 1 << 20
    ds_max_stream_bytes: Annotated[
        int,
        msgspec.Meta(
            ge=0,
            description="Durable Streams: the most bytes of messages one stream may be given "
            "over its life (a fork's inherited ones included); a write past it is "
            "`413 stream_too_large` (`0`: no bound).",
        ),
    ] = 64 << 20
    ds_max_messages_per_write: Annotated[
        int,
        msgspec.Meta(
            ge=1,
            description="Durable Streams: the most messages one JSON write (a create's body "
            "or an append) may hold; more is `413 too_many_messages`. A write is one atomic "
            "script that holds Redis for everyone while it runs: about 3 ms for 1000 "
            "messages.",
        ),
    ] = 1000
    ds_default_ttl_seconds: Annotated[
        int,
        msgspec.Meta(
            ge=0,
            description="Durable Streams: the sliding TTL of a stream created with neither "
            "`Stream-TTL` nor `Stream-Expires-At` (reads and writes restart it; not shown as "
            "its `Stream-TTL`); `0`: such streams live until deleted.",
        ),
    ] = 7 * 24 * 3600
    # Durable Streams subscriptions (/v1/stream/__ds/subscriptions/...)
    ds_max_streams_per_subscription: Annotated[
        int,
        msgspec.Meta(
            ge=1,
            description="Durable Streams subscriptions: the most streams one subscription "
            "links; explicit streams past it are `413 too_many_subscription_streams`, pattern "
            "matches past it are not linked.",
        ),
    ] = 1000
    ds_webhook_allow_localhost: Annotated[
        bool,
        msgspec.Meta(
            description="Development only: subscription webhooks may be `http://localhost` "
            "and `http://127.0.0.x` (and resolve to loopback). Off, every webhook URL is "
            "`https` to a public address, checked again after DNS resolution."
        ),
    ] = False
    ds_webhook_timeout_seconds: Annotated[
        float,
        msgspec.Meta(
            gt=0,
            description="Durable Streams subscriptions: one webhook delivery's limit, answer "
            "included; then it is retried with backoff (1 s to 60 s).",
        ),
    ] = 10.0
    ds_wake_concurrency: Annotated[
        int,
        msgspec.Meta(
            ge=1,
            description="Durable Streams subscriptions: wakes (webhook deliveries and "
            "wake-stream appends) one worker has in flight at once.",
        ),
    ] = 16
    ds_subscription_sweep_seconds: Annotated[
        float,
        msgspec.Meta(
            gt=0,
            description="Durable Streams subscriptions: how often one worker compares every "
            "subscription's cursors with its streams' tails and wakes what a lost write left "
            "pending (the bound on how late such a wake can be).",
        ),
    ] = 10.0
    # Security: authentication, limits, CORS
    auth: Annotated[
        str,
        msgspec.Meta(
            description="`jwt` or `none`. `broker serve` refuses to start while it is unset; "
            "`broker dev` defaults to `none`. With `none` anyone who reaches a front may read "
            "and write every conversation."
        ),
    ] = ""
    jwt_secret: Annotated[
        str,
        msgspec.Meta(
            description="One key source for `BROKER_AUTH=jwt`: an HS256 secret, at least 32 "
            "bytes; also what `broker token` signs with."
        ),
    ] = ""
    jwt_public_key_file: Annotated[
        str,
        msgspec.Meta(
            description="Another key source: a PEM public key file (RSA, EC P-256/384/521, "
            "Ed25519) for RS256, ES256 or EdDSA tokens."
        ),
    ] = ""
    jwt_jwks_url: Annotated[
        str,
        msgspec.Meta(
            description="Another key source: a JWKS URL (http or https); its keys are fetched "
            "in a worker thread and cached by `kid`."
        ),
    ] = ""
    jwt_jwks_cache_seconds: Annotated[
        float,
        msgspec.Meta(
            description="How long fetched JWKS keys are used before they are fetched again."
        ),
    ] = 300.0
    jwt_algorithms: Annotated[
        str,
        msgspec.Meta(
            description="Comma-separated accepted algorithms; empty picks the key's own "
            "(HS256, RS256, ES256 or EdDSA; RS256 for a JWKS). Never taken from the token."
        ),
    ] = ""
    jwt_audience: Annotated[
        str,
        msgspec.Meta(
            description="The required `aud` claim; empty: none required, and a token that "
            "carries an `aud` is refused."
        ),
    ] = ""
    jwt_issuer: Annotated[
        str, msgspec.Meta(description="The required `iss` claim; empty: not checked.")
    ] = ""
    jwt_leeway_seconds: Annotated[
        float, msgspec.Meta(description="Clock skew allowed on `exp`, `nbf` and `iat`.")
    ] = 30.0
    session_cookie: Annotated[
        str,
        msgspec.Meta(
            description="The name of the HttpOnly cookie `POST /v1/session` sets, read on "
            "`GET` requests only."
        ),
    ] = "broker_token"
    jwt_query_token: Annotated[
        bool,
        msgspec.Meta(
            description="Accept `?access_token=` on `GET` requests (cut from the URL before "
            "anything else sees it)."
        ),
    ] = False
    trusted_proxies: Annotated[
        str,
        msgspec.Meta(
            description="Comma-separated addresses or networks (CIDR) of the proxies in front "
            "of the fronts, or `*` for any; only from those are `X-Forwarded-For` and "
            "`X-Forwarded-Proto` believed, and the client's address (what per-address bounds "
            "count) is the nearest one no trusted proxy added. Empty: the headers are ignored."
        ),
    ] = ""
    cors_origins: Annotated[
        str,
        msgspec.Meta(
            description="Comma-separated exact origins allowed to call the API from a "
            "browser; no wildcard."
        ),
    ] = ""
    # Per subject, counted in Redis so every front enforces the same limit; 0 turns one off.
    limit_requests_per_minute: Annotated[
        int,
        msgspec.Meta(
            description="Requests per subject in a sliding minute, on all fronts; more get "
            "`429 rate_limited` (`0`: no limit)."
        ),
    ] = 1200
    limit_posts_per_minute: Annotated[
        int,
        msgspec.Meta(
            description="Posted messages per subject per minute; more get `429 rate_limited` "
            "(`0`: no limit)."
        ),
    ] = 60
    limit_streams_per_subject: Annotated[
        int,
        msgspec.Meta(
            description="Open SSE streams per subject on all fronts; more get "
            "`429 too_many_streams` (`0`: no limit)."
        ),
    ] = 64
    limit_conversations_per_day: Annotated[
        int,
        msgspec.Meta(
            description="New conversations per subject per UTC day; more get "
            "`429 too_many_conversations` (`0`: no limit)."
        ),
    ] = 1000
    limit_active_runs_per_subject: Annotated[
        int,
        msgspec.Meta(
            description="Answers one subject has being generated at once, on all workers; "
            "more get `429 too_many_runs` (`0`: no limit)."
        ),
    ] = 16
    limit_failed_authentications_per_minute: Annotated[
        int,
        msgspec.Meta(
            ge=0,
            description="Failed token checks per client address per minute, on all fronts; "
            "past them, that address's tokens are refused unchecked with "
            "`429 too_many_failed_authentications` until the minute ends (`0`: no limit).",
        ),
    ] = 30
    limit_ds_messages_per_minute: Annotated[
        int,
        msgspec.Meta(
            description="Durable Streams messages one subject may append in a sliding minute "
            "(each message of a JSON batch counts); more get `429 rate_limited` (`0`: no "
            "limit)."
        ),
    ] = 60_000
    limit_ds_streams_per_day: Annotated[
        int,
        msgspec.Meta(
            description="Durable Streams one subject may create per UTC day (forks included); "
            "more get `429 too_many_streams_created` (`0`: no limit)."
        ),
    ] = 1000
    limit_ds_bytes_per_subject: Annotated[
        int,
        msgspec.Meta(
            description="Durable Streams storage per subject: the bytes it wrote to streams "
            "that still exist (a fork's copy included); more get `413 storage_quota_exceeded` "
            "(`0`: no limit). Deleting or expiring a stream gives its bytes back."
        ),
    ] = 256 << 20
    limit_ds_subscriptions_per_subject: Annotated[
        int,
        msgspec.Meta(
            description="Durable Streams subscriptions one subject may have; more get "
            "`429 too_many_subscriptions` (`0`: no limit)."
        ),
    ] = 100
    stream_lease_seconds: Annotated[
        float,
        msgspec.Meta(
            description="The lease of an open stream in the per-subject count, renewed by its "
            "front every third of it: the streams of a front that died stop counting within it."
        ),
    ] = 30.0
    # Workers
    coalesce_ms: Annotated[
        float,
        msgspec.Meta(
            description="Workers gather tokens at most this long into one `delta` event "
            "(`0`: one event per token); the windows of a worker's runs close together, and "
            "their appends share one round trip."
        ),
    ] = 15.0
    worker_concurrency: Annotated[
        int,
        msgspec.Meta(
            description="Runs one worker process generates at once (`broker worker --concurrency`)."
        ),
    ] = 64
    shutdown_grace_seconds: Annotated[
        float,
        msgspec.Meta(
            description="On SIGTERM a worker takes no new job and lets running ones finish "
            "this long; the rest end as `worker_shutdown`."
        ),
    ] = 10.0
    job_block_ms: Annotated[
        int, msgspec.Meta(description="How long a worker's read of the jobs queue blocks.")
    ] = 1000
    lease_seconds: Annotated[
        float,
        msgspec.Meta(
            description="A worker renews the jobs it runs every third of this; a job nobody "
            "renewed for this long (its worker died) is taken over by another worker."
        ),
    ] = 10.0
    reap_interval_seconds: Annotated[
        float,
        msgspec.Meta(
            description="How often every worker looks for jobs whose lease lapsed; lease plus "
            "interval bounds the wait."
        ),
    ] = 2.0
    redis_retry_seconds: Annotated[
        float,
        msgspec.Meta(
            description="How long a worker retries a write through a Redis outage (with "
            "backoff) before it gives the run up."
        ),
    ] = 30.0
    # Bounds on requests, connections and runs
    max_header_bytes: Annotated[
        int,
        msgspec.Meta(
            description="The largest request head (request line and headers); more is "
            "`431 headers_too_large`, refused before more of it is read."
        ),
    ] = 32 * 1024
    max_header_count: Annotated[
        int,
        msgspec.Meta(
            description="The most headers in one request; more is `431 headers_too_large`."
        ),
    ] = 100
    header_timeout_seconds: Annotated[
        float,
        msgspec.Meta(
            description="Time from a request's first byte to the end of its headers; more is "
            "`408 request_timeout`."
        ),
    ] = 10.0
    idle_connection_seconds: Annotated[
        float,
        msgspec.Meta(
            description="A connection with no request in flight this long is closed (an open "
            "SSE stream is a request in flight)."
        ),
    ] = 5.0
    max_run_seconds: Annotated[
        float,
        msgspec.Meta(
            description="The longest any run may generate, whatever its model; then it fails "
            "with `run.failed` / `run_timeout`."
        ),
    ] = 1800.0
    # Operating it
    log_level: Annotated[
        str, msgspec.Meta(description="The level of every process's log (`DEBUG`, `INFO`, ...).")
    ] = "INFO"
    log_format: Annotated[
        str,
        msgspec.Meta(
            description="The log lines' format: `text` for people, `json` for one JSON object "
            "per line."
        ),
    ] = "text"
    access_log: Annotated[
        bool,
        msgspec.Meta(
            description="A front's log line per request (logger `broker.access`); `false` "
            "keeps only the metrics."
        ),
    ] = True
    metrics_token: Annotated[
        str,
        msgspec.Meta(
            description="When set, a front's `GET /metrics` needs `Authorization: Bearer` with "
            "this token; empty: open."
        ),
    ] = ""
    worker_metrics_port: Annotated[
        int,
        msgspec.Meta(
            ge=0,
            le=65535,
            description="The port each worker serves `GET /metrics` on; `0`: off.",
        ),
    ] = 0
    worker_metrics_host: Annotated[
        str,
        msgspec.Meta(
            description="The address a worker's metrics port is bound to (`0.0.0.0` for a "
            "scraper on another machine)."
        ),
    ] = "127.0.0.1"
    # Model catalogue. The OpenAI-compatible shortcut's key, BROKER_OPENAI_API_KEY, is read by
    # the workers by name and is deliberately not a setting.
    models_file: Annotated[
        str,
        msgspec.Meta(
            description="A TOML model catalogue; fronts and workers read it when they start."
        ),
    ] = ""
    openai_models: Annotated[
        str,
        msgspec.Meta(
            description="OpenAI-compatible models to register, comma-separated: `name` or "
            "`name=upstream-model`, served by Chat Completions at `BROKER_OPENAI_BASE_URL` "
            "with the key in `BROKER_OPENAI_API_KEY`."
        ),
    ] = ""
    openai_base_url: Annotated[
        str, msgspec.Meta(description="Where the `BROKER_OPENAI_MODELS` models are served.")
    ] = "https://api.openai.com/v1"
    # Application generators, the webhook and the outbox the webhook and the tap read
    generators: Annotated[
        str,
        msgspec.Meta(
            description="Your generators, comma-separated `model=module:function`, by the "
            "model name clients ask for; imported by the workers only (fronts just accept the "
            "names), so set it on both."
        ),
    ] = ""
    webhook_url: Annotated[
        str,
        msgspec.Meta(
            description="Where workers POST each finished run (`http://` or `https://`); no "
            "webhook when unset."
        ),
    ] = ""
    webhook_secret: Annotated[
        str,
        msgspec.Meta(
            description="The HMAC-SHA256 key of the `Broker-Signature` header; required with "
            "a webhook URL."
        ),
    ] = ""
    webhook_timeout_seconds: Annotated[
        float, msgspec.Meta(description="One webhook attempt's limit, answer included.")
    ] = 10.0
    webhook_retry_seconds: Annotated[
        float,
        msgspec.Meta(description="How long after a run ended its webhook delivery is retried."),
    ] = 24 * 3600
    webhook_backoff_seconds: Annotated[
        float,
        msgspec.Meta(description="The first wait between webhook attempts, doubled each time."),
    ] = 1.0
    webhook_backoff_max_seconds: Annotated[
        float, msgspec.Meta(description="The longest wait between webhook attempts.")
    ] = 300.0
    webhook_concurrency: Annotated[
        int, msgspec.Meta(description="Webhook deliveries in flight per worker.")
    ] = 16
    outbox_maxlen: Annotated[
        int,
        msgspec.Meta(
            description="Notices of finished runs kept for the webhook and `broker tap`, in "
            "all, shared out among the outbox's shards (approximate; older ones are trimmed)."
        ),
    ] = 100_000
    # Upstream model calls
    provider_connect_timeout_seconds: Annotated[
        float, msgspec.Meta(description="The connect timeout of an upstream model call.")
    ] = 10.0
    provider_first_byte_timeout_seconds: Annotated[
        float,
        msgspec.Meta(
            description="The wait for an upstream's first body bytes (leaves a reasoning model "
            "time to think); then the run fails with `timeout_first_byte`."
        ),
    ] = 120.0
    provider_idle_timeout_seconds: Annotated[
        float,
        msgspec.Meta(
            description="The longest silence between an upstream's chunks; then the run fails "
            "with `timeout_idle`."
        ),
    ] = 60.0
    provider_connect_retries: Annotated[
        int,
        msgspec.Meta(
            description="Retries of connection errors before an upstream response has begun; "
            "nothing is retried after that."
        ),
    ] = 2
    provider_retry_backoff_seconds: Annotated[
        float,
        msgspec.Meta(
            description="The first backoff between retries of connection errors, doubled each "
            "retry."
        ),
    ] = 0.5
    # Context sent with each prompt (the newest turns are kept)
    context_max_messages: Annotated[
        int, msgspec.Meta(description="At most this many earlier messages are sent as context.")
    ] = 40
    context_max_chars: Annotated[
        int,
        msgspec.Meta(
            description="At most this many characters of earlier messages are sent as context "
            "(the newest turns are kept)."
        ),
    ] = 60_000
    # The client commands of the ``broker`` CLI; servers ignore both.
    url: Annotated[
        str,
        msgspec.Meta(
            description="The broker the CLI's client commands (send, tail, cancel, show, list, "
            "delete) talk to (`--url`); servers ignore it."
        ),
    ] = "http://127.0.0.1:8000"
    token: Annotated[
        str,
        msgspec.Meta(
            description="The token those commands send as `Authorization: Bearer` (`--token`); "
            "none when empty. Servers ignore it."
        ),
    ] = ""

    @property
    def job_shard_count(self) -> int:
        if self.job_shards > 0:
            return self.job_shards
        return 8 if self.redis_cluster else 1

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``BROKER_<FIELD>`` variables; a bad value stops start-up loudly."""
        environ = os.environ if environ is None else environ
        raw: dict[str, str] = {}
        for field in msgspec.structs.fields(cls):
            value = environ.get("BROKER_" + field.name.upper())
            if value is not None and value != "":
                raw[field.name] = value
        try:
            return msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            # msgspec names the field (`$.field`); the operator set the variable.
            message = re.sub(r"`\$\.(\w+)`", lambda m: "BROKER_" + m.group(1).upper(), str(exc))
            raise SystemExit(f"invalid BROKER_* setting: {message}") from None


class SettingDoc(msgspec.Struct, frozen=True):
    """One setting as the documentation shows it: all text, in the form an operator writes."""

    variable: str  # BROKER_<FIELD>
    type: str  # the value's type and bounds, such as "int, >= 0, <= 1024"
    default: str  # as the variable would be written; "" for an empty string
    description: str


_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
_TYPE_NAMES = {
    msgspec.inspect.StrType: "str",
    msgspec.inspect.IntType: "int",
    msgspec.inspect.FloatType: "float",
    msgspec.inspect.BoolType: "bool",
}


def _default_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def documented_fields() -> list[SettingDoc]:
    """Every setting, in the order of ``Settings``: its variable, type, default and description.

    The documentation's configuration page is generated from this list."""
    info = msgspec.inspect.type_info(Settings)
    if not isinstance(info, msgspec.inspect.StructType):  # pragma: no cover
        raise TypeError("Settings is not a Struct")
    docs: list[SettingDoc] = []
    for field in info.fields:
        kind, description = field.type, ""
        if isinstance(kind, msgspec.inspect.Metadata):
            description = (kind.extra_json_schema or {}).get("description", "")
            kind = kind.type
        name = _TYPE_NAMES.get(type(kind), type(kind).__name__)
        bounds = [
            f"{sign} {getattr(kind, attr)}"
            for attr, sign in _BOUNDS
            if getattr(kind, attr, None) is not None
        ]
        docs.append(
            SettingDoc(
                variable="BROKER_" + field.name.upper(),
                type=", ".join([name, *bounds]),
                default=_default_text(field.default),
                description=description,
            )
        )
    return docs
