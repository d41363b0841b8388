"""izin.toml: look-up order, defaults, validation messages (file, key, fix) and env overrides."""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest

from izin.config import Policy, Settings, load_settings
from izin.errors import ConfigError

FULL = """\
[sender]
name = "Örnek Ticaret A.Ş."
mersis = "0123456789000015"
phone = "+90 212 555 00 00"
email = "destek@ornek.com.tr"
sms_header = "ORNEKTIC"
sms_optout = "RET yazip 4609'a gonderin"
[database]
url = "postgresql+psycopg://izin@db/izin"
[broker]
url = "redis://127.0.0.1:6379/0"
[web]
base_url = "http://shop.example:8000"
secret_key = "s3cret"
[channels.email]
url = "smtp://user:pass@host:587?starttls=1&from=kampanya@ornek.com.tr"
[channels.sms]
url = "outbox:///var/izin/sms"
[policy]
timezone = "Europe/London"
send_window = "08:30-20:00"
frequency_cap = "2/1w"
retention = "5y"
[iys]
base_url = "http://127.0.0.1:9999"
username = "u"
password = "p"
iys_code = "123456"
brand_code = "654321"
require_accepted = false
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Every test starts in an empty directory with none of izin's variables set."""
    for name in ("IZIN_CONFIG", "IZIN_DATABASE_URL", "IZIN_BROKER_URL", "IZIN_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def config_error(text: str, name: str = "izin.toml") -> str:
    write(Path(name), text)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.exit_code == 2
    return str(caught.value)


# -- defaults and look-up order -------------------------------------------------------------------

def test_no_file_gives_every_default():
    settings = load_settings()
    assert settings.source == "defaults"
    assert settings.database.url == "sqlite:///izin.db"
    assert settings.broker.url == ""
    assert settings.web.base_url == "http://127.0.0.1:8000"
    assert settings.web.secret_key == "change-me"
    assert {k: v.url for k, v in settings.channels.items()} == {"email": "outbox://outbox", "sms": "outbox://outbox"}
    assert (settings.policy.timezone, settings.policy.send_window, settings.policy.frequency_cap,
            settings.policy.retention) == ("Europe/Istanbul", "09:00-21:00", "3/7d", "3y")
    assert settings.iys is None
    assert settings.sender.name == ""
    assert settings.sender.missing() == ["name", "mersis", "phone", "email"]


def test_full_file_is_read_verbatim():
    write(Path("izin.toml"), FULL)
    s = load_settings()
    assert s.source == "izin.toml"
    assert s.sender.name == "Örnek Ticaret A.Ş."
    assert s.sender.mersis == "0123456789000015"
    assert s.sender.sms_header == "ORNEKTIC"
    assert s.sender.sms_optout == "RET yazip 4609'a gonderin"
    assert s.sender.missing() == []
    assert s.database.url == "postgresql+psycopg://izin@db/izin"
    assert s.broker.url == "redis://127.0.0.1:6379/0"
    assert s.web.base_url == "http://shop.example:8000"
    assert s.web.secret_key == "s3cret"
    assert s.channels["email"].url == "smtp://user:pass@host:587?starttls=1&from=kampanya@ornek.com.tr"
    assert s.channels["sms"].url == "outbox:///var/izin/sms"
    assert s.policy.timezone == "Europe/London"
    assert s.policy.window_local == (time(8, 30), time(20, 0))
    assert s.policy.frequency_cap == "2/1w"
    assert s.policy.retention_years == 5
    assert s.iys is not None
    assert (s.iys.base_url, s.iys.username, s.iys.password, s.iys.iys_code, s.iys.brand_code,
            s.iys.require_accepted) == ("http://127.0.0.1:9999", "u", "p", "123456", "654321", False)


def test_one_channel_section_keeps_the_other_default():
    write(Path("izin.toml"), '[channels.sms]\nurl = "outbox://sms-out"\n')
    s = load_settings()
    assert {k: v.url for k, v in s.channels.items()} == {"email": "outbox://outbox", "sms": "outbox://sms-out"}


def test_iys_defaults_when_present():
    write(Path("izin.toml"), '[iys]\nusername = "u"\npassword = "p"\niys_code = "1"\nbrand_code = "2"\n')
    iys = load_settings().iys
    assert iys is not None
    assert (iys.base_url, iys.require_accepted) == ("https://api.iys.org.tr", True)


def test_explicit_path_wins_over_izin_config_and_cwd(monkeypatch, tmp_path):
    write(tmp_path / "izin.toml", '[web]\nsecret_key = "from-cwd"\n')
    write(tmp_path / "env.toml", '[web]\nsecret_key = "from-env"\n')
    write(tmp_path / "arg.toml", '[web]\nsecret_key = "from-arg"\n')
    monkeypatch.setenv("IZIN_CONFIG", str(tmp_path / "env.toml"))
    s = load_settings(tmp_path / "arg.toml")
    assert (s.web.secret_key, s.source) == ("from-arg", str(tmp_path / "arg.toml"))


def test_izin_config_wins_over_cwd(monkeypatch, tmp_path):
    write(tmp_path / "izin.toml", '[web]\nsecret_key = "from-cwd"\n')
    write(tmp_path / "env.toml", '[web]\nsecret_key = "from-env"\n')
    monkeypatch.setenv("IZIN_CONFIG", "env.toml")
    s = load_settings()
    assert (s.web.secret_key, s.source) == ("from-env", "env.toml")


def test_empty_izin_config_means_unset(monkeypatch):
    write(Path("izin.toml"), '[web]\nsecret_key = "from-cwd"\n')
    monkeypatch.setenv("IZIN_CONFIG", "")
    assert load_settings().web.secret_key == "from-cwd"


def test_missing_explicit_file_is_an_error():
    with pytest.raises(ConfigError) as caught:
        load_settings("nowhere.toml")
    assert str(caught.value) == "nowhere.toml: no such configuration file; check --config or IZIN_CONFIG"
    assert caught.value.file == "nowhere.toml"


def test_missing_izin_config_file_is_an_error(monkeypatch):
    monkeypatch.setenv("IZIN_CONFIG", "gone.toml")
    with pytest.raises(ConfigError, match=r"^gone\.toml: no such configuration file; check --config or IZIN_CONFIG$"):
        load_settings()


def test_a_folder_named_izin_toml_is_not_a_file():
    Path("izin.toml").mkdir()
    assert load_settings().source == "defaults"


# -- environment overrides ------------------------------------------------------------------------

def test_env_overrides_the_file(monkeypatch):
    write(Path("izin.toml"), FULL)
    monkeypatch.setenv("IZIN_DATABASE_URL", "sqlite:///other.db")
    monkeypatch.setenv("IZIN_BROKER_URL", "redis://cache:6379/1")
    monkeypatch.setenv("IZIN_SECRET_KEY", "env-secret")
    s = load_settings()
    assert (s.database.url, s.broker.url, s.web.secret_key) == ("sqlite:///other.db", "redis://cache:6379/1",
                                                              "env-secret")
    assert s.web.base_url == "http://shop.example:8000"  # the rest of [web] stays


def test_env_overrides_without_a_file(monkeypatch):
    monkeypatch.setenv("IZIN_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    monkeypatch.setenv("IZIN_SECRET_KEY", "k")
    s = load_settings()
    assert (s.source, s.database.url, s.web.secret_key, s.broker.url) == (
        "defaults", "postgresql+psycopg://postgres@127.0.0.1:5432/test", "k", "")


def test_empty_env_values_do_not_override(monkeypatch):
    write(Path("izin.toml"), FULL)
    monkeypatch.setenv("IZIN_DATABASE_URL", "")
    monkeypatch.setenv("IZIN_SECRET_KEY", "")
    s = load_settings()
    assert (s.database.url, s.web.secret_key) == ("postgresql+psycopg://izin@db/izin", "s3cret")


def test_env_override_does_not_hide_a_bad_section(monkeypatch):
    monkeypatch.setenv("IZIN_DATABASE_URL", "sqlite:///x.db")
    assert config_error('database = "sqlite:///y.db"\n') == (
        "izin.toml: database: Input should be a valid dictionary or instance of Database")


# -- validation messages: file, key, what is wrong ------------------------------------------------

@pytest.mark.parametrize(("text", "message"), [
    ('[policy]\ntimezone = "Mars/Olympus"\n',
     "izin.toml: policy.timezone: unknown time zone 'Mars/Olympus'; use an IANA name such as Europe/Istanbul"),
    ('[policy]\ntimezone = "Europe"\n',  # a folder of the zone database, not a zone
     "izin.toml: policy.timezone: unknown time zone 'Europe'; use an IANA name such as Europe/Istanbul"),
    ('[policy]\ntimezone = ""\n',
     "izin.toml: policy.timezone: unknown time zone ''; use an IANA name such as Europe/Istanbul"),
    ('[policy]\nsend_window = "21:00-09:00"\n',
     "izin.toml: policy.send_window: '21:00-09:00' is not a window; write HH:MM-HH:MM with the start first, "
     "e.g. 09:00-21:00"),
    ('[policy]\nsend_window = "09:00-09:00"\n',
     "izin.toml: policy.send_window: '09:00-09:00' is not a window; write HH:MM-HH:MM with the start first, "
     "e.g. 09:00-21:00"),
    ('[policy]\nsend_window = "9:00-21:00"\n',
     "izin.toml: policy.send_window: '9:00-21:00' is not a window; write HH:MM-HH:MM with the start first, "
     "e.g. 09:00-21:00"),
    ('[policy]\nsend_window = "09:00-24:30"\n',
     "izin.toml: policy.send_window: '09:00-24:30' is not a window; write HH:MM-HH:MM with the start first, "
     "e.g. 09:00-21:00"),
    ('[policy]\nsend_window = "09:00-25:00"\n',
     "izin.toml: policy.send_window: '09:00-25:00' is not a window; write HH:MM-HH:MM with the start first, "
     "e.g. 09:00-21:00"),
    ('[policy]\nfrequency_cap = "3 per week"\n',
     "izin.toml: policy.frequency_cap: '3 per week' is not a cap; write COUNT/PERIOD with h, d or w, e.g. 3/7d"),
    ('[policy]\nfrequency_cap = "0/7d"\n',
     "izin.toml: policy.frequency_cap: '0/7d' is not a cap; write COUNT/PERIOD with h, d or w, e.g. 3/7d"),
    ('[policy]\nfrequency_cap = 3\n', "izin.toml: policy.frequency_cap: Input should be a valid string"),
    ('[policy]\nretention = "2y"\n',
     "izin.toml: policy.retention: consent evidence must be kept at least 3 years after the consent ends "
     "(law 6563); use 3y or more"),
    ('[policy]\nretention = "36m"\n',
     "izin.toml: policy.retention: '36m' is not a retention period; write whole years, e.g. 3y"),
    ('[sender]\nmersis = "12345"\n', "izin.toml: sender.mersis: a MERSİS number is 16 digits"),
    ('[sender]\nsms_header = "ÖRNEK"\n',
     "izin.toml: sender.sms_header: an SMS originator is 3-11 ASCII letters, digits or spaces, with no Turkish "
     "letters"),
    ('[sender]\nsms_header = "AB"\n',
     "izin.toml: sender.sms_header: an SMS originator is 3-11 ASCII letters, digits or spaces, with no Turkish "
     "letters"),
    ('[sender]\nsms_header = "ORNEKTICARET"\n',
     "izin.toml: sender.sms_header: an SMS originator is 3-11 ASCII letters, digits or spaces, with no Turkish "
     "letters"),
    ('[database]\nurl = "sqlite:///x.db"\npool = 5\n',
     "izin.toml: database.pool: unknown key; remove it or check its spelling against the README"),
    ('[polcy]\ntimezone = "UTC"\n',
     "izin.toml: polcy: unknown key; remove it or check its spelling against the README"),
    ('[channels.fax]\nurl = "x"\n',
     "izin.toml: channels: unknown channel section 'fax'; use [channels.email] or [channels.sms]"),
    ('[channels.email]\n', "izin.toml: channels.email.url: is required in this section"),
    ('[iys]\nusername = "u"\npassword = "p"\nbrand_code = "2"\n',
     "izin.toml: iys.iys_code: is required in this section"),
    ('[iys]\nusername = "u"\npassword = "p"\niys_code = "1"\nbrand_code = "2"\nrequire_accepted = "maybe"\n',
     "izin.toml: iys.require_accepted: Input should be a valid boolean, unable to interpret input"),
])
def test_validation_names_file_key_and_fix(text, message):
    assert config_error(text) == message


def test_every_problem_is_reported_one_per_line():
    text = '[policy]\ntimezone = "Nowhere/City"\nsend_window = "x"\n[web]\nsecret = "k"\n'
    assert config_error(text).splitlines() == [
        "izin.toml: web.secret: unknown key; remove it or check its spelling against the README",
        "izin.toml: policy.timezone: unknown time zone 'Nowhere/City'; use an IANA name such as Europe/Istanbul",
        "izin.toml: policy.send_window: 'x' is not a window; write HH:MM-HH:MM with the start first, "
        "e.g. 09:00-21:00",
    ]


def test_invalid_toml_names_file_line_and_column():
    assert config_error('[database]\nurl = \n') == (
        "izin.toml: not valid TOML: Invalid value (at line 2, column 7)")


def test_not_utf8():
    Path("izin.toml").write_bytes('[sender]\nname = "Örnek"\n'.encode("cp1254"))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == "izin.toml: is not UTF-8; save it as UTF-8"


def test_a_bom_from_a_windows_editor_is_accepted():
    Path("izin.toml").write_bytes(b"\xef\xbb\xbf" + '[sender]\nname = "Örnek"\n'.encode())
    assert load_settings().sender.name == "Örnek"


def test_the_message_names_the_explicit_file(tmp_path):
    path = write(tmp_path / "prod.toml", '[policy]\nsend_window = "x"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(str(path))
    assert str(caught.value) == (f"{path}: policy.send_window: 'x' is not a window; write HH:MM-HH:MM with the "
                                 "start first, e.g. 09:00-21:00")


# -- derived values -------------------------------------------------------------------------------

@pytest.mark.parametrize(("window", "expected"), [
    ("09:00-21:00", (time(9, 0), time(21, 0))),
    ("00:00-24:00", (time(0, 0), time(23, 59, 59, 999999))),
    ("08:15-08:16", (time(8, 15), time(8, 16))),
])
def test_window_local(window, expected):
    assert Policy(send_window=window).window_local == expected


def test_settings_are_frozen():
    settings = Settings()
    with pytest.raises(Exception, match="frozen"):
        settings.policy.timezone = "UTC"  # type: ignore[misc]


# -- through the CLI ------------------------------------------------------------------------------

def test_cli_reports_a_bad_file_with_exit_2_and_no_traceback(cli):
    write(Path(cli.cwd) / "bad.toml", '[policy]\ntimezone = "Europe"\n')
    result = cli("--config", "bad.toml", "contacts", "import", "x.csv", expect=2)
    assert result.stderr == ("izin: error: bad.toml: policy.timezone: unknown time zone 'Europe'; "
                             "use an IANA name such as Europe/Istanbul\n")
    assert result.stdout == ""


def test_cli_reports_a_missing_config_file(cli):
    result = cli("--config", "missing.toml", "contacts", "import", "x.csv", expect=2)
    assert result.stderr == "izin: error: missing.toml: no such configuration file; check --config or IZIN_CONFIG\n"
