"""Email and phone normalisation: the forms the ledger and İYS key consent by."""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass

import phonenumbers
from email_validator import EmailNotValidError, validate_email

#: region assumed for phone numbers written without a country code
DEFAULT_REGION = "TR"
_MOBILE_TYPES = (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)
#: distinct email domains whose check is remembered (an import has a few hundred in a million rows)
DOMAIN_CACHE_SIZE = 8192

# email-validator checks the domain (IDNA and UTS-46, character by character) on every call, which
# is most of its cost. That check is a pure function of its arguments, so validate_email's own call
# is routed through a bounded cache: the same answers, computed once per domain; an invalid domain
# raises anew each time (exceptions are not cached), and the order of the checks is unchanged.
_validate_email_module = importlib.import_module("email_validator.validate_email")
if not hasattr(_validate_email_module.validate_email_domain_name, "cache_info"):  # once, even if reloaded
    _validate_email_module.validate_email_domain_name = functools.lru_cache(maxsize=DOMAIN_CACHE_SIZE)(
        _validate_email_module.validate_email_domain_name)


class AddressError(ValueError):
    """An address that cannot be used; the message says why and what to write instead."""


#: how much of a refused value a message quotes (a 60,000-character cell would fill the rejects file)
_SHOWN_CHARS = 80


def _shown(value: str) -> str:
    return repr(value) if len(value) <= _SHOWN_CHARS else repr(value[:_SHOWN_CHARS]) + "..."


def normalise_email(text: str) -> str:
    """Validate an email without DNS and return it lower-cased as a whole, as İYS stores it.

    Strict: a local part over 64 characters (RFC 5321) is refused, since no mail server takes it.
    """
    value = text.strip()
    try:
        result = validate_email(value, check_deliverability=False, allow_smtputf8=False, strict=True)
    except EmailNotValidError as exc:
        raise AddressError(f"{_shown(value)} is not a valid email address: {exc}") from None
    email = (result.ascii_email or result.normalized).lower()
    if not 6 <= len(email) <= 265:
        raise AddressError(f"{_shown(value)} is not a valid email address: İYS takes 6 to 265 characters")
    return email


@dataclass(frozen=True)
class Phone:
    e164: str
    #: phonenumbers deems it possibly mobile: only such numbers may get SMS
    mobile: bool


def normalise_phone(text: str, region: str = DEFAULT_REGION) -> Phone:
    """Parse a phone in any common form; return it as E.164 with whether it can take SMS."""
    value = text.strip()
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        raise AddressError(f"{_shown(value)} is not a phone number; write e.g. 0532 123 45 67 or +90 532 123 45 67") from None
    # phonenumbers reads letters as a keypad would (0532abc4567 -> 0532 222 45 67): a typo would
    # become someone else's number, and consent recorded for it would be that stranger's
    if any(c.isalpha() for c in value):
        raise AddressError(f"{_shown(value)} contains letters; write the number in digits only, "
                           "e.g. 0532 123 45 67 or +90 532 123 45 67")
    # number_type is UNKNOWN exactly when is_valid_number is false (both match the number against
    # its region's patterns, the costly part): one call answers both questions
    kind = phonenumbers.number_type(number)
    if kind == phonenumbers.PhoneNumberType.UNKNOWN:
        raise AddressError(f"{_shown(value)} is not a valid phone number; check the digits "
                           "(e.g. 0532 123 45 67 or +90 532 123 45 67)")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return Phone(e164=e164, mobile=kind in _MOBILE_TYPES)
