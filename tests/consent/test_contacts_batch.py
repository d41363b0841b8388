"""The batch upsert of contacts: inserts and updates mixed in one batch, the same id twice, and
exactly the tables the one-contact upsert would leave."""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import select

from izin.clock import parse_instant
from izin.consent.contacts import ContactFields, upsert, upsert_many
from izin.consent.models import Contact, ContactAddress, ContactTag

NOW = parse_instant("2026-11-24T12:00:00+03:00")
EARLIER = NOW - timedelta(days=10)


def fields(external_id: str, tags: list[str] | None = None, attributes: dict | None = None, **values) -> ContactFields:
    return ContactFields(external_id, values, tags, attributes or {})


#: contacts in the database before the batch
SEED = [
    fields("E1", ["a", "b"], {"city": "Bursa"}, email="e1@example.com", phone="+905321112233", phone_mobile=True),
    fields("E2", first_name="Ece"),
    fields("E3", ["x"], {"visits": 3}, email="e3@example.com", locale="en"),
]
#: one batch: new contacts, updates, the same id twice (new and existing), no-ops
BATCH = [
    fields("N1", ["vip"], {"city": "İzmir"}, email="n1@example.com", phone="+905330000001", phone_mobile=True),
    fields("E1", ["c"], email="e1.new@example.com"),
    fields("N1", phone="+902125550001", phone_mobile=False, first_name="Nur"),
    fields("E2", email="e2@example.com"),
    fields("E3", ["x"], {"visits": 3}, email="e3@example.com", locale="en"),
    fields("E1", [], {"segment": "gold"}, email="e1.new@example.com", birthday=date(1990, 2, 1), birth_month=2,
           birth_day=1),
    fields("N2"),
    fields("N1", ["vip"], {"city": "İzmir"}),
    fields("E1", phone="+905321112233", phone_mobile=True),
]
OUTCOMES = ["imported", "updated", "updated", "updated", "unchanged", "updated", "imported", "unchanged", "unchanged"]


def seed(db) -> None:
    with db.session() as session:
        assert [upsert(session, f, None, EARLIER) for f in SEED] == ["imported"] * 3


def tables(session) -> tuple[list, list, list]:
    """Contacts, address history (in id order) and tags, keyed by external_id (ids differ after a rollback)."""
    session.flush()
    columns = [c for c in Contact.__table__.c if c.name != "id"]
    contacts = [tuple(r) for r in session.execute(select(*columns).order_by(Contact.external_id))]
    history = [tuple(r) for r in session.execute(
        select(Contact.external_id, ContactAddress.kind, ContactAddress.address, ContactAddress.valid_from,
               ContactAddress.valid_to).join(Contact, Contact.id == ContactAddress.contact_id)
        .order_by(ContactAddress.id))]
    tags = sorted(tuple(r) for r in session.execute(
        select(Contact.external_id, ContactTag.tag).join(Contact, Contact.id == ContactTag.contact_id)))
    return contacts, history, tags


