"""Medians over repeats and the Markdown tables (paste-ready for docs/performance.md)."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

from bench.measure import Sample


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(runs: Sequence[Sequence[Sample]]) -> list[dict[str, object]]:
    """One row per scenario row: the median of each figure over the runs, taken separately."""
    rows: list[dict[str, object]] = []
    for same in zip(*runs, strict=True):
        first = same[0]

        def med(
            get: Callable[[Sample], float | None], same: Sequence[Sample] = same
        ) -> float | None:
            return _median([get(s) for s in same])

        rows.append(
            {
                "scenario": first.scenario,
                "label": first.label,
                "tasks": med(lambda s: s.tasks),
                "rate": med(lambda s: s.rate),
                "p50_ms": med(lambda s: s.latency(50)),
                "p95_ms": med(lambda s: s.latency(95)),
                "p99_ms": med(lambda s: s.latency(99)),
                "broker_cpu_s": med(lambda s: s.broker_cpu),
                "broker_cpu_us_per_task": med(lambda s: s.broker_cpu / s.tasks * 1e6),
                "broker_util": med(lambda s: s.broker_cpu / s.seconds),
                "broker_sys_share": med(
                    lambda s: s.broker_sys / s.broker_cpu if s.broker_cpu else None
                ),
                "client_cpu_s": med(lambda s: s.client_cpu),
                "worker_cpu_s": med(lambda s: s.worker_cpu if s.worker_cpu else None),
                "rpcs_per_task": med(lambda s: s.rpcs / s.tasks if s.rpcs is not None else None),
                "database_cpu_s": med(lambda s: s.database_cpu),
            }
        )
    return rows


def _fmt(value: object, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def main_table(rows: Sequence[dict[str, object]]) -> str:
    header = (
        "| scenario | tasks | tasks/s | p50 ms | p95 ms | p99 ms | broker CPU s (busy, sys) "
        "| broker µs/task | bench CPU s | worker CPU s | RPCs/task |"
    )
    rule = "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    has_database = any(r.get("database_cpu_s") is not None for r in rows)
    if has_database:  # --store postgres: the server's CPU too (it shares the 2 cores)
        header += " PostgreSQL CPU s |"
        rule += "---:|"
    lines = [header, rule]
    for r in rows:
        util, sys_share = r["broker_util"], r["broker_sys_share"]
        # Either share is None when the broker used no measurable CPU (a tiny run).
        is_known = isinstance(util, float) and isinstance(sys_share, float)
        busy = f" ({util:.0%}, {sys_share:.0%})" if is_known else ""
        lines.append(
            f"| {r['label']} | {_fmt(r['tasks'], ',.0f')} | {_fmt(r['rate'], ',.0f')} "
            f"| {_fmt(r['p50_ms'], '.2f')} | {_fmt(r['p95_ms'], '.2f')} "
            f"| {_fmt(r['p99_ms'], '.2f')} | {_fmt(r['broker_cpu_s'], '.2f')}{busy} "
            f"| {_fmt(r['broker_cpu_us_per_task'], ',.0f')} | {_fmt(r['client_cpu_s'], '.2f')} "
            f"| {_fmt(r['worker_cpu_s'], '.2f')} | {_fmt(r['rpcs_per_task'], '.3f')} |"
            + (f" {_fmt(r.get('database_cpu_s'), '.2f')} |" if has_database else "")
        )
    return "\n".join(lines)


def depth_table(rows: Sequence[dict[str, object]], extras: dict[str, float]) -> str:
    """Shallow vs deep queue: rates (and their ratio), broker memory, restart."""
    by = {str(r["scenario"]): r for r in rows}
    n = extras.get("depth_tasks", 0)
    lines = [
        f"| depth figure | shallow queue | {n:,.0f} queued | deep / shallow |",
        "|---|---:|---:|---:|",
    ]
    for kind, what in (("enqueue", "enqueue tasks/s"), ("lease", "lease+ack tasks/s")):
        shallow = by.get(f"depth-{kind}-shallow", {}).get("rate")
        deep = by.get(f"depth-{kind}-deep", {}).get("rate")
        ratio = deep / shallow if isinstance(deep, float) and isinstance(shallow, float) else None
        lines.append(
            f"| {what} | {_fmt(shallow, ',.0f')} | {_fmt(deep, ',.0f')} | {_fmt(ratio, '.2f')} |"
        )
    for key, what in (("rss", "broker VmRSS MiB"), ("anon", "broker RssAnon MiB (heap)")):
        shallow, deep = extras.get(f"{key}_empty_mib"), extras.get(f"{key}_deep_mib")
        ratio = deep / shallow if deep is not None and shallow else None
        lines.append(
            f"| {what} | {_fmt(shallow, '.0f')} | {_fmt(deep, '.0f')} | {_fmt(ratio, '.2f')} |"
        )
    lines.append(
        f"| broker RSS after restart MiB (VmRSS / RssAnon) | — "
        f"| {_fmt(extras.get('rss_restart_mib'), '.0f')} / "
        f"{_fmt(extras.get('anon_restart_mib'), '.0f')} | — |"
    )
    lines.append(
        f"| restart after SIGKILL until GetTask answers, s | — "
        f"| {_fmt(extras.get('restart_s'), '.2f')} | — |"
    )
    if extras.get("scrape_ms") is not None:
        lines.append(
            f"| one /metrics scrape after the restart, ms | — "
            f"| {_fmt(extras.get('scrape_ms'), '.1f')} | — |"
        )
    lines.append(
        f"| prefill with enqueue_many(1000) x 4, tasks/s | — "
        f"| {_fmt(extras.get('prefill_rate'), ',.0f')} | — |"
    )
    return "\n".join(lines)
