"""The processes a soak runs and kills: front and worker subprocesses, and their memory.

Every process is ``python -m broker ...`` with its settings in the environment, as an operator
runs it, in a session of its own: a Ctrl-C in the terminal reaches only the soak, which then
stops everything in order instead of leaving half the fleet to die on its own. Output goes to one
file per process so that a violation can be traced to what each process said.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0  # SIGTERM to exit: a front's graceful timeout (5 s) or a worker's grace


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_bytes(pid: int) -> int | None:
    """Resident memory of a live process from ``/proc``; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass
class Proc:
    """One broker process: how it was started, what it said, what was done to it."""

    name: str
    kind: str  # "front" or "worker"
    popen: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]
    started: float
    port: int = 0
    spared: bool = False  # never chosen by chaos: it lives the whole soak, so its memory tells
    ready: bool = False  # a front answered /readyz: clients may be sent to it
    signalled: str = ""  # "SIGKILL" / "SIGTERM" once chaos or shutdown touched it
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, bytes)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def sample_rss(self) -> None:
        if self.alive():
            value = rss_bytes(self.pid)
            if value is not None:
                self.rss.append((time.monotonic() - self.started, value))

    def log_tail(self, chars: int = 3000) -> str:
        self.log.flush()
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class Fleet:
    """All front and worker processes of one soak, living and dead, sharing one Redis."""

    def __init__(
        self, redis_url: str, prefix: str, workdir: Path, settings: dict[str, str]
    ) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.workdir = workdir
        self.settings = settings
        self.procs: list[Proc] = []
        self._counts = {"front": 0, "worker": 0}

    def env(self) -> dict[str, str]:
        """The soak's environment minus any ``BROKER_*`` it carries, plus this fleet's settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        env["BROKER_REDIS_URL"] = self.redis_url
        env["BROKER_KEY_PREFIX"] = self.prefix
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
        env.update(self.settings)
        return env

    def spawn(self, kind: str, *, spared: bool = False) -> Proc:
        """Start a front (on a free port) or a worker; a front is not ready until ``wait_ready``."""
        index = self._counts[kind]
        self._counts[kind] += 1
        name = f"{kind}{index}"
        port = free_port() if kind == "front" else 0
        args = (
            ["serve", "--host", "127.0.0.1", "--port", str(port)] if kind == "front" else ["worker"]
        )
        log_path = self.workdir / f"{name}.log"
        log = open(log_path, "wb")
        popen = subprocess.Popen(
            [sys.executable, "-m", "broker", *args],
            env=self.env(),
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc = Proc(name, kind, popen, log_path, log, time.monotonic(), port=port, spared=spared)
        self.procs.append(proc)
        return proc

    async def wait_ready(self, proc: Proc, timeout: float = READY_TIMEOUT) -> bool:
        """Poll ``/readyz`` until it answers 200; False if the front died or never got there."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(trust_env=False, timeout=1.0) as client:
            while time.monotonic() < deadline and proc.alive():
                try:
                    if (await client.get(proc.url + "/readyz")).status_code == 200:
                        proc.ready = True
                        return True
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
        return False

    def living(self, kind: str) -> list[Proc]:
        """Processes of ``kind`` that run and were not told to stop."""
        return [p for p in self.procs if p.kind == kind and p.alive() and not p.signalled]

    def serving(self) -> list[Proc]:
        """Fronts a client may be sent to: ready, running, not draining."""
        return [p for p in self.living("front") if p.ready]

    def sample_rss(self) -> None:
        for proc in self.procs:
            proc.sample_rss()

    def stop_all(self) -> None:
        """SIGTERM everything still running, then SIGKILL what outlives the timeout.

        Safe to call more than once and from a ``finally``: it is how the soak never leaves a
        process behind, whatever ended it.
        """
        for proc in self.procs:
            if proc.alive():
                proc.signalled = proc.signalled or "SIGTERM"
                _signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in self.procs:
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(proc, signal.SIGKILL)
                proc.popen.wait()
        for proc in self.procs:
            proc.log.close()


def _signal(proc: Proc, signum: int) -> None:
    try:
        proc.popen.send_signal(signum)
    except ProcessLookupError:
        pass
