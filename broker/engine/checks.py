"""What an operator should know before trusting a deployment: ``broker doctor``, and the same
checks as warnings when a front or a worker starts.

Each check answers ok, warn or fail with one line of detail. The ones that matter most are
the quiet failures: an evicting ``maxmemory-policy`` deletes conversations without an error,
and a Redis without persistence loses every conversation when it restarts; nothing else in
the broker would ever say so. Secrets are never printed: a provider key is only present or
missing, and the Redis address is shown without its password.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from typing import Literal
from urllib.parse import urlsplit

import msgspec
import redis
import redis.exceptions

from broker.core import webhook
from broker.core.catalogue import Catalogue, CatalogueError
from broker.core.settings import Settings, redacted_url

Status = Literal["ok", "warn", "fail"]
# XAUTOCLAIM (job leases) needs 6.2; sharded pub/sub (the live path on a cluster) needs 7.0.
MIN_VERSION = (6, 2)
MIN_CLUSTER_VERSION = (7, 0)
_PINGS = 5
_SLOW_MS = 10.0
_TIMEOUT_SECONDS = 2.0


class Check(msgspec.Struct, frozen=True):
    name: str
    status: Status
    detail: str


def redis_address(url: str) -> str:
    """host:port/db of a Redis URL, without the credentials it may carry."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = parts.port or 6379
    db = parts.path.lstrip("/") or "0"
    return f"{parts.scheme}://{host}:{port}/{db}"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(piece) for piece in text.split(".")[:2] if piece.isdigit())


def _config(client: redis.Redis, name: str) -> str | None:
    """A CONFIG value, or None where CONFIG is disabled (managed Redis services often do)."""
    try:
        values = client.config_get(name)
    except redis.exceptions.ResponseError:
        return None
    value = values.get(name)
    return value.decode() if isinstance(value, bytes) else value


def check_redis(settings: Settings) -> list[Check]:
    address = redis_address(settings.redis_url)
    client = redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=_TIMEOUT_SECONDS,
        socket_timeout=_TIMEOUT_SECONDS,
    )
    try:
        try:
            server = client.info("server")
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            return [Check("redis", "fail", f"cannot reach Redis at {address}: {exc}")]
        except redis.exceptions.ResponseError as exc:
            return [Check("redis", "fail", f"Redis at {address} refused INFO: {exc}")]
        checks = [Check("redis", "ok", f"reachable at {address}")]
        checks.append(_check_version(str(server.get("redis_version", "0")), settings))
        checks.append(_check_eviction(client))
        checks.append(_check_persistence(client))
        checks.append(_check_cluster(client, settings))
        checks.append(_check_latency(client))
        return checks
    finally:
        client.close()


def _check_version(version: str, settings: Settings) -> Check:
    found = _version(version)
    if found < MIN_VERSION:
        return Check(
            "redis_version",
            "fail",
            f"Redis {version}: the broker needs 6.2 or later (Streams with XAUTOCLAIM)",
        )
    if settings.redis_cluster and found < MIN_CLUSTER_VERSION:
        return Check(
            "redis_version",
            "fail",
            f"Redis {version}: BROKER_REDIS_CLUSTER needs 7.0 or later (sharded pub/sub)",
        )
    features = "Streams, consumer groups, pub/sub"
    if found >= MIN_CLUSTER_VERSION:
        features += ", sharded pub/sub"
    return Check("redis_version", "ok", f"Redis {version} ({features})")


def _check_eviction(client: redis.Redis) -> Check:
    policy = _config(client, "maxmemory-policy")
    if policy is None:
        return Check(
            "maxmemory_policy",
            "warn",
            "CONFIG GET is not allowed here: make sure the policy is noeviction",
        )
    if policy == "noeviction":
        return Check("maxmemory_policy", "ok", "noeviction: Redis refuses writes when full")
    return Check(
        "maxmemory_policy",
        "warn",
        f"{policy} EVICTS KEYS when memory is full: conversations and runs disappear silently; "
        "set maxmemory-policy noeviction",
    )


