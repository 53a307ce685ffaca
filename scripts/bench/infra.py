"""The benchmark's plumbing: the processes it starts and the counters it reads.

Everything it starts is tracked by one ``Processes`` object whose ``close`` stops all of it, so
an error or Ctrl-C never leaves a front, a worker or a Redis behind. Measurements come from the
kernel (``/proc/<pid>/stat`` CPU ticks and ``/proc/<pid>/status`` RSS) and from Redis itself
(``INFO commandstats``, ``INFO cpu``, ``CLIENT LIST``), never from the processes measured.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from broker.cli.processes import (
    OPEN_AND_UNLIMITED,
    Front,
    Process,
    child_environment,
    clean_environment,
    free_port,
    stop_all,
    wait_ready,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
# The baseline front, run as a module from REPO_ROOT as the broker's front is.
NAIVE_FRONT = "scripts.bench.naive_front"
STOP_TIMEOUT = 10.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")
# The benchmark's own calls to Redis, left out of every command count.
_OWN_COMMANDS = ("info", "client", "config", "slowlog", "latency")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) so far, from /proc."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat.

    Other work on the machine competes with what is measured; the busy share during a window
    tells a reader how much of it there was.
    """
    with open("/proc/stat", "rb") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return (total - idle) / _CLK_TCK, total / _CLK_TCK


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def machine_info(redis_client: redis.Redis) -> dict[str, Any]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = redis_client.info("server")
    return {
        "cpu": model,
        "cores": os.cpu_count() or 0,
        "python": sys.version.split()[0],
        "redis": str(info.get("redis_version", "?")),
        "platform": sys.platform,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


@dataclass(frozen=True)
class RedisSample:
    calls: dict[str, int]
    cpu: float

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def delta(self, before: RedisSample, name: str | None = None) -> int:
        if name is None:
            return self.total - before.total
        return self.calls.get(name, 0) - before.calls.get(name, 0)


def redis_sample(client: redis.Redis) -> RedisSample:
    """Calls per command (the benchmark's own left out) and Redis's CPU seconds so far."""
    stats = client.info("commandstats")
    calls = {
        key.removeprefix("cmdstat_"): int(value["calls"])
        for key, value in stats.items()
        if not key.removeprefix("cmdstat_").startswith(_OWN_COMMANDS)
    }
    cpu = client.info("cpu")
    return RedisSample(calls, float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]))


def connections_named(client: redis.Redis, name: str) -> int:
    return sum(1 for c in client.client_list() if c.get("name") == name)


def child_env(
    redis_url: str, prefix: str, settings: dict[str, Any] | None = None
) -> dict[str, str]:
    """A started process's environment: the benchmark's Redis and prefix, quiet logs, and the
    open, unlimited settings that load from one loopback address needs."""
    broker_settings = {"redis_url": redis_url, "key_prefix": prefix, "log_level": "WARNING"}
    return child_environment(
        clean_environment(), {**broker_settings, **OPEN_AND_UNLIMITED, **(settings or {})}
    )


@dataclass
class Processes:
    """Every process the benchmark started; ``close`` ends them all (only them)."""

    workdir: Path
    children: list[Process] = field(default_factory=list)
    helpers: list[multiprocessing.Process] = field(default_factory=list)
    started: int = 0

    def _options(self, name: str) -> dict[str, Any]:
        """Where a started process writes (numbered files, in start order) and runs."""
        self.started += 1
        return {"log_path": self.workdir / f"{self.started:02d}-{name}.log", "cwd": REPO_ROOT}

    def front(self, system: str, redis_url: str, prefix: str, settings: dict[str, Any]) -> Front:
        """One front process (the broker's, or the naive baseline), ready to serve."""
        name = f"front-{system}"
        env = child_env(redis_url, prefix, settings)
        if system == "broker":
            child = Front.serve(name, env, **self._options(name))
        else:
            port = free_port()
            args = ["--host", "127.0.0.1", "--port", str(port)]
            child = Front.start(
                name, args, env, module=NAIVE_FRONT, port=port, **self._options(name)
            )
        self.children.append(child)
        wait_ready(child)
        return child

    def worker(
        self, redis_url: str, prefix: str, concurrency: int, settings: dict[str, Any]
    ) -> Process:
        args = ["worker", "--concurrency", str(concurrency)]
        env = child_env(redis_url, prefix, settings)
        child = Process.start("worker", args, env, **self._options("worker"))
        self.children.append(child)
        return child

    def helper(
        self, target: Any, *args: Any
    ) -> tuple[multiprocessing.Process, multiprocessing.connection.Connection]:
        """A Python helper process (load or appender) and the parent's end of its pipe."""
        context = multiprocessing.get_context("fork")
        parent_end, child_end = context.Pipe()
        process = context.Process(target=target, args=(child_end, *args), daemon=True)
        process.start()
        child_end.close()
        self.helpers.append(process)
        return process, parent_end

    def release(self, child: Process) -> None:
        child.stop(STOP_TIMEOUT)
        if child in self.children:
            self.children.remove(child)

    def reap_helpers(self, timeout: float = 5.0) -> None:
        for process in self.helpers:
            process.join(timeout)
            if process.is_alive():
                process.kill()
                process.join(timeout)
        self.helpers.clear()

    def close(self) -> None:
        for process in self.helpers:
            if process.is_alive():
                process.kill()
        self.reap_helpers()
        stop_all(self.children[::-1], STOP_TIMEOUT)
        self.children.clear()


@contextmanager
def redis_and_processes(workdir: Path) -> Iterator[tuple[str, Processes]]:
    """``REDIS_URL`` (else a redis-server of the benchmark's own, in ``workdir``) and the
    ``Processes`` that use it; on the way out every process stops, then that Redis."""
    processes = Processes(workdir)
    embedded = None
    try:
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            from broker.embedded_redis import EmbeddedRedis

            embedded = EmbeddedRedis(workdir / "redis", appendonly=False).start()
            redis_url = embedded.url
        yield redis_url, processes
    finally:
        processes.close()
        if embedded is not None:
            embedded.stop()


def receive(
    conn: multiprocessing.connection.Connection,
    process: multiprocessing.Process,
    timeout: float,
    what: str,
) -> Any:
    """The next message from a helper, or a clear error when it died or took too long."""
    deadline = time.monotonic() + timeout
    while not conn.poll(0.2):
        if not process.is_alive():
            raise RuntimeError(f"bench: the {what} process exited (code {process.exitcode})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench: no answer from the {what} process after {timeout:.0f}s")
    return conn.recv()
