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
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent
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


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(
    redis_url: str, prefix: str, settings: dict[str, Any] | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env["BROKER_REDIS_URL"] = redis_url
    env["BROKER_KEY_PREFIX"] = prefix
    env["BROKER_LOG_LEVEL"] = "WARNING"
    # Load from one loopback address: no authentication, and no per-subject limit.
    env["BROKER_AUTH"] = "none"
    for limit in (
        "REQUESTS_PER_MINUTE",
        "POSTS_PER_MINUTE",
        "STREAMS_PER_SUBJECT",
        "CONVERSATIONS_PER_DAY",
        "ACTIVE_RUNS_PER_SUBJECT",
    ):
        env[f"BROKER_LIMIT_{limit}"] = "0"
    for name, value in (settings or {}).items():
        env[f"BROKER_{name.upper()}"] = str(value)
    return env


@dataclass
class Child:
    """A process started with Popen; its output goes to a file read back when it fails."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    port: int = 0

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=timeout)


@dataclass
class Processes:
    """Every process the benchmark started; ``close`` ends them all (only them)."""

    workdir: Path
    children: list[Child] = field(default_factory=list)
    helpers: list[multiprocessing.Process] = field(default_factory=list)
    started: int = 0

    def spawn(self, name: str, args: list[str], env: dict[str, str], port: int = 0) -> Child:
        self.started += 1
        log_path = self.workdir / f"{self.started:02d}-{name}.log"
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                args,
                env=env,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        child = Child(name, popen, log_path, port)
        self.children.append(child)
        return child

    def front(self, system: str, redis_url: str, prefix: str, settings: dict[str, Any]) -> Child:
        """One front process (the broker's, or the naive baseline), ready to serve."""
        port = free_port()
        if system == "broker":
            args = [
                sys.executable,
                "-m",
                "broker",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ]
        else:
            args = [
                sys.executable,
                str(SCRIPTS / "naive_front.py"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ]
        child = self.spawn(f"front-{system}", args, child_env(redis_url, prefix, settings), port)
        wait_ready(child)
        return child

    def worker(
        self, redis_url: str, prefix: str, concurrency: int, settings: dict[str, Any]
    ) -> Child:
        args = [sys.executable, "-m", "broker", "worker", "--concurrency", str(concurrency)]
        return self.spawn("worker", args, child_env(redis_url, prefix, settings))

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

    def release(self, child: Child) -> None:
        child.stop()
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
        for child in reversed(self.children):
            child.stop()
        self.children.clear()


def wait_ready(child: Child, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if child.popen.poll() is not None:
            raise RuntimeError(f"{child.name} exited during start-up:\n{child.output()}")
        try:
            with urllib.request.urlopen(child.url + "/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{child.name} not ready after {timeout}s:\n{child.output()}")
        time.sleep(0.05)


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
