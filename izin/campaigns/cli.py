"""CLI commands for campaigns: validate, preview and plan (the dry run)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from izin import clock
from izin.campaigns import spec
from izin.cli import AppContext, IzinGroup, emit_json, json_option, pass_app, stderr
from izin.errors import InputError

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
    problems = validate_templates(campaign_, app.settings, known_attributes=_known_attributes(app),
                                  max_segments=_sms_max_segments(app, campaign_))
    if problems:
        raise spec.SpecError(problems)
    return campaign_


def _sms_max_segments(app: AppContext, campaign_: spec.Campaign) -> int:
    """The most SMS parts the configured SMS adapter takes (as the worker judges it), so a text the
    provider would refuse fails validation rather than every delivery."""
    from izin.channels.errors import ChannelConfigError
    from izin.channels.registry import adapter_for

    if "sms" not in campaign_.channels:
        return 7
    try:
        adapter = adapter_for(app.settings.channels["sms"].url, "channels.sms.url")
    except ChannelConfigError:
        return 7  # a wrong URL is reported by the commands that send
    try:
        return getattr(adapter, "max_segments", None) or 7
    finally:
        adapter.close()


#: contacts sampled for the attribute names templates may use
_ATTRIBUTE_SAMPLE = 1_000


def _known_attributes(app: AppContext) -> set[str]:
    """Attribute names the imported contacts carry (a sample), so `{{ contact.city }}` validates.

    Without a database yet, only the audience's names are known; validation still runs.
    """
    from sqlalchemy import select

    from izin.consent.models import Contact
    from izin.errors import IzinError

    try:
        db = app.database()
        with db.session() as session:
            rows = session.scalars(select(Contact.attributes).order_by(Contact.id.desc()).limit(_ATTRIBUTE_SAMPLE))
            return {key for attributes in rows if attributes for key in attributes}
    except IzinError:
        return set()


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


def contact_context(session: Any, app: AppContext, campaign_: spec.Campaign, contact: Any, channel: str,
                    recipient: str | None, coupon: dict[str, Any] | None, event: Any) -> dict[str, Any]:
    """The template context of one contact, as the worker builds it."""
    from izin.campaigns.render import build_context
    from izin.consent.tokens import unsubscribe_url

    url = unsubscribe_url(app.settings.web.base_url, app.secret, recipient, channel) if recipient else None
    fields = {"first_name": contact.first_name, "last_name": contact.last_name, "external_id": contact.external_id,
              "email": contact.email, "phone": contact.phone, "locale": contact.locale, "birthday": contact.birthday}
    return build_context(fields, contact.attributes, coupon, event, campaign_, app.settings, url)


@campaign.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--contact", "external_id", required=True, metavar="ID", help="The contact's external_id.")
@click.option("--channel", type=click.Choice(spec.SENDING_CHANNELS), default=None,
              help="[default: the channel the contact would get it on now]")
@json_option
@pass_app
def preview(app: AppContext, file: str, external_id: str, channel: str | None, as_json: bool) -> None:
    """The exact message a contact would get now: subject, body, footer, SMS encoding and parts.

    A coupon code is shown as an example; the real one is made when the delivery is scheduled.
    """
    from sqlalchemy import select

    from izin.campaigns.coupons import new_code
    from izin.campaigns.render import SampleEvent, render
    from izin.consent.gate import may_send
    from izin.consent.models import Contact, ContactEvent
    from izin.errors import NotFound

    campaign_ = load_valid(app, file)
    now = clock.now()
    with app.database().session() as session:
        contact = session.scalar(select(Contact).where(Contact.external_id == external_id))
        if contact is None:
            raise NotFound(f"no contact with external_id {external_id!r}")
        decisions = {c: may_send(session, contact, c, now) for c in campaign_.channels}
        commercial = campaign_.purpose == "commercial"
        usable = [c for c, d in decisions.items() if d.allowed or (not commercial and d.reason != "no_address")]
        chosen = channel or (usable[0] if usable else campaign_.channels[0])
        decision = decisions.get(chosen)
        warning = None
        if chosen not in campaign_.channels:
            raise InputError(f"the campaign does not send on {chosen}; it uses {', '.join(campaign_.channels)}",
                             field="--channel")
        if chosen not in usable:
            warning = f"{external_id} would not get this on {chosen} now: {decision.reason if decision else 'no_consent'}"
        coupon = None
        if campaign_.coupon is not None:
            from datetime import timedelta
            coupon = {"code": new_code(campaign_.coupon.prefix), "percent": campaign_.coupon.percent,
                      "expires_on": now.date() + timedelta(days=campaign_.coupon.valid_days)}
        event: Any = None
        if isinstance(campaign_.trigger, spec.AfterEventTrigger):
            latest = session.scalar(select(ContactEvent).where(
                ContactEvent.contact_id == contact.id, ContactEvent.name == campaign_.trigger.event)
                .order_by(ContactEvent.occurred_at.desc()).limit(1))
            event = dict(latest.attributes or {}) if latest else SampleEvent("event", {})
        recipient = decision.recipient if decision else None
        context = contact_context(session, app, campaign_, contact, chosen, recipient, coupon, event)
        rendered = render(campaign_, chosen, context, app.settings, contact.locale)
    document = {"campaign": campaign_.name, "contact": external_id, "channel": chosen, "to": recipient,
                "would_send": warning is None, "warning": warning, "subject": rendered.subject,
                "text": rendered.text, "html": rendered.html, "headers": rendered.headers,
                "encoding": rendered.encoding, "segments": rendered.segments,
                "coupon_example": coupon["code"] if coupon else None}
    if as_json:
        emit_json(document)
        return
    if warning:
        stderr.print(f"[yellow]warning:[/] {warning}")
    click.echo(f"to: {recipient}  channel: {chosen}")
    if chosen == "email":
        click.echo(f"subject: {rendered.subject}")
        for name, value in rendered.headers.items():
            click.echo(f"{name}: {value}")
        click.echo("")
        click.echo(rendered.text)
    else:
        click.echo(f"encoding: {rendered.encoding}, {rendered.segments} part(s), {rendered.units} characters")
        click.echo("")
        click.echo(rendered.text)


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
    from izin.campaigns.plan import plan_campaign

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
    click.echo("left out: " + ", ".join(f"{reason} {result.skipped.get(reason, 0)}" for reason in result.reasons))


#: seconds between İYS pulls from the scheduler (İYS serves 7 days of changes; the law wants hourly)
IYS_PULL_EVERY_S = 3_000.0


def _iys_tick(app: AppContext, db: Any, last_pull: float | None) -> float | None:
    """Upload what İYS has not got yet, and pull citizens' changes about every 50 minutes.

    İYS being down must not stop the campaigns: its errors are reported and the next tick retries.
    """
    import time

    from izin.consent.iys.sync import pull_job, push_job
    from izin.errors import IzinError

    try:
        if app.settings.broker.url:
            from izin.campaigns import actors

            actors.iys_push.send()  # a worker uploads; the tick does not wait for İYS's answers
        else:
            # the next tick is the retry: fail fast here rather than hold up the campaigns
            pushed = push_job(app.settings, db, clock.now, max_wait=30.0, retry_rounds=0)
            if pushed.submitted or pushed.unanswered:
                click.echo(f"iys push: {pushed.accepted} accepted, {pushed.rejected} rejected, "
                           f"{pushed.unanswered} waiting")
        if last_pull is None or time.monotonic() - last_pull >= IYS_PULL_EVERY_S:
            for result in pull_job(app.settings, db, clock.now):
                click.echo(f"iys pull ({result.source}): {result.appended} new, {result.withdrawals} opt-outs")
            return time.monotonic()
    except IzinError as exc:
        click.echo(f"izin: error: iys: {exc}", err=True)
    return last_pull


def _connect_broker(app: AppContext) -> None:
    """With a broker configured, reach it before touching anything (exit 3 when it is down)."""
    if app.settings.broker.url:
        from izin.campaigns import actors

        actors.configure(app.settings)


def _schedule(app: AppContext, file: str, instant: datetime) -> tuple[spec.Campaign, Any, Any]:
    """Validate, reach the broker if any, and create the due deliveries: the start of schedule and run."""
    from izin.campaigns.schedule import schedule_campaign

    campaign_ = load_valid(app, file)
    db = app.database()
    _connect_broker(app)
    with db.session() as session:
        report = schedule_campaign(session, campaign_, app.settings, instant, clock.now())
    return campaign_, report, db


def _summary(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {n}" for key, n in sorted(counts.items())) or "nothing"


@campaign.command()
@click.argument("file", type=click.Path(dir_okay=False))
@_at_option
@json_option
@pass_app
def schedule(app: AppContext, file: str, at: str | None, as_json: bool) -> None:
    """Create the deliveries that are due, once; enqueue them when a broker is set.

    Re-running creates nothing new: a delivery is one per campaign, contact and occurrence.
    """
    from izin.campaigns.runner import enqueue_due

    instant = _instant(at)
    campaign_, report, db = _schedule(app, file, instant)
    enqueued = enqueue_due(db, instant) if app.settings.broker.url else None
    document = {"campaign": campaign_.name, "at": clock.iso_istanbul(instant), "created": report.created,
                "deferred": report.deferred, "enqueued": enqueued,
                "skipped": {k: report.plan.skipped.get(k, 0) for k in report.plan.as_dict()["skipped"]}}
    if as_json:
        emit_json(document)
        return
    click.echo(f"campaign {campaign_.name}: {report.created} deliveries created ({report.deferred} deferred)"
               + (f", {enqueued} enqueued" if enqueued is not None else ""))


@campaign.command()
@click.argument("file", type=click.Path(dir_okay=False))
@_at_option
@json_option
@pass_app
def run(app: AppContext, file: str, at: str | None, as_json: bool) -> None:
    """Schedule, then send what is due now: in this process when embedded, through the broker otherwise.

    Deliveries that cannot go yet (outside the send window, over a cap) stay in the database for
    `izin worker --burst` or the scheduler to send later.
    """
    from izin.campaigns.runner import drain_embedded, enqueue_due, status_counts

    instant = _instant(at)
    campaign_, report, db = _schedule(app, file, instant)
    if app.settings.broker.url:
        enqueued = enqueue_due(db, instant)
        click.echo(f"campaign {campaign_.name}: {report.created} deliveries created, {enqueued} enqueued for "
                   "the workers")
        return
    # --at picks what is due; the send itself is judged and recorded at the real moment
    handled = drain_embedded(db, app.settings, now=clock.now, due_by=instant)
    counts = status_counts(db, sorted(set(report.ids) | set(handled)))
    if as_json:
        emit_json({"campaign": campaign_.name, "created": report.created, "outcomes": dict(counts)})
        return
    click.echo(f"campaign {campaign_.name}: {report.created} deliveries created; {_summary(counts)}")


#: messages a worker process holds ahead of its threads (dramatiq's default is 2 per thread); each
#: carries up to actors.BATCH deliveries, so more would only leave one process the tail of a tick
PREFETCH = 16


@click.command()
@click.option("--burst", is_flag=True, help="Send what is due now, then exit.")
@click.option("--processes", default=2, show_default=True, help="Worker processes (with a broker).")
@click.option("--threads", default=4, show_default=True, help="Threads per process.")
@click.option("--poll", default=5.0, show_default=True, help="Seconds between looks at the table (embedded).")
@click.option("--prefetch", default=PREFETCH, show_default=True,
              help="Messages each worker process takes from Redis ahead (with a broker).")
@pass_app
def worker(app: AppContext, burst: bool, processes: int, threads: int, poll: float, prefetch: int) -> None:
    """Send deliveries. With a broker: dramatiq workers on its queue (--burst drains the queue and
    exits). Embedded: take due deliveries from the database in this process (--burst: once)."""
    import os
    import sys
    import time

    from izin.campaigns.runner import drain_broker, drain_embedded, status_counts

    db = app.database()
    if app.settings.broker.url:
        if burst:
            drain_broker(app.settings, threads)
            click.echo("queue drained")
            return
        # holding messages ahead saves a Redis round trip per message (a dead worker's prefetched
        # messages go back to the queue)
        env = {**os.environ, "dramatiq_queue_prefetch": str(prefetch)}
        if app.config_path:
            env["IZIN_CONFIG"] = os.path.abspath(app.config_path)
        command = [sys.executable, "-m", "dramatiq", "izin.campaigns.actors", "--processes", str(processes),
                   "--threads", str(threads), "--queues", "izin-deliveries", "izin-iys"]
        # become dramatiq rather than wait for it: a supervisor's SIGTERM to `izin worker` then
        # reaches dramatiq's main process, which stops its workers gracefully, instead of killing
        # a parent and leaving the workers running as orphans
        db.dispose()
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, command, env)
    while True:
        handled = drain_embedded(db, app.settings, now=clock.now, threads=threads)
        if burst:
            click.echo(f"{len(handled)} deliveries handled; {_summary(status_counts(db, handled))}")
            return
        time.sleep(poll)


@click.command()
@click.option("--campaigns", "folder", default="campaigns", show_default=True, type=click.Path(file_okay=False),
              help="Folder of campaign YAML files.")
@click.option("--interval", default=60.0, show_default=True, help="Seconds between ticks.")
@click.option("--once", is_flag=True, help="Run one tick and exit (for cron and tests).")
@pass_app
def scheduler(app: AppContext, folder: str, interval: float, once: bool) -> None:
    """Every minute: validate and schedule every campaign in the folder, and enqueue what is due.

    One scheduler is active at a time (a lock in Redis, or in the database without a broker); a
    second one waits. Without a broker it also sends, in this process.
    """
    import time

    from izin.campaigns.runner import (SchedulerLock, campaign_files, drain_embedded, enqueue_due,
                                       sleep_until_next_tick)
    from izin.campaigns.schedule import schedule_campaign

    db = app.database()
    _connect_broker(app)
    lock = SchedulerLock(db, app.settings.broker.url)
    last_pull: float | None = None
    try:
        while True:
            started = time.monotonic()
            now = clock.now()
            if lock.acquire(now):
                if app.settings.iys is not None:
                    last_pull = _iys_tick(app, db, last_pull)
                created = 0
                for path in campaign_files(folder):
                    try:
                        campaign_ = load_valid(app, str(path))
                    except spec.SpecError as exc:
                        for problem in exc.problems:
                            click.echo(f"izin: error: {problem}", err=True)
                        continue
                    with db.session() as session:
                        created += schedule_campaign(session, campaign_, app.settings, now, now).created
                if app.settings.broker.url:
                    sent = enqueue_due(db, now)
                    click.echo(f"tick {clock.iso_istanbul(now)}: {created} created, {sent} enqueued")
                else:
                    handled = drain_embedded(db, app.settings, now=clock.now)
                    click.echo(f"tick {clock.iso_istanbul(now)}: {created} created, {len(handled)} handled")
            else:
                click.echo(f"tick {clock.iso_istanbul(now)}: another scheduler is active; waiting", err=True)
            if once:
                return
            sleep_until_next_tick(interval, started)
    finally:
        lock.release()


@campaign.command()
@click.argument("name_or_file")
@json_option
@pass_app
def status(app: AppContext, name_or_file: str, as_json: bool) -> None:
    """Where a campaign's deliveries stand: counts by status and reason."""
    from pathlib import Path

    from sqlalchemy import func, select

    from izin.campaigns.models import Campaign as CampaignRow
    from izin.campaigns.models import Delivery
    from izin.errors import NotFound

    name = spec.load_campaign(name_or_file).name if Path(name_or_file).is_file() else name_or_file
    with app.database().session() as session:
        row = session.scalar(select(CampaignRow).where(CampaignRow.name == name))
        if row is None:
            raise NotFound(f"no campaign {name!r} has been planned or scheduled yet")
        counts = {(s, r): n for s, r, n in session.execute(
            select(Delivery.status, Delivery.reason, func.count()).where(Delivery.campaign_id == row.id)
            .group_by(Delivery.status, Delivery.reason))}
    by_status: dict[str, dict[str, int]] = {}
    for (state, reason), n in sorted(counts.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        by_status.setdefault(state, {})[reason or "-"] = n
    document = {"campaign": name, "started_at": clock.iso_istanbul(row.started_at),
                "deliveries": sum(counts.values()),
                "by_status": {s: sum(r.values()) for s, r in by_status.items()}, "by_reason": by_status}
    if as_json:
        emit_json(document)
        return
    click.echo(f"campaign {name} (started {document['started_at']}): {document['deliveries']} deliveries")
    for state, reasons in by_status.items():
        detail = ", ".join(f"{reason} {n}" for reason, n in reasons.items() if reason != "-")
        click.echo(f"  {state:<10} {sum(reasons.values()):>6}" + (f"  ({detail})" if detail else ""))

