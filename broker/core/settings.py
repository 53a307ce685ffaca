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
    redis_url: str = "redis://127.0.0.1:6379/0"
    # ``broker serve`` waits this long for Redis to answer at start, then exits naming it.
    redis_wait_seconds: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    # Namespaces every key, so several deployments (or test runs) can share one Redis.
    key_prefix: str = "broker"
    # Retention: an approximate length cap per conversation stream, and an idle TTL after
    # which a conversation that nobody wrote to disappears.
    stream_maxlen: int = 20_000
    idle_ttl_seconds: int = 7 * 24 * 3600
    idempotency_ttl_seconds: int = 24 * 3600
    # SSE
    keepalive_seconds: float = 15.0
    retry_ms: int = 1000
    replay_batch: int = 500
    # Frames queued for one SSE client before it is switched to reading Redis at its own pace.
    client_queue_frames: int = 2048
    redis_pool_size: int = 32
    # Open SSE streams of one conversation on one front process; more get 429.
    max_streams_per_conversation: int = 1000
    # Live path and Redis Cluster
    # BROKER_REDIS_URL names any node of a cluster; every process then uses the cluster client,
    # sharded pub/sub and a jobs queue spread over the shards.
    redis_cluster: bool = False
    # Streams of the jobs queue; 0 picks one on a single Redis and eight on a cluster.
    job_shards: Annotated[int, msgspec.Meta(ge=0, le=1024)] = 0
    # A subscription connection that has not answered a PING for twice this long is replaced,
    # and every stream it carried re-checks its position in Redis.
    live_ping_seconds: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    # Requests
    max_body_bytes: int = 1 << 20
    max_content_chars: int = 200_000
    cancel_wait_seconds: float = 10.0
    # Durable Streams (/v1/stream/...): how long a long-poll read waits for data before its
    # 204, and how long an SSE read stays open before the client reconnects at its offset.
    ds_long_poll_seconds: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    ds_sse_seconds: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    # Security: authentication, limits, CORS
    # ``jwt`` or ``none``; ``broker serve`` refuses to start while it is unset. With ``none``
    # anyone who reaches a front may read and write every conversation.
    auth: str = ""
    # One key source for BROKER_AUTH=jwt: an HS256 secret, a PEM public key (RS256, ES256,
    # EdDSA), or a JWKS URL whose keys are cached by ``kid`` for ``jwt_jwks_cache_seconds``.
    jwt_secret: str = ""
    jwt_public_key_file: str = ""
    jwt_jwks_url: str = ""
    jwt_jwks_cache_seconds: float = 300.0
    # Comma-separated; empty picks the key's own (HS256, RS256, ES256, EdDSA; RS256 for JWKS).
    jwt_algorithms: str = ""
    jwt_audience: str = ""
    jwt_issuer: str = ""
    jwt_leeway_seconds: float = 30.0
    # The HttpOnly cookie POST /v1/session sets, read on GET requests only.
    session_cookie: str = "broker_token"
    # Accept ``?access_token=`` on GET requests (stripped before anything else sees the URL).
    jwt_query_token: bool = False
    # Comma-separated exact origins allowed to call the API from a browser.
    cors_origins: str = ""
    # Per subject, counted in Redis so every front enforces the same limit; 0 turns one off.
    limit_requests_per_minute: int = 1200
    limit_posts_per_minute: int = 60
    limit_streams_per_subject: int = 64
    limit_conversations_per_day: int = 1000
    limit_active_runs_per_subject: int = 16
    # An open stream's lease, renewed by its front: a front that died stops counting within it.
    stream_lease_seconds: float = 30.0
    # Workers
    coalesce_ms: float = 15.0
    worker_concurrency: int = 64
    shutdown_grace_seconds: float = 10.0
    job_block_ms: int = 1000
    # A worker renews the jobs it runs every lease/3; a job nobody renewed for a whole lease
    # (its worker died) is claimed by another worker within one reap interval.
    lease_seconds: float = 10.0
    reap_interval_seconds: float = 2.0
    # How long a worker retries a write through a Redis outage before it gives the run up.
    redis_retry_seconds: float = 30.0
    # Hardening: bounds on requests, connections and runs
    # A request head (request line and headers) larger than this, or with more headers, is
    # refused with 431 before more of it is read; one not received within the timeout gets
    # 408. A connection with no request in flight is closed after the idle time.
    max_header_bytes: int = 32 * 1024
    max_header_count: int = 100
    header_timeout_seconds: float = 10.0
    idle_connection_seconds: float = 5.0
    # The longest any run may generate, whatever its model: then it fails with run_timeout.
    max_run_seconds: float = 1800.0
    log_level: str = "INFO"
    # Operating it (README, "Operating it"): ``text`` or ``json`` (one object per line); the
    # fronts' line per request (``broker.access``); a token a scraper must send
    # (``Authorization: Bearer``) to read a front's ``/metrics``, which is open when empty;
    # where each worker serves its metrics (off when the port is unset).
    log_format: str = "text"
    access_log: bool = True
    metrics_token: str = ""
    worker_metrics_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    worker_metrics_host: str = "127.0.0.1"
    # Model catalogue (README, "Model providers"): a TOML file of models, plus the
    # OpenAI-compatible shortcut, the comma-separated model names (``name`` or
    # ``name=upstream``) served at ``openai_base_url`` with the key in BROKER_OPENAI_API_KEY.
    # That key is read by the workers by name and is deliberately not a setting.
    models_file: str = ""
    openai_models: str = ""
    openai_base_url: str = "https://api.openai.com/v1"
    # Application generators and the T-joint (README, "Your own generation code" and "Getting
    # finished answers into your database"). Generators: comma-separated
    # ``model=module:function``, imported by the workers only (fronts just accept the names).
    # The webhook: where each finished run is POSTed, the HMAC secret that signs it, the
    # timeout of one attempt, how long a delivery is retried, the first backoff (doubled up to
    # the maximum) and the deliveries one worker has in flight. The outbox: the notices of
    # finished runs that the webhook and ``broker tap`` read, capped at about this many.
    generators: str = ""
    webhook_url: str = ""
    webhook_secret: str = ""
    webhook_timeout_seconds: float = 10.0
    webhook_retry_seconds: float = 24 * 3600
    webhook_backoff_seconds: float = 1.0
    webhook_backoff_max_seconds: float = 300.0
    webhook_concurrency: int = 16
    outbox_maxlen: int = 100_000
    # Upstream model calls: connect timeout; the wait for the first body bytes (a reasoning
    # model may think for a while); the longest silence between chunks after that. Connection
    # errors before the first token are retried this many times, with doubling backoff.
    provider_connect_timeout_seconds: float = 10.0
    provider_first_byte_timeout_seconds: float = 120.0
    provider_idle_timeout_seconds: float = 60.0
    provider_connect_retries: int = 2
    provider_retry_backoff_seconds: float = 0.5
    # The earlier turns a worker sends as context: at most this many messages and characters
    # (the newest turns are kept).
    context_max_messages: int = 40
    context_max_chars: int = 60_000
    # The client commands of the ``broker`` CLI (send, tail, cancel, show): which broker they
    # talk to, and the token they send (none when empty). Servers ignore both.
    url: str = "http://127.0.0.1:8000"
    token: str = ""

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
