"""Real broker processes for the tests: front processes on free loopback ports and workers.

Every process is ``python -m broker ...`` with its settings in the environment, exactly as an
operator runs it. Output goes to files (a pipe nobody reads could fill and stall a process), and
the files are printed when a test fails, so a failure shows what each process said.

A traceback in any process's output fails the test that started it: a fault the broker is
built to survive must be handled, not crash through. A test that provokes one on purpose says
so with ``Stack.expect_traceback``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import broker.cli.processes as launcher
from broker.cli.processes import (
    OPEN_AND_UNLIMITED,
    READY_TIMEOUT,
    STOP_TIMEOUT,
    Process,
    child_environment,
    clean_environment,
    free_port,
    settings_env,
)
from tests.api import Api

__all__ = [
    "DEFAULT_SETTINGS",
    "READY_TIMEOUT",
    "REPO_ROOT",
    "STOP_TIMEOUT",
    "Front",
    "Process",
    "Stack",
    "base_environment",
    "free_port",
    "settings_env",
    "tracebacks",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
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


def base_environment() -> dict[str, str]:
    """The test runner's environment without any ``BROKER_*`` setting it may carry."""
    return clean_environment()


# Every stack starts open and unlimited, as the broker was before authentication: tests about
# authentication and limits set their own values on top.
DEFAULT_SETTINGS: dict[str, Any] = OPEN_AND_UNLIMITED


@dataclass
class Front(launcher.Front):
    """A front of a test's stack, on loopback, with the test client's view of it."""

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
        settings = {"redis_url": self.redis_url, "key_prefix": self.prefix}
        return child_environment(
            base_environment(), {**settings, **DEFAULT_SETTINGS, **self.settings, **(extra or {})}
        )

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
        name = f"front{len(self.fronts)}"
        front = Front.serve(
            name,
            self.env(extra),
            port=port,
            log_path=self.workdir / f"{name}.log",
            cwd=self.workdir,
        )
        self.processes.append(front)
        self.fronts.append(front)
        if wait:
            self.wait_ready(front)
        return front

    def worker(self, concurrency: int = 64, **extra: Any) -> Process:
        name = f"worker{len(self.workers)}"
        worker = Process.start(
            name,
            ["worker", "--concurrency", str(concurrency)],
            self.env(extra),
            log_path=self.workdir / f"{name}.log",
            cwd=self.workdir,
        )
        self.processes.append(worker)
        self.workers.append(worker)
        return worker

    def wait_ready(self, front: Front, timeout: float = READY_TIMEOUT) -> None:
        launcher.wait_ready(front, timeout=timeout)

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
        codes = launcher.stop_all(self.processes, STOP_TIMEOUT)
        unexpected = self.unexpected_tracebacks()
        for process, code in zip(self.processes, codes, strict=True):
            if report or unexpected:
                print(f"----- {process.name} (pid {process.pid}, exit {code}) -----")
                print(process.output()[-20000:])
            process.close_log()
        return unexpected
