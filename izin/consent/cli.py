"""CLI commands for contacts, events, consent and audit: parse options, call the library, print."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator
from zoneinfo import ZoneInfo

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import func, select

from izin import clock
from izin.cli import AppContext, IzinGroup, emit_json, json_option, pass_app, rejects_option, stderr
from izin.consent.models import CHANNELS, IYS_TYPE, ConsentEvent, ConsentState, Contact
from izin.consent.report import ImportReport
from izin.config import DEFAULT_SECRET
from izin.errors import ConsentRefused, InputError, NotFound
from izin.heap import keep_heap


def _instant(value: str | None, field: str) -> datetime | None:
    return None if value is None else clock.parse_instant(value, field=field)


@contextmanager
def _progress(label: str, path: str) -> Iterator[Callable[[int], None]]:
    """A byte-based progress bar on stderr, silent when stderr is not a terminal."""
    total = Path(path).stat().st_size if Path(path).is_file() else 0
    with Progress(TextColumn(label), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=stderr, disable=not stderr.is_terminal, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done: bar.update(task, completed=done)


def _finish_import(report: ImportReport, as_json: bool) -> None:
    if as_json:
        emit_json(report.as_dict())
    else:
        click.echo(report.summary())


def _import_command(group: click.Group, noun: str, help_text: str,
                    run: Callable[[AppContext, str, datetime, str | None, Callable[[int], None]], ImportReport]
                    ) -> None:
    @group.command("import", help=help_text)
    @click.argument("file", type=click.Path(dir_okay=False))
    @rejects_option
    @json_option
    @pass_app
    def command(app: AppContext, file: str, rejects: str | None, as_json: bool) -> None:
        with _progress(f"importing {noun}", file) as progress:
            report = run(app, file, clock.now(), rejects, progress)
        _finish_import(report, as_json)


@click.group(cls=IzinGroup)
def contacts() -> None:
    """Contacts: import and update them from CSV."""


@click.group(cls=IzinGroup)
def events() -> None:
    """Events such as purchases, which drive follow-up campaigns."""


@click.group(cls=IzinGroup)
def consent() -> None:
    """The consent ledger: grant, withdraw, import, show, summarise and purge."""


@click.group(cls=IzinGroup)
def audit() -> None:
    """Export the consent audit log and verify that it has not been tampered with."""


def _tz(app: AppContext) -> ZoneInfo:
    return ZoneInfo(app.settings.policy.timezone)


def _run_contacts(app: AppContext, file: str, now: datetime, rejects: str | None, progress: Any) -> ImportReport:
    from izin.consent.contacts import import_contacts
    return import_contacts(app.database(), file, now, rejects, progress)


def _run_events(app: AppContext, file: str, now: datetime, rejects: str | None, progress: Any) -> ImportReport:
    from izin.consent.events import import_events
    return import_events(app.database(), file, now, _tz(app), rejects, progress)


def _run_consents(app: AppContext, file: str, now: datetime, rejects: str | None, progress: Any) -> ImportReport:
    from izin.consent.consent_import import import_consents
    return import_consents(app.database(), file, now, _tz(app), rejects, progress)


_import_command(contacts, "contacts", """Upsert contacts from a CSV file, keyed by external_id.

Columns: external_id (required), first_name, last_name, email, phone, birthday (YYYY-MM-DD),
locale (tr|en), timezone (IANA), recipient_type (BIREYSEL|TACIR), tags (;-separated); any other
column is kept as an attribute. Valid rows are imported; bad ones go to the rejects file with
their line and reason.""", _run_contacts)
_import_command(events, "events", """Import events (e.g. purchases) from a CSV file.

Columns: external_id, event, occurred_at (ISO 8601), event_id (optional; re-imports skip known
ids); other columns are event attributes.""", _run_events)
_import_command(consent, "consents", """Append consent history from a CSV file to the ledger.

