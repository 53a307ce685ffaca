"""What the benchmark reports: one ``Result`` per scenario and system, as JSON and as tables."""

from __future__ import annotations

from array import array
from typing import Any

import msgspec


class Percentiles(msgspec.Struct):
    p50_ms: float
    p99_ms: float
    max_ms: float
    samples: int


class Result(msgspec.Struct, kw_only=True):
    """One scenario against one system. For D1 an event is an acknowledged append and
    ``latency`` its round trip; for D2 ``latency`` is an append's round trip to a long-poll
    reader."""

    scenario: str  # "S1", "S2/10", "L1", "D1/8", ...
    system: str  # "broker", "naive", "resumable-stream" or "ds-reference"
    conversations: int
    clients: int
    connected: int = 0
    connect_failed: int = 0
    closed_early: int = 0
    window_s: float = 0.0
    delivered_events: int = 0
    events_per_s: float = 0.0
    latency: Percentiles | None = None
    offered_events_per_s: float | None = None
    front_cpu_s: float = 0.0  # the system's server process (a peer's Node server too)
    server_cpu_s: float = 0.0  # that process, plus Redis when the system keeps its state there
    front_cpu_s_per_1k_events: float | None = None
    events_per_front_cpu_s: float | None = None
    events_per_server_cpu_s: float | None = None
    failed_requests: int = 0
    redis_cmds_per_event_front: float | None = None  # the appender's writes taken out
    redis_cmds_per_event_all: float | None = None
    front_redis_connections: int = 0
    front_rss_mb: float = 0.0
    rss_per_connection_kb: float | None = None
    time_to_first_event: Percentiles | None = None
    appended_events: int = 0
    appender_skipped: int = 0
    front_cpu_pct: float = 0.0
    load_cpu_pct: float = 0.0
    appender_cpu_pct: float = 0.0
    redis_cpu_pct: float = 0.0
    machine_busy_pct: float = 0.0  # the whole machine, other work included
    # S5 (worker)
    tokens: int | None = None
    worker_cpu_s: float | None = None
    tokens_per_worker_cpu_s: float | None = None
    writes_per_token: float | None = None
    xadd_per_token: float | None = None
    redis_cmds_per_token: float | None = None
    # S6 (idle conversations)
    front_cpu_ms_per_event: float | None = None
    redis_cpu_ms_per_event: float | None = None
    commands_by_name: dict[str, float] | None = None
    note: str = ""


class Ratio(msgspec.Struct):
    scenario: str
    events_per_cpu_s: float | None  # broker / naive: higher is better for the broker
    latency_p99: float | None  # naive / broker
    redis_cmds_per_event: float | None  # naive / broker
    redis_connections: tuple[int, int]  # (broker, naive)
    rss_per_connection: float | None  # naive / broker


class SideBySide(msgspec.Struct):
    """One figure of one load, the broker's beside a peer's (the side-by-side tables)."""

    peer: str  # "resumable-stream" or "ds-reference"
    scenario: str
    figure: str
    broker: float | None
    other: float | None
    ratio: float | None  # broker ÷ peer
    better: str  # "higher" or "lower": which way a figure favours its system


class Report(msgspec.Struct):
    machine: dict[str, Any]
    settings: dict[str, Any]
    results: list[Result]
    ratios: list[Ratio]
    side_by_side: list[SideBySide] = msgspec.field(default_factory=list)


def percentiles(samples_ns: array) -> Percentiles | None:
    if not samples_ns:
        return None
    ordered = sorted(samples_ns)
    n = len(ordered)

    def at(q: float) -> float:
        return round(ordered[min(n - 1, int(q * n))] / 1e6, 3)

    return Percentiles(
        p50_ms=at(0.50), p99_ms=at(0.99), max_ms=round(ordered[-1] / 1e6, 3), samples=n
    )


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 2)


def ratios(results: list[Result]) -> list[Ratio]:
    """Broker against naive, scenario by scenario, oriented so that > 1 favours the broker."""
    out: list[Ratio] = []
    naive = {r.scenario: r for r in results if r.system == "naive"}
    for broker in results:
        other = naive.get(broker.scenario)
        if broker.system != "broker" or other is None:
            continue
        out.append(
            Ratio(
                scenario=broker.scenario,
                events_per_cpu_s=_ratio(
                    broker.events_per_front_cpu_s, other.events_per_front_cpu_s
                ),
                latency_p99=_ratio(
                    other.latency.p99_ms if other.latency else None,
                    broker.latency.p99_ms if broker.latency else None,
                ),
                redis_cmds_per_event=_ratio(
                    other.redis_cmds_per_event_front, broker.redis_cmds_per_event_front
                ),
                redis_connections=(broker.front_redis_connections, other.front_redis_connections),
                rss_per_connection=_ratio(
                    other.rss_per_connection_kb, broker.rss_per_connection_kb
                ),
            )
        )
    return out


