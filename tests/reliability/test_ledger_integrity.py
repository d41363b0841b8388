"""Tampering with the ledger directly in the database, with SQL, as someone with write access would:
`izin audit verify` exits 1 and names the broken event with the right problem.

Each attack starts from the same six events, is committed, verified through the CLI, and then the
tables are put back exactly as they were, so every attack meets an intact ledger.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

import pytest
from sqlalchemy import text

from izin.clock import parse_instant
from izin.consent.ledger import LedgerWriter
from izin.consent.models import Contact

T0 = parse_instant("2026-01-01T10:00:00+03:00")
CHANGED = "was changed after it was recorded: its content no longer matches its hash"


def _record(db, rows) -> None:
    with db.session() as session:
        contacts = {}
        for external_id, email, phone in (("a", "a@example.com", None), ("b", "b@example.com", None),
                                          ("c", None, "+905321234567")):
            contact = Contact(external_id=external_id, email=email, phone=phone, phone_mobile=bool(phone),
                              recipient_type="BIREYSEL", locale="tr", attributes={}, created_at=T0, updated_at=T0)
            session.add(contact)
            contacts[external_id] = contact
        session.flush()
        writer = LedgerWriter(session)
        for external_id, channel, status, day in rows:
            at = T0.replace(day=day)
            writer.record(contacts[external_id], channel, status, "HS_WEB", at, at, proof='{"form":"v1"}')


#: 1 a email ONAY, 2 b email ONAY, 3 c sms ONAY, 4 a email RET, 5 b email RET, 6 a email ONAY
EVENTS = [("a", "email", "ONAY", 2), ("b", "email", "ONAY", 3), ("c", "sms", "ONAY", 4),
          ("a", "email", "RET", 5), ("b", "email", "RET", 6), ("a", "email", "ONAY", 7)]
TABLES = ("consent_events", "consent_state", "ledger_head")


@pytest.fixture
def ledger(cli, db):
    _record(db, EVENTS)
    assert cli("audit", "verify").stdout.startswith("ok: 6 consent events, chain intact")
    return cli


def _snapshot(db) -> dict[str, list[dict]]:
    with db.engine.connect() as connection:
        return {t: [dict(r._mapping) for r in connection.execute(text(f"select * from {t}"))] for t in TABLES}


def _restore(db, snapshot) -> None:
    with db.engine.begin() as connection:
        for table in ("consent_state", "consent_events", "ledger_head"):
            connection.execute(text(f"delete from {table}"))
        for table in ("consent_events", "consent_state", "ledger_head"):
            rows = snapshot[table]
            if rows:
                columns = list(rows[0])
                connection.execute(text(f"insert into {table} ({', '.join(columns)}) values "
                                        f"({', '.join(':' + c for c in columns)})"), rows)


def _sql(*statements: str, **params):
    def attack(connection) -> None:
        for statement in statements:
            connection.execute(text(statement), params)
    return attack


def _hash_of(document: dict) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False).encode()).hexdigest()


def _forged(connection, new_id: int, prev_hash: str) -> dict:
    """An event made with the published hash recipe: it verifies on its own."""
    document = {"id": new_id, "contact": "b", "recipient": "b@example.com", "channel": "email", "status": "ONAY",
                "source": "HS_WEB", "recipient_type": "BIREYSEL", "consent_date": "2026-01-08T07:00:00.000000Z",
                "recorded_at": "2026-01-08T07:00:00.000000Z", "proof": None, "iys_uploadable": True,
                "prev_hash": prev_hash}
    connection.execute(text(
        "insert into consent_events (id, contact_ref, recipient, channel, status, source, recipient_type, "
        "consent_date, recorded_at, proof, iys_uploadable, prev_hash, hash) values (:id, 'b', 'b@example.com', "
        "'email', 'ONAY', 'HS_WEB', 'BIREYSEL', :at, :at, null, :yes, :prev, :hash)"),
        {"id": new_id, "at": datetime(2026, 1, 8, 7, tzinfo=timezone.utc), "yes": True, "prev": prev_hash,
         "hash": _hash_of(document)})
    return document


def _hash(connection, event_id: int) -> str:
    return connection.execute(text("select hash from consent_events where id = :i"), {"i": event_id}).scalar_one()


def _without_state(body):
    """Run `body` with the current-state rows set aside (they reference events), then put them back,
    pointed where `body` says: what a careful attacker does so the foreign keys let them through."""
    def attack(connection) -> None:
        states = [dict(r._mapping) for r in connection.execute(text("select * from consent_state"))]
        connection.execute(text("delete from consent_state"))
        remap = body(connection) or {}
        for row in states:
            if remap.get(row["event_id"], row["event_id"]) is None:
                continue
            row["event_id"] = remap.get(row["event_id"], row["event_id"])
            columns = list(row)
            connection.execute(text(f"insert into consent_state ({', '.join(columns)}) values "
                                    f"({', '.join(':' + c for c in columns)})"), row)
    return attack


def _swap(connection):
    connection.execute(text("update consent_events set id = 1000 where id = 2"))
    connection.execute(text("update consent_events set id = 2 where id = 3"))
    connection.execute(text("update consent_events set id = 3 where id = 1000"))
    return {2: 3, 3: 2}


def _insert_middle(connection):
    for i in (6, 5, 4):
        connection.execute(text("update consent_events set id = :n where id = :i"), {"n": i + 1, "i": i})
    _forged(connection, 4, _hash(connection, 3))
    connection.execute(text("update ledger_head set last_id = 7"))
    return {4: 5, 5: 6, 6: 7}


def _append_with_head(connection):
    document = _forged(connection, 7, _hash(connection, 6))
    connection.execute(text("update ledger_head set last_id = 7, last_hash = :h"), {"h": _hash(connection, 7)})
    assert document["id"] == 7


def _broken(prefix: int, problem: str) -> tuple[int, str]:
    return prefix, problem


COLUMN_EDITS = {
    "contact_ref": "'z'", "recipient": "'x@example.com'", "channel": "'call'", "status": "'RET'",
    "source": "'HS_ISLAK_IMZA'", "recipient_type": "'TACIR'", "consent_date": "consent_date",  # see below
    "recorded_at": "recorded_at", "proof": "'{\"form\":\"v2\"}'", "iys_uploadable": ":no",
}


def attacks() -> list[tuple[str, object, int, str]]:
    """(name, attack, broken event id, problem text) for every tampering we know."""
    out: list[tuple[str, object, int, str]] = []
    for column, value in COLUMN_EDITS.items():
        if column in ("consent_date", "recorded_at"):
            out.append((f"edit {column} of #3", _sql(f"update consent_events set {column} = :moved where id = 3",
                                                      moved=datetime(2026, 1, 4, 8, tzinfo=timezone.utc)),
                        3, f"event #3 {CHANGED}"))
        else:
            out.append((f"edit {column} of #3", _sql(f"update consent_events set {column} = {value} where id = 3",
                                                      no=False), 3, f"event #3 {CHANGED}"))
    out += [
        ("edit contact_id of #3 (not hashed)", _sql("update consent_events set contact_id = "
                                                    "(select id from contacts where external_id = 'a') where id = 3"),
         3, "event #3 was recorded for contact c but is linked to contact a: its contact link was changed outside izin"),
        ("edit proof of #1 to null", _sql("update consent_events set proof = null where id = 1"), 1,
         f"event #1 {CHANGED}"),
        ("edit status of #6 (the newest)", _sql("update consent_events set status = 'RET' where id = 6"), 6,
         f"event #6 {CHANGED}"),
        ("edit prev_hash of #3", _sql("update consent_events set prev_hash = :h where id = 3", h="0" * 64), 3,
         "event #3 does not follow event #2: an event before it was deleted, inserted or reordered"),
        ("edit hash of #3", _sql("update consent_events set hash = :h where id = 3", h="f" * 64), 3,
         f"event #3 {CHANGED}"),
        ("edit hash of #6", _sql("update consent_events set hash = :h where id = 6", h="f" * 64), 6,
         f"event #6 {CHANGED}"),
        ("delete the first", _sql("delete from consent_events where id = 1"), 1, "event #1 is missing: it was deleted"),
        ("delete the middle", _without_state(lambda c: (c.execute(text("delete from consent_events where id = 3")),
                                                         {3: None})[1]),
         3, "event #3 is missing: it was deleted"),
        ("delete the last", _without_state(lambda c: (c.execute(text("delete from consent_events where id = 6")),
                                                       {6: 4})[1]),
         6, "the ledger ends at event #5 but its head records #6: the newest events were deleted, or events were "
            "appended outside izin"),
        ("delete the last and lower the head", _without_state(lambda c: (
            c.execute(text("delete from consent_events where id = 6")),
            c.execute(text("update ledger_head set last_id = 5, last_hash = :h"), {"h": _hash(c, 5)}), {6: 4})[2]),
         4, "the current state of a@example.com on email (ONAY, event #4) is not what the ledger says: the table "
            "the send gate reads was changed outside izin"),
        ("swap #2 and #3", _without_state(_swap), 2,
         "event #2 does not follow event #1: an event before it was deleted, inserted or reordered"),
        ("insert a forged event in the middle", _without_state(_insert_middle), 5,
         "event #5 does not follow event #4: an event before it was deleted, inserted or reordered"),
        ("append a forged event and move the head", _append_with_head, 5,
         "the current state of b@example.com on email (RET, event #5) is not what the ledger says: the table "
         "the send gate reads was changed outside izin"),
        ("state: RET turned ONAY", _sql("update consent_state set status = 'ONAY' where recipient = 'b@example.com'"),
         5, "the current state of b@example.com on email (ONAY, event #5) is not what the ledger says: the table "
            "the send gate reads was changed outside izin"),
        ("state: pointed at an older ONAY", _sql("update consent_state set event_id = 2, status = 'ONAY' "
                                                 "where recipient = 'b@example.com'"),
         2, "the current state of b@example.com on email (ONAY, event #2) is not what the ledger says: the table "
            "the send gate reads was changed outside izin"),
        ("state: deleted", _sql("delete from consent_state where recipient = '+905321234567'"), 3,
         "+905321234567 on sms has ledger events but no current state: the table the send gate reads was changed "
         "outside izin"),
        ("state: a forged ONAY for a new address", _sql(
            "insert into consent_state (recipient, channel, recipient_type, status, event_id, consent_date, "
            "recorded_at, ever_onay) select 'x@example.com', channel, recipient_type, status, event_id, consent_date, "
            "recorded_at, ever_onay from consent_state where recipient = 'a@example.com'"),
         6, "the current state of x@example.com on email (ONAY, event #6) is not what the ledger says: the table "
            "the send gate reads was changed outside izin"),
        ("state: consent date moved back", _sql("update consent_state set consent_date = :old "
                                                "where recipient = 'b@example.com'",
                                                old=datetime(2016, 1, 1, tzinfo=timezone.utc)),
         5, "the current state of b@example.com on email (RET, event #5) is not what the ledger says: the table "
            "the send gate reads was changed outside izin"),
        ("head: last_id lowered", _sql("update ledger_head set last_id = 5"), 6,
         "the ledger ends at event #6 but its head records #5: the newest events were deleted, or events were "
         "appended outside izin"),
        ("head: last_hash changed", _sql("update ledger_head set last_hash = :h", h="a" * 64), 6,
         "the ledger's head records a hash that is not event #6's: the newest event was rewritten, or the head "
         "was changed outside izin"),
    ]
    return out


def test_every_tampering_is_named_by_audit_verify(ledger, db, findings):
    snapshot = _snapshot(db)
    detected, missed = 0, []
    for name, attack, broken_id, problem in attacks():
        with db.engine.begin() as connection:
            attack(connection)
        result = ledger("audit", "verify", expect=1)
        if result.stdout == f"BROKEN at event #{broken_id}: {problem}\n":
            detected += 1
        else:
            missed.append((name, result.stdout))
        _restore(db, snapshot)
        assert ledger("audit", "verify").stdout.startswith("ok: 6 consent events"), name
    assert missed == []
    findings("ledger tamper", backend=db.engine.dialect.name, attempts=detected + len(missed), detected=detected,
             missed=len(missed))


def test_verify_json_names_the_broken_event(ledger, db):
    with db.engine.begin() as connection:
        connection.execute(text("update consent_events set proof = 'x' where id = 4"))
    document = json.loads(ledger("audit", "verify", "--json", expect=1).stdout)
    assert (document["ok"], document["broken_id"], document["problem"]) == (False, 4, f"event #4 {CHANGED}")


# --- retention keeps the chain verifiable; a tombstone made by hand is caught ---------------------

OLD = [("a", "email", "ONAY", 2), ("a", "email", "RET", 3), ("b", "email", "ONAY", 4)]


@pytest.fixture
def purged(cli, db, monkeypatch):
    """Events from 2019-2020 (a's consent ended long ago), purged by `izin consent purge`."""
    with db.session() as session:
        for external_id, email in (("a", "a@example.com"), ("b", "b@example.com")):
            session.add(Contact(external_id=external_id, email=email, recipient_type="BIREYSEL", locale="tr",
                                attributes={}, created_at=T0, updated_at=T0))
    with db.session() as session:
        contacts = {c.external_id: c for c in session.query(Contact)}
        writer = LedgerWriter(session)
        for (external_id, channel, status, day), year in zip(OLD, (2019, 2020, 2020)):
            at = T0.replace(year=year, day=day)
            writer.record(contacts[external_id], channel, status, "HS_WEB", at, at, proof="p")
    result = cli("consent", "purge")
    assert result.stdout.startswith("purged 2 consent events"), result.stdout
    assert cli("audit", "verify").stdout.startswith("ok: 3 consent events, chain intact")
    return cli


def test_tombstones_verify_and_tampering_with_them_is_caught(purged, db, findings):
    snapshot = _snapshot(db)
    with db.engine.connect() as connection:
        run = dict(connection.execute(text("select digest, signature from purge_runs where id = 1")).one()._mapping)
    blanked = ("the events marked purged by run 1 are not the ones it purged (first: #1); an event was blanked "
               "outside izin")
    cases = [
        ("blank a live event by hand", "update consent_events set recipient = null, contact_ref = null, proof = null, "
                                       "purge_run_id = 1 where id = 3", 1, blanked),
        ("tombstone: status changed", "update consent_events set status = 'ONAY' where id = 2", 1, blanked),
        ("tombstone: source changed", "update consent_events set source = 'HS_ISLAK_IMZA' where id = 1", 1, blanked),
        ("tombstone: consent date moved", "update consent_events set consent_date = recorded_at - interval '1 day'"
         if db.engine.dialect.name == "postgresql" else
         "update consent_events set consent_date = '2018-01-01 00:00:00.000000' where id = 2", 1, blanked),
        ("tombstone: un-purged", "update consent_events set purge_run_id = null where id = 1", 1,
         f"event #1 {CHANGED}"),
        ("purge run: digest rewritten", "update purge_runs set digest = 'ab' where id = 1", 1, blanked),
        ("purge run: signature forged", "update purge_runs set signature = '00' where id = 1", 1,
         "purge run 1 has a signature that does not match: the purge record was forged"),
    ]
    detected = 0
    for name, statement, broken_id, problem in cases:
        with db.engine.begin() as connection:
            connection.execute(text(statement if "interval" not in statement else statement + " where id = 2"))
        result = purged("audit", "verify", expect=1)
        assert result.stdout == f"BROKEN at event #{broken_id}: {problem}\n", name
        detected += 1
        _restore(db, snapshot)
        with db.engine.begin() as connection:
            connection.execute(text("update purge_runs set digest = :digest, signature = :signature where id = 1"), run)
        assert purged("audit", "verify").stdout.startswith("ok: 3 consent events"), name
    findings("retention tamper", backend=db.engine.dialect.name, purged_events=2, chain_ok_after_purge=True,
             attempts=detected, detected=detected, missed=0)