Columns: external_id, channel (email|sms|call), status (ONAY|RET), source (HS_* code),
consent_date (ISO 8601), optional recipient_type and proof. Rows İYS would refuse (a repeated
status, a date in the future or before 2015-05-01) go to the rejects file.""", _run_consents)

_channel_option = click.option("--channel", required=True, type=click.Choice(CHANNELS), help="Consent channel.")
_source_option = click.option("--source", required=True,
                              help="İYS source code, e.g. HS_WEB, HS_MESAJ, HS_FIZIKSEL_ORTAM, HS_CAGRI_MERKEZI.")
_at_option = click.option("--at", "at", default=None,
                          help="When the person consented or refused (ISO 8601 with offset) [default: now].")
_proof_option = click.option("--proof", default=None,
                             help="Evidence: form version, IP, user agent, signed-form or call id (text or JSON).")
_rtype_option = click.option("--recipient-type", type=click.Choice(["BIREYSEL", "TACIR"]), default=None,
                             help="[default: the contact's recipient type]")


def _record(app: AppContext, external_id: str, channel: str, status: str, source: str, at: str | None,
            proof: str | None, recipient_type: str | None, as_json: bool) -> None:
    from izin.consent.ledger import LedgerWriter

    now = clock.now()
    consent_date = _instant(at, "--at") or now
    with app.database().session() as session:
        contact = session.scalar(select(Contact).where(Contact.external_id == external_id))
        if contact is None:
            raise NotFound(f"no contact with external_id {external_id!r}; import it with `izin contacts import`")
        try:
            recorded = LedgerWriter(session).record(contact, channel, status, source.upper(), consent_date, now,
                                                    recipient_type, proof)
        except ConsentRefused as exc:
            if exc.reason != "duplicate_status":
                raise InputError(exc.message, field="--source" if "source" in exc.reason else None) from None
            if as_json:
                emit_json({"recorded": False, "reason": exc.reason, "message": exc.message})
            else:
                click.echo(f"unchanged: {exc.message}")
            return
        event = recorded.event
    if as_json:
        emit_json({"recorded": True, "id": event.id, "recipient": event.recipient, "channel": event.channel,
                   "status": event.status, "hash": event.hash, "iys_uploadable": event.iys_uploadable,
                   "notes": recorded.notes})
        return
    click.echo(f"recorded event #{event.id}: {event.status} {event.channel} {event.recipient} "
               f"({event.source}, {event.recipient_type}) hash {event.hash[:16]}")
    for note in recorded.notes:
        click.echo(f"note: {note}")


@consent.command()
@click.argument("external_id", metavar="ID")
@_channel_option
@_source_option
@_at_option
@_proof_option
@_rtype_option
@json_option
@pass_app
def grant(app: AppContext, external_id: str, channel: str, source: str, at: str | None, proof: str | None,
          recipient_type: str | None, as_json: bool) -> None:
    """Record an opt-in (ONAY) for the contact's current address on CHANNEL."""
    _record(app, external_id, channel, "ONAY", source, at, proof, recipient_type, as_json)


@consent.command()
@click.argument("external_id", metavar="ID")
@_channel_option
@_source_option
@_at_option
@_proof_option
@_rtype_option
@json_option
@pass_app
def withdraw(app: AppContext, external_id: str, channel: str, source: str, at: str | None, proof: str | None,
             recipient_type: str | None, as_json: bool) -> None:
    """Record an opt-out (RET) for the contact's current address on CHANNEL; it takes effect at once."""
    _record(app, external_id, channel, "RET", source, at, proof, recipient_type, as_json)


@consent.command()
@click.argument("external_id", metavar="ID")
@json_option
@pass_app
def show(app: AppContext, external_id: str, as_json: bool) -> None:
    """The contact's consent history: every event of every address it has had."""
    from izin.consent.audit import consent_records
    from izin.consent.gate import may_send

    with app.database().session() as session:
        contact = session.scalar(select(Contact).where(Contact.external_id == external_id))
        if contact is None:
            raise NotFound(f"no contact with external_id {external_id!r}")
        history = list(consent_records(session, contact=external_id))
        now = clock.now()
        current = {c: may_send(session, contact, c, now) for c in CHANNELS}
    status = {c: {"recipient": d.recipient, "may_send": d.allowed, "reason": d.reason, "basis": d.basis,
                  "event_id": d.event_id} for c, d in current.items()}
    if as_json:
        emit_json({"contact": external_id, "recipient_type": contact.recipient_type, "current": status,
                   "history": history})
        return
    click.echo(f"contact {external_id} ({contact.recipient_type})")
    for channel, d in current.items():
        verdict = f"may send ({d.basis}, event #{d.event_id})" if d.allowed else f"may not send ({d.reason})"
        click.echo(f"  {channel:<5} {d.recipient or '-':<32} {verdict}")
    table = Table("id", "consent date", "channel", "recipient", "status", "source", "proof", "İYS", "hash")
    for r in history:
        table.add_row(str(r["id"]), r["consent_date"], r["channel"], r["recipient"] or "(purged)", r["status"],
                      r["source"], (r["proof"] or "")[:30], r["iys_status"] or "-", r["hash"][:12])
    Console(width=160).print(table)


