"""``docker compose up`` of the repository's compose.yaml, driven from outside as a user would.

The walkthrough of docs/pages/operating.md ("Running it with Docker Compose"), step by step:
build the image, start Redis, two fronts and three workers, take a token, then

- stream an answer from one front, kill that front's container mid-answer and resume on the
  other with ``Last-Event-ID``: nothing missed, nothing repeated (invariant 1);
- kill the container of the worker running an answer: the run ends ``run.failed`` /
  ``worker_lost`` within ``BROKER_LEASE_SECONDS`` + ``BROKER_REAP_INTERVAL_SECONDS``, exactly
  once, and the conversation goes on (invariants 2 and 4);
- restart the Redis container: every conversation is still there, from the AOF;
- ``docker compose down -v`` leaves nothing behind.

Nothing is pulled from a registry: the base image and the Redis image are built locally
(tests/e2e/docker_images.py, cached by tag) and the broker's wheels come from the host. The
test is skipped, with the reason, where no Docker engine answers, no Compose is installed or
the local images cannot be built.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from broker.core.settings import Settings
from tests.api import Api
from tests.e2e import docker_images
from tests.e2e.docker_images import REPO_ROOT, Unavailable, docker
from tests.helpers import job_streams, new_cid, nth_delta, terminal_of
from tests.sse import Event
from tests.stack import free_port

pytestmark = pytest.mark.timeout(600)

APP_IMAGE = "llm-stream-broker:e2e"
IMAGE_LABEL = "org.opencontainers.image.title=llm-stream-broker"  # the Dockerfile's LABEL
SERVICES = {"redis": 1, "front-1": 1, "front-2": 1, "worker": 3}
HEALTHY_WITHIN = 120.0
# The documented bound of a lost worker's run, with the compose file's (default) settings.
DEFAULTS = Settings()
WORKER_LOST_BOUND = DEFAULTS.lease_seconds + DEFAULTS.reap_interval_seconds


@dataclass
class Deployment:
    """One compose project of compose.yaml, under a name of its own, on free loopback ports."""

    compose: list[str]
    project: str
    env: dict[str, str]
    ports: tuple[int, int]
    token: str = ""
    log: list[str] = field(default_factory=list)

    def run(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        """``docker compose -p PROJECT ARGS`` in the repository, as a user types it there."""
        command = [*self.compose, "--project-name", self.project, *args]
        started = time.monotonic()
        result = subprocess.run(
            command,
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        self.log.append(
            f"$ {' '.join(command)}  ({time.monotonic() - started:.1f} s, exit {result.returncode})"
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def containers(self, service: str, *, running: bool = True) -> list[str]:
        """The ids of a service's containers (labels work for Compose v1 and v2 alike)."""
        args = ["ps", "--quiet", "--no-trunc"] + ([] if running else ["--all"])
        args += ["--filter", f"label=com.docker.compose.project={self.project}"]
        args += ["--filter", f"label=com.docker.compose.service={service}"]
        return docker(*args).stdout.split()

    def wait_healthy(self, services: dict[str, int], timeout: float = HEALTHY_WITHIN) -> None:
        """Until each service has that many running containers, every one of them healthy."""
        deadline = time.monotonic() + timeout
        while True:
            states: dict[str, list[str]] = {}
            for service in services:
                ids = self.containers(service)
                states[service] = [
                    docker("inspect", "--format", "{{.State.Health.Status}}", cid).stdout.strip()
                    for cid in ids
                ]
            if all(
                len(states[service]) == count and set(states[service]) == {"healthy"}
                for service, count in services.items()
            ):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"not healthy after {timeout:.0f} s: {states}")
            time.sleep(1)

    def front(self, index: int) -> Api:
        return Api(f"http://127.0.0.1:{self.ports[index]}").bearer(self.token)

    def redis_cli(self, *args: str) -> str:
        return self.run("exec", "-T", "redis", "redis-cli", *args, timeout=60).strip()

    def report(self) -> str:
        """The commands run and every container's last lines, for a failed test."""
        logs = self.run("logs", "--no-color", "--tail", "60", timeout=60, check=False)
        return "\n".join(self.log) + "\n\n" + logs


