"""Email and phone normalisation: the forms the ledger and İYS key consent by."""

from __future__ import annotations

from dataclasses import dataclass

import phonenumbers
from email_validator import EmailNotValidError, validate_email

#: region assumed for phone numbers written without a country code
DEFAULT_REGION = "TR"
_MOBILE_TYPES = (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)


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
    if not phonenumbers.is_valid_number(number):
        raise AddressError(f"{_shown(value)} is not a valid phone number; check the digits "
                           "(e.g. 0532 123 45 67 or +90 532 123 45 67)")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return Phone(e164=e164, mobile=phonenumbers.number_type(number) in _MOBILE_TYPES)
