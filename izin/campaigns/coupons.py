"""Coupon codes: unguessable ``PREFIX-XXXXXXXX`` codes that survive being retyped from an SMS."""

from __future__ import annotations

import re
import secrets

#: Code symbols: A-Z and 2-9 without I, O, 0 and 1, which customers confuse when retyping.
ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"

#: Random symbols after the prefix.
CODE_LENGTH = 8

#: Longest prefix accepted, in characters.
PREFIX_MAX_CHARS = 16

# 32 symbols are exactly 5 bits each, so 40 random bits map onto a code with no modulo bias.
_BITS_PER_SYMBOL = 5
_SYMBOL_MASK = (1 << _BITS_PER_SYMBOL) - 1
_RANDOM_BITS = _BITS_PER_SYMBOL * CODE_LENGTH

_PREFIX_PATTERN = re.compile(rf"[A-Z0-9]{{1,{PREFIX_MAX_CHARS}}}")
_CODE_PATTERN = re.compile(
    rf"(?P<prefix>[A-Z0-9]{{1,{PREFIX_MAX_CHARS}}})-[{ALPHABET}]{{{CODE_LENGTH}}}"
)


def new_code(prefix: str) -> str:
    """Return a fresh ``PREFIX-XXXXXXXX`` code drawn from the OS CSPRNG."""
    _check_prefix(prefix)
    # 40 bits is unguessable for a shop coupon but not collision-free at scale (about 0.5 % chance
    # of one duplicate among 100,000 codes): storage must keep a unique index and redraw on clash.
    value = secrets.randbits(_RANDOM_BITS)
    symbols = [
        ALPHABET[(value >> (_BITS_PER_SYMBOL * position)) & _SYMBOL_MASK]
        for position in reversed(range(CODE_LENGTH))
    ]
    return f"{prefix}-{''.join(symbols)}"


def is_valid_code(code: str, prefix: str | None = None) -> bool:
    """Tell whether ``code`` is well formed, and carries ``prefix`` when one is given."""
    if prefix is not None:
        _check_prefix(prefix)
    if not isinstance(code, str):
        return False
    # fullmatch, not match with $: "$" would also accept a trailing newline.
    match = _CODE_PATTERN.fullmatch(code)
    if match is None:
        return False
    return prefix is None or match.group("prefix") == prefix


def _check_prefix(prefix: str) -> None:
    if not isinstance(prefix, str):
        raise TypeError(f"coupon prefix must be a str, got {type(prefix).__name__}")
    if not 1 <= len(prefix) <= PREFIX_MAX_CHARS:
        raise ValueError(
            f"coupon prefix must be 1-{PREFIX_MAX_CHARS} characters long, got {len(prefix)}"
        )
    if _PREFIX_PATTERN.fullmatch(prefix) is None:
        raise ValueError(
            f"coupon prefix may contain only A-Z and 0-9 (upper case, no '-'), got {prefix!r}"
        )
