"""The benchmark's plumbing: the processes it starts and the counters it reads.

Everything it starts is tracked by one ``Processes`` object whose ``close`` stops all of it, so
an error or Ctrl-C never leaves a front, a worker, a peer's Node server or a Redis behind. Measurements come from the
kernel (``/proc/<pid>/stat`` CPU ticks and ``/proc/<pid>/status`` RSS) and from Redis itself
(``INFO commandstats``, ``INFO cpu``, ``CLIENT LIST``), never from the processes measured.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import shutil
import subprocess
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

from .systems import DS, System
from .systems import system as named_system

REPO_ROOT = Path(__file__).resolve().parents[2]
# The baseline front, run as a module from REPO_ROOT as the broker's front is.
NAIVE_FRONT = "scripts.bench.naive_front"
# The peers' Node project: package.json, its lock file, and a small server per peer.
PEERS_DIR = Path(__file__).resolve().parent / "peers"
NPM_TIMEOUT = 600.0
# A peer's server runs no longer than this, whatever happens to the benchmark.
PEER_MAX_SECONDS = 3 * 3600
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


def install_peers() -> None:
    """``npm ci`` in scripts/bench/peers when its node_modules is missing or older than its lock
    file (what scripts/test does for the Node test projects), so the peers run the versions
    the lock file pins."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise SystemExit("bench: the peers need Node (20 or newer) and npm on PATH")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    if int(version.stdout.strip().lstrip("v").split(".")[0]) < 20:
        raise SystemExit(f"bench: the peers need Node 20 or newer, not {version.stdout.strip()}")
    modules = PEERS_DIR / "node_modules"
    lock = PEERS_DIR / "package-lock.json"
    if modules.is_dir() and modules.stat().st_mtime >= lock.stat().st_mtime:
        return
    print("bench: npm ci in scripts/bench/peers ...", file=sys.stderr, flush=True)
    completed = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=PEERS_DIR,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=NPM_TIMEOUT,
    )
    if completed.returncode != 0:
        raise SystemExit(f"bench: npm ci in {PEERS_DIR} failed:\n{completed.stderr[-4000:]}")


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

    def front(
        self, system: System | str, redis_url: str, prefix: str, settings: dict[str, Any]
    ) -> Front:
        """One server process of ``system`` (the broker's front, the naive baseline, or a
        peer's Node server; a ``System`` or its name), ready to serve."""
        if isinstance(system, str):
            system = named_system(system)
        name = f"front-{system.name}"
        env = child_env(redis_url, prefix, settings)
        if system.name == "broker":
            child = Front.serve(name, env, **self._options(name))
        elif system.node_script is not None:
            child = self._node(name, system, redis_url, prefix, settings)
        else:
            port = free_port()
            args = ["--host", "127.0.0.1", "--port", str(port)]
            child = Front.start(
                name, args, env, module=NAIVE_FRONT, port=port, **self._options(name)
            )
        self.children.append(child)
        wait_ready(child)
        return child

    def _node(
        self, name: str, system: System, redis_url: str, prefix: str, settings: dict[str, Any]
    ) -> Front:
        """A peer's Node server on a free port: started here as ``Process.start`` starts a
        Python child (its output to a numbered file, no terminal input), and handed back as a
        ``Front``, so that readiness, CPU, RSS and the stop go through the same code. It is
        told this process's pid and a lifetime, and exits by itself when either runs out."""
        port = free_port()
        args = [
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--parent-pid",
            str(os.getpid()),
            "--max-seconds",
            str(PEER_MAX_SECONDS),
        ]
        if system.uses_redis:
            args += ["--key-prefix", prefix]
        if DS in system.protocols and "ds_long_poll_seconds" in settings:  # as the broker's
            args += ["--long-poll-seconds", str(settings["ds_long_poll_seconds"])]
        env = {**clean_environment(), "REDIS_URL": redis_url}
        options = self._options(name)
        log_path: Path = options["log_path"]
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                ["node", str(PEERS_DIR / str(system.node_script)), *args],
                env=env,
                cwd=PEERS_DIR,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return Front(name, popen, log_path, port=port)

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