def _figures(r: Result) -> list[tuple[str, float | None, str]]:
    """The figures compared side by side for a result's load: (name, value, which way is better)."""
    family = r.scenario.split("/")[0]
    lat = r.latency
    p50 = lat.p50_ms if lat else None
    p99 = lat.p99_ms if lat else None
    if family in ("L1", "L2", "D3"):
        appended = r.appended_events / r.window_s if r.window_s else None
        return [
            # Below the offered rate when the appender fell behind its schedule (a saturated
            # server answers its appends late): the load that system really had.
            ("appended events/s", round(appended, 1) if appended is not None else None, "higher"),
            ("delivered events/s", r.events_per_s, "higher"),
            ("events per server CPU-s", r.events_per_server_cpu_s, "higher"),
            ("latency p50 ms", p50, "lower"),
            ("latency p99 ms", p99, "lower"),
        ]
    if family == "L3":
        t = r.time_to_first_event
        return [
            ("time to first event p50 ms", t.p50_ms if t else None, "lower"),
            ("time to first event p99 ms", t.p99_ms if t else None, "lower"),
            ("failed clients", float(r.connect_failed + r.closed_early), "lower"),
            ("replayed events per server CPU-s", r.events_per_server_cpu_s, "higher"),
        ]
    if family in ("L4", "D4"):
        return [("server RSS per idle connection KB", r.rss_per_connection_kb, "lower")]
    if family == "D1":
        return [
            ("appends/s", r.events_per_s, "higher"),
            ("appends per server CPU-s", r.events_per_server_cpu_s, "higher"),
            ("append p50 ms", p50, "lower"),
            ("append p99 ms", p99, "lower"),
            ("failed appends", float(r.failed_requests), "lower"),
        ]
    if family == "D2":
        return [
            ("append to long-poll receipt p50 ms", p50, "lower"),
            ("append to long-poll receipt p99 ms", p99, "lower"),
        ]
    return []


def side_by_side(results: list[Result], peer_names: tuple[str, ...]) -> list[SideBySide]:
    """Each peer's result beside the broker's on the same scenario, figure by figure."""
    broker = {r.scenario: r for r in results if r.system == "broker"}
    rows: list[SideBySide] = []
    for other in results:
        mine = broker.get(other.scenario)
        if other.system not in peer_names or mine is None:
            continue
        theirs = dict((name, value) for name, value, _ in _figures(other))
        for name, value, better in _figures(mine):
            rows.append(
                SideBySide(
                    peer=other.system,
                    scenario=other.scenario,
                    figure=name,
                    broker=value,
                    other=theirs.get(name),
                    ratio=_ratio(value, theirs.get(name)),
                    better=better,
                )
            )
    return rows


def _load_text(r: Result) -> str:
    family = r.scenario.split("/")[0]
    if family == "L3":
        return f"{r.clients:,} clients resuming into {r.conversations:,} conversations"
    if family in ("L4", "D4"):
        return f"{r.clients:,} idle streams over {r.conversations:,} conversations"
    if family == "D1":
        return f"{r.clients:,} producer{'s' if r.clients != 1 else ''}, a stream each"
    if family == "D2":
        return "1 producer, 1 long-poll reader"
    per = r.clients // max(1, r.conversations)
    offered = f", {r.offered_events_per_s:,.0f} events/s offered" if r.offered_events_per_s else ""
    return f"{r.conversations:,} × {per:,} clients{offered}"


_PEER_TITLES = (
    (
        "resumable-stream",
        "Side by side with resumable-stream (Node, on the same Redis); server CPU is the "
        "server process and Redis for both:",
    ),
    (
        "ds-reference",
        "Side by side with the Durable Streams reference server (Node, in memory), both over "
        "the Durable Streams protocol; server CPU is the broker's front and Redis, the "
        "reference server's process:",
    ),
)


def side_by_side_markdown(report: Report) -> list[str]:
    lines: list[str] = []
    by_scenario = {(r.scenario, r.system): r for r in report.results}
    for peer, title in _PEER_TITLES:
        rows = [row for row in report.side_by_side if row.peer == peer]
        if not rows:
            continue
        lines += [
            "",
            title,
            "",
            f"| scenario | load | figure | broker | {peer} | broker ÷ peer |",
            "|---|---|---|---:|---:|---:|",
        ]
        for row in rows:
            result = by_scenario[(row.scenario, "broker")]
            digits = 2 if row.figure.endswith(" ms") else 1
            lines.append(
                f"| {row.scenario} | {_load_text(result)} | {row.figure} "
                f"| {_f(row.broker, digits)} | {_f(row.other, digits)} "
                f"| {_f(row.ratio, 2, '×')} |"
            )
    return lines


