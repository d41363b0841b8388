"""URL → adapter: built-ins, entry-point plug-ins, configuration errors naming the key, redaction,
and the shape of the error tree."""

from __future__ import annotations

import textwrap
from datetime import datetime
from pathlib import Path

import pytest

import izin.channels.errors as channel_errors
from izin.channels.base import OutgoingMessage, Receipt, redact_url
from izin.channels.errors import (ChannelAccountError, ChannelConfigError, ChannelError,
                                  PermanentChannelError, TransientChannelError)
from izin.channels.netgsm import NetgsmAdapter
from izin.channels.outbox import OutboxAdapter
from izin.channels.registry import BUILTIN, adapter_for, known_schemes, open_channels
from izin.channels.smtp import SmtpAdapter, SmtpsAdapter
from izin.channels.stub import StubAdapter
from izin.channels.webhook import WebhookAdapter, WebhooksAdapter
from izin.config import Settings
from izin.errors import ConfigError, InputError, IzinError


@pytest.mark.parametrize(("url", "cls"), [
    ("outbox://outbox", OutboxAdapter),
    ("outbox:///var/izin/outbox", OutboxAdapter),
    ("smtp://u:p@mail.example.com:587?starttls=1&from=k@ornek.com.tr", SmtpAdapter),
    ("SMTP://mail.example.com", SmtpAdapter),
    ("smtps://u:p@mail.example.com", SmtpsAdapter),
    ("netgsm://u:p@api.netgsm.com.tr?header=ORNEKTIC", NetgsmAdapter),
    ("webhook://127.0.0.1:8080/send", WebhookAdapter),
    ("webhooks://sms.example.com/v1?token=x", WebhooksAdapter),
    ("  outbox://outbox \n", OutboxAdapter),
])
def test_builtin_schemes(url: str, cls: type) -> None:
    adapter = adapter_for(url, "channels.email.url")
    assert type(adapter) is cls


def test_the_builtin_registry_is_explicit() -> None:
    assert BUILTIN == {"outbox": OutboxAdapter, "smtp": SmtpAdapter, "smtps": SmtpsAdapter,
                       "netgsm": NetgsmAdapter, "webhook": WebhookAdapter, "webhooks": WebhooksAdapter}
    assert all(cls.scheme == scheme for scheme, cls in BUILTIN.items())


@pytest.mark.parametrize(("url", "message"), [
    ("", "channels.sms.url: is empty; set an adapter URL such as outbox://outbox"),
    ("outbox", "channels.sms.url: 'outbox' is not an adapter URL; write SCHEME://..., with one of: "
               "netgsm, outbox, smtp, smtps, webhook, webhooks"),
    ("twilio://sid:tok@x", "channels.sms.url: unknown channel scheme 'twilio'; known schemes: "
                           "netgsm, outbox, smtp, smtps, webhook, webhooks"),
    ("netgsm://api.netgsm.com.tr?header=X1X", "channels.sms.url: netgsm:// needs the API user code and "
                                              "password: netgsm://USERCODE:PASSWORD@api.netgsm.com.tr"
                                              "?header=ORIGINATOR"),
    ("smtp://kampanya@mail.example.com", "channels.sms.url: the password is missing: write "
                                         "smtp://USER:PASSWORD@HOST, or neither for a server without AUTH"),
    ("netgsm://u:topsecret@?hedaer=X", "channels.sms.url: unknown option 'hedaer' in "
                                       "netgsm://u:***@?hedaer=X; known options: appname, base, header, "
                                       "partnercode, timeout"),
])
def test_configuration_errors_name_the_key(url: str, message: str) -> None:
    with pytest.raises(ChannelConfigError) as caught:
        adapter_for(url, "channels.sms.url")
    error = caught.value
    assert str(error) == message
    assert error.field == "channels.sms.url"
    assert error.exit_code == 2
    assert isinstance(error, ConfigError) and isinstance(error, ChannelError)
    assert "topsecret" not in str(error)


