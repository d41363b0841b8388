"""The `izin` command: a thin Click shell over the library. Errors of our own become a one-line
message and the contract's exit status (2 input, 3 service); nothing of ours prints a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click
from rich.console import Console

from izin import __version__
from izin.config import DEFAULT_SECRET, Settings, load_settings
from izin.db import Database
from izin.errors import IzinError, ServiceUnavailable

#: progress bars, warnings and summaries go to stderr so stdout stays machine-readable
stderr = Console(stderr=True)


@dataclass
class AppContext:
    """What every command needs, built once and only when first asked for."""

    config_path: str | None
    _settings: Settings | None = None
    _db: Database | None = None
    _closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings

    def database(self, *, check: bool = True) -> Database:
        """The database; by default refuse one `izin init` has not prepared."""
        if self._db is None:
            self._db = Database(self.settings.database.url)
            self._closers.append(self._db.dispose)
        if check:
            self._db.check_schema()
        return self._db

    @property
    def secret(self) -> str:
        secret = self.settings.web.secret_key
        if secret == DEFAULT_SECRET:
            stderr.print("[yellow]warning:[/] the secret key is the default 'change-me'; set IZIN_SECRET_KEY "
                         "or \\[web] secret_key before going live")
        return secret

    def close(self) -> None:
        for closer in self._closers:
            closer()


class IzinGroup(click.Group):
    """A group whose commands turn izin's own errors into messages and exit codes."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # a byte that is not UTF-8 reaches Python as a lone surrogate, which the database, the
        # ledger's hash and the terminal all refuse: stop it here, as a usage error (exit 2)
        for arg in args:
            try:
                arg.encode("utf-8")
            except UnicodeEncodeError:
                raise click.UsageError(f"{arg!r} is not UTF-8 text; pass names and values as UTF-8 "
                                       "(rename a file whose name is not)", ctx=ctx) from None
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except IzinError as exc:
            for line in str(exc).splitlines():
                click.echo(f"izin: error: {line}", err=True)
            ctx.exit(exc.exit_code)


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """--json: exactly one JSON document on stdout."""
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")(f)


def rejects_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--rejects", type=click.Path(dir_okay=False), default=None,
                        help="Where to write rejected rows with line and reason [default: FILE.rejects.csv].")(f)


def emit_json(document: Any) -> None:
    click.echo(json.dumps(document, ensure_ascii=False, indent=2, default=str))


def pass_app(f: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return f(click.get_current_context().find_object(AppContext), *args, **kwargs)
    return wrapper


@click.group(cls=IzinGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Configuration file [default: $IZIN_CONFIG, else ./izin.toml, else built-in defaults].")
@click.version_option(__version__, prog_name="izin")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """izin: consent-first campaigns by email and SMS (law 6563, İYS).

    Every message goes only to an address whose opt-in is on record at the moment of sending,
    and the proof is kept. Start with `izin init`, import contacts and consents, then export and
    verify the audit log.
    """
    app = AppContext(config_path)
    ctx.obj = app
    ctx.call_on_close(app.close)


@cli.command()
@pass_app
def init(app: AppContext) -> None:
    """Create the database or upgrade it to this version's schema."""
    from izin.db import upgrade

    db = app.database(check=False)
    before, after = upgrade(db)
    if before == after:
        click.echo(f"database {db.redacted_url} is up to date (schema {after})")
    elif before is None:
        click.echo(f"created database {db.redacted_url} (schema {after})")
    else:
        click.echo(f"upgraded database {db.redacted_url} from schema {before} to {after}")


def _register() -> None:
    from izin.campaigns.cli import campaign, scheduler, worker
    from izin.consent.cli import audit, consent, contacts, events, serve
    from izin.consent.iys.cli import iys

    for group in (contacts, events, consent, campaign, worker, scheduler, serve, audit, iys):
        cli.add_command(group)


_register()


def main() -> None:
    """Console-script entry point."""
    try:
        cli.main(prog_name="izin")
    except ServiceUnavailable as exc:  # raised while closing, outside a command
        click.echo(f"izin: error: {exc}", err=True)
        sys.exit(3)
