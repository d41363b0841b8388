"""`izin iys push | pull | status | reconcile`: the İYS sync from the command line."""

from __future__ import annotations

from datetime import date
from typing import Any

import click

from izin import clock
from izin.cli import AppContext, IzinGroup, emit_json, json_option, pass_app, stderr
from izin.errors import InputError


@click.group(cls=IzinGroup)
def iys() -> None:
    """İYS sync: upload consents taken outside İYS, pull citizens' changes, reconcile, status."""


def _client(app: AppContext, **kwargs: Any) -> Any:
    from izin.consent.iys.sync import make_client

    if app.settings.iys is None:
        raise InputError("İYS is not configured; add an [iys] section to izin.toml with base_url, username, "
                         "password, iys_code and brand_code", field="[iys]")
    return make_client(app.settings, app.database(), **kwargs)


def _warn(message: str) -> None:
    stderr.print(f"[bold red]WARNING:[/] {message}", highlight=False)


def _stale_pull(app: AppContext) -> None:
    from izin.consent.iys.sync import pull_warning

    with app.database().session() as session:
        message = pull_warning(session, clock.now())
    if message:
        _warn(message)


@iys.command()
@click.option("--batch-size", type=click.IntRange(1, 1000), default=1000, show_default=True,
              help="Events per asynchronous İYS request (İYS takes at most 1,000).")
@click.option("--poll-interval", type=click.FloatRange(0, 600), default=2.0, show_default=True,
              help="Seconds between queries for a request's results while İYS answers 'enqueue'.")
@click.option("--max-wait", type=click.FloatRange(0), default=900.0, show_default=True,
              help="Give up waiting for İYS's results after this many seconds (the events stay 'sent').")
@json_option
@pass_app
def push(app: AppContext, batch_size: int, poll_interval: float, max_wait: float, as_json: bool) -> None:
    """Upload every ledger event from an HS_* source that İYS has not answered yet, and wait for the answers.

    Events go in recording order per address; a first-ever RET stays local. Exit 0 when every event
    has İYS's answer, 3 when İYS could not be reached or did not answer in time.
    """
    from izin.consent.iys.sync import push as run_push

    with _client(app) as client:
        result = run_push(app.database(), client, clock.now, batch_size=batch_size, poll_interval=poll_interval,
                          max_wait=max_wait, progress=lambda m: stderr.print(m, highlight=False))
    for rejection in result.rejections:
        label = "rejected as too old (over 3 business days)" if rejection["too_old"] else "rejected"
        _warn(f"event #{rejection['event_id']} ({rejection['status']} {rejection['channel']} "
              f"{rejection['recipient']}, consent {rejection['consent_date']}) {label} by İYS: "
              f"{rejection['code']} {rejection['message'] or ''}".rstrip())
    for warning in result.deadline_warnings:
        _warn(warning.describe())
    _stale_pull(app)
    if as_json:
        emit_json(result.as_dict())
    else:
        click.echo(f"İYS push: {result.submitted} events sent in {result.requests} requests; "
                   f"{result.accepted} accepted, {result.rejected} rejected, {result.unanswered} still unanswered")
    if not result.complete:
        click.echo(f"izin: error: {result.error or 'some events have no answer from İYS yet'}; "
                   "run `izin iys push` again", err=True)
        click.get_current_context().exit(3)


@iys.command()
@click.option("--source", type=click.Choice(["IYS", "HS", "all"]), default="IYS", show_default=True,
              help="IYS: changes citizens made in İYS; HS: movements of this provider (e.g. from other systems).")
