"""The processes a soak runs and kills: front and worker subprocesses, and their memory.

Every process is ``python -m broker ...`` with its settings in the environment, as an operator
runs it, in a session of its own: a Ctrl-C in the terminal reaches only the soak, which then
stops everything in order instead of leaving half the fleet to die on its own. Output goes to one
file per process so that a violation can be traced to what each process said.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.cli.processes import (
    OPEN_AND_UNLIMITED,
    Front,
    NotReady,
    child_environment,
    clean_environment,
    stop_all,
    wait_ready,
)

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0  # SIGTERM to exit: a front's graceful timeout (5 s) or a worker's grace


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
class Proc(Front):
    """One broker process: how it was started, what it said, what was done to it.

    A front or a worker; only a front has a port (and so a URL).
    """

    kind: str = "front"  # "front" or "worker"
    started: float = field(default_factory=time.monotonic)
    spared: bool = False  # never chosen by chaos: it lives the whole soak, so its memory tells
    ready: bool = False  # a front answered /readyz: clients may be sent to it
    signalled: str = ""  # "SIGKILL" / "SIGTERM" once chaos or shutdown touched it
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, bytes)

    def sample_rss(self) -> None:
        if self.alive():
            value = rss_bytes(self.pid)
            if value is not None:
                self.rss.append((time.monotonic() - self.started, value))

    def log_tail(self, chars: int = 3000) -> str:
        return self.output()[-chars:]


class Fleet:
    """All front and worker processes of one soak, living and dead, sharing one Redis."""

    def __init__(
        self, redis_url: str, prefix: str, workdir: Path, settings: dict[str, Any]
    ) -> None:
        """``settings`` by field name, e.g. ``{"lease_seconds": 2.0}``."""
        self.redis_url = redis_url
        self.prefix = prefix
        self.workdir = workdir
        self.settings = settings
        self.procs: list[Proc] = []
        self._counts = {"front": 0, "worker": 0}

    def env(self) -> dict[str, str]:
        """The soak's environment minus any ``BROKER_*`` it carries, plus this fleet's settings."""
        fleet = {"redis_url": self.redis_url, "key_prefix": self.prefix}
        return child_environment(
            clean_environment(), {**fleet, **OPEN_AND_UNLIMITED, **self.settings}
        )

    def spawn(self, kind: str, *, spared: bool = False) -> Proc:
        """Start a front (on a free port) or a worker; a front is not ready until ``wait_ready``."""
        index = self._counts[kind]
        self._counts[kind] += 1
        name = f"{kind}{index}"
        options: dict[str, Any] = {
            "log_path": self.workdir / f"{name}.log",
            "cwd": self.workdir,
            "new_session": True,
            "kind": kind,
            "spared": spared,
        }
        if kind == "front":
            proc = Proc.serve(name, self.env(), **options)
        else:
            proc = Proc.start(name, ["worker"], self.env(), **options)
        self.procs.append(proc)
        return proc

    async def wait_ready(self, proc: Proc, timeout: float = READY_TIMEOUT) -> bool:
        """Poll ``/readyz`` until it answers 200; False if the front died or never got there.

        The wait runs in a thread, so the soak's traffic goes on meanwhile; a cancelled wait
        tells the thread to give up rather than keep the soak from exiting.
        """
        cancelled = threading.Event()
        try:
            ready = await asyncio.to_thread(
                wait_ready, proc, timeout=timeout, stop_requested=cancelled.is_set
            )
        except NotReady:
            return False
        finally:
            cancelled.set()
        proc.ready = ready
        return ready

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
        stop_all(self.procs, STOP_TIMEOUT)
