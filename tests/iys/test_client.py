"""The İYS client against the fake İYS on loopback: tokens, rules, limits, batches, pull, the daily file."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from izin.consent.iys.client import (Consent, IysAuthError, IysRejected, IysTokenLimit, IysTransient,
                                     MemoryTokenStore, iys_datetime, parse_iys_datetime)
from server import BRAND_CODE, IYS_CODE, NOT_LATER, NOW, SAME_STATUS, TR, client_for, fake_iys  # noqa: F401


def onay(recipient="ali@ornek.com.tr", type_="EPOSTA", status="ONAY", when=NOW - timedelta(hours=2),
         source="HS_WEB", recipient_type="BIREYSEL") -> Consent:
    return Consent(recipient, recipient_type, type_, status, source, when)


class Clock:
    def __init__(self, start: datetime = NOW) -> None:
        self.value = start

    def __call__(self) -> datetime:
        return self.value


def test_consent_date_is_turkiye_wall_clock_not_utc():
    instant = datetime(2026, 11, 24, 9, 0, tzinfo=timezone.utc)
    assert iys_datetime(instant) == "2026-11-24 12:00:00"
    assert parse_iys_datetime("2026-11-24 12:00:00") == instant
    with pytest.raises(ValueError):
        iys_datetime(datetime(2026, 11, 24, 9, 0))


def test_add_one_sends_documented_body_and_token_is_reused(fake_iys):
    with client_for(fake_iys) as client:
        first = client.add_consent(onay(when=datetime(2026, 11, 24, 6, 30, tzinfo=timezone.utc)))
        client.add_consent(onay(recipient="+905321112233", type_="MESAJ"))
    assert len(fake_iys.token_calls) == 1
    assert fake_iys.token_calls[0].body == {"username": "izin-api", "password": "s3cret", "grant_type": "password"}
    call = fake_iys.api_calls("/consents")[0]
    assert call.path == f"/sps/{IYS_CODE}/brands/{BRAND_CODE}/consents"
    assert call.body == {"consentDate": "2026-11-24 09:30:00", "source": "HS_WEB", "recipient": "ali@ornek.com.tr",
                         "recipientType": "BIREYSEL", "status": "ONAY", "type": "EPOSTA"}
    assert call.authorization.startswith("Bearer ")
    assert first.transaction_id == fake_iys.movements[0].transaction_id
    assert first.creation_date == NOW


@pytest.mark.parametrize(("consent", "code"), [
    (onay(type_="FAKS"), "H111"),
    (onay(source="IYS_WEB"), "H113"),
    (onay(recipient="ali@örnek.com"), "H114"),
    (onay(status="RET"), "H175"),
    (onay(when=datetime(2015, 4, 30, tzinfo=TR)), "H155"),
    # 2026-11-18 is a Wednesday: Thu, Fri, Mon, Tue is four business days back from Tuesday the 24th
    (onay(when=datetime(2026, 11, 18, 23, 0, tzinfo=TR)), "H174"),
])
def test_rules_come_back_as_rejections_with_codes(fake_iys, consent, code):
    with client_for(fake_iys) as client, pytest.raises(IysRejected) as caught:
        client.add_consent(consent)
    assert caught.value.status == 422
    assert caught.value.codes == [code]
    assert caught.value.exit_code == 1


def test_three_business_days_back_is_still_taken(fake_iys):
    with client_for(fake_iys) as client:
        client.add_consent(onay(when=datetime(2026, 11, 19, 0, 0, 1, tzinfo=TR)))  # Thursday


def test_same_status_twice_and_older_date_are_refused(fake_iys):
    with client_for(fake_iys) as client:
        client.add_consent(onay(when=NOW - timedelta(hours=3)))
        with pytest.raises(IysRejected) as same:
            client.add_consent(onay(when=NOW - timedelta(hours=2)))
        with pytest.raises(IysRejected) as older:
            client.add_consent(onay(status="RET", when=NOW - timedelta(hours=4)))
        client.add_consent(onay(status="RET", when=NOW - timedelta(hours=1)))
    assert (same.value.codes, older.value.codes) == ([SAME_STATUS], [NOT_LATER])


def test_token_is_refreshed_before_expiry_with_the_refresh_token(fake_iys):
    clock = Clock()
    fake_iys.now = clock
    with client_for(fake_iys, now=clock) as client:
        client.add_consent(onay())
        clock.value = NOW + timedelta(seconds=7200 - 299)  # inside the 5-minute margin
        client.add_consent(onay(status="RET", when=NOW + timedelta(minutes=1)))
    grants = [c.body["grant_type"] for c in fake_iys.token_calls]
    assert grants == ["password", "refresh_token"]


def test_token_dying_early_is_replaced_once_and_the_call_succeeds(fake_iys):
    with client_for(fake_iys) as client:
        client.add_consent(onay())
        fake_iys.expire_tokens()
        client.add_consent(onay(recipient="veli@ornek.com.tr"))
    assert [c.path for c in fake_iys.calls].count("/oauth2/token") == 2
    assert [c.body["grant_type"] for c in fake_iys.token_calls] == ["password", "refresh_token"]


def test_h084_stops_token_requests_for_the_hour(fake_iys):
    clock = Clock()
    fake_iys.token_limit_per_hour = 0
    store = MemoryTokenStore()
    with client_for(fake_iys, now=clock, store=store) as client:
        with pytest.raises(IysTokenLimit) as caught:
            client.add_consent(onay())
        assert caught.value.until == NOW + timedelta(hours=1)
        assert caught.value.exit_code == 3
        with pytest.raises(IysTokenLimit):
            client.add_consent(onay())
        clock.value = NOW + timedelta(minutes=59)
        with pytest.raises(IysTokenLimit):
            client.add_consent(onay())
    assert len(fake_iys.token_calls) == 1  # blocked locally afterwards, no retry loop


def test_local_budget_keeps_token_requests_to_a_few_an_hour(fake_iys):
    with client_for(fake_iys, max_token_requests_per_hour=3) as client:
        for n in range(3):
            client.add_consent(onay(recipient=f"k{n}@ornek.com.tr"))
            fake_iys.expire_tokens()
        with pytest.raises(IysTokenLimit):
            client.add_consent(onay(recipient="k9@ornek.com.tr"))
    assert [c.body["grant_type"] for c in fake_iys.token_calls] == ["password", "refresh_token", "refresh_token"]


def test_wrong_password_is_an_auth_error(fake_iys):
    from server import IYS_CODE as code

    from izin.consent.iys.client import IysClient
    with IysClient(fake_iys.url, "izin-api", "wrong", code, BRAND_CODE) as client, \
            pytest.raises(IysAuthError) as caught:
        client.add_consent(onay())
    assert caught.value.status == 401 and caught.value.exit_code == 2


def test_rate_limit_and_server_errors_are_retried_with_backoff(fake_iys):
    waits: list[float] = []
    fake_iys.fail(429, "H124", retry_after="0.5")
    fake_iys.fail(500, "H103")
    with client_for(fake_iys, sleep=waits.append, backoff=0.25) as client:
        client.add_consent(onay())
    assert waits == [0.5, 0.5]  # Retry-After, then 0.25 * 2
    assert len(fake_iys.movements) == 1


def test_persistent_rate_limit_raises_transient(fake_iys):
    fake_iys.fail(429, "H124", times=4)
    with client_for(fake_iys, retries=3) as client, pytest.raises(IysTransient) as caught:
        client.add_consent(onay())
    assert caught.value.codes == ["H124"] and caught.value.status == 429 and caught.value.exit_code == 3


def test_async_batch_answers_enqueue_then_results(fake_iys):
    fake_iys.enqueue_polls = 2
    consents = [onay(), onay(recipient="bad@örnek.com"), onay(recipient="+905321112233", type_="MESAJ", status="RET")]
    with client_for(fake_iys) as client:
        ticket = client.add_consents(consents)
        assert len(ticket.sub_request_ids) == 3
        assert [i.status for i in client.batch_result(ticket.request_id)] == ["enqueue"] * 3
        assert [i.status for i in client.batch_result(ticket.request_id)] == ["enqueue"] * 3
        final = client.batch_result(ticket.request_id)
        with pytest.raises(ValueError):
            client.add_consents([onay()] * 1001)
    assert [(i.index, i.status, i.error.code if i.error else None) for i in final] == [
        (0, "success", None), (1, "failure", "H114"), (2, "failure", "H175")]
    assert final[0].transaction_id == fake_iys.movements[0].transaction_id
    assert final[0].creation_date == NOW
    assert fake_iys.api_calls("/consents/request")[0].body[0]["consentDate"] == "2026-11-24 10:00:00"


def test_pull_pages_with_cursor_inside_the_seven_day_window(fake_iys):
    fake_iys.citizen("a@ornek.com.tr", "EPOSTA", "ONAY", NOW - timedelta(days=8))  # out of the window
    for n in range(5):
        fake_iys.citizen(f"c{n}@ornek.com.tr", "EPOSTA", "ONAY", NOW - timedelta(days=2, minutes=-n))
    fake_iys.citizen("late@ornek.com.tr", "EPOSTA", "ONAY", NOW - timedelta(minutes=30))  # within the last hour
    with client_for(fake_iys) as client:
        first = client.changes("IYS", None, 2)
        second = client.changes("IYS", first.after, 2)
        third = client.changes("IYS", second.after, 2)
        empty = client.changes("IYS", third.after, 2)
        status = client.consent_status("c0@ornek.com.tr", "BIREYSEL", "EPOSTA")
    assert [c.recipient for c in first.changes + second.changes + third.changes] == [
        f"c{n}@ornek.com.tr" for n in range(5)]
    assert empty.changes == [] and empty.after == third.after
    assert fake_iys.api_calls("/consents/changes")[1].query == {"source": "IYS", "limit": "2", "after": first.after}
    assert first.changes[0].source == "IYS_WEB"
    assert first.changes[0].creation_date == NOW - timedelta(days=2)
    assert status.status == "ONAY" and status.transaction_id == fake_iys.movements[1].transaction_id


def test_daily_file_is_parsed_and_old_dates_refused(fake_iys):
    moved = fake_iys.citizen("+905321112233", "MESAJ", "RET", datetime(2026, 11, 22, 15, 0, tzinfo=TR),
                             source="IYS_3338")
    with client_for(fake_iys) as client:
        rows = client.change_file(date(2026, 11, 22))
        assert client.change_file(date(2026, 11, 21)) == []
        with pytest.raises(IysRejected) as caught:
            client.change_file(date(2026, 11, 10))
    assert caught.value.codes == ["H501"]
    assert [(r.transaction_id, r.recipient, r.type, r.status, r.source, r.creation_date) for r in rows] == [
        (moved.transaction_id, "+905321112233", "MESAJ", "RET", "IYS_3338", datetime(2026, 11, 22, 15, 0, tzinfo=TR))]
