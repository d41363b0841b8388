"""Undeliverable addresses: marking is idempotent, lookups are exact per channel and chunked."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from izin.consent import bounces
from izin.consent.models import UndeliverableAddress


def test_mark_is_idempotent_and_per_channel(db, now):
    with db.session() as session:
        assert bounces.mark(session, "Ayse@Example.com ", "email", "DSN 5.1.1: user unknown", now) is True
    with db.session() as session:
        # a second mark, later and with other words, changes nothing
        assert bounces.mark(session, "ayse@example.com", "email", "again", now + timedelta(hours=1)) is False
        assert bounces.mark(session, "+905321234567", "sms", "bounced", now) is True
    with db.session() as session:
        rows = session.execute(select(UndeliverableAddress.address, UndeliverableAddress.channel,
                                      UndeliverableAddress.reason, UndeliverableAddress.marked_at)
                               .order_by(UndeliverableAddress.channel)).all()
        assert [tuple(r) for r in rows] == [("ayse@example.com", "email", "DSN 5.1.1: user unknown", now),
                                            ("+905321234567", "sms", "bounced", now)]
        assert bounces.is_undeliverable(session, "AYSE@example.com", "email") is True
        assert bounces.is_undeliverable(session, "ayse@example.com", "sms") is False
        assert bounces.is_undeliverable(session, "+905321234567", "sms") is True
        assert bounces.is_undeliverable(session, "+905321234567", "call") is False
        assert bounces.is_undeliverable(session, None, "email") is False
        assert bounces.is_undeliverable(session, "mehmet@example.com", "email") is False


def test_reason_is_kept_short_and_never_empty(db, now):
    with db.session() as session:
        bounces.mark(session, "a@example.com", "email", "x" * 5000, now)
        bounces.mark(session, "b@example.com", "email", "", now)
    with db.session() as session:
        reasons = dict(session.execute(select(UndeliverableAddress.address, UndeliverableAddress.reason)).all())
    assert len(reasons["a@example.com"]) == bounces.REASON_MAX
    assert reasons["b@example.com"] == "hard bounce"


def test_bad_input_is_refused(db, now):
    with db.session() as session:
        with pytest.raises(ValueError, match="unknown channel 'fax'"):
            bounces.mark(session, "a@example.com", "fax", "x", now)
        with pytest.raises(ValueError, match="needs an address"):
            bounces.mark(session, "  ", "email", "x", now)
        with pytest.raises(ValueError, match="unknown channel"):
            bounces.undeliverable_set(session, ["a@example.com"], "post")


def test_undeliverable_set_reads_in_chunks(db, now):
    total = bounces.CHUNK * 2 + 17
    marked = [f"user{i}@example.com" for i in range(0, total, 3)]
    with db.session() as session:
        for address in marked:
            bounces.mark(session, address, "email", "DSN 5.1.1", now)
        bounces.mark(session, "+905321234567", "sms", "bounced", now)
    asked = [f"USER{i}@example.com" for i in range(total)] + [None, "", "user0@example.com"]
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(UndeliverableAddress)) == len(marked) + 1
        assert bounces.undeliverable_set(session, asked, "email") == set(marked)
        assert bounces.undeliverable_set(session, [], "email") == set()
        assert bounces.undeliverable_set(session, ["+905321234567", "+905320000000"], "sms") == {"+905321234567"}
        assert bounces.undeliverable_set(session, ["+905321234567"], "call") == set()
