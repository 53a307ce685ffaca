"""The soak's verdict: every conversation in Redis against what clients saw and what runs did.

Redis is the truth the broker promises to serve, so each check reads the stored stream and
compares: a client connection's events must be exactly the stream after the position it asked
for (a prefix of it, when the connection ended early); every accepted run must end exactly once
and write nothing after its end; a completed simulated answer must hold exactly the words it was
asked for (a lost or doubled append shows up there even when nobody watched that run).
"""

from __future__ import annotations

import bisect
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import redis

from .fleet import Proc
from .load import Connection, crc

TERMINALS = {"run.completed": "completed", "run.cancelled": "cancelled", "run.failed": "failed"}
# Failures chaos is allowed to cause: a worker killed mid-run, a worker stopped past its grace.
EXPECTED_FAILURES = frozenset({"worker_lost", "worker_shutdown"})
_PARAMS = re.compile(r"tokens=(\d+) reasoning=(\d+)")
RSS_FACTOR = 3
RSS_SLACK = 100 * 1024 * 1024


@dataclass
class Stored:
    """One entry of a conversation stream as Redis holds it."""

    id: str
    name: str
    data: bytes
    run_id: str


@dataclass
class Verdict:
    counts: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


def read_stream(client: redis.Redis, key: str, batch: int = 5000) -> list[Stored]:
    """The whole stream, oldest first, read in batches."""
    entries: list[Stored] = []
    start = "-"
    while True:
        chunk = client.xrange(key, min=start, max="+", count=batch)
        for entry_id, fields in chunk:
            entries.append(
                Stored(
                    entry_id.decode(),
                    fields[b"t"].decode(),
                    fields[b"d"],
                    fields.get(b"r", b"").decode(),
                )
            )
        if len(chunk) < batch:
            return entries
        start = "(" + entries[-1].id


def check_conversation(
    client: redis.Redis, prefix: str, cid: str, connections: list[Connection], verdict: Verdict
) -> set[str]:
    """Check one conversation; returns the run ids its stream announces."""
    base = f"{prefix}:{{{cid}}}"
    entries = read_stream(client, f"{base}:events")
    verdict.counts["entries"] += len(entries)
    if not entries:
        verdict.violations.append(f"{cid}: the conversation's stream is empty or gone")
        return set()
    first_id = client.hget(f"{base}:meta", "first_id")
    origin = first_id.decode() if first_id else entries[0].id
    positions = [_id_key(e.id) for e in entries]
    for connection in connections:
        check_connection(connection, entries, positions, origin, verdict)
    return check_runs(cid, entries, verdict)


def check_connection(
    connection: Connection,
    entries: list[Stored],
    positions: list[tuple[int, int]],
    origin: str,
    verdict: Verdict,
) -> None:
    """The connection's events must be the stored stream after its position, a prefix of it."""
    where = f"{connection.cid} client {connection.client} via {connection.front} after {connection.after}"
    received = connection.events
    start = 0
    if connection.after is not None:
        start = bisect.bisect_right(positions, _id_key(connection.after))
    trimmed = _id_key(entries[0].id) > _id_key(origin)
    if received and received[0][1] == "reset":
        allowed = (
            trimmed
            and connection.after is not None
            and _id_key(connection.after) < _id_key(entries[0].id)
        )
        if not allowed:
            verdict.violations.append(f"{where}: a reset event although its position was retained")
        received, start = received[1:], 0
    expected = entries[start:]
    verdict.counts["events_checked"] += len(received)
    if len(received) > len(expected):
        verdict.violations.append(
            f"{where}: received {len(received)} events, the stream holds only {len(expected)} after it"
        )
    for i, (got, want) in enumerate(zip(received, expected, strict=False)):
        if got != (want.id, want.name, crc(want.data)):
            verdict.violations.append(
                f"{where}: event #{i} was {got[0]} {got[1]}, the stream has {want.id} {want.name}"
                + (" (same id, other data)" if got[0] == want.id and got[1] == want.name else "")
                + f"; received ids around it: {[e[0] for e in received[max(0, i - 2) : i + 3]]}"
            )
            return


@dataclass
class RunView:
    """What the stream says about one run."""

    message: dict[str, object] | None = None
    started: int = 0
    terminals: list[Stored] = field(default_factory=list)
    after_terminal: list[str] = field(default_factory=list)
    text: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    early_deltas: int = 0


