"""Unsubscribe tokens: round trip, forgery and tampering, rotation, and no address in clear."""

from __future__ import annotations

import base64

import pytest

from izin.consent.tokens import BadToken, make_token, read_token, unsubscribe_url

SECRET = "s3cret-current"
OLD_SECRET = "s3cret-retired"
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def raw_bytes(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@pytest.mark.parametrize(
    ("recipient", "channel"),
    [
        ("ayse.yilmaz@example.com", "email"),
        ("+905321234567", "sms"),
        ("+905321234567", "call"),
        ("çağrı.öğüt@örnek.com.tr", "email"),  # internationalised address: UTF-8 inside
        ("a@b.co", "email"),
        ("x" * 310 + "@example.com", "email"),
    ],
)
def test_round_trip(recipient, channel):
    token = make_token(SECRET, recipient, channel)
    assert read_token([SECRET], token) == (recipient, channel)


def test_token_is_url_safe_and_compact():
    token = make_token(SECRET, "ayse.yilmaz@example.com", "email")
    assert set(token) <= set(ALPHABET)
    # 1 version + 2 key id + 8 nonce + 1 channel + 23 address + 16 tag = 51 bytes -> 68 characters
    assert len(raw_bytes(token)) == 51
    assert len(token) == 68


def test_two_tokens_for_the_same_address_differ_and_both_read():
    first = make_token(SECRET, "ayse.yilmaz@example.com", "email")
    second = make_token(SECRET, "ayse.yilmaz@example.com", "email")
    assert first != second
    assert read_token([SECRET], first) == read_token([SECRET], second)


@pytest.mark.parametrize(
    ("recipient", "channel"),
    [("ayse.yilmaz@example.com", "email"), ("+905321234567", "sms")],
)
def test_address_is_not_readable_in_the_token(recipient, channel):
    for _ in range(20):
        token = make_token(SECRET, recipient, channel)
        raw = raw_bytes(token)
        for part in (recipient, recipient.split("@")[0], "905321234567", "yilmaz", "example"):
            if part in recipient:
                assert part not in token
                assert part.encode() not in raw
                assert part.lower().encode() not in raw.lower()
        assert channel.encode() not in raw


def test_every_changed_character_is_a_bad_token():
    token = make_token(SECRET, "ayse.yilmaz@example.com", "email")
    for index, char in enumerate(token):
        for replacement in ALPHABET:
            if replacement == char:
                continue
            tampered = token[:index] + replacement + token[index + 1:]
            with pytest.raises(BadToken):
                read_token([SECRET], tampered)


def test_every_flipped_bit_is_a_bad_token():
    raw = raw_bytes(make_token(SECRET, "+905321234567", "sms"))
    for index in range(len(raw)):
        for bit in range(8):
            flipped = bytearray(raw)
            flipped[index] ^= 1 << bit
            with pytest.raises(BadToken):
                read_token([SECRET], encode(bytes(flipped)))


def test_truncated_and_extended_tokens_are_bad():
    token = make_token(SECRET, "ayse.yilmaz@example.com", "email")
    for length in range(len(token)):
        with pytest.raises(BadToken):
            read_token([SECRET], token[:length])
    raw = raw_bytes(token)
    for cut in range(1, len(raw)):
        with pytest.raises(BadToken):
            read_token([SECRET], encode(raw[:cut]))
        with pytest.raises(BadToken):
            read_token([SECRET], encode(raw[cut:]))
    with pytest.raises(BadToken):
        read_token([SECRET], token + "A")
    with pytest.raises(BadToken):
        read_token([SECRET], encode(raw + b"\x00"))


def test_channel_swapped_by_xor_is_bad():
    # Flipping ciphertext bits flips plaintext bits (a stream cipher); the MAC must catch it.
    raw = bytearray(raw_bytes(make_token(SECRET, "+905321234567", "sms")))
    raw[11] ^= 1  # channel byte, if the keystream were known: sms (1) -> email (0)
    with pytest.raises(BadToken):
        read_token([SECRET], encode(bytes(raw)))


@pytest.mark.parametrize(
    "token",
    [
        "",
        "=",
        "not a token",
        "AAAA====",
        "a+b/c",
        "ÇĞİ",
        "A" * 5000,
        "QQ",
        "\x00",
    ],
)
def test_garbage_is_a_bad_token(token):
    with pytest.raises(BadToken):
        read_token([SECRET], token)


@pytest.mark.parametrize("token", [None, 12, b"bytes"])
def test_non_text_is_a_bad_token(token):
    with pytest.raises(BadToken):
        read_token([SECRET], token)  # type: ignore[arg-type]


def test_padding_is_not_accepted():
    token = make_token(SECRET, "a@example.com", "email")  # 41 bytes: 55 characters
    padded = token + "=" * (-len(token) % 4)
    assert padded != token
    with pytest.raises(BadToken):
        read_token([SECRET], padded)


def test_another_key_does_not_verify():
    token = make_token("someone-else", "ayse.yilmaz@example.com", "email")
    with pytest.raises(BadToken):
        read_token([SECRET], token)


def test_rotation_first_secret_signs_all_verify():
    old_token = make_token(OLD_SECRET, "ayse.yilmaz@example.com", "email")
    new_token = make_token(SECRET, "+905321234567", "sms")
    secrets = [SECRET, OLD_SECRET]
    assert read_token(secrets, old_token) == ("ayse.yilmaz@example.com", "email")
    assert read_token(secrets, new_token) == ("+905321234567", "sms")
    # Once the old secret is dropped from the list, its links stop working.
    with pytest.raises(BadToken):
        read_token([SECRET], old_token)


def test_key_id_mismatch_with_a_forged_id_is_bad():
    # Put the current key's id on a token signed with another key: still refused by the tag.
    current = raw_bytes(make_token(SECRET, "a@example.com", "email"))
    other = bytearray(raw_bytes(make_token("attacker", "a@example.com", "email")))
    other[1:3] = current[1:3]
    with pytest.raises(BadToken):
        read_token([SECRET], encode(bytes(other)))


def test_bad_token_is_a_value_error():
    assert issubclass(BadToken, ValueError)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", "a@example.com", "email"), "an unsubscribe secret must be a non-empty string"),
        ((SECRET, "", "email"), "the recipient address must be a non-empty string"),
        ((SECRET, "a@example.com", "fax"), "unknown channel 'fax'; expected one of email, sms, call"),
        ((SECRET, "x" * 1281, "email"), "the recipient address is longer than 1280 bytes"),
    ],
)
def test_make_token_refuses_bad_arguments(args, message):
    with pytest.raises(ValueError) as excinfo:
        make_token(*args)
    assert str(excinfo.value) == message


@pytest.mark.parametrize("secrets", [[], "s3cret"])
def test_read_token_needs_a_list_of_secrets(secrets):
    token = make_token(SECRET, "a@example.com", "email")
    with pytest.raises(ValueError) as excinfo:
        read_token(secrets, token)
    assert str(excinfo.value) == "read_token needs a non-empty list of secrets"


@pytest.mark.parametrize(
    "base_url", ["https://ornek.com.tr", "https://ornek.com.tr/", "http://127.0.0.1:8000"]
)
def test_unsubscribe_url(base_url):
    url = unsubscribe_url(base_url, SECRET, "ayse.yilmaz@example.com", "email")
    prefix = base_url.rstrip("/") + "/u/"
    assert url.startswith(prefix)
    token = url[len(prefix):]
    assert "/" not in token
    assert read_token([SECRET], token) == ("ayse.yilmaz@example.com", "email")


def test_unsubscribe_url_keeps_a_path_prefix():
    url = unsubscribe_url("https://ornek.com.tr/izin/", SECRET, "+905321234567", "sms")
    assert url.startswith("https://ornek.com.tr/izin/u/")
