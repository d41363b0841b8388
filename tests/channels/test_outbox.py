"""The outbox adapter: file names and formats from the contract, atomic and idempotent writes."""

from __future__ import annotations

import email
import json
import os
from datetime import datetime
from email import policy
from pathlib import Path

import pytest

from izin.channels.base import OutgoingMessage, Receipt
from izin.channels.errors import ChannelConfigError, PermanentChannelError, TransientChannelError
from izin.channels.mime import message_id
from izin.channels.outbox import OutboxAdapter

UNSUBSCRIBE = "https://izin.ornek.com.tr/u/tok_abc123"


def email_message(**changes: object) -> OutgoingMessage:
    fields: dict[str, object] = dict(
        delivery_id=41, channel="email", to="ayse.yilmaz@example.com", commercial=True,
        subject="İyi ki doğdun Ayşe! Sana özel %20 indirim",
        html="<p>Merhaba Ayşe, <b>iyi ki doğdun</b>!</p>",
        text="Merhaba Ayşe, iyi ki doğdun!\n",
        from_name="Örnek Ticaret A.Ş.", from_addr="kampanya@ornek.com.tr",
        list_unsubscribe_url=UNSUBSCRIBE, list_unsubscribe_mailto="ret@ornek.com.tr")
    fields.update(changes)
    return OutgoingMessage(**fields)  # type: ignore[arg-type]


def sms_message(**changes: object) -> OutgoingMessage:
    fields: dict[str, object] = dict(
        delivery_id=42, channel="sms", to="+905321234567", commercial=True, sender="ORNEKTIC",
        sms_text="Ayşe, iyi ki doğdun! IYIKI-ABCD2345 ile %20 indirim.\nRET yazip 4609'a gonderin",
        encoding="gsm7-tr", segments=1)
    fields.update(changes)
    return OutgoingMessage(**fields)  # type: ignore[arg-type]


@pytest.fixture
def outbox(tmp_path: Path) -> OutboxAdapter:
    return OutboxAdapter.from_url(f"outbox://{tmp_path / 'outbox'}")


