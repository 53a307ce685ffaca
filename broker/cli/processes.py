"""Starting broker processes: ``python -m broker ...`` children, their output, their end.

``broker dev``, the tests, the benchmark and the soak all run the broker the way an operator
does, as separate processes configured by ``BROKER_*`` variables, and all need the same few
things: a free port, a child environment, a child started with its output somewhere, a wait
until a front is ready, and an orderly stop. This module is the one place that does them.

It starts processes; it never imports the tiers it starts (no ``broker.front``,
``broker.engine`` or ``workers``), so a launcher stays as light as the standard library.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Self

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
# Where this ``broker`` package was imported from: children put it first on PYTHONPATH, so they
# run the same code as the process that starts them, whatever their working directory.
IMPORT_ROOT = Path(__file__).resolve().parents[2]

# A broker taking load from one loopback address, as the tests, the benchmark and the soak do:
# no authentication, and no per-subject limit that one address would exhaust.
OPEN_AND_UNLIMITED: dict[str, Any] = {
    "auth": "none",
    "limit_requests_per_minute": 0,
    "limit_posts_per_minute": 0,
    "limit_streams_per_subject": 0,
    "limit_conversations_per_day": 0,
    "limit_active_runs_per_subject": 0,
    "limit_failed_authentications_per_minute": 0,
    "max_streams_per_address": 0,
    "limit_ds_messages_per_minute": 0,
    "limit_ds_streams_per_day": 0,
    "limit_ds_bytes_per_subject": 0,
}


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the kernel's pick; another process may take it
    before ours binds, which is as good as it gets without passing the socket over)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def settings_env(settings: Mapping[str, Any]) -> dict[str, str]:
    """Settings named as ``Settings`` fields, as environment variables:
    ``{"coalesce_ms": 0}`` -> ``{"BROKER_COALESCE_MS": "0"}``."""
    return {f"BROKER_{name.upper()}": str(value) for name, value in settings.items()}


def clean_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (this process's environment by default) without any ``BROKER_*`` variable.

    A child's settings are then exactly the ones its starter gives, not whatever the shell
    exported. Output is unbuffered, so a log file holds a crashed process's last lines, and
    ``IMPORT_ROOT`` leads PYTHONPATH, so the child imports this checkout.
    """
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if not k.startswith("BROKER_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(IMPORT_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def child_environment(
    base: Mapping[str, str], settings: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """``base`` plus ``settings`` (by field name) as ``BROKER_*`` variables, which win."""
    return {**base, **settings_env(settings or {})}


class NotReady(RuntimeError):
    """A front did not become ready: ``exited`` when a watched process ended first."""

    def __init__(self, message: str, *, exited: bool) -> None:
        super().__init__(message)
        self.exited = exited


@dataclass
class Process:
    """One child process and the file its output goes to (None: it writes where we do)."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path | None = None
    _log: IO[bytes] | None = None

    @classmethod
    def start(
        cls,
        name: str,
        args: Sequence[str],
        env: Mapping[str, str],
        *,
        module: str = "broker",
        log_path: Path | None = None,
        cwd: Path | None = None,
        new_session: bool = False,
        **fields: Any,
    ) -> Self:
        """``python -m <module> <args>`` with this interpreter; ``fields`` go to the handle.

        Output goes to ``log_path`` (a file, never a pipe nobody reads, which could fill and
        stall the child), or, without one, wherever this process writes. ``new_session`` puts
        the child in a session of its own, out of reach of the SIGINT a terminal sends its
        foreground group on Ctrl-C, so that its starter alone decides how it stops. Standard
        input is /dev/null: no child reads the terminal.
        """
        log = open(log_path, "wb") if log_path is not None else None
        try:
            popen = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT if log is not None else None,
                start_new_session=new_session,
            )
        finally:
            if log is not None:
                log.close()  # the child holds its own descriptor
        return cls(name, popen, log_path, **fields)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        """Everything the process wrote so far ("" when its output is not in a file)."""
        if self._log is not None:
            self._log.flush()
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def signal(self, signum: int) -> None:
        if self.alive():
            self.popen.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up, as with a crash or an OOM kill."""
        if self.alive():
            self.popen.kill()
        self.popen.wait(timeout=STOP_TIMEOUT)

    def reap(self, timeout: float) -> int:
        """Wait up to ``timeout`` for the process to exit, SIGKILL it if it has not; returns
        the exit code."""
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        return self.popen.returncode

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``; returns the exit code."""
        self.signal(signal.SIGTERM)
        return self.reap(timeout)

    def close_log(self) -> None:
        if self._log is not None:
            self._log.close()


@dataclass
class Front(Process):
    """A front process and the address it listens on."""

    port: int = 0
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @classmethod
    def serve(
        cls,
        name: str,
        env: Mapping[str, str],
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        **options: Any,
    ) -> Self:
        """``broker serve`` on ``port`` (a free one by default); ``options`` as for ``start``."""
        port = port or free_port(host)
        args = ["serve", "--host", host, "--port", str(port)]
        return cls.start(name, args, env, host=host, port=port, **options)


def wait_ready(
    front: Front,
    *,
    timeout: float = READY_TIMEOUT,
    also: Sequence[Process] = (),
    stop_requested: Callable[[], bool] | None = None,
) -> bool:
    """True once ``front`` answers ``GET /readyz`` with 200; False if ``stop_requested()``
    turns true first.

    Raises ``NotReady`` as soon as the front or any process of ``also`` exits (a start-up
    failure shows at once, not after the timeout), or when ``timeout`` passes. The probe
    ignores proxy variables: the front is local, whatever the environment says.
    """
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while True:
        if stop_requested is not None and stop_requested():
            return False
        for process in (front, *also):
            if not process.alive():
                message = f"{process.name} exited during start-up:\n{process.output()}"
                raise NotReady(message, exited=True)
        try:
            with opener.open(front.url + "/readyz", timeout=1) as response:
                if response.status == 200:
                    return True
        except (OSError, http.client.HTTPException):
            pass
        if time.monotonic() > deadline:
            message = f"{front.name} not ready after {timeout}s:\n{front.output()}"
            raise NotReady(message, exited=False)
        time.sleep(0.05)


def stop_all(processes: Sequence[Process], timeout: float = STOP_TIMEOUT) -> list[int]:
    """Stop ``processes`` in order and return their exit codes.

    One SIGTERM reaches every process still running before any is waited for, so they drain
    side by side; each then gets ``timeout`` seconds, in order, before SIGKILL. One SIGTERM
    only: a second one may cut a worker's drain short.
    """
    for process in processes:
        process.signal(signal.SIGTERM)
    return [process.reap(timeout) for process in processes]
