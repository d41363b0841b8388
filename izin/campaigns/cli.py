"""CLI commands for campaigns: validate, preview and plan (the dry run)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from izin import clock
from izin.campaigns import spec
from izin.cli import AppContext, IzinGroup, emit_json, json_option, pass_app

_at_option = click.option("--at", "at", default=None,
                          help="Plan as of this instant (ISO 8601 with offset) [default: now, or IZIN_NOW].")


@click.group(cls=IzinGroup)
def campaign() -> None:
    """Campaigns in YAML: validate, preview and plan before anything is sent."""


def _instant(at: str | None) -> datetime:
    return clock.parse_instant(at, field="--at") if at else clock.now()


def load_valid(app: AppContext, path: str) -> spec.Campaign:
    """Load a campaign and check its templates; raise SpecError with every problem."""
    from izin.campaigns.render import validate_templates

    campaign_ = spec.load_campaign(path)
    problems = validate_templates(campaign_, app.settings)
    if problems:
        raise spec.SpecError(problems)
    return campaign_


@campaign.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@json_option
@pass_app
def validate(app: AppContext, files: tuple[str, ...], as_json: bool) -> None:
    """Check campaign files: schema, templates rendered against a sample contact, footers, SMS length.

    Every problem of every file is reported as FILE:LINE:COL: field: what to do. Exit 2 when any
    file has a problem.
    """
    results: list[dict[str, Any]] = []
    failed = False
    for path in files:
        try:
            load_valid(app, path)
        except spec.SpecError as exc:
            failed = True
            results.append({"file": path, "ok": False, "problems": [str(p) for p in exc.problems]})
            if not as_json:
                for problem in exc.problems:
                    click.echo(str(problem), err=True)
            continue
        results.append({"file": path, "ok": True, "problems": []})
        if not as_json:
            click.echo(f"{path}: ok")
    if as_json:
        emit_json(results)
    if failed:
        click.get_current_context().exit(2)


@campaign.command()
@click.argument("file", type=click.Path(dir_okay=False))
@_at_option
@json_option
@pass_app
def plan(app: AppContext, file: str, at: str | None, as_json: bool) -> None:
    """Dry run: who would get what, on which channel and when, and why everyone else would not.

    Shows exactly the deliveries `izin campaign run --at T` would create now. It records only the
    campaign's start (the first plan, schedule or run that sees a campaign starts it).
    """
    from izin.campaigns.plan import SKIP_REASONS, plan_campaign

    instant = _instant(at)
    campaign_ = load_valid(app, file)
    with app.database().session() as session:
        result = plan_campaign(session, campaign_, app.settings, instant)
    if as_json:
        emit_json(result.as_dict())
        return
    deliveries = result.as_dict()["deliveries"]
    click.echo(f"campaign {campaign_.name} at {clock.iso_istanbul(instant)}: {len(deliveries)} deliveries")
    if deliveries:
        table = Table("contact", "channel", "recipient", "send at (UTC)", "local", "status")
        for d in deliveries:
            table.add_row(d["contact"], d["channel"], d["recipient"], d["send_at"], d["send_at_local"],
                          d["status"] + (f" ({d['reason']}, until {d['next_attempt_at']})" if d["status"] == "deferred" else ""))
        Console(width=160).print(table)
    click.echo("left out: " + ", ".join(f"{reason} {result.skipped.get(reason, 0)}" for reason in SKIP_REASONS))