def test_email_is_a_complete_rfc5322_message(outbox: OutboxAdapter, fixed_now: datetime) -> None:
    message = email_message()
    receipt = outbox.send(message)

    path = outbox.directory / "41.eml"
    raw = path.read_bytes()
    assert receipt == Receipt(provider_id=str(path), segments=None, accepted_at=fixed_now,
                              detail=message_id(message, "kampanya@ornek.com.tr"))
    assert raw.isascii()  # 7-bit clean: RFC 2047 headers, quoted-printable bodies
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert parsed["From"].addresses[0].display_name == "Örnek Ticaret A.Ş."
    assert parsed["From"].addresses[0].addr_spec == "kampanya@ornek.com.tr"
    assert str(parsed["To"]) == "ayse.yilmaz@example.com"
    assert str(parsed["Subject"]) == "İyi ki doğdun Ayşe! Sana özel %20 indirim"
    assert str(parsed["Date"]) == "Tue, 24 Nov 2026 10:00:00 +0300"
    assert str(parsed["Message-ID"]) == message_id(message, "kampanya@ornek.com.tr")
    assert str(parsed["List-Unsubscribe"]) == f"<{UNSUBSCRIBE}>, <mailto:ret@ornek.com.tr>"
    assert str(parsed["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    assert parsed.get_content_type() == "multipart/alternative"
    plain, html = parsed.iter_parts()
    assert plain.get_content_type() == "text/plain"
    # MIME text is CRLF on the wire and on disk
    assert plain.get_content() == "Merhaba Ayşe, iyi ki doğdun!\r\n"
    assert plain["Content-Transfer-Encoding"] == "quoted-printable"
    assert html.get_content_type() == "text/html"
    assert html.get_content() == "<p>Merhaba Ayşe, <b>iyi ki doğdun</b>!</p>\r\n"
    assert plain["MIME-Version"] is None and html["MIME-Version"] is None


def test_message_id_is_stable_for_a_delivery_and_its_content() -> None:
    first = message_id(email_message(), "kampanya@ornek.com.tr")
    assert first == message_id(email_message(), "kampanya@ornek.com.tr")
    assert first.startswith("<izin.41.") and first.endswith("@ornek.com.tr>")
    assert first != message_id(email_message(delivery_id=43), "kampanya@ornek.com.tr")
    assert first != message_id(email_message(text="başka"), "kampanya@ornek.com.tr")


def test_transactional_email_has_no_one_click_header(outbox: OutboxAdapter) -> None:
    outbox.send(email_message(commercial=False, list_unsubscribe_url=None, list_unsubscribe_mailto=None,
                              html=""))
    parsed = email.message_from_bytes((outbox.directory / "41.eml").read_bytes(), policy=policy.default)
    assert parsed["List-Unsubscribe"] is None
    assert parsed["List-Unsubscribe-Post"] is None
    assert parsed.get_content_type() == "text/plain"  # no html: a single part


def test_email_without_from_address_uses_a_local_placeholder(outbox: OutboxAdapter) -> None:
    outbox.send(email_message(from_addr=""))
    parsed = email.message_from_bytes((outbox.directory / "41.eml").read_bytes(), policy=policy.default)
    assert parsed["From"].addresses[0].addr_spec == "izin@localhost"


def test_long_unsubscribe_urls_stay_urls(outbox: OutboxAdapter) -> None:
    # a real token is long; the header must not turn into RFC 2047 encoded words
    url = "https://izin.ornek.com.tr/u/" + "Ab9_" * 40
    outbox.send(email_message(list_unsubscribe_url=url))
    raw = (outbox.directory / "41.eml").read_bytes()
    assert f"List-Unsubscribe: <{url}>,\r\n <mailto:ret@ornek.com.tr>\r\n".encode() in raw
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert str(parsed["List-Unsubscribe"]) == f"<{url}>, <mailto:ret@ornek.com.tr>"


def test_extra_headers_are_added_and_replace_built_ones(outbox: OutboxAdapter) -> None:
    outbox.send(email_message(headers={"X-Izin-Campaign": "dogum-gunu", "List-Unsubscribe": f"<{UNSUBSCRIBE}>"}))
    parsed = email.message_from_bytes((outbox.directory / "41.eml").read_bytes(), policy=policy.default)
    assert parsed["X-Izin-Campaign"] == "dogum-gunu"
    assert parsed.get_all("List-Unsubscribe") == [f"<{UNSUBSCRIBE}>"]


@pytest.mark.parametrize("headers", [{"Content-Type": "text/plain"}, {"X-Bad": "a\r\nBcc: x@y.z"}])
def test_headers_that_would_break_the_message_fail_the_delivery(outbox: OutboxAdapter,
                                                                 headers: dict[str, str]) -> None:
    with pytest.raises(PermanentChannelError) as caught:
        outbox.send(email_message(headers=headers))
    assert caught.value.address_invalid is False
    assert list(outbox.directory.glob("*")) == []


def test_bad_recipient_address_is_a_hard_failure(outbox: OutboxAdapter) -> None:
    with pytest.raises(PermanentChannelError) as caught:
        outbox.send(email_message(to="not an address"))
    assert caught.value.address_invalid is True
    assert caught.value.adapter == "outbox"


def test_sms_file_has_exactly_the_contract_fields(outbox: OutboxAdapter, fixed_now: datetime) -> None:
    message = sms_message()
    receipt = outbox.send(message)

    path = outbox.directory / "42.sms.json"
    assert receipt == Receipt(provider_id=str(path), segments=1, accepted_at=fixed_now)
    assert json.loads(path.read_text(encoding="utf-8")) == {
        "delivery_id": 42,
        "to": "+905321234567",
        "sender": "ORNEKTIC",
        "text": "Ayşe, iyi ki doğdun! IYIKI-ABCD2345 ile %20 indirim.\nRET yazip 4609'a gonderin",
        "encoding": "gsm7-tr",
        "segments": 1,
    }
    assert "Ayşe" in path.read_text(encoding="utf-8")  # UTF-8, not \u escapes


@pytest.mark.parametrize(("text", "encoding", "segments"), [
    ("Kampanya basladi", "gsm7", 1),
    ("Kampanya başladı", "gsm7-tr", 1),
    ("Kampanya 🎉", "ucs2", 1),
    ("x" * 156, "gsm7", 2),  # 160 - 5 units kept for the operator code
])
def test_sms_encoding_and_segments_are_computed_when_not_given(outbox: OutboxAdapter, text: str,
                                                                encoding: str, segments: int) -> None:
    receipt = outbox.send(sms_message(sms_text=text, encoding=None, segments=None))
    record = json.loads((outbox.directory / "42.sms.json").read_text(encoding="utf-8"))
    assert (record["encoding"], record["segments"], receipt.segments) == (encoding, segments, segments)


def test_relative_dir_is_resolved_against_the_working_directory_once(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    adapter = OutboxAdapter.from_url("outbox://outbox")
    assert adapter.directory == tmp_path / "outbox"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    adapter.send(sms_message())
    assert (tmp_path / "outbox" / "42.sms.json").is_file()
    assert not (elsewhere / "outbox").exists()


def test_absolute_dir_and_nested_dirs_are_created(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    adapter = OutboxAdapter.from_url(f"outbox://{target}")  # outbox:// + /abs/path = outbox:///abs/path
    assert adapter.url.startswith("outbox:///")
    adapter.send(email_message())
    assert sorted(p.name for p in target.iterdir()) == ["41.eml"]


def test_dir_is_everything_after_the_scheme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    adapter = OutboxAdapter.from_url("outbox://out box?x=1")
    assert adapter.directory == tmp_path / "out box?x=1"
    assert adapter.redacted_url() == "outbox://out box?x=1"


def test_sending_a_delivery_again_replaces_its_file(outbox: OutboxAdapter) -> None:
    outbox.send(sms_message(sms_text="ilk"))
    outbox.send(sms_message(sms_text="ikinci"))
    assert [p.name for p in outbox.directory.iterdir()] == ["42.sms.json"]
    assert json.loads((outbox.directory / "42.sms.json").read_text())["text"] == "ikinci"


def test_a_crash_mid_write_leaves_the_old_file_and_no_debris(outbox: OutboxAdapter,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    outbox.send(sms_message(sms_text="ilk"))

    def crash(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(TransientChannelError) as caught:
        outbox.send(sms_message(sms_text="ikinci"))
    assert "No space left on device" in str(caught.value)
    assert [p.name for p in outbox.directory.iterdir()] == ["42.sms.json"]
    assert json.loads((outbox.directory / "42.sms.json").read_text())["text"] == "ilk"


def test_files_are_readable_by_others(outbox: OutboxAdapter) -> None:
    outbox.send(sms_message())
    assert (outbox.directory / "42.sms.json").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(("url", "error"), [
    ("outbox://", "outbox:// needs a directory"),
])
def test_bad_outbox_urls(url: str, error: str) -> None:
    with pytest.raises(ChannelConfigError, match=error):
        OutboxAdapter.from_url(url)


def test_outbox_dir_that_is_a_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ChannelConfigError, match="is not a directory"):
        OutboxAdapter.from_url(f"outbox://{tmp_path / 'file'}")


def test_capabilities() -> None:
    assert (OutboxAdapter.scheme, OutboxAdapter.channel, OutboxAdapter.max_segments,
            OutboxAdapter.supports_html) == ("outbox", "any", None, True)


# --- the message itself ------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "error"), [
    ({"channel": "call"}, "channel must be 'email' or 'sms'"),
    ({"recipient_type": "tacir"}, "recipient_type must be BIREYSEL or TACIR"),
    ({"to": ""}, "needs a recipient"),
    ({"text": "", "html": ""}, "needs a text or an html body"),
    ({"list_unsubscribe_url": None}, "a commercial email needs list_unsubscribe_url"),
    ({"list_unsubscribe_url": "mailto:x@y.z"}, "must be an https:// .* URL"),
])
def test_impossible_emails_are_refused_on_creation(changes: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        email_message(**changes)


@pytest.mark.parametrize(("changes", "error"), [
    ({"to": "05321234567"}, "must be E.164 with its \\+"),
    ({"to": "+0532"}, "must be E.164"),
    ({"sms_text": ""}, "needs sms_text"),
    ({"encoding": "utf8"}, "encoding must be one of gsm7, gsm7-tr, ucs2"),
    ({"segments": 0}, "segments must be at least 1"),
])
def test_impossible_sms_are_refused_on_creation(changes: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        sms_message(**changes)


def test_none_in_text_fields_is_empty(outbox: OutboxAdapter) -> None:
    # a renderer leaves the other channel's fields None; the message takes them as ""
    message = OutgoingMessage(delivery_id=42, channel="sms", to="+905321234567", commercial=False,
                              subject=None, html=None, text=None, from_name=None, sender=None,  # type: ignore[arg-type]
                              sms_text="Kargonuz yolda")
    assert (message.subject, message.html, message.from_name, message.sender) == ("", "", "", "")
    outbox.send(message)
    assert json.loads((outbox.directory / "42.sms.json").read_text())["sender"] == ""
    mail = email_message(from_name=None, subject=None)
    outbox.send(mail)
    parsed = email.message_from_bytes((outbox.directory / "41.eml").read_bytes(), policy=policy.default)
    assert str(parsed["From"]) == "kampanya@ornek.com.tr"
