"""The soak's traffic and chaos: prompts, SSE readers that reconnect, cancels, kills.

Everything a client saw is recorded compactly (entry id, event name, CRC of the data) so that
the checker can compare it with Redis at the end; what the HTTP answers said that no later
check could catch (a 500, a 404 for a conversation that exists) is recorded as a problem on the
spot. Answers that chaos makes legitimate are counted, not flagged: 409 ``run_active``, 503
while a front or Redis is busy, connection errors while a front dies.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.sse import ProtocolError, SSEStream, open_sse

from .fleet import STOP_TIMEOUT, Fleet, Proc

STREAM_ERRORS = (OSError, TimeoutError, ProtocolError, asyncio.IncompleteReadError, ValueError)
POST_ATTEMPTS = 40


def crc(data: str | bytes) -> int:
    """A cheap fingerprint of an event's data: enough to tell a different event apart."""
    return zlib.crc32(data.encode() if isinstance(data, str) else data)


@dataclass
class Connection:
    """One SSE connection: where it asked to start, and every event it received, in order."""

    client: int
    cid: str
    after: str | None  # the Last-Event-ID it sent; None: from the beginning
    front: str
    events: list[tuple[str | None, str, int]] = field(default_factory=list)
    ending: str = "open"


@dataclass
class Slot:
    """A conversation lane: one prompter, some clients; it moves to a fresh conversation after
    a number of runs, which keeps every stream far below the retention cap and replays short."""

    index: int
    cid: str = ""
    runs: int = 0
    last_run: str = ""


@dataclass
class Plan:
    """The shape of the load; all bounded, all loopback."""

    conversations: int
    clients: int
    runs_per_conversation: int
    prompt_pause: tuple[float, float]
    cancel_pause: tuple[float, float]
    chaos_pause: tuple[float, float]
    read_for: tuple[float, float]
    max_tokens: int
    max_interval_ms: int