def _compose_environment(ports: tuple[int, int], base: str, redis_image: str) -> dict[str, str]:
    """The runner's environment, without any BROKER_* it carries, plus what the walkthrough
    exports and what points the build at the local images."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env.update(
        BROKER_AUTH="jwt",
        BROKER_JWT_SECRET=secrets.token_hex(32),
        BASE_IMAGE=base,
        REDIS_IMAGE=redis_image,
        WHEELHOUSE=str(docker_images.WHEELHOUSE.relative_to(REPO_ROOT)),
        APP_IMAGE=APP_IMAGE,
        FRONT_1_PORT=str(ports[0]),
        FRONT_2_PORT=str(ports[1]),
    )
    return env


@dataclass(frozen=True)
class Images:
    """What the compose project runs on: the local base and Redis images, and Compose."""

    compose: list[str]
    base: str
    redis: str


@pytest.fixture(scope="module")
def images() -> Images:
    """The broker image built by Compose from the local base image and the host's wheels (no
    registry, no PyPI); skips, saying why, where this machine cannot."""
    problem = docker_images.engine_problem()
    if problem is not None:
        pytest.skip(f"compose test: {problem}")
    compose = docker_images.compose_command()
    if compose is None:
        pytest.skip("compose test: neither `docker compose` nor `docker-compose` is installed")
    try:
        base, redis_image = docker_images.ensure_local_images()
    except Unavailable as exc:
        pytest.skip(f"compose test: {exc}")
    docker_images.wheelhouse(base, sys.executable)
    ports = (free_port(), free_port())
    builder = Deployment(
        compose,
        f"brokere2e{uuid.uuid4().hex[:10]}",
        _compose_environment(ports, base, redis_image),
        ports,
    )
    # One build at a time: test runs on one engine share the tag. Only front-1's: every
    # broker service has the same image.
    with docker_images.locked("app-image"):
        builder.run("build", "--force-rm", "front-1", timeout=600)
        # What earlier builds left untagged (the build stage, replaced images) would pile up
        # on the engine, run after run.
        docker("image", "prune", "--force", "--filter", f"label={IMAGE_LABEL}", timeout=120)
    return Images(compose, base, redis_image)


@pytest.fixture
def deployment(images: Images, request: pytest.FixtureRequest) -> Iterator[Deployment]:
    """compose.yaml up and healthy under a project name of its own, with a user's token;
    ``down --volumes`` afterwards, whatever happened, and nothing of it may be left."""
    ports = (free_port(), free_port())
    project = f"brokere2e{uuid.uuid4().hex[:10]}"
    environment = _compose_environment(ports, images.base, images.redis)
    deployment = Deployment(images.compose, project, environment, ports)
    failed = True
    try:
        deployment.run("up", "--detach", "--no-build", timeout=300)
        deployment.wait_healthy(SERVICES)
        deployment.token = deployment.run(
            "exec", "-T", "front-1", "broker", "token", "--sub", "e2e-user"
        ).strip()
        yield deployment
        failed = any(
            getattr(request.node, f"report_{phase}", None) is not None
            and getattr(request.node, f"report_{phase}").failed
            for phase in ("setup", "call")
        )
    finally:
        if failed:
            print(deployment.report())
        deployment.run("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)
        label = f"label=com.docker.compose.project={project}"
        left = docker("ps", "--all", "--quiet", "--filter", label).stdout.split()
        volumes = docker("volume", "ls", "--quiet", "--filter", label).stdout.split()
        assert not left and not volumes, f"left behind: containers {left}, volumes {volumes}"


def test_the_image_runs_as_a_user_with_nothing_that_built_it(images: Images) -> None:
    """The production image: non-root, a front's health check, SIGTERM, no pip or wheels."""
    config = json.loads(
        docker("image", "inspect", "--format", "{{json .Config}}", APP_IMAGE).stdout
    )
    assert config["User"] == "broker:broker"
    assert config["Entrypoint"] == ["broker"]
    assert config["StopSignal"] == "SIGTERM"
    assert "/readyz" in " ".join(config["Healthcheck"]["Test"])
    leftovers = (
        "import importlib.util as u, os, sys; "
        "sys.exit(bool(u.find_spec('pip')) or any(map(os.path.exists, sys.argv[1:])))"
    )
    paths = ("/wheels", "/wheelhouse", "/src", "/root/.cache/pip")
    result = docker("run", "--rm", "--network", "none", "--user", "0", "--entrypoint", "python",
                    APP_IMAGE, "-c", leftovers, *paths, check=False)  # fmt: skip
    assert result.returncode == 0, "the image holds pip, wheels, sources or a pip cache"


async def _post(api: Api, cid: str, content: str, **params: Any) -> str:
    response = await api.post_message(cid, content, **params)
    assert response.status_code == 202, response.text
    return str(response.json()["run_id"])


async def _read_until_dropped(stream: Any, timeout: float = 30.0) -> list[Event]:
    """Everything a stream still delivers until its connection drops (its front died)."""
    received: list[Event] = []
    try:
        async with asyncio.timeout(timeout):
            while (event := await stream.next(timeout)) is not None:
                received.append(event)
    except (ConnectionError, OSError):
        pass
    return received


async def _whole_run(api: Api, cid: str, run_id: str) -> list[Event]:
    """The conversation from its start up to the run's terminal event, read afresh."""
    stream = await api.stream(cid)
    async with stream:
        return await stream.read_until(terminal_of(run_id), timeout=60)