def test_a_broken_password_never_shows_in_the_error() -> None:
    with pytest.raises(ChannelConfigError) as caught:
        adapter_for("netgsm://8503020000:s3cr#topsecret@api.netgsm.com.tr", "channels.sms.url")
    assert "s3cr" not in str(caught.value) and "topsecret" not in str(caught.value)


@pytest.mark.parametrize(("url", "redacted"), [
    ("smtp://user:p%40ss@host:587?starttls=1", "smtp://user:***@host:587?starttls=1"),
    ("smtp://user@host", "smtp://user@host"),
    ("smtp://u%40x.com:a@b@host", "smtp://u%40x.com:***@host"),
    ("netgsm://8503020000:s3cret@?header=ORNEK", "netgsm://8503020000:***@?header=ORNEK"),
    ("webhooks://h/p?token=abc&from=X", "webhooks://h/p?token=***&from=X"),
    ("webhooks://h/p?from=X&Token=abc#frag", "webhooks://h/p?from=X&Token=***#frag"),
    ("webhooks://h/p?api_key=1&secret=2&password=3", "webhooks://h/p?api_key=***&secret=***&password=***"),
    ("outbox://outbox", "outbox://outbox"),
    ("not a url", "not a url"),
    ("smtp://host:25?from=a@b.co", "smtp://host:25?from=a@b.co"),
    ("smtp://u:p@host?from=a@b.co", "smtp://u:***@host?from=a@b.co"),
    # a password with an unencoded # or ? breaks the URL, and is still hidden
    ("netgsm://u:s3cr#t@api.netgsm.com.tr?header=X", "netgsm://u:***@api.netgsm.com.tr?header=X"),
    ("smtp://u:a?b@host:25/", "smtp://u:***@host:25/"),
])
def test_redaction(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


# --- plug-ins through the izin.channels entry-point group ---------------------------------------


PLUGIN = '''
from izin.channels.base import ChannelAdapter, Receipt


class FakeSmsAdapter(ChannelAdapter):
    scheme = "fakesms"
    channel = "sms"
    max_segments = 3

    def __init__(self, url):
        self.url = url
        self.sent = []

    @classmethod
    def from_url(cls, url):
        if "bad" in url:
            raise ValueError("the fake provider needs a good URL")
        return cls(url)

    def send(self, message):
        self.sent.append(message)
        return Receipt(provider_id=f"fake-{message.delivery_id}")


class NotAnAdapter:
    pass


class HijackSmtp(FakeSmsAdapter):
    scheme = "smtp"
'''


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real installed distribution (a .dist-info on sys.path) declaring entry points."""
    (tmp_path / "izin_fake_plugin.py").write_text(PLUGIN)
    dist = tmp_path / "izin_fake_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: izin-fake-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent("""\
        [izin.channels]
        fakesms = izin_fake_plugin:FakeSmsAdapter
        notadapter = izin_fake_plugin:NotAnAdapter
        broken = izin_fake_plugin_missing:Adapter
        smtp = izin_fake_plugin:HijackSmtp
        """))
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.mark.usefixtures("plugin")
def test_a_plugin_adapter_is_found_by_its_scheme() -> None:
    adapter = adapter_for("fakesms://anything", "channels.sms.url")
    assert type(adapter).__name__ == "FakeSmsAdapter"
    assert known_schemes() == ["netgsm", "outbox", "smtp", "smtps", "webhook", "webhooks",
                               "broken", "fakesms", "notadapter"]


@pytest.mark.usefixtures("plugin")
def test_a_plugin_cannot_take_over_a_builtin_scheme() -> None:
    assert type(adapter_for("smtp://mail.example.com", "channels.email.url")) is SmtpAdapter


@pytest.mark.usefixtures("plugin")
@pytest.mark.parametrize(("url", "message"), [
    ("fakesms://bad", "channels.sms.url: fakesms://bad: the fake provider needs a good URL"),
    ("notadapter://x", "channels.sms.url: the 'notadapter' entry point (izin_fake_plugin:NotAnAdapter) "
                       "is not a ChannelAdapter subclass"),
    ("broken://x", "channels.sms.url: the 'broken' adapter (izin_fake_plugin_missing:Adapter) cannot be "
                   "loaded: No module named 'izin_fake_plugin_missing'"),
])
def test_plugin_failures_are_configuration_errors(url: str, message: str) -> None:
    with pytest.raises(ChannelConfigError) as caught:
        adapter_for(url, "channels.sms.url")
    assert str(caught.value) == message


# --- both channels from the settings -----------------------------------------------------------


def test_default_settings_share_one_outbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    adapters = open_channels(Settings().channels)
    assert set(adapters) == {"email", "sms"}
    assert adapters["email"] is adapters["sms"]
    assert isinstance(adapters["email"], OutboxAdapter)
    assert adapters["email"].directory == tmp_path / "outbox"


def test_each_channel_gets_its_adapter() -> None:
    adapters = open_channels({"email": "smtp://mail.example.com?from=k@ornek.com.tr",
                              "sms": "netgsm://u:p@?header=ORNEKTIC"})
    assert (type(adapters["email"]), type(adapters["sms"])) == (SmtpAdapter, NetgsmAdapter)


@pytest.mark.parametrize(("channels", "message"), [
    ({"email": "netgsm://u:p@"}, "channels.email.url: netgsm:// sends sms, not email; use one of "
                                 "outbox://, smtp://, smtps://"),
    ({"email": "outbox://o", "sms": "smtp://h"}, "channels.sms.url: smtp:// sends email, not sms; use one of "
                                                  "outbox://, netgsm://, webhook://, webhooks://"),
    ({"sms": "foo://x"}, "channels.sms.url: unknown channel scheme 'foo'; known schemes: "
                         "netgsm, outbox, smtp, smtps, webhook, webhooks"),
])
def test_an_adapter_on_the_wrong_channel(channels: dict[str, str], message: str) -> None:
    with pytest.raises(ChannelConfigError) as caught:
        open_channels(channels)
    assert str(caught.value) == message


# --- the error tree ----------------------------------------------------------------------------


def test_error_tree() -> None:
    assert channel_errors.__all__ == ["ChannelAccountError", "ChannelConfigError", "ChannelError",
                                      "PermanentChannelError", "TransientChannelError"]
    assert issubclass(ChannelError, IzinError)
    assert ChannelConfigError.__mro__[1:4] == (ChannelError, ConfigError, InputError)
    assert issubclass(TransientChannelError, ChannelError) and not issubclass(TransientChannelError, InputError)
    assert issubclass(ChannelAccountError, PermanentChannelError)
    assert (ChannelError.exit_code, ChannelConfigError.exit_code) == (1, 2)


def test_errors_carry_their_context() -> None:
    transient = TransientChannelError("Netgsm code 80: rate", adapter="netgsm", status_code=200,
                                      provider_code="80", retry_after_s=2.5)
    assert (str(transient), transient.adapter, transient.status_code, transient.provider_code,
            transient.retry_after_s) == ("Netgsm code 80: rate", "netgsm", 200, "80", 2.5)
    permanent = PermanentChannelError("550 5.1.1 unknown", adapter="smtp", status_code=550,
                                      provider_code="5.1.1", address_invalid=True)
    assert (permanent.address_invalid, permanent.message) == (True, "550 5.1.1 unknown")
    config = ChannelConfigError("bad", field="channels.email.url", adapter="smtp")
    assert (str(config), config.message, config.field, config.adapter, config.status_code) == (
        "channels.email.url: bad", "bad", "channels.email.url", "smtp", None)


# --- the stub for worker tests -----------------------------------------------------------------


def test_stub_adapter_records_and_fails_on_demand(fixed_now: datetime) -> None:
    stub = StubAdapter()
    message = OutgoingMessage(delivery_id=5, channel="sms", to="+905321234567", commercial=False,
                              sms_text="Kargonuz yolda")
    stub.fail_next(TransientChannelError("busy", adapter="stub", retry_after_s=1.0))
    with pytest.raises(TransientChannelError):
        stub.send(message)
    assert stub.send(message) == Receipt(provider_id="stub-5", segments=1, accepted_at=fixed_now)
    assert (stub.attempts, stub.sent) == ([message, message], [message])
    with stub:
        pass
    assert stub.closed
    assert "stub" not in known_schemes()
