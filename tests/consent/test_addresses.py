"""Email and phone normalisation: what the ledger and İYS key consent by."""

from __future__ import annotations

import pytest

from izin.consent.addresses import AddressError, Phone, normalise_email, normalise_phone

PHONE_HINT = "(e.g. 0532 123 45 67 or +90 532 123 45 67)"


@pytest.mark.parametrize(("text", "expected"), [
    # lower-cased as a whole: local part too, because İYS takes lower case only
    ("Ayse.Yilmaz@Example.com", "ayse.yilmaz@example.com"),
    ("ALI@EXAMPLE.COM.TR", "ali@example.com.tr"),
    ("mehmet.demir@example.com", "mehmet.demir@example.com"),
    ("  zeynep@example.com.tr \t", "zeynep@example.com.tr"),
    ("first+tag@example.co.uk", "first+tag@example.co.uk"),
    ("a@bc.de", "a@bc.de"),
    # an internationalised domain is stored in its ASCII (punycode) form, so one address has one key
    ("ali@örnek.com.tr", "ali@xn--rnek-4qa.com.tr"),
    ("Ali@ÖRNEK.COM.TR", "ali@xn--rnek-4qa.com.tr"),
    ("ayse@şirket.com", "ayse@xn--irket-idb.com"),
])
def test_valid_emails(text, expected):
    assert normalise_email(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("ayşe@example.com", "'ayşe@example.com' is not a valid email address: Internationalized characters before "
                         "the @-sign are not supported: 'ş'."),
    ("İbrahim@example.com", "'İbrahim@example.com' is not a valid email address: Internationalized characters "
                            "before the @-sign are not supported: 'İ'."),
    ("elif.sahin@example", "'elif.sahin@example' is not a valid email address: The part after the @-sign is not "
                           "valid. It should have a period."),
    ("no-at-sign.example.com", "'no-at-sign.example.com' is not a valid email address: An email address must "
                               "have an @-sign."),
    ("a..b@example.com", "'a..b@example.com' is not a valid email address: An email address cannot have two "
                         "periods in a row."),
    ("user@[127.0.0.1]", "'user@[127.0.0.1]' is not a valid email address: A bracketed IP address after the "
                         "@-sign is not allowed here."),
    ('"a b"@example.com', "'\"a b\"@example.com' is not a valid email address: Quoting the part before the "
                          "@-sign is not allowed here."),
    ("a@b.c", "'a@b.c' is not a valid email address: İYS takes 6 to 265 characters"),
    ("ali @example.com", "'ali @example.com' is not a valid email address: The email address contains invalid "
                         "characters before the @-sign: SPACE."),
])
def test_invalid_emails(text, message):
    with pytest.raises(AddressError) as caught:
        normalise_email(text)
    assert str(caught.value) == message


def test_email_needs_no_dns():
    # a domain that certainly has no mail server is still accepted: no DNS look-up is made
    assert normalise_email("x@no-such-domain.invalid-tld-for-tests") == "x@no-such-domain.invalid-tld-for-tests"