def _owner_of_only_job(deployment: Deployment) -> str:
    """The worker container holding the one job being run, from the jobs queue's pending list
    (a worker's consumer name starts with its hostname: the container's short id)."""
    (stream,) = job_streams(DEFAULTS.key_prefix)
    pending = deployment.redis_cli("XPENDING", stream, "workers", "-", "+", "10").split()
    consumers = [word for word in pending if word.count(":") == 2]
    assert len(consumers) == 1, f"expected one job in flight, pending: {pending}"
    hostname = consumers[0].split(":")[0]
    for container in deployment.containers("worker"):
        if container.startswith(hostname):
            return container
    raise AssertionError(f"no worker container is {hostname}")


@pytest.mark.anyio
async def test_compose_survives_a_front_a_worker_and_redis_going_away(
    deployment: Deployment,
) -> None:
    first, second = deployment.front(0), deployment.front(1)

    # A front dies mid-answer; the client resumes on the other one.
    cid = new_cid("compose")
    run_id = await _post(first, cid, "Tell me about streams", tokens=300, interval_ms=20)
    stream = await first.stream(cid)
    seen = await stream.read_until(nth_delta(10), timeout=30)
    deployment.run("kill", "front-1")
    seen += await _read_until_dropped(stream)
    await stream.close()
    assert seen and not any(e.is_terminal for e in seen), "the answer ended before the kill"
    resumed = await second.stream(cid, last_event_id=seen[-1].id)
    async with resumed:
        rest = await resumed.read_until(terminal_of(run_id), timeout=60)
    whole = await _whole_run(second, cid, run_id)
    print(f"front-1 killed after {len(seen)} events; front-2 resumed with {len(rest)} more")
    assert seen + rest == whole, "the resumed stream missed or repeated events"
    assert whole[-1].event == "run.completed"
    deployment.run("start", "front-1")
    deployment.wait_healthy({"front-1": 1})

    # A worker dies mid-run; another one ends the run once, within the documented bound.
    lost = new_cid("lost")
    lost_run = await _post(second, lost, "a long answer", tokens=3000, interval_ms=20)
    watcher = await second.stream(lost)
    await watcher.read_until(nth_delta(5), timeout=30)
    docker("kill", _owner_of_only_job(deployment))
    killed_at = time.monotonic()
    async with watcher:
        events = await watcher.read_until(terminal_of(lost_run), timeout=WORKER_LOST_BOUND + 30)
    waited = time.monotonic() - killed_at
    print(f"worker killed: worker_lost after {waited:.1f} s (bound {WORKER_LOST_BOUND:.0f} s)")
    assert events[-1].event == "run.failed"
    assert events[-1].json()["error"]["code"] == "worker_lost"
    assert waited <= WORKER_LOST_BOUND + 3, f"worker_lost after {waited:.1f} s"
    again = await _post(second, lost, "again", tokens=5, interval_ms=1)
    history = await _whole_run(second, lost, again)
    terminals = [(e.run_id, e.event) for e in history if e.is_terminal]
    assert terminals == [(lost_run, "run.failed"), (again, "run.completed")]
    assert len({e.id for e in history}) == len(history)

    # Redis restarts; its AOF brings every conversation back.
    assert deployment.redis_cli("CONFIG", "GET", "appendonly").split() == ["appendonly", "yes"]
    assert deployment.redis_cli("CONFIG", "GET", "maxmemory-policy").split()[-1] == "noeviction"
    before = {c: (await second.snapshot(c)).json() for c in (cid, lost)}
    deployment.run("restart", "redis")
    deployment.wait_healthy({"redis": 1, "front-1": 1, "front-2": 1})
    for api in (first, second):
        for c, snapshot in before.items():
            response = await _retry_unavailable(lambda api=api, c=c: api.snapshot(c))
            assert response.json() == snapshot
    # ... and the workers write to it again.
    after = await _post(first, cid, "still there?", tokens=5, interval_ms=1)
    assert (await _whole_run(first, cid, after))[-1].event == "run.completed"

    # `docker compose stop` lets a worker finish an answer longer than Docker's default 10 s
    # before SIGKILL (and than the default BROKER_SHUTDOWN_GRACE_SECONDS).
    last = await _post(first, cid, "one more", tokens=300, interval_ms=40)  # about 12 s
    finishing = await first.run_stream(cid, last)
    async with finishing:
        await finishing.read_until(nth_delta(3), timeout=30)
        stopping = time.monotonic()
        deployment.run("stop", "worker", timeout=120)
        print(f"workers stopped in {time.monotonic() - stopping:.1f} s, finishing their answer")
        ended = await finishing.read_until(terminal_of(last), timeout=30)
    assert ended[-1].event == "run.completed", ended[-1]


async def _retry_unavailable(request: Any, timeout: float = 20.0) -> httpx.Response:
    """A front answers 503 for a moment after Redis comes back (documented): ask again."""
    deadline = time.monotonic() + timeout
    while True:
        response: httpx.Response = await request()
        if response.status_code != 503 or time.monotonic() > deadline:
            assert response.status_code == 200, response.text
            return response
        await asyncio.sleep(0.5)
