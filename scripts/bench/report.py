"""docs/benchmarks.md from the results of scripts/bench/run.py: figures, ratios and the targets."""

from __future__ import annotations

import os
import platform
from datetime import date
from typing import Any


def _memory_gib() -> str:
    try:
        return f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    except (ValueError, OSError):
        return "? GiB"


def _rate(count: float, seconds: float) -> str:
    return f"{count / seconds:,.0f}" if seconds else "–"


def _cell(results: dict[str, Any], fn: Any) -> str:
    try:
        return fn(results)
    except (KeyError, TypeError, ZeroDivisionError):
        return "–"


def write_report(table: dict[str, dict[str, Any]], sizes: list[int], command: str, versions: str,
                 seconds: float) -> str:
    kinds = list(table)
    largest = sizes[-1]
    lines = [f"# Benchmarks ({date.today().isoformat()})", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, {_memory_gib()}, {platform.platform()}; "
             f"Python {platform.python_version()}; {versions}.", "",
             f"Command: `{command}` ({seconds / 60:.0f} minutes in all). Every izin figure stands next to the raw "
             "stack measured in the same run on the same machine: a plain batched INSERT, one plain SQL "
             "statement, plain dramatiq actors with smtplib and http.client, a plain SELECT written with csv.writer.",
             ""]

    def row(label: str, target: str, fn: Any) -> None:
        lines.append(f"| {label} | {target} | " + " | ".join(_cell(table[k], fn) for k in kinds) + " |")

    def at(results: dict[str, Any]) -> dict[str, Any]:
        return results["sizes"][largest] if largest in results["sizes"] else results["sizes"][str(largest)]

    lines += [f"## At {largest:,} contacts", "", "| measure | target | " + " | ".join(kinds) + " |",
              "|---|---|" + "---|" * len(kinds)]
    imp = lambda r: at(r)["import"]  # noqa: E731
    rate = lambda part: _rate(part["rows"], part["seconds"])  # noqa: E731
    row(f"contacts imported per second, izin (validated; the last {largest - (sizes[-2] if len(sizes) > 1 else 0):,})",
        "≥ 20,000", lambda r: rate(imp(r)["contacts"]))
    def per_s(part: dict[str, Any]) -> float:
        return part["rows"] / part["seconds"]

    row("the same rows per second, plain batched INSERT (ratio izin / raw)", "",
        lambda r: f"{rate(imp(r)['contacts_raw'])} ({per_s(imp(r)['contacts']) / per_s(imp(r)['contacts_raw']):.2f})")
    row("consent events recorded per second (hash chain)", "", lambda r: rate(imp(r)["consents"]))
    row("purchase events imported per second", "", lambda r: rate(imp(r)["events"]))
    plan = lambda r: at(r)["planning"]  # noqa: E731
    row("birthday tick: seconds (deliveries); plain SQL", "< 0.5 s",
        lambda r: f"{plan(r)['birthday']['seconds']:.3f} ({plan(r)['birthday']['deliveries']:,}); "
                  f"{plan(r)['birthday']['raw']['seconds']:.3f}")
    row("whole-base blast, dry run: seconds (deliveries/s)", "",
        lambda r: f"{plan(r)['blast']['plan_seconds']:.1f} "
                  f"({_rate(plan(r)['blast']['deliveries'], plan(r)['blast']['plan_seconds'])})")
    row("whole-base blast, scheduled (rows inserted): seconds (deliveries)", "< 30 s",
        lambda r: f"{plan(r)['blast']['schedule_seconds']:.1f} ({plan(r)['blast']['created']:,})")
    row("the same set work in plain SQL + executemany: seconds (rows)", "",
        lambda r: f"{plan(r)['blast']['raw']['seconds']:.1f} ({plan(r)['blast']['raw']['rows']:,})")
    row("after_event tick (a day of purchases): seconds (deliveries)", "",
        lambda r: f"{plan(r)['follow_up']['seconds']:.2f} ({plan(r)['follow_up']['deliveries']:,})")
    snd = lambda r: r["send"]  # noqa: E731
    row("end to end: izin messages per second (email + SMS)", "≥ 1,300",
        lambda r: f"{snd(r)['izin']['per_s']:,.0f} ({snd(r)['izin']['sent']:,} sent)")
    row("raw stack: dramatiq + smtplib / http.client, messages per second", "",
        lambda r: f"{snd(r)['raw']['per_s']:,.0f} ({snd(r)['raw']['sent']:,} sent)")
    row("ratio izin / raw", "≥ 0.75", lambda r: f"{snd(r)['ratio']:.2f}")
    row("worker CPU per message, ms: izin; raw", "",
        lambda r: f"{snd(r)['izin']['worker_cpu_ms_per_message']:.2f}; {snd(r)['raw']['worker_cpu_ms_per_message']:.2f}")
    row("latency due → accepted, p50 / p99 seconds: izin; raw", "",
        lambda r: f"{snd(r)['izin']['p50_s']:.1f} / {snd(r)['izin']['p99_s']:.1f}; "
                  f"{snd(r)['raw']['p50_s']:.1f} / {snd(r)['raw']['p99_s']:.1f}")
    row("send gate (consent + cap + window), µs per message", "",
        lambda r: f"{snd(r)['gate']['us_per_message']:,.0f}")
    aud = lambda r: r["audit"]  # noqa: E731
    row("audit export NDJSON: records per second (peak RSS MiB)", "≥ 100,000 (< 200)",
        lambda r: f"{_rate(aud(r)['records'], aud(r)['ndjson']['seconds'])} ({aud(r)['ndjson']['rss_mib']:.0f})")
    row("audit export CSV: records per second (peak RSS MiB)", "≥ 100,000 (< 200)",
        lambda r: f"{_rate(aud(r)['records'], aud(r)['csv']['seconds'])} ({aud(r)['csv']['rss_mib']:.0f})")
    row("plain SELECT to csv.writer: rows per second", "",
        lambda r: _rate(aud(r)["raw"]["rows"], aud(r)["raw"]["seconds"]))
    row("audit verify of the whole ledger: seconds (peak RSS MiB)", "",
        lambda r: f"{aud(r)['verify']['seconds']:.1f} s ({aud(r)['verify']['rss_mib']:.0f})")
    row("records in the audit log", "3,000,000", lambda r: f"{aud(r)['records']:,}")

    lines += ["", "## Growth: cost follows the due deliveries, not the contact table", "",
              "| contacts | database | birthday tick s (deliveries, µs each) | blast dry run s (µs per contact) "
              "| follow-up tick s (deliveries) | fixed audience sent per second (deliveries) |",
              "|---|---|---|---|---|---|"]
    for size in sizes:
        for kind in kinds:
            step = table[kind]["sizes"].get(size) or table[kind]["sizes"].get(str(size))
            if not step:
                continue
            p, w = step["planning"], step["wave"]
            birthday = p["birthday"]
            lines.append(
                f"| {size:,} | {kind} | {birthday['seconds']:.3f} ({birthday['deliveries']:,}, "
                f"{birthday['seconds'] / max(1, birthday['deliveries']) * 1e6:,.0f}) | "
                f"{p['blast']['plan_seconds']:.2f} ({p['blast']['plan_seconds'] / size * 1e6:,.1f}) | "
                f"{p['follow_up']['seconds']:.3f} ({p['follow_up']['deliveries']:,}) | "
                f"{w['per_s']:,.0f} ({w['sent']:,}) |")
    for kind in kinds:
        profile = table[kind].get("send", {}).get("izin", {}).get("profile")
        if profile:
            lines += ["", f"## Where an izin worker's CPU goes ({kind}, py-spy, samples holding the GIL)", "",
                      "| share of samples | function (inclusive) |", "|---|---|"]
            lines += [f"| {share:.1%} | `{name}` |" for name, share in profile if not name.startswith("process ")]
    lines += ["", "## The birthday tick's query plan", ""]
    for kind in kinds:
        lines.append(f"- {kind}: `{table[kind].get('query_plan', '–')}`")
    return "\n".join(lines) + "\n"