class Load:
    """Drives the fleet with traffic and chaos until ``stop`` is set, recording what it saw."""

    def __init__(self, fleet: Fleet, plan: Plan, rng: random.Random) -> None:
        self.fleet = fleet
        self.plan = plan
        self.rng = rng
        self.stats: Counter[str] = Counter()
        self.problems: list[str] = []
        self.connections: list[Connection] = []
        self.accepted: dict[str, str] = {}  # run id -> conversation id, from 202 answers
        self.post_failures: dict[str, list[str]] = {}  # run id -> attempts before its 202
        self.timeline: list[str] = []  # what chaos did, when
        self.conversations: list[str] = []
        self.slots = [Slot(i) for i in range(plan.conversations)]
        self.last_ids: dict[int, tuple[str, str | None]] = {}  # client -> (cid, last id)
        self.stop = asyncio.Event()
        self.stop_chaos = asyncio.Event()
        self.http = httpx.AsyncClient(
            trust_env=False, timeout=20.0, limits=httpx.Limits(max_keepalive_connections=16)
        )
        self._watchers: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        await self.http.aclose()
        for task in self._watchers:
            task.cancel()

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def note(self, text: str) -> None:
        self.timeline.append(f"{wall_clock()} {text}")

    def chaos_near(self, ms: int, seconds: float = 3.0) -> list[str]:
        """The chaos actions within ``seconds`` of a Redis entry time, to explain a violation."""
        return [
            line for line in self.timeline if abs(int(line.split(" ", 1)[0]) - ms) <= seconds * 1000
        ]

    # ---------------------------------------------------------------- HTTP with retries

    def pick_front(self) -> Proc | None:
        fronts = self.fleet.serving()
        return self.rng.choice(fronts) if fronts else None

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        failures: list[str] | None = None,
    ) -> httpx.Response | None:
        """Send to a random front; retry elsewhere on connection errors and 503s.

        Every request the soak retries is safe to repeat: a POST of a message carries an
        ``Idempotency-Key``, and cancel is idempotent by contract. Failed attempts are noted in
        ``failures`` (which front, what error, when), to explain a violation later.
        """
        for _ in range(POST_ATTEMPTS):
            front = self.pick_front()
            if front is None:
                await asyncio.sleep(0.1)
                continue
            try:
                response = await self.http.request(
                    method, front.url + path, json=json, headers=headers
                )
            except httpx.TransportError as exc:
                if failures is not None:
                    failures.append(f"{wall_clock()} {front.name}: {type(exc).__name__}")
                self.stats["http_retries"] += 1
                await asyncio.sleep(self.rng.uniform(0.02, 0.2))
                continue
            if response.status_code == 503:
                self.stats["http_503"] += 1
                await asyncio.sleep(self.rng.uniform(0.05, 0.3))
                continue
            return response
        self.stats["http_gave_up"] += 1
        return None

    def unexpected(self, what: str, response: httpx.Response) -> None:
        self.problem(f"{what}: unexpected HTTP {response.status_code}: {response.text[:300]}")

    # ---------------------------------------------------------------- prompts

    def new_prompt(self) -> dict[str, Any]:
        """A simulated-model message whose content names its params, so the checker can count
        the words of the answer from the stream alone."""
        tokens = self.rng.randint(1, self.plan.max_tokens)
        reasoning = self.rng.choice((0, 0, 0, self.rng.randint(1, 5)))
        interval = self.rng.randint(1, self.plan.max_interval_ms)
        self.stats["prompt_seq"] += 1
        content = f"soak prompt {self.stats['prompt_seq']} tokens={tokens} reasoning={reasoning}"
        params = {"tokens": tokens, "interval_ms": interval, "reasoning_tokens": reasoning}
        return {"content": content, "model": "simulated", "params": params}

    async def post_message(self, cid: str) -> str | None:
        """POST one prompt; the run id when accepted, None when refused or given up."""
        body = self.new_prompt()
        headers = {"Idempotency-Key": uuid.uuid4().hex}
        self.stats["posts"] += 1
        failures: list[str] = []
        response = await self.request(
            "POST",
            f"/v1/conversations/{cid}/messages",
            json=body,
            headers=headers,
            failures=failures,
        )
        if response is None:
            return None
        if response.status_code == 202:
            run_id = response.json()["run_id"]
            self.accepted[run_id] = cid
            if failures:
                self.post_failures[run_id] = failures
            self.stats["accepted"] += 1
            return str(run_id)
        if response.status_code == 409 and _code(response) == "run_active":
            self.stats["run_active"] += 1
            return None
        self.unexpected(f"POST message to {cid}", response)
        return None

    async def prompter(self, slot: Slot) -> None:
        """Post prompts into the slot's conversation; move to a fresh one every so many runs."""
        while not self.stop.is_set():
            if not slot.cid or slot.runs >= self.plan.runs_per_conversation:
                cid = f"soak-{uuid.uuid4().hex[:10]}-{slot.index}"
                run_id = await self.post_message(cid)
                if run_id is not None:
                    self.conversations.append(cid)
                    slot.cid, slot.runs, slot.last_run = cid, 1, run_id
            else:
                await asyncio.sleep(self.rng.uniform(*self.plan.prompt_pause))
                run_id = await self.post_message(slot.cid)
                if run_id is not None:
                    slot.runs += 1
                    slot.last_run = run_id

    # ---------------------------------------------------------------- cancels

    async def canceller(self) -> None:
        """Cancel at random: the active run, the active run waiting for its end, or a named run."""
        while not self.stop.is_set():
            await asyncio.sleep(self.rng.uniform(*self.plan.cancel_pause))
            slot = self.rng.choice(self.slots)
            if not slot.cid:
                continue
            kind = self.rng.choices(("active", "wait", "named"), weights=(6, 2, 2))[0]
            path = f"/v1/conversations/{slot.cid}"
            path += f"/runs/{slot.last_run}/cancel" if kind == "named" else "/cancel"
            if kind == "wait":
                path += "?wait=true"
            self.stats["cancels"] += 1
            response = await self.request("POST", path)
            if response is None:
                continue
            status = response.status_code
            if status in (200, 202):
                self.stats[f"cancel_{status}"] += 1
            elif status == 409 and kind != "named" and _code(response) == "no_active_run":
                self.stats["cancel_409"] += 1
            else:
                self.unexpected(f"cancel {path}", response)

    # ---------------------------------------------------------------- SSE clients

    async def client(self, index: int) -> None:
        """Read a conversation for a while, drop the connection, come back to any front with the
        last id seen (now and then from the very beginning instead)."""
        slot = self.slots[index % len(self.slots)]
        cid, last = "", None
        while not self.stop.is_set():
            if slot.cid != cid:
                cid, last = slot.cid, None
                self.last_ids[index] = (cid, None)
            front = self.pick_front()
            if not cid or front is None:
                await asyncio.sleep(0.1)
                continue
            after = None if self.rng.random() < 0.05 else last
            duration = self.rng.uniform(*self.plan.read_for)
            last = await self.read(index, front, cid, after, duration, last)
            self.last_ids[index] = (cid, last)
            await asyncio.sleep(self.rng.uniform(0.0, 0.3))

    async def read(
        self,
        index: int,
        front: Proc,
        cid: str,
        after: str | None,
        duration: float,
        last: str | None,
    ) -> str | None:
        """One connection; returns the client's position afterwards."""
        path = f"/v1/conversations/{cid}/stream"
        header = after
        if after is not None and self.rng.random() < 0.1:
            # A fresh EventSource can only pass its position in the query; same contract.
            path, header = f"{path}?last_event_id={after}", None
        try:
            stream = await open_sse(front.url, path, last_event_id=header, timeout=5.0)
        except STREAM_ERRORS:
            self.stats["connect_errors"] += 1
            return last
        if stream.status != 200:
            if stream.status == 503:
                self.stats["http_503"] += 1
            else:
                self.problem(
                    f"client {index}: GET stream of {cid} on {front.name}: HTTP {stream.status} "
                    f"{stream.response.body[:300]!r}"
                )
            return last
        connection = Connection(index, cid, after, front.name)
        self.connections.append(connection)
        self.stats["connections"] += 1
        position = after
        try:
            position = await self._consume(stream, connection, duration, position)
        finally:
            await stream.close()
        return position

    async def _consume(
        self, stream: SSEStream, connection: Connection, duration: float, position: str | None
    ) -> str | None:
        """Record events until ``duration`` passes or the server ends the stream."""
        deadline = time.monotonic() + duration
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    connection.ending = "client left"
                    break
                try:
                    event = await stream.next(timeout=remaining)
                except TimeoutError:
                    connection.ending = "client left"
                    break
                if event is None:
                    connection.ending = f"server ended ({stream.ending})"
                    self.stats["server_ended"] += 1
                    break
                connection.events.append((event.id, event.event, crc(event.data)))
                if event.id is not None:
                    position = event.id
        except STREAM_ERRORS as exc:
            connection.ending = f"error: {type(exc).__name__}"
            self.stats["stream_errors"] += 1
        return position

    async def catch_up(self, index: int, cid: str, after: str | None, target: str) -> None:
        """After the load: one last connection must bring the client to the stream's last id."""
        for _ in range(5):
            front = self.pick_front()
            if front is None:
                break
            try:
                stream = await open_sse(
                    front.url, f"/v1/conversations/{cid}/stream", last_event_id=after, timeout=5.0
                )
            except STREAM_ERRORS:
                await asyncio.sleep(0.2)
                continue
            if stream.status != 200:
                self.problem(f"final catch-up of client {index} on {cid}: HTTP {stream.status}")
                return
            connection = Connection(index, cid, after, front.name)
            self.connections.append(connection)
            try:
                async with asyncio.timeout(15.0):
                    while after != target:
                        event = await stream.next(timeout=15.0)
                        if event is None:
                            break
                        connection.events.append((event.id, event.event, crc(event.data)))
                        after = event.id or after
            except STREAM_ERRORS:
                pass
            finally:
                await stream.close()
            if after == target:
                return
        self.problem(
            f"final catch-up of client {index} on {cid} did not reach the last event {target} "
            f"(stopped at {after})"
        )

    # ---------------------------------------------------------------- chaos

    async def chaos(self) -> None:
        """Every few seconds SIGKILL or SIGTERM a random front or worker and start another."""
        while not self.stop_chaos.is_set():
            try:
                async with asyncio.timeout(self.rng.uniform(*self.plan.chaos_pause)):
                    await self.stop_chaos.wait()
                return
            except TimeoutError:
                pass
            victim = self.pick_victim()
            if victim is not None:
                await self.replace(victim, self.rng.choice((signal.SIGKILL, signal.SIGTERM)))

    def pick_victim(self) -> Proc | None:
        kinds = ["front", "worker"]
        self.rng.shuffle(kinds)
        for kind in kinds:
            candidates = [
                p for p in self.fleet.living(kind) if not p.spared and (kind == "worker" or p.ready)
            ]
            if candidates:
                return self.rng.choice(candidates)
        return None

    async def replace(self, victim: Proc, signum: signal.Signals) -> None:
        """Signal ``victim`` and start a replacement, never leaving its kind with none running:
        when it is the last of its kind, the replacement is up before the signal goes."""
        last_one = len(self.fleet.living(victim.kind)) <= 1
        replacement = await self.start(victim.kind) if last_one else None
        victim.signalled = signum.name
        victim.popen.send_signal(signum)
        self.stats["kills" if signum == signal.SIGKILL else "terms"] += 1
        self.note(f"{signum.name} {victim.name} (pid {victim.pid})")
        self._watch_exit(victim, signum)
        if replacement is None:
            await self.start(victim.kind)

    async def start(self, kind: str) -> Proc:
        proc = self.fleet.spawn(kind)
        self.note(f"started {proc.name} (pid {proc.pid})")
        self.stats["restarts"] += 1
        if kind == "front" and not await self.fleet.wait_ready(proc):
            self.problem(f"{proc.name} (pid {proc.pid}) did not become ready:\n{proc.log_tail()}")
        return proc

    def _watch_exit(self, proc: Proc, signum: signal.Signals) -> None:
        task = asyncio.create_task(self._await_exit(proc, signum))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _await_exit(self, proc: Proc, signum: signal.Signals) -> None:
        """Reap the process; one that outlives SIGTERM by far did not shut down gracefully."""
        deadline = time.monotonic() + STOP_TIMEOUT
        while proc.alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if proc.alive():
            self.problem(
                f"{proc.name} (pid {proc.pid}) still running {STOP_TIMEOUT:.0f}s after {signum.name}"
            )
            proc.popen.kill()
            proc.popen.wait()

    async def monitor(self, interval: float) -> None:
        """Sample every process's memory; a process that exits untouched is a crash."""
        while True:
            self.fleet.sample_rss()
            for proc in self.fleet.procs:
                if not proc.signalled and not proc.alive():
                    proc.signalled = "exited"
                    self.problem(
                        f"{proc.name} (pid {proc.pid}) exited by itself with code "
                        f"{proc.popen.returncode}:\n{proc.log_tail()}"
                    )
                    if not self.stop_chaos.is_set():
                        await self.start(proc.kind)
            await asyncio.sleep(interval)


def wall_clock() -> int:
    """Milliseconds since the epoch: the clock Redis stamps stream entry ids with."""
    return time.time_ns() // 1_000_000


def _code(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""