@consent.command()
@json_option
@pass_app
def summary(app: AppContext, as_json: bool) -> None:
    """Counts of current consent by channel and status."""
    with app.database().session() as session:
        rows = session.execute(select(ConsentState.channel, ConsentState.status, func.count())
                               .group_by(ConsentState.channel, ConsentState.status)).all()
        events_total = session.scalar(select(func.count()).select_from(ConsentEvent)) or 0
        contacts_total = session.scalar(select(func.count()).select_from(Contact)) or 0
    counts = {c: {"ONAY": 0, "RET": 0} for c in CHANNELS}
    for channel, status, n in rows:
        counts[channel][status] = n
    if as_json:
        emit_json({"contacts": contacts_total, "events": events_total, "addresses": counts})
        return
    click.echo(f"{contacts_total} contacts, {events_total} consent events")
    for channel, c in counts.items():
        click.echo(f"  {channel:<5} ({IYS_TYPE[channel]:<6}) ONAY {c['ONAY']:>8}   RET {c['RET']:>8}")


@consent.command()
@click.option("--older-than", default=None, metavar="NY",
              help="Retention period in whole years [default: [policy] retention, 3y]; at least 3y.")
@json_option
@pass_app
def purge(app: AppContext, older_than: str | None, as_json: bool) -> None:
    """Destroy evidence of consents that ended longer ago than the retention period.

    Also removes the targeting data (attributes, tags, birthday, events) of contacts who opted out
    everywhere. Purged events stay in the chain as signed tombstones, so `izin audit verify` still passes.
    """
    from izin.config import parse_retention
    from izin.consent.retention import purge as run_purge

    years = app.settings.policy.retention_years
    if older_than is not None:
        try:
            years = parse_retention(older_than)
        except ValueError as exc:
            raise InputError(str(exc), field="--older-than") from None
    secret = app.secret
    with app.database().session() as session:
        report = run_purge(session, clock.now(), years, secret)
    document = {"cutoff": clock.iso_istanbul(report.cutoff), "events_purged": report.events,
                "contacts_cleared": report.contacts, "abandoned_optins": report.abandoned_optins,
                "purge_run": report.run_id}
    if as_json:
        emit_json(document)
    else:
        click.echo(f"purged {report.events} consent events that ended before {document['cutoff']}; "
                   f"cleared targeting data of {report.contacts} opted-out contacts")


@audit.command()
@click.option("--kind", type=click.Choice(["consent", "delivery", "all"]), default="consent", show_default=True,
              help="Consent events, delivery records, or both (consent first).")
