"""Unsubscribe tokens: opaque, signed strings that name one (recipient address, channel).

An unsubscribe link and the RFC 8058 one-click POST carry nothing but the token (no cookie, no
login), so the token alone must say whose opt-out it is, resist forgery, and not leak the address
to whoever sees the URL (proxies, link scanners, logs). The server keeps no table of tokens: the
address is recovered from the token itself.

Layout (bytes, then base64url without padding)::

    version (1) | key id (2) | nonce (8) | ciphertext (1 + len(recipient)) | tag (16)

- The plaintext is one channel byte followed by the recipient address in UTF-8.
- It is XORed with a keystream of HMAC-SHA256(enc_key, nonce || counter) blocks: a small stream
  cipher built from the only keyed primitive the standard library has. The random nonce makes
  every token different, so two links never reveal that they name the same address.
- The tag is HMAC-SHA256(mac_key, everything before it), truncated to 128 bits, checked before
  anything is decrypted (encrypt-then-MAC) and compared in constant time.
- ``enc_key``, ``mac_key`` and the key id are derived from the secret with distinct labels, so
  one secret never serves two purposes. The key id picks the verifying secret quickly; every
  configured secret whose id matches is tried, so rotation works: sign with the first secret,
  keep the old ones listed until their links have aged out.

Any token that does not verify (forged, tampered with, truncated, extended, re-encoded, signed
with a key no longer listed) raises ``BadToken`` and nothing else: callers answer 404.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
import secrets as _random

__all__ = ["BadToken", "TOKEN_CHANNELS", "make_token", "read_token", "unsubscribe_url"]

#: Channels a token can name, in the order of their byte codes (never reorder: codes are stored
#: in every link ever sent). Same names as the consent ledger's channels.
TOKEN_CHANNELS = ("email", "sms", "call")

_VERSION = 1
_KEY_ID_BYTES = 2
_NONCE_BYTES = 8
_TAG_BYTES = 16
_HEADER_BYTES = 1 + _KEY_ID_BYTES + _NONCE_BYTES
#: Longest recipient accepted (an email address is at most 320 characters, 4 bytes each at worst).
_MAX_RECIPIENT_BYTES = 320 * 4
_MAX_TOKEN_BYTES = _HEADER_BYTES + 1 + _MAX_RECIPIENT_BYTES + _TAG_BYTES
# base64url of _MAX_TOKEN_BYTES, rounded up: longer input is refused before any decoding work.
_MAX_TOKEN_CHARS = (_MAX_TOKEN_BYTES * 4 + 2) // 3
_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")


class BadToken(ValueError):
    """The token is not one this server issued with a listed key (or it was altered)."""


def _derive(secret: str, label: bytes) -> bytes:
    if not isinstance(secret, str) or not secret:
        raise ValueError("an unsubscribe secret must be a non-empty string")
    return hmac.new(secret.encode("utf-8"), b"izin/unsubscribe/" + label, hashlib.sha256).digest()


@functools.lru_cache(maxsize=16)
def _keys(secret: str) -> tuple[bytes, bytes, bytes]:
    """(key id, encryption key, MAC key) of one secret (derived once: every message's link needs them)."""
    key_id = _derive(secret, b"key-id")[:_KEY_ID_BYTES]
    return key_id, _derive(secret, b"encrypt"), _derive(secret, b"mac")


def _keystream(enc_key: bytes, nonce: bytes, length: int) -> bytes:
    blocks = []
    for counter in range((length + 31) // 32):
        blocks.append(hmac.digest(enc_key, nonce + counter.to_bytes(4, "big"), "sha256"))
    return b"".join(blocks)[:length]


def _xor(data: bytes, stream: bytes) -> bytes:
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(len(data), "big")


def _tag(mac_key: bytes, signed: bytes) -> bytes:
    return hmac.digest(mac_key, signed, "sha256")[:_TAG_BYTES]


def make_token(secret: str, recipient: str, channel: str) -> str:
    """An opaque token naming (``recipient``, ``channel``), signed with ``secret``."""
    if channel not in TOKEN_CHANNELS:
        raise ValueError(f"unknown channel {channel!r}; "
                         f"expected one of {', '.join(TOKEN_CHANNELS)}")
    if not isinstance(recipient, str) or not recipient:
        raise ValueError("the recipient address must be a non-empty string")
    address = recipient.encode("utf-8")
    if len(address) > _MAX_RECIPIENT_BYTES:
        raise ValueError(f"the recipient address is longer than {_MAX_RECIPIENT_BYTES} bytes")
    key_id, enc_key, mac_key = _keys(secret)
    nonce = _random.token_bytes(_NONCE_BYTES)
    plaintext = bytes([TOKEN_CHANNELS.index(channel)]) + address
    ciphertext = _xor(plaintext, _keystream(enc_key, nonce, len(plaintext)))
    signed = bytes([_VERSION]) + key_id + nonce + ciphertext
    raw = signed + _tag(mac_key, signed)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode(token: object) -> bytes:
    if not isinstance(token, str) or not 0 < len(token) <= _MAX_TOKEN_CHARS \
            or not _ALPHABET.fullmatch(token):
        raise BadToken("malformed token")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise BadToken("malformed token") from None
    # Base64 has several spellings of the same bytes (unused low bits of the last character):
    # accept only the one make_token writes, so that every changed character is a bad token.
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != token:
        raise BadToken("malformed token")
    return raw


def read_token(secrets: list[str], token: str) -> tuple[str, str]:
    """The (recipient, channel) a token names; ``BadToken`` unless one of ``secrets`` signed it.

    ``secrets`` lists the current secret first and retired ones after it; all of them verify.
    """
    if isinstance(secrets, str) or not secrets:
        raise ValueError("read_token needs a non-empty list of secrets")
    raw = _decode(token)
    if len(raw) < _HEADER_BYTES + 1 + 1 + _TAG_BYTES or raw[0] != _VERSION:
        raise BadToken("malformed token")
    signed, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
    key_id, nonce = raw[1:1 + _KEY_ID_BYTES], raw[1 + _KEY_ID_BYTES:_HEADER_BYTES]
    for secret in secrets:
        secret_key_id, enc_key, mac_key = _keys(secret)
        # Key ids are public and short: they only skip secrets, the tag alone decides.
        if secret_key_id != key_id or not hmac.compare_digest(_tag(mac_key, signed), tag):
            continue
        ciphertext = signed[_HEADER_BYTES:]
        plaintext = _xor(ciphertext, _keystream(enc_key, nonce, len(ciphertext)))
        channel_code, address = plaintext[0], plaintext[1:]
        try:
            # Only this code signs tokens, so these fail only if the key itself leaked and was
            # used to sign garbage; still, never let that reach the caller as anything but BadToken.
            return address.decode("utf-8"), TOKEN_CHANNELS[channel_code]
        except (UnicodeDecodeError, IndexError):
            raise BadToken("malformed token") from None
    raise BadToken("unknown or altered token")


def unsubscribe_url(base_url: str, secret: str, recipient: str, channel: str) -> str:
    """The unsubscribe link (and RFC 8058 one-click URI) for ``recipient`` on ``channel``."""
    return f"{base_url.rstrip('/')}/u/{make_token(secret, recipient, channel)}"
