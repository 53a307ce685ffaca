"""Real broker processes for the tests: front processes on free loopback ports and workers.

Every process is ``python -m broker ...`` with its settings in the environment, exactly as an
operator runs it. Output goes to files (a pipe nobody reads could fill and stall a process), and
the files are printed when a test fails, so a failure shows what each process said.

A traceback in any process's output fails the test that started it: a fault the broker is
built to survive must be handled, not crash through. A test that provokes one on purpose says
so with ``Stack.expect_traceback``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from tests.api import Api

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
_TRACEBACK = "Traceback (most recent call last):"
_TRACEBACK_LINES = 40


def tracebacks(output: str) -> list[str]:
    """Every traceback in a process's output, each with the lines that follow its header."""
    lines = output.splitlines()
    return [
        "\n".join(lines[index : index + _TRACEBACK_LINES])
        for index, line in enumerate(lines)
        if _TRACEBACK in line
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_environment() -> dict[str, str]:
    """The test runner's environment without any ``BROKER_*`` setting it may carry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


# Every stack starts open and unlimited, as the broker was before authentication: tests about
# authentication and limits set their own values on top.
DEFAULT_SETTINGS: dict[str, Any] = {
    "auth": "none",
    "limit_requests_per_minute": 0,
    "limit_posts_per_minute": 0,
    "limit_streams_per_subject": 0,
    "limit_conversations_per_day": 0,
    "limit_active_runs_per_subject": 0,
}


def settings_env(settings: dict[str, Any]) -> dict[str, str]:
    """``{"coalesce_ms": 0}`` -> ``{"BROKER_COALESCE_MS": "0"}``."""
    return {f"BROKER_{name.upper()}": str(value) for name, value in settings.items()}


@dataclass
class Process:
    """One broker process and the file its output goes to."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        if self.alive():
            self.popen.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up, as with a crash or an OOM kill."""
        if self.alive():
            self.popen.kill()
        self.popen.wait(timeout=STOP_TIMEOUT)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``; returns the exit code."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=STOP_TIMEOUT)
        return self.popen.returncode

    def close_log(self) -> None:
        self._log.close()


@dataclass
class Front(Process):
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> Api:
        return Api(self.url)

    @property
    def client_name(self) -> str:
        """The name this process gives its Redis connections (``CLIENT SETNAME``)."""
        return f"broker:front:{self.pid}"


@dataclass
class Stack:
    """The broker processes of one test, all sharing its Redis and its key prefix."""

    redis_url: str
    prefix: str
    workdir: Path
    settings: dict[str, Any] = field(default_factory=dict)
    processes: list[Process] = field(default_factory=list)
    fronts: list[Front] = field(default_factory=list)
    workers: list[Process] = field(default_factory=list)
    expected_tracebacks: list[re.Pattern[str]] = field(default_factory=list)

    def expect_traceback(self, pattern: str) -> None:
        """Declare that a traceback matching ``pattern`` (a regex searched in the traceback and
        the lines after it) is legitimately expected in some process's output."""
        self.expected_tracebacks.append(re.compile(pattern))

    def env(self, extra: dict[str, Any] | None = None) -> dict[str, str]:
        env = base_environment()
        env["BROKER_REDIS_URL"] = self.redis_url
        env["BROKER_KEY_PREFIX"] = self.prefix
        env.update(settings_env({**DEFAULT_SETTINGS, **self.settings, **(extra or {})}))
        return env

    def _spawn(
        self, name: str, args: list[str], extra: dict[str, Any] | None
    ) -> tuple[subprocess.Popen[bytes], Path, IO[bytes]]:
        log_path = self.workdir / f"{name}.log"
        log = open(log_path, "wb")
        popen = subprocess.Popen(
            [sys.executable, "-m", "broker", *args],
            env=self.env(extra),
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return popen, log_path, log

    def start(self, fronts: int = 1, workers: int = 1, **settings: Any) -> Stack:
        """Set the stack's settings, then start processes and wait until the fronts are ready."""
        self.settings.update(settings)
        started = [self.front(wait=False) for _ in range(fronts)]
        for _ in range(workers):
            self.worker()
        for front in started:
            self.wait_ready(front)
        return self

    def front(self, *, wait: bool = True, port: int | None = None, **extra: Any) -> Front:
        """A new front process; ``port`` reuses one (a restart behind the same address)."""
        port = port or free_port()
        name = f"front{len(self.fronts)}"
        popen, log_path, log = self._spawn(
            name, ["serve", "--host", "127.0.0.1", "--port", str(port)], extra
        )
        front = Front(name, popen, log_path, log, port=port)
        self.processes.append(front)
        self.fronts.append(front)
        if wait:
            self.wait_ready(front)
        return front

    def worker(self, concurrency: int = 64, **extra: Any) -> Process:
        name = f"worker{len(self.workers)}"
        popen, log_path, log = self._spawn(
            name, ["worker", "--concurrency", str(concurrency)], extra
        )
        worker = Process(name, popen, log_path, log)
        self.processes.append(worker)
        self.workers.append(worker)
        return worker

    def wait_ready(self, front: Front, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(trust_env=False, timeout=1.0) as client:
            while True:
                if not front.alive():
                    raise RuntimeError(f"{front.name} exited during start-up:\n{front.output()}")
                try:
                    if client.get(front.url + "/readyz").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{front.name} not ready after {timeout}s:\n{front.output()}"
                    )
                time.sleep(0.05)

    def unexpected_tracebacks(self) -> list[str]:
        """Tracebacks in the processes' output that no ``expect_traceback`` pattern matches."""
        found = []
        for process in self.processes:
            for text in tracebacks(process.output()):
                if not any(pattern.search(text) for pattern in self.expected_tracebacks):
                    found.append(f"{process.name} (pid {process.pid}):\n{text}")
        return found

    def close(self, report: bool) -> list[str]:
        """Stop every process; print their output if ``report`` or if one logged a traceback.

        Returns the unexpected tracebacks, for the caller to fail the test with.
        """
        for process in self.processes:
            process.signal(signal.SIGTERM)
        codes = [process.stop() for process in self.processes]
        unexpected = self.unexpected_tracebacks()
        for process, code in zip(self.processes, codes, strict=True):
            if report or unexpected:
                print(f"----- {process.name} (pid {process.pid}, exit {code}) -----")
                print(process.output()[-20000:])
            process.close_log()
        return unexpected
