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
    scenario: str  # "S1", "S2/10", ...
    system: str  # "broker" or "naive"
    conversations: int
    clients: int
    connected: int = 0
    connect_failed: int = 0
    closed_early: int = 0
    window_s: float = 0.0
    delivered_events: int = 0
    events_per_s: float = 0.0
    latency: Percentiles | None = None
    front_cpu_s: float = 0.0
    front_cpu_s_per_1k_events: float | None = None
    events_per_front_cpu_s: float | None = None
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


class Report(msgspec.Struct):
    machine: dict[str, Any]
    settings: dict[str, Any]
    results: list[Result]
    ratios: list[Ratio]


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
        "| front CPU-s per 1k ev | events per front CPU-s | Redis cmds/event (front / all) "
        "| front Redis conns | CPU % front / load / appender / Redis | machine busy % |",
        "|---|---|---:|---:|---:|---|---:|---:|---|---:|---|---:|",
    ]
    for r in report.results:
        lat = r.latency
        latency = f"{lat.p50_ms:.2f} / {lat.p99_ms:.2f} / {lat.max_ms:.1f}" if lat else "–"
        cpu = f"{r.front_cpu_pct:.0f} / {r.load_cpu_pct:.0f} / {r.appender_cpu_pct:.0f} / {r.redis_cpu_pct:.0f}"
        lines.append(
            f"| {r.scenario} | {r.system} | {r.conversations:,} | {_clients(r)} | {_f(r.events_per_s, 0)} "
            f"| {latency} | {_f(r.front_cpu_s_per_1k_events, 3)} | {_f(r.events_per_front_cpu_s, 0)} "
            f"| {_f(r.redis_cmds_per_event_front, 3)} / {_f(r.redis_cmds_per_event_all, 3)} "
            f"| {r.front_redis_connections:,} | {cpu} | {r.machine_busy_pct:.0f} |"
        )
    extra = [
        r
        for r in report.results
        if r.time_to_first_event or r.scenario == "S4" or r.tokens is not None
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
    notes = [f"- {r.scenario} {r.system}: {r.note}" for r in report.results if r.note]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)