@click.option("--format", "fmt", type=click.Choice(["ndjson", "csv"]), default="ndjson", show_default=True)
@click.option("--since", default=None, help="Only records recorded (consent) or created (delivery) at or after this time.")
@click.option("--until", default=None, help="Only records before this time (ISO 8601).")
@click.option("--contact", default=None, metavar="ID", help="Only this contact's records.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="File to write [default: stdout].")
@pass_app
def export(app: AppContext, kind: str, fmt: str, since: str | None, until: str | None, contact: str | None,
           output: str | None) -> None:
    """Stream the audit log as NDJSON or CSV; memory stays flat however long the log is.

    CSV cells that begin with = + - @ are prefixed with ' so no spreadsheet runs them as formulas.
    """
    from itertools import chain

    from izin.campaigns.audit import DELIVERY_FIELDS, delivery_records
    from izin.consent.audit import CONSENT_FIELDS, consent_records, write_records

    start, end = _instant(since, "--since"), _instant(until, "--until")
    keep_heap()  # millions of rows a page at a time: see izin.heap
    fields = {"consent": CONSENT_FIELDS, "delivery": DELIVERY_FIELDS,
              "all": CONSENT_FIELDS + tuple(f for f in DELIVERY_FIELDS if f not in CONSENT_FIELDS)}[kind]
    with app.database().session() as session:
        streams = []
        if kind in ("consent", "all"):
            streams.append(consent_records(session, start, end, contact))
        if kind in ("delivery", "all"):
            streams.append(delivery_records(session, start, end, contact))
        records = chain(*streams)
        if output:
            with open(output, "w", encoding="utf-8", newline="") as out:
                count = write_records(records, out, fmt, fields)
        else:
            count = write_records(records, sys.stdout, fmt, fields)
    stderr.print(f"exported {count} {kind} records" + (f" to {output}" if output else ""))


@audit.command()
@click.argument("delivery_id", type=int)
@json_option
@pass_app
def why(app: AppContext, delivery_id: int, as_json: bool) -> None:
    """Why did this address get this message: the delivery and the consent event it rested on."""
    from izin.campaigns.audit import explain
    from izin.campaigns.audit import why as run_why

    with app.database().session() as session:
        answer = run_why(session, delivery_id)
    if as_json:
        emit_json(answer)
    else:
        for line in explain(answer):
            click.echo(line)


@audit.command()
@json_option
@pass_app
def verify(app: AppContext, as_json: bool) -> None:
    """Check the hash chain: exit 0 when intact, 1 naming the first broken event."""
    from izin.consent.audit import verify as run_verify

    secret = app.settings.web.secret_key
    keep_heap()
    with app.database().session() as session:
        result = run_verify(session, secret)
    if as_json:
        emit_json({"ok": result.ok, "checked": result.checked, "last_id": result.last_id,
                   "last_hash": result.last_hash, "broken_id": result.broken_id, "problem": result.problem})
    elif result.ok:
        click.echo(f"ok: {result.checked} consent events, chain intact; head #{result.last_id} {result.last_hash}")
    else:
        click.echo(f"BROKEN at event #{result.broken_id}: {result.problem}")
    if not result.ok:
        sys.exit(1)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, help="Port to listen on.")
@click.option("--forwarded-allow-ips", default="127.0.0.1", show_default=True,
              help="Proxies whose X-Forwarded-For/-Proto headers are trusted (behind nginx or Caddy).")
@pass_app
def serve(app: AppContext, host: str, port: int, forwarded_allow_ips: str) -> None:
    """Serve the unsubscribe, preference and opt-in pages and the provider webhooks (uvicorn)."""
    import uvicorn

    from izin.consent.web.app import create_app

    if app.settings.web.secret_key == DEFAULT_SECRET:
        raise InputError("the secret key is the default 'change-me'; set IZIN_SECRET_KEY or [web] secret_key, "
                         "since it signs every unsubscribe link")
    import logging

    from izin.consent.web.security import AccessLogFilter

    application = create_app(app.settings, app.database(), now=clock.now)
    logging.getLogger("uvicorn.access").addFilter(AccessLogFilter())
    uvicorn.run(application, host=host, port=port, proxy_headers=True, forwarded_allow_ips=forwarded_allow_ips,
                log_level="info")


@consent.command()
@json_option
@pass_app
def replies(app: AppContext, as_json: bool) -> None:
    """SMS replies that name an opt-out word but are not clearly an opt-out: read them, and record a
    withdrawal with `izin consent withdraw` where one is meant (the law gives 3 business days)."""
    from izin.consent.web.webhooks import needs_review

    with app.database().session() as session:
        rows = [{"id": m.id, "received_at": clock.iso_istanbul(m.received_at), "from": m.sender, "text": m.text,
                 "provider": m.provider} for m in needs_review(session)]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no replies waiting for review")
    for row in rows:
        click.echo(f"#{row['id']} {row['received_at']} {row['from']} ({row['provider']}): {row['text']}")
