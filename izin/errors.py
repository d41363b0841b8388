"""The error tree of izin. Callers decide by type, never by message.

    IzinError                      exit_code 1 unless a subclass says otherwise
    ├── InputError                 exit 2: bad input from a user; names file, line, field and the fix
    │   ├── ConfigError            izin.toml or an environment variable is wrong
    │   └── NotFound               a contact (or other record) named on the command line does not exist
    ├── ConsentRefused             the ledger refuses an event (İYS upload rules); `.reason` is stable
    └── ServiceUnavailable         exit 3: the database or broker cannot be reached
"""

from __future__ import annotations


class IzinError(Exception):
    """Base of every error izin raises on purpose."""

    exit_code = 1


class InputError(IzinError):
    """Bad input: a file, a row, an option. The message says what to do."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ":".join(str(p) for p in (self.file, self.line) if p is not None)
        prefix = f"{where}: " if where else ""
        field = f"{self.field}: " if self.field else ""
        return f"{prefix}{field}{self.message}"


class ConfigError(InputError):
    """The configuration file or an environment override is invalid."""


class NotFound(InputError):
    """A record named by the user does not exist."""


class ConsentRefused(IzinError):
    """The ledger will not record an event; `reason` is one of the REASONS below."""

    exit_code = 2
    #: stable identifiers of why an event was refused
    REASONS = ("duplicate_status", "future_date", "before_2015", "out_of_order", "no_address",
               "not_mobile", "bad_source", "bad_channel", "bad_status", "bad_recipient_type")

    def __init__(self, reason: str, message: str) -> None:
        assert reason in self.REASONS, reason
        self.reason = reason
        self.message = message
        super().__init__(message)


class ServiceUnavailable(IzinError):
    """A service (database, broker) cannot be reached."""

    exit_code = 3