def test_mixed_batch(db):
    seed(db)
    with db.session() as session:
        assert upsert_many(session, BATCH, NOW) == OUTCOMES
    with db.session() as session:
        contacts, history, tags = tables(session)
    by_id = {c[0]: c for c in contacts}
    names = [c.name for c in Contact.__table__.c if c.name != "id"]

    def row(external_id: str) -> dict:
        return dict(zip(names, by_id[external_id]))

    assert row("E1") == {
        "external_id": "E1", "first_name": None, "last_name": None, "email": "e1.new@example.com",
        "phone": "+905321112233", "phone_mobile": True, "birthday": date(1990, 2, 1), "birth_month": 2,
        "birth_day": 1, "locale": "tr", "timezone": None, "recipient_type": "BIREYSEL",
        "attributes": {"city": "Bursa", "segment": "gold"}, "created_at": EARLIER, "updated_at": NOW,
        "targeting_purged_at": None}
    assert (row("E2")["first_name"], row("E2")["email"], row("E2")["updated_at"]) == ("Ece", "e2@example.com", NOW)
    assert (row("E3")["email"], row("E3")["locale"], row("E3")["attributes"], row("E3")["updated_at"]) == (
        "e3@example.com", "en", {"visits": 3}, EARLIER)
    assert {k: row("N1")[k] for k in ("first_name", "email", "phone", "phone_mobile", "locale", "recipient_type",
                                      "attributes", "created_at", "updated_at")} == {
        "first_name": "Nur", "email": "n1@example.com", "phone": "+902125550001", "phone_mobile": False,
        "locale": "tr", "recipient_type": "BIREYSEL", "attributes": {"city": "İzmir"}, "created_at": NOW,
        "updated_at": NOW}
    assert (row("N2")["email"], row("N2")["attributes"], row("N2")["created_at"]) == (None, {}, NOW)
    assert history == [
        ("E1", "email", "e1@example.com", EARLIER, NOW),
        ("E1", "phone", "+905321112233", EARLIER, None),
        ("E3", "email", "e3@example.com", EARLIER, None),
        ("N1", "email", "n1@example.com", NOW, None),
        ("N1", "phone", "+905330000001", NOW, NOW),  # opened and closed within the batch
        ("E1", "email", "e1.new@example.com", NOW, None),
        ("N1", "phone", "+902125550001", NOW, None),
        ("E2", "email", "e2@example.com", NOW, None),
    ]
    assert tags == [("E3", "x"), ("N1", "vip")]  # E1's tags replaced by "c", then by none


def test_batch_leaves_what_one_by_one_leaves(db):
    seed(db)
    with db.session() as session:
        outcomes = []
        for parsed in BATCH:
            existing = session.scalars(select(Contact).where(Contact.external_id == parsed.external_id)).first()
            outcomes.append(upsert(session, parsed, existing, NOW))
            session.flush()
        expected = tables(session)
        session.rollback()
    assert outcomes == OUTCOMES
    with db.session() as session:
        assert upsert_many(session, BATCH, NOW) == OUTCOMES
    with db.session() as session:
        assert tables(session) == expected


def test_workers_validate_ahead_and_change_nothing(db, tmp_path, monkeypatch):
    """A large file's rows validated in a worker process: the same counts, rejects and tables."""
    from izin.consent import contacts as contacts_module
    from izin.consent import parallel

    lines = ["external_id,email,phone,birthday,tags,city"]
    for i in range(60):
        email = f"kisi{i}@example.com" if i % 9 else "bozuk@"
        phone = f"0532 000 00 {i:02d}" if i % 13 else "0532 12"
        lines.append(f"K{i % 45},{email},{phone},1990-01-{1 + i % 28:02d},{'vip' if i % 4 else ''},Bursa")
    path = tmp_path / "k.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setattr(contacts_module, "BATCH_ROWS", 4)  # 15 batches, several in flight at once
    with db.session() as session:
        before = session.execute(select(Contact.id)).all()
    report = contacts_module.import_contacts(db, str(path), NOW, rejects=str(tmp_path / "in-process.csv"))
    with db.session() as session:
        expected = tables(session)
        session.execute(ContactTag.__table__.delete())
        session.execute(ContactAddress.__table__.delete())
        session.execute(Contact.__table__.delete())
    assert before == []
    monkeypatch.setattr(parallel, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(contacts_module, "worker_count", lambda: 1)
    progress: list[int] = []
    pooled = contacts_module.import_contacts(db, str(path), NOW, rejects=str(tmp_path / "pooled.csv"),
                                             progress=progress.append)
    assert (pooled.imported, pooled.updated, pooled.unchanged, pooled.rejected, pooled.reasons) == (
        report.imported, report.updated, report.unchanged, report.rejected, report.reasons) == (
        38, 11, 0, 11, {"email": 7, "phone": 4})
    assert (tmp_path / "pooled.csv").read_text(encoding="utf-8") == (
        tmp_path / "in-process.csv").read_text(encoding="utf-8")
    with db.session() as session:
        assert tables(session) == expected
    assert (len(progress), progress[-1]) == (15, path.stat().st_size)