@click.option("--limit", type=click.IntRange(1, 999), default=999, show_default=True, help="Movements per page.")
@json_option
@pass_app
def pull(app: AppContext, source: str, limit: int, as_json: bool) -> None:
    """Append İYS's new movements to the ledger; a RET from İYS takes effect at once.

    The cursor is stored, so each movement is read once; run it at least hourly (İYS keeps 7 days).
    """
    from izin.consent.iys.sync import pull as run_pull

    sources = ("IYS", "HS") if source == "all" else (source,)
    results = []
    with _client(app) as client:
        for name in sources:
            results.append(run_pull(app.database(), client, clock.now, source=name, limit=limit))
    for result in results:
        for warning in result.warnings:
            _warn(warning)
    if as_json:
        emit_json(results[0].as_dict() if len(results) == 1 else {"sources": [r.as_dict() for r in results]})
        return
    for result in results:
        click.echo(f"İYS pull ({result.source}): {result.received} movements, {result.appended} appended "
                   f"({result.withdrawals} RET, {result.cancelled_deliveries} queued deliveries cancelled), "
                   f"{result.duplicates} already in the ledger, {len(result.skipped)} skipped")
        for skipped in result.skipped:
            click.echo(f"  skipped {skipped['status']} {skipped['type']} {skipped['recipient']} "
                       f"(İYS {skipped['transaction_id']}): {skipped['reason']}")


@iys.command()
@json_option
@pass_app
def status(app: AppContext, as_json: bool) -> None:
    """Counts by İYS sync state, the oldest event waiting for İYS, rejections and the last pull."""
    from izin.consent.iys.sync import status as run_status

    document = run_status(app.database(), clock.now())
    for warning in document["deadline_warnings"]:
        kind = "is past" if warning["overdue"] else "nears"
        _warn(f"event #{warning['event_id']} ({warning['status']} {warning['channel']} {warning['recipient']}) "
              f"{kind} its İYS upload deadline {warning['deadline']}")
    for message in document["warnings"]:
        _warn(message)
    if as_json:
        emit_json(document)
        return
    counts = document["counts"]
    click.echo("İYS sync: " + ", ".join(f"{state} {n}" for state, n in counts.items()))
    oldest = document["oldest_pending"]
    click.echo("oldest waiting: " + ("none" if oldest is None else
               f"event #{oldest['event_id']} ({oldest['status']} {oldest['channel']} {oldest['recipient']}), "
               f"consent {oldest['consent_date']}, İYS deadline {oldest['deadline']}"))
    click.echo(f"last successful pull: {document['last_pull'] or 'never'}")
    for r in document["rejected"]:
        label = " (too old)" if r["too_old"] else ""
        click.echo(f"  rejected #{r['event_id']} {r['status']} {r['channel']} {r['recipient']}: "
                   f"{r['code']}{label} {r['message'] or ''}".rstrip())


@iys.command()
@click.option("--date", "day", required=True, metavar="YYYY-MM-DD",
              help="The day whose İYS movement file to compare (one of the last 7 days).")
@json_option
@pass_app
def reconcile(app: AppContext, day: str, as_json: bool) -> None:
    """Compare one day's İYS movement file with the ledger; append what is missing, report what İYS lacks."""
    from izin.consent.iys.sync import reconcile as run_reconcile

    try:
        report_date = date.fromisoformat(day)
    except ValueError:
        raise InputError(f"{day!r} is not a date; write YYYY-MM-DD", field="--date") from None
    with _client(app) as client:
        result = run_reconcile(app.database(), client, report_date, clock.now)
    for missing in result.missing_in_iys:
        _warn(f"event #{missing['event_id']} ({missing['status']} {missing['channel']} {missing['recipient']}) "
              f"has İYS id {missing['transaction_id']} but is not in İYS's file for {result.date}")
    if as_json:
        emit_json(result.as_dict())
        return
    click.echo(f"İYS reconcile {result.date}: {result.rows} movements in the file; {result.matched} already in "
               f"the ledger, {result.linked} linked to our uploads, {result.appended} appended, "
               f"{len(result.skipped)} skipped; {len(result.missing_in_iys)} of ours missing in İYS")
    for skipped in result.skipped:
        click.echo(f"  skipped {skipped['status']} {skipped['type']} {skipped['recipient']} "
                   f"(İYS {skipped['transaction_id']}): {skipped['reason']}")
