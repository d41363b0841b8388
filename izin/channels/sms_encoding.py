"""SMS sizing: which GSM 03.38 / 3GPP TS 23.038 encoding a text needs and how many parts it costs.

Facts and limits come from /work/shared/reference/legal-6563-iys-kvkk.md section 4.3 and match
Verimor's datacoding 0 (``gsm7``), 1 (``gsm7-tr``) and 2 (``ucs2``). The text is counted exactly as
given: normalise it to NFC first, or a decomposed "ş" (s + combining cedilla) will count as UCS-2.

``gsm7-tr`` is what Turkish providers send as "Turkish" data coding: the Turkish national *locking*
shift table (3GPP TS 23.038 A.3.1) replaces the default alphabet, so Ğ ğ İ ı Ş ş ç cost one septet
each (Verimor: datacoding 1 holds 155/298/447...1043 characters and "only Ş ş Ğ ğ ç ı İ count as
Turkish"; Infobip: "ğ Ğ via locking shift at 1 GSM-7 char"). The locking table gives up
è ì Ø ø Æ æ ¡ ¿ to make room, so a text that needs both goes as UCS-2: text is never
transliterated to fit a cheaper encoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Encoding = Literal["gsm7", "gsm7-tr", "ucs2"]

#: The 127 characters of the GSM 03.38 default alphabet (0x1B is ESC, not a character).
#: 0x09 is taken as capital Ç, as in the spec text; Unicode's GSM0338.TXT maps it to small ç, so
#: phones disagree on it and ç is left to the Turkish table, as Verimor does
#: ("only Ş ş Ğ ğ ç ı İ count as Turkish; Ö ö Ü ü Ç go as datacoding=0").
GSM7_DEFAULT: frozenset[str] = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)

#: Extension-table characters: sent as ESC + code, so each costs 2 septets, also under the
#: Turkish table (the locking table holds € at one septet, but Verimor counts € as 2 in every
#: data coding; counting 2 can only over-estimate, never cut a message short).
GSM7_EXTENSION: frozenset[str] = frozenset("\f^{}\\[]~|€")

#: Turkish letters outside the default alphabet. The Turkish locking shift table (Annex A.3.1,
#: NLI 1) puts each at one septet; its UDH header cuts capacity to 155/149.
TURKISH_SHIFT: frozenset[str] = frozenset("ĞğİıŞşç")

#: Default-alphabet characters whose codes the Turkish locking shift table gives to the Turkish
#: letters (è→€, ì→ı, Ø→Ğ, ø→ğ, Æ→Ş, æ→ş, ¡→İ, ¿→ç): with a Turkish letter they force UCS-2.
LOCKING_SHIFT_DROPPED: frozenset[str] = frozenset("èìØøÆæ¡¿")

# (single message, per part when concatenated), in septets for GSM-7 and UTF-16 units for UCS-2.
# The 140-octet payload loses the UDH: NLI locking shift 3+1 octets, concatenation 5(+1) octets.
_CAPACITY_UNITS: dict[str, tuple[int, int]] = {
    "gsm7": (160, 153),
    "gsm7-tr": (155, 149),
    "ucs2": (70, 67),
}

# Every part must still hold one 2-unit character (escape pair or surrogate pair), whatever the
# encoding turns out to be, so one bound serves all texts.
_MAX_RESERVE_UNITS = min(part for _, part in _CAPACITY_UNITS.values()) - 2


@dataclass(frozen=True, slots=True)
class SmsLength:
    """Encoding, size and part count of one SMS text."""

    #: ``"gsm7"``, ``"gsm7-tr"`` (GSM-7 with the Turkish locking shift table) or ``"ucs2"``.
    encoding: Encoding
    #: Septets for GSM-7 (escape characters count 2), UTF-16 code units for UCS-2 (emoji count 2).
    units: int
    #: Parts the operator bills; 1 for the empty text.
    segments: int
    #: Units that fit in a single, unconcatenated message, after the reserve.
    single_limit: int
    #: Units that fit in each part of a concatenated message, after the reserve.
    part_limit: int


def encode_info(text: str, *, reserve: int = 0) -> SmsLength:
    """Pick the cheapest encoding for ``text``; count units and parts with ``reserve`` kept free."""
    _check_reserve(reserve)
    encoding = _detect_encoding(text)
    single_units, part_units = _CAPACITY_UNITS[encoding]
    single_limit = single_units - reserve
    part_limit = part_units - reserve

    costs_units = [_cost_units(char, encoding) for char in text]
    units = sum(costs_units)
    if units <= single_limit:
        segments = 1
    else:
        segments = _count_parts(costs_units, part_limit)
    return SmsLength(encoding, units, segments, single_limit, part_limit)


def max_chars(encoding: Encoding, segments: int, reserve: int = 0) -> int:
    """Most units (characters, when none costs 2) that fit in ``segments`` parts of ``encoding``."""
    if encoding not in _CAPACITY_UNITS:
        raise ValueError(f"unknown SMS encoding {encoding!r}; expected one of gsm7, gsm7-tr, ucs2")
    if segments < 1:
        raise ValueError(f"segments must be at least 1, got {segments}")
    _check_reserve(reserve)
    single_units, part_units = _CAPACITY_UNITS[encoding]
    if segments == 1:
        return single_units - reserve
    return segments * (part_units - reserve)


def _check_reserve(reserve: int) -> None:
    if not 0 <= reserve <= _MAX_RESERVE_UNITS:
        raise ValueError(f"reserve must be between 0 and {_MAX_RESERVE_UNITS}, got {reserve}")


def _detect_encoding(text: str) -> Encoding:
    needs_turkish = False
    needs_dropped = False
    for char in text:
        if char in GSM7_DEFAULT:
            needs_dropped = needs_dropped or char in LOCKING_SHIFT_DROPPED
            continue
        if char in GSM7_EXTENSION:
            continue
        if char in TURKISH_SHIFT:
            needs_turkish = True
            continue
        return "ucs2"
    if needs_turkish:
        return "ucs2" if needs_dropped else "gsm7-tr"
    return "gsm7"


def _cost_units(char: str, encoding: Encoding) -> int:
    if encoding == "ucs2":
        # Outside the BMP a character is a surrogate pair: two UTF-16 code units.
        return 2 if ord(char) > 0xFFFF else 1
    # Default and Turkish letters are one septet (the Turkish one through the locking table);
    # only the extension characters need ESC + code.
    return 2 if char in GSM7_EXTENSION else 1


def _count_parts(costs_units: list[int], part_limit: int) -> int:
    # Handsets cannot rejoin an escape or surrogate pair cut across parts, so a 2-unit character
    # that does not fit opens the next part; that can cost one part more than ceil(units / limit).
    parts = 1
    used_units = 0
    for cost in costs_units:
        if used_units + cost > part_limit:
            parts += 1
            used_units = cost
        else:
            used_units += cost
    return parts
