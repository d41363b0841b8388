"""The ledger's canonical encoding is exactly the sorted-key compact JSON the README documents.

It is written with orjson for speed; every hash ever recorded was of json.dumps' bytes, so the two
must agree on every text a proof, a name or an address can hold."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from izin.consent.ledger import canonical

# any text UTF-8 can carry (no lone surrogates): controls, quotes, backslashes, Turkish, emoji, U+2028
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=60)


def _reference(event: SimpleNamespace) -> bytes:
    document = {"id": event.id, "contact": event.contact_ref, "recipient": event.recipient,
                "channel": event.channel, "status": event.status, "source": event.source,
                "recipient_type": event.recipient_type,
                "consent_date": event.consent_date.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "recorded_at": event.recorded_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "proof": event.proof,
                "iys_uploadable": event.iys_uploadable, "prev_hash": event.prev_hash}
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@settings(max_examples=300, deadline=None)
@given(contact=st.none() | TEXT, recipient=st.none() | TEXT, proof=st.none() | TEXT, event_id=st.integers(1, 2**62),
       uploadable=st.booleans(), instant=st.datetimes(min_value=datetime(2015, 5, 1), max_value=datetime(2999, 1, 1)))
def test_canonical_is_json_dumps_sorted_compact(contact, recipient, proof, event_id, uploadable, instant):
    moment = instant.replace(tzinfo=timezone.utc)
    event = SimpleNamespace(id=event_id, contact_ref=contact, recipient=recipient, channel="email", status="ONAY",
                            source="HS_WEB", recipient_type="BIREYSEL", consent_date=moment, recorded_at=moment,
                            proof=proof, iys_uploadable=uploadable, prev_hash="0" * 64)
    assert canonical(event) == _reference(event)


def test_a_known_event_encodes_as_documented():
    moment = datetime(2026, 11, 24, 9, 0, tzinfo=timezone.utc)
    event = SimpleNamespace(id=7, contact_ref="C001", recipient="ayşe@example.com", channel="email", status="ONAY",
                            source="HS_WEB", recipient_type="BIREYSEL", consent_date=moment, recorded_at=moment,
                            proof='{"ip":"203.0.113.7"}\n\u2028', iys_uploadable=True, prev_hash="0" * 64)
    assert canonical(event) == (
        '{"channel":"email","consent_date":"2026-11-24T09:00:00.000000Z","contact":"C001","id":7,'
        '"iys_uploadable":true,"prev_hash":"' + "0" * 64 + '","proof":"{\\"ip\\":\\"203.0.113.7\\"}\\n\u2028",'
        '"recipient":"ayşe@example.com","recipient_type":"BIREYSEL","recorded_at":"2026-11-24T09:00:00.000000Z",'
        '"source":"HS_WEB","status":"ONAY"}').encode("utf-8")
