"""``broker doctor`` against real redis-servers: a healthy one, one that evicts, and none."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from broker.embedded_redis import EmbeddedRedis
from tests.stack import base_environment, free_port

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path / "redis", appendonly=True) as embedded:
        yield embedded


def doctor(url: str, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = base_environment()
    env["BROKER_REDIS_URL"] = url
    env.update({f"BROKER_{name.upper()}": value for name, value in settings.items()})
    env.pop("BROKER_OPENAI_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "broker", "doctor", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def by_name(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    checks = json.loads(result.stdout)
    return {check["name"]: check for check in checks}


def test_a_healthy_redis_passes_every_check(server: EmbeddedRedis) -> None:
    result = doctor(server.url)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines and all(line.startswith("ok") for line in lines), result.stdout
    assert any("noeviction" in line for line in lines)
    assert "Traceback" not in result.stderr

    checks = by_name(doctor(server.url, "--json"))
    assert {"redis", "redis_version", "maxmemory_policy", "persistence", "cluster"} <= set(checks)
    assert {check["status"] for check in checks.values()} == {"ok"}
    assert "median" in checks["latency"]["detail"]


def test_an_evicting_policy_is_a_loud_warning(server: EmbeddedRedis) -> None:
    client = redis.Redis.from_url(server.url)
    client.config_set("maxmemory-policy", "allkeys-lru")
    client.close()
    result = doctor(server.url)
    assert result.returncode == 0  # a warning, not a failure: the broker does run
    line = next(line for line in result.stdout.splitlines() if "maxmemory_policy" in line)
    assert line.startswith("warn") and "allkeys-lru" in line and "EVICTS" in line


def test_no_persistence_warns_that_a_restart_loses_everything(server: EmbeddedRedis) -> None:
    client = redis.Redis.from_url(server.url)
    client.config_set("appendonly", "no")
    client.close()
    checks = by_name(doctor(server.url, "--json"))
    assert checks["persistence"]["status"] == "warn"
    assert "restart" in checks["persistence"]["detail"]


def test_an_unreachable_redis_fails_naming_its_address() -> None:
    port = free_port()  # nothing listens here
    result = doctor(f"redis://:hunter2@127.0.0.1:{port}/0")
    assert result.returncode == 1
    first = result.stdout.splitlines()[0]
    assert first.startswith("fail") and f"127.0.0.1:{port}" in first, result.stdout
    assert "hunter2" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_cluster_setting_must_match_the_server(server: EmbeddedRedis) -> None:
    result = doctor(server.url, "--json", redis_cluster="true")
    assert result.returncode == 1
    assert by_name(result)["cluster"]["status"] == "fail"


def test_a_missing_provider_key_fails_without_printing_keys(server: EmbeddedRedis) -> None:
    result = doctor(server.url, openai_models="gpt-4o-mini")
    assert result.returncode == 1
    line = next(line for line in result.stdout.splitlines() if "BROKER_OPENAI_API_KEY" in line)
    assert line.startswith("fail") and "missing" in line

    env_key = "sk-test-" + "9" * 20
    present = subprocess.run(
        [sys.executable, "-m", "broker", "doctor"],
        env={
            **base_environment(),
            "BROKER_REDIS_URL": server.url,
            "BROKER_OPENAI_MODELS": "gpt-4o-mini",
            "BROKER_OPENAI_API_KEY": env_key,
        },
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert present.returncode == 0, present.stdout
    assert "BROKER_OPENAI_API_KEY present" in present.stdout
    assert env_key not in present.stdout + present.stderr


def test_the_webhook_settings_are_checked_without_printing_the_secret(
    server: EmbeddedRedis,
) -> None:
    long_secret = "k" * 40
    fine = by_name(
        doctor(
            server.url, "--json", webhook_url="https://example.org/hook", webhook_secret=long_secret
        )
    )
    assert fine["webhook"]["status"] == "ok"

    short = doctor(
        server.url, "--json", webhook_url="https://example.org/hook", webhook_secret="s3"
    )
    assert short.returncode == 0 and by_name(short)["webhook"]["status"] == "warn"
    assert "at least 32" in by_name(short)["webhook"]["detail"] and "s3" not in short.stdout

    missing = doctor(server.url, webhook_url="https://example.org/hook")
    assert missing.returncode == 1 and "BROKER_WEBHOOK_SECRET must be set" in missing.stdout
    shape = doctor(server.url, webhook_url="ftp://example.org/", webhook_secret=long_secret)
    assert shape.returncode == 1 and "BROKER_WEBHOOK_URL must be an http" in shape.stdout
    assert long_secret not in shape.stdout + shape.stderr