def check_runs(cid: str, entries: list[Stored], verdict: Verdict) -> set[str]:
    """One terminal per run, nothing after it, and a completed answer of the asked length."""
    runs: dict[str, RunView] = defaultdict(RunView)
    for entry in entries:
        data = json.loads(entry.data)
        if data.get("run_id") != entry.run_id:
            verdict.violations.append(
                f"{cid} {entry.id}: field r={entry.run_id} but data says {data.get('run_id')}"
            )
        view = runs[entry.run_id]
        if entry.name == "message":
            if view.message is not None:
                verdict.violations.append(
                    f"{cid} run {entry.run_id}: a second message event {entry.id}"
                )
            view.message = data
            continue
        if view.message is None:
            verdict.violations.append(
                f"{cid} {entry.id}: {entry.name} of run {entry.run_id} before its message"
            )
        if view.terminals:
            view.after_terminal.append(f"{entry.id} {entry.name}")
        if entry.name in TERMINALS:
            view.terminals.append(entry)
        elif entry.name == "run.started":
            view.started += 1
        elif entry.name == "delta":
            if not view.started:
                view.early_deltas += 1
            view.text[str(data.get("channel", "content"))].append(str(data.get("text", "")))
    for run_id, view in runs.items():
        judge_run(cid, run_id, view, verdict)
    return {run_id for run_id, view in runs.items() if view.message is not None}


def judge_run(cid: str, run_id: str, view: RunView, verdict: Verdict) -> None:
    where = f"{cid} run {run_id}"
    verdict.counts["runs"] += 1
    problems = verdict.violations
    if len(view.terminals) != 1:
        names = [f"{t.id} {t.name}" for t in view.terminals]
        problems.append(
            f"{where}: {len(view.terminals)} terminal events {names} (expected exactly 1)"
        )
    if view.after_terminal:
        problems.append(f"{where}: events after its terminal: {view.after_terminal[:5]}")
    if view.started > 1:
        problems.append(f"{where}: {view.started} run.started events")
    if view.early_deltas:
        problems.append(f"{where}: {view.early_deltas} delta(s) before run.started")
    if not view.terminals:
        return
    terminal = view.terminals[0]
    status = TERMINALS[terminal.name]
    verdict.counts[status] += 1
    data = json.loads(terminal.data)
    if status == "failed":
        code = str(data.get("error", {}).get("code"))
        verdict.counts[f"failed_{code}"] += 1
        if code not in EXPECTED_FAILURES:
            problems.append(f"{where}: failed with {code}: {data}")
    if status == "completed" and view.message is not None:
        check_answer_length(where, view, verdict)


def check_answer_length(where: str, view: RunView, verdict: Verdict) -> None:
    """The simulated model writes exactly the asked number of words per channel."""
    assert view.message is not None
    match = _PARAMS.search(str(view.message.get("content", "")))
    if match is None:
        return
    wanted = {"content": int(match.group(1)), "reasoning": int(match.group(2))}
    for channel, count in wanted.items():
        words = len("".join(view.text.get(channel, [])).split())
        if words != count:
            verdict.violations.append(
                f"{where}: completed with {words} {channel} words, asked for {count}"
            )


def check_accepted(
    accepted: dict[str, str], announced: dict[str, set[str]], verdict: Verdict
) -> None:
    """Every 202 the soak got names a run whose message is in that conversation's stream."""
    for run_id, cid in accepted.items():
        if run_id not in announced.get(cid, set()):
            verdict.violations.append(
                f"{cid} run {run_id}: accepted (202) but no message event stored"
            )


def check_memory(procs: list[Proc], warmup: float, verdict: Verdict) -> None:
    """Flag a process whose last RSS sample exceeds its post-warm-up RSS by far.

    Only processes that lived well past the warm-up are judged: a process killed seconds after
    it started tells nothing about growth. The bound is deliberately generous; it catches a leak
    that scales with traffic, not allocator noise.
    """
    for proc in procs:
        after = [(t, rss) for t, rss in proc.rss if t >= warmup]
        if len(after) < 2 or after[-1][0] - after[0][0] < warmup:
            continue
        verdict.counts["rss_judged"] += 1
        (_, base), (t_end, end) = after[0], after[-1]
        verdict.counts["rss_max_mb"] = max(verdict.counts["rss_max_mb"], end // (1024 * 1024))
        if end > RSS_FACTOR * base + RSS_SLACK:
            verdict.violations.append(
                f"{proc.name} (pid {proc.pid}): RSS grew from {base / 2**20:.0f} MB after warm-up "
                f"to {end / 2**20:.0f} MB at {t_end:.0f}s"
            )


def check_all(
    client: redis.Redis,
    prefix: str,
    conversations: list[str],
    connections: list[Connection],
    accepted: dict[str, str],
) -> Verdict:
    verdict = Verdict()
    by_cid: dict[str, list[Connection]] = defaultdict(list)
    for connection in connections:
        by_cid[connection.cid].append(connection)
    announced = {
        cid: check_conversation(client, prefix, cid, by_cid.get(cid, []), verdict)
        for cid in conversations
    }
    check_accepted(accepted, announced, verdict)
    return verdict