def _f(value: float | None, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "–"
    if unit:
        return _f(value, digits) + unit
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _clients(r: Result) -> str:
    text = f"{r.connected:,}"
    if r.connected != r.clients:
        text += f"/{r.clients:,}"
    return text


def markdown(report: Report) -> str:
    m = report.machine
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}; Redis {m['redis']}; "
        f"window {report.settings.get('duration')} s per scenario after {report.settings.get('warmup')} s warm-up; "
        f"load average {m.get('load_average_1m_at_start', '?')} at start, {m.get('load_average_1m', '?')} at the end.",
        "",
        "| scenario | system | conv. | clients | events/s | latency p50 / p99 / max ms "
        "| front CPU-s per 1k ev | events per front CPU-s | events per server CPU-s "
        "| Redis cmds/event (front / all) "
        "| front Redis conns | CPU % front / load / appender / Redis | machine busy % |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---|---:|---|---:|",
    ]
    for r in report.results:
        lat = r.latency
        latency = f"{lat.p50_ms:.2f} / {lat.p99_ms:.2f} / {lat.max_ms:.1f}" if lat else "–"
        cpu = f"{r.front_cpu_pct:.0f} / {r.load_cpu_pct:.0f} / {r.appender_cpu_pct:.0f} / {r.redis_cpu_pct:.0f}"
        lines.append(
            f"| {r.scenario} | {r.system} | {r.conversations:,} | {_clients(r)} | {_f(r.events_per_s, 0)} "
            f"| {latency} | {_f(r.front_cpu_s_per_1k_events, 3)} | {_f(r.events_per_front_cpu_s, 0)} "
            f"| {_f(r.events_per_server_cpu_s, 0)} "
            f"| {_f(r.redis_cmds_per_event_front, 3)} / {_f(r.redis_cmds_per_event_all, 3)} "
            f"| {r.front_redis_connections:,} | {cpu} | {r.machine_busy_pct:.0f} |"
        )
    extra = [
        r
        for r in report.results
        if r.time_to_first_event or r.scenario in ("S4", "L4", "D4") or r.tokens is not None
    ]
    if extra:
        lines += [
            "",
            "| scenario | system | time to first event p50 / p99 / max ms | front RSS MB | RSS per connection KB "
            "| tokens per worker CPU-s | Redis writes (scripts) per token | XADD per token | Redis cmds per token |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in extra:
            t = r.time_to_first_event
            ttfe = f"{t.p50_ms:.1f} / {t.p99_ms:.1f} / {t.max_ms:.1f} ({t.samples})" if t else "–"
            lines.append(
                f"| {r.scenario} | {r.system} | {ttfe} | {r.front_rss_mb:.0f} | {_f(r.rss_per_connection_kb)} "
                f"| {_f(r.tokens_per_worker_cpu_s, 0)} | {_f(r.writes_per_token, 3)} "
                f"| {_f(r.xadd_per_token, 3)} | {_f(r.redis_cmds_per_token, 3)} |"
            )
    idle = [r for r in report.results if r.front_cpu_ms_per_event is not None]
    if idle:
        lines += [
            "",
            "| scenario | idle open conversations | events | front CPU ms per event "
            "| Redis CPU ms per event | Redis cmds per event | per event, by command |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for r in idle:
            by_name = ", ".join(f"{k} {v:g}" for k, v in (r.commands_by_name or {}).items())
            lines.append(
                f"| {r.scenario} | {r.conversations - 1:,} | {r.delivered_events:,} "
                f"| {_f(r.front_cpu_ms_per_event, 3)} | {_f(r.redis_cpu_ms_per_event, 3)} "
                f"| {_f(r.redis_cmds_per_event_all, 2)} | {by_name} |"
            )
    if report.ratios:
        lines += [
            "",
            "Broker against the naive baseline (> 1 favours the broker):",
            "",
            "| scenario | events per front CPU-s | latency p99 | Redis cmds per event | Redis conns (broker / naive) | RSS per connection |",
            "|---|---:|---:|---:|---|---:|",
        ]
        for q in report.ratios:
            lines.append(
                f"| {q.scenario} | {_f(q.events_per_cpu_s, 2, '×')} | {_f(q.latency_p99, 2, '×')} "
                f"| {_f(q.redis_cmds_per_event, 2, '×')} | {q.redis_connections[0]:,} / {q.redis_connections[1]:,} "
                f"| {_f(q.rss_per_connection, 2, '×')} |"
            )
    lines += side_by_side_markdown(report)
    notes = [f"- {r.scenario} {r.system}: {r.note}" for r in report.results if r.note]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)