@pytest.mark.parametrize(("text", "expected"), [
    # Turkish mobiles in every common form
    ("0532 111 22 33", Phone("+905321112233", True)),
    ("05321112233", Phone("+905321112233", True)),
    ("5321112233", Phone("+905321112233", True)),
    ("532 111 2233", Phone("+905321112233", True)),
    ("+90 532 111 22 33", Phone("+905321112233", True)),
    ("+905321112233", Phone("+905321112233", True)),
    ("905321112233", Phone("+905321112233", True)),
    ("0090 532 111 22 33", Phone("+905321112233", True)),
    ("+90 (533) 222 33 44", Phone("+905332223344", True)),
    ("0 (532) 111-22-33", Phone("+905321112233", True)),
    ("0532.111.22.33", Phone("+905321112233", True)),
    ("  0544 333 44 55  ", Phone("+905443334455", True)),
    ("0501 111 22 33", Phone("+905011112233", True)),
    # Turkish landlines and service numbers: valid, but no SMS
    ("0212 555 66 77", Phone("+902125556677", False)),
    ("(0212) 555-66-77", Phone("+902125556677", False)),
    ("2125556677", Phone("+902125556677", False)),
    ("+90 312 555 66 77", Phone("+903125556677", False)),
    ("0850 222 00 00", Phone("+908502220000", False)),
    ("444 0 444", Phone("+904440444", False)),
    # foreign numbers keep their own country
    ("+44 7911 123456", Phone("+447911123456", True)),
    ("+49 30 123456", Phone("+4930123456", False)),
    ("+1 650 253 0000", Phone("+16502530000", True)),  # NANP: fixed line or mobile, cannot tell
])
def test_valid_phones(text, expected):
    assert normalise_phone(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("0532 12", f"'0532 12' is not a valid phone number; check the digits {PHONE_HINT}"),
    ("+90 532 111 22 33 44", f"'+90 532 111 22 33 44' is not a valid phone number; check the digits {PHONE_HINT}"),
    ("0000 000 00 00", f"'0000 000 00 00' is not a valid phone number; check the digits {PHONE_HINT}"),
    ("0999 111 22 33", f"'0999 111 22 33' is not a valid phone number; check the digits {PHONE_HINT}"),
    ("+44 1234", f"'+44 1234' is not a valid phone number; check the digits {PHONE_HINT}"),
    ("abc", "'abc' is not a phone number; write e.g. 0532 123 45 67 or +90 532 123 45 67"),
    ("+", "'+' is not a phone number; write e.g. 0532 123 45 67 or +90 532 123 45 67"),
    ("ayse@example.com", "'ayse@example.com' is not a phone number; write e.g. 0532 123 45 67 or +90 532 123 45 67"),
])
def test_invalid_phones(text, message):
    with pytest.raises(AddressError) as caught:
        normalise_phone(text)
    assert str(caught.value) == message


def test_region_applies_only_to_numbers_without_country_code():
    assert normalise_phone("07911 123456", region="GB") == Phone("+447911123456", True)
    assert normalise_phone("+90 532 111 22 33", region="GB") == Phone("+905321112233", True)


def test_phone_validity_is_phonenumbers_own_verdict():
    """normalise_phone asks number_type once instead of is_valid_number and number_type: the same
    answer for numbers of every region and type, and for near misses of them."""
    import random

    import phonenumbers

    rng = random.Random(6563)
    checked = valid = 0
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE, None):
            example = (phonenumbers.example_number_for_type(region, kind) if kind is not None
                       else phonenumbers.example_number(region))
            if example is None:
                continue
            digits = str(example.national_number)
            for variant in (digits, digits[:-1], digits + "7", digits[::-1],
                            "".join(rng.choice("0123456789") if rng.random() < 0.3 else c for c in digits)):
                text = f"+{example.country_code} {variant}"
                try:
                    number = phonenumbers.parse(text, "TR")
                except phonenumbers.NumberParseException:
                    continue
                expected = phonenumbers.is_valid_number(number)
                try:
                    phone = normalise_phone(text)
                except AddressError:
                    assert not expected, text
                    continue
                assert expected, text
                assert phone == Phone(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
                                      phonenumbers.number_type(number) in (phonenumbers.PhoneNumberType.MOBILE,
                                      phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)), text
                valid += 1
            checked += 1
    assert checked > 500 and valid > 500


def test_a_domain_is_checked_once_and_its_errors_every_time():
    from izin.consent import addresses

    check = addresses._validate_email_module.validate_email_domain_name
    before = check.cache_info()
    assert [normalise_email(f"kisi{i}@alan-adi-{before.misses}.com.tr") for i in range(3)] == [
        f"kisi{i}@alan-adi-{before.misses}.com.tr" for i in range(3)]
    after = check.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 2)
    for _ in range(2):  # an invalid domain is refused with the same message each time
        with pytest.raises(AddressError) as caught:
            normalise_email("kisi@alan_adi.com")
        assert str(caught.value) == ("'kisi@alan_adi.com' is not a valid email address: The part after the "
                                     "@-sign contains invalid characters: '_'.")