def _check_persistence(client: redis.Redis) -> Check:
    save = _config(client, "save")
    appendonly = _config(client, "appendonly")
    if save is None and appendonly is None:
        return Check("persistence", "warn", "CONFIG GET is not allowed here: cannot tell")
    aof = appendonly == "yes"
    rdb = bool(save and save.strip())
    if not aof and not rdb:
        return Check(
            "persistence",
            "warn",
            "no RDB snapshots and no AOF: a Redis restart loses every conversation",
        )
    parts = []
    if aof:
        parts.append(f"AOF (appendfsync {_config(client, 'appendfsync') or '?'})")
    if rdb:
        parts.append(f"RDB (save {save})")
    return Check("persistence", "ok", ", ".join(parts))


def _check_cluster(client: redis.Redis, settings: Settings) -> Check:
    try:
        enabled = client.info("cluster").get("cluster_enabled") == 1
    except redis.exceptions.ResponseError:
        enabled = False
    if enabled and not settings.redis_cluster:
        return Check(
            "cluster",
            "fail",
            "Redis is a cluster but BROKER_REDIS_CLUSTER is off: set BROKER_REDIS_CLUSTER=true",
        )
    if settings.redis_cluster and not enabled:
        return Check(
            "cluster",
            "fail",
            "BROKER_REDIS_CLUSTER is on but Redis is not a cluster: unset it",
        )
    return Check("cluster", "ok", "cluster mode" if enabled else "single Redis")


def _check_latency(client: redis.Redis) -> Check:
    samples = []
    for _ in range(_PINGS):
        started = time.perf_counter()
        client.ping()
        samples.append((time.perf_counter() - started) * 1000)
    median = statistics.median(samples)
    detail = f"{_PINGS} PINGs: median {median:.2f} ms, max {max(samples):.2f} ms"
    if median > _SLOW_MS:
        return Check("latency", "warn", detail + f" (over {_SLOW_MS:g} ms: every event waits)")
    return Check("latency", "ok", detail)


def check_catalogue(settings: Settings, environ: dict[str, str] | None = None) -> list[Check]:
    environ = dict(os.environ) if environ is None else environ
    try:
        catalogue = Catalogue.from_settings(settings)
    except CatalogueError as exc:
        return [Check("catalogue", "fail", str(exc))]
    checks = [Check("catalogue", "ok", f"{len(catalogue.models)} model(s)")]
    needed: dict[str, list[str]] = {}
    for name, spec in catalogue.models.items():
        if spec.api_key_env:
            needed.setdefault(spec.api_key_env, []).append(name)
    for variable, models in sorted(needed.items()):
        names = ", ".join(sorted(models))
        if environ.get(variable):
            checks.append(Check("provider_key", "ok", f"{variable} present (for {names})"))
        else:
            checks.append(Check("provider_key", "fail", f"{variable} missing (for {names})"))
    return checks


def check_webhook(settings: Settings) -> list[Check]:
    """The run-end webhook's settings, when one is configured: a URL it can POST to and a
    signing secret long enough not to be guessed (never printed)."""
    url, secret = settings.webhook_url, settings.webhook_secret
    if not url:
        return []
    errors = webhook.setting_errors(url, secret)
    if errors:
        return [Check("webhook", "fail", error) for error in errors]
    warnings = webhook.setting_warnings(url, secret)
    if warnings:
        return [Check("webhook", "warn", warning) for warning in warnings]
    return [Check("webhook", "ok", f"{redacted_url(url)}, a signing secret of {len(secret)} bytes")]


def run_checks(settings: Settings, *, worker: bool = True) -> list[Check]:
    """Every check; without ``worker``, not those of what only workers use (the provider keys,
    the webhook)."""
    catalogue = check_catalogue(settings)
    if not worker:
        catalogue = [check for check in catalogue if check.name != "provider_key"]
    return [*check_redis(settings), *catalogue, *(check_webhook(settings) if worker else [])]


def warn_at_start(settings: Settings, process: str, *, worker: bool = True) -> None:
    """Run the checks and log what is not ok; the process starts anyway (it may be fixed).
    Fronts skip what only workers use. A catalogue that cannot be read stops the process with
    its own message, so it is not repeated here."""
    log = logging.getLogger("broker.checks")
    for check in run_checks(settings, worker=worker):
        if check.status != "ok" and check.name != "catalogue":
            log.warning("%s: %s %s: %s", process, check.status, check.name, check.detail)
