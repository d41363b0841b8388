"""SMS encoding and part counting against reference section 4.3 and Verimor's published limits."""

import pytest

from izin.channels.sms_encoding import (
    GSM7_DEFAULT,
    GSM7_EXTENSION,
    LOCKING_SHIFT_DROPPED,
    TURKISH_SHIFT,
    SmsLength,
    encode_info,
    max_chars,
)

# Verimor "SMS BOY KARAKTER LİMİTLERİ": most characters for 1..7 parts.
VERIMOR_LIMITS = {
    "gsm7": [160, 306, 459, 612, 765, 918, 1071],
    "gsm7-tr": [155, 298, 447, 596, 745, 894, 1043],
    "ucs2": [70, 134, 201, 268, 335, 402, 469],
}

# GSM 03.38 default alphabet by position 0x00..0x7F as Unicode code points (None = ESC at 0x1B),
# with 0x09 as capital Ç as in the spec text.
GSM_DEFAULT_CODE_POINTS = [
    0x40, 0xA3, 0x24, 0xA5, 0xE8, 0xE9, 0xF9, 0xEC, 0xF2, 0xC7, 0x0A, 0xD8, 0xF8, 0x0D, 0xC5, 0xE5,
    0x394, 0x5F, 0x3A6, 0x393, 0x39B, 0x3A9, 0x3A0, 0x3A8, 0x3A3, 0x398, 0x39E, None, 0xC6, 0xE6,
    0xDF, 0xC9,
    *range(0x20, 0x24), 0xA4, *range(0x25, 0x40),
    0xA1, *range(0x41, 0x5B), 0xC4, 0xD6, 0xD1, 0xDC, 0xA7,
    0xBF, *range(0x61, 0x7B), 0xE4, 0xF6, 0xF1, 0xFC, 0xE0,
]


def one_unit_text(encoding: str, units: int) -> str:
    """A text of ``encoding`` exactly ``units`` long, made of 1-unit characters only."""
    if encoding == "gsm7":
        return "a" * units
    if encoding == "gsm7-tr":
        return "ş" * units
    return "â" * units


# --- tables ---------------------------------------------------------------------------------


def test_default_alphabet_is_exactly_the_gsm_0338_table():
    assert len(GSM_DEFAULT_CODE_POINTS) == 128
    expected = frozenset(chr(cp) for cp in GSM_DEFAULT_CODE_POINTS if cp is not None)
    assert GSM7_DEFAULT == expected
    assert len(GSM7_DEFAULT) == 127


def test_extension_and_turkish_tables_are_exact_and_disjoint():
    assert GSM7_EXTENSION == frozenset({"\x0c", "^", "{", "}", "\\", "[", "]", "~", "|", "\u20ac"})
    assert TURKISH_SHIFT == frozenset(
        {"\u011e", "\u011f", "\u0130", "\u0131", "\u015e", "\u015f", "\u00e7"}
    )
    assert GSM7_DEFAULT.isdisjoint(GSM7_EXTENSION)
    assert GSM7_DEFAULT.isdisjoint(TURKISH_SHIFT)
    assert GSM7_EXTENSION.isdisjoint(TURKISH_SHIFT)
    # The default-table codes the Turkish locking shift table reassigns (A.3.1).
    assert LOCKING_SHIFT_DROPPED == frozenset(
        {"\u00e8", "\u00ec", "\u00d8", "\u00f8", "\u00c6", "\u00e6", "\u00a1", "\u00bf"}
    )
    assert LOCKING_SHIFT_DROPPED < GSM7_DEFAULT


def test_tables_are_frozensets():
    assert type(GSM7_DEFAULT) is frozenset
    assert type(GSM7_EXTENSION) is frozenset
    assert type(TURKISH_SHIFT) is frozenset
    assert type(LOCKING_SHIFT_DROPPED) is frozenset


# --- encoding choice ------------------------------------------------------------------------


def test_empty_text_is_one_gsm7_part_of_zero_units():
    assert encode_info("") == SmsLength("gsm7", 0, 1, 160, 153)


@pytest.mark.parametrize("char", ["Ö", "ö", "Ü", "ü", "Ç"])
def test_turkish_letters_of_the_default_table_stay_gsm7(char):
    assert encode_info(char) == SmsLength("gsm7", 1, 1, 160, 153)


def test_default_table_turkish_letters_together_stay_gsm7():
    assert encode_info("ÖöÜüÇ") == SmsLength("gsm7", 5, 1, 160, 153)


@pytest.mark.parametrize("char", ["ğ", "Ğ", "ı", "İ", "ş", "Ş", "ç"])
def test_each_turkish_letter_switches_to_gsm7_tr_at_one_septet(char):
    # The locking shift table holds the Turkish letters in place of the default ones.
    assert encode_info(char) == SmsLength("gsm7-tr", 1, 1, 155, 149)


def test_all_turkish_letters_cost_one_septet_each():
    assert encode_info("ĞğİıŞşç") == SmsLength("gsm7-tr", 7, 1, 155, 149)


@pytest.mark.parametrize("char", ["Ö", "ö", "Ü", "ü", "Ç", "é", "@", "\n"])
def test_default_letters_kept_by_the_locking_table_cost_one_septet(char):
    assert encode_info("ş" + char) == SmsLength("gsm7-tr", 2, 1, 155, 149)


@pytest.mark.parametrize("char", sorted("èìØøÆæ¡¿"))
def test_a_turkish_letter_with_a_character_the_locking_table_drops_goes_ucs2(char):
    # Nothing is transliterated to fit: the text keeps both characters, in UCS-2.
    assert encode_info("ş" + char) == SmsLength("ucs2", 2, 1, 70, 67)
    assert encode_info(char) == SmsLength("gsm7", 1, 1, 160, 153)


@pytest.mark.parametrize(
    ("text", "units"),
    [
        ("€", 2),
        ("^", 2),
        ("{}", 4),
        ("[]", 4),
        ("\\", 2),
        ("~|", 4),
        ("\f", 2),
        ("Fiyat 100€", 11),
    ],
)
def test_extension_characters_count_two_septets(text, units):
    assert encode_info(text) == SmsLength("gsm7", units, 1, 160, 153)


def test_extension_characters_keep_two_septets_under_the_turkish_table():
    assert encode_info("ş€") == SmsLength("gsm7-tr", 3, 1, 155, 149)
    assert encode_info("ş{}") == SmsLength("gsm7-tr", 5, 1, 155, 149)


def test_realistic_turkish_greeting_counts_one_septet_a_character():
    # 26 characters; ğ comes from the Turkish table, ü from the default one.
    assert encode_info("Doğum gününüz kutlu olsun!") == SmsLength("gsm7-tr", 26, 1, 155, 149)


@pytest.mark.parametrize(
    ("text", "units"),
    [
        ("â", 1),  # Turkish circumflex, not in any GSM table
        ("Hâlâ", 4),
        ("مرحبا", 5),  # Arabic
        ("Привет", 6),
        ("\t", 1),  # tab is not in GSM 03.38
        ("s\u0327", 2),  # decomposed ş: s + combining cedilla
        ("şâ", 2),  # one non-GSM character beats the Turkish table
        ("€â", 2),
    ],
)
def test_characters_outside_gsm_switch_to_ucs2(text, units):
    assert encode_info(text) == SmsLength("ucs2", units, 1, 70, 67)


def test_emoji_counts_two_utf16_units():
    assert encode_info("😀") == SmsLength("ucs2", 2, 1, 70, 67)
    assert encode_info("İndirim 🎉") == SmsLength("ucs2", 10, 1, 70, 67)


# --- boundaries -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a" * 160, SmsLength("gsm7", 160, 1, 160, 153)),
        ("a" * 161, SmsLength("gsm7", 161, 2, 160, 153)),
        ("ş" * 155, SmsLength("gsm7-tr", 155, 1, 155, 149)),
        ("ş" * 156, SmsLength("gsm7-tr", 156, 2, 155, 149)),
        ("ş" * 298, SmsLength("gsm7-tr", 298, 2, 155, 149)),
        ("ş" * 299, SmsLength("gsm7-tr", 299, 3, 155, 149)),
        ("ş" + "a" * 154, SmsLength("gsm7-tr", 155, 1, 155, 149)),
        ("€" + "ş" * 153, SmsLength("gsm7-tr", 155, 1, 155, 149)),
        ("€" + "ş" * 154, SmsLength("gsm7-tr", 156, 2, 155, 149)),
        ("â" * 70, SmsLength("ucs2", 70, 1, 70, 67)),
        ("â" * 71, SmsLength("ucs2", 71, 2, 70, 67)),
        ("€" * 80, SmsLength("gsm7", 160, 1, 160, 153)),
        ("€" * 80 + "a", SmsLength("gsm7", 161, 2, 160, 153)),
        ("😀" * 35, SmsLength("ucs2", 70, 1, 70, 67)),
        ("😀" * 35 + "a", SmsLength("ucs2", 71, 2, 70, 67)),
    ],
)
def test_single_message_boundaries(text, expected):
    assert encode_info(text) == expected


@pytest.mark.parametrize("encoding", ["gsm7", "gsm7-tr", "ucs2"])
@pytest.mark.parametrize("parts", range(1, 8))
def test_verimor_limits_fill_exactly_n_parts(encoding, parts):
    limit = VERIMOR_LIMITS[encoding][parts - 1]
    at_limit = encode_info(one_unit_text(encoding, limit))
    over_limit = encode_info(one_unit_text(encoding, limit + 1))
    assert (at_limit.encoding, at_limit.units, at_limit.segments) == (encoding, limit, parts)
    assert (over_limit.encoding, over_limit.units, over_limit.segments) == (
        encoding,
        limit + 1,
        parts + 1,
    )


@pytest.mark.parametrize("encoding", ["gsm7", "gsm7-tr", "ucs2"])
@pytest.mark.parametrize("parts", range(1, 8))
def test_max_chars_matches_verimor(encoding, parts):
    assert max_chars(encoding, parts) == VERIMOR_LIMITS[encoding][parts - 1]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # 152 + ESC pair does not fit in 153: the pair opens part 2, which then overflows.
        ("a" * 152 + "€" + "a" * 152, SmsLength("gsm7", 306, 3, 160, 153)),
        # Same text with the pair fitting on a part boundary needs only 2.
        ("a" * 151 + "€" + "a" * 153, SmsLength("gsm7", 306, 2, 160, 153)),
        ("ş" * 148 + "€" + "ş" * 148, SmsLength("gsm7-tr", 298, 3, 155, 149)),
        ("ş" * 147 + "€" + "ş" * 149, SmsLength("gsm7-tr", 298, 2, 155, 149)),
        # Surrogate pairs are not split either.
        ("â" * 66 + "😀" + "â" * 66, SmsLength("ucs2", 134, 3, 70, 67)),
        ("â" * 65 + "😀" + "â" * 67, SmsLength("ucs2", 134, 2, 70, 67)),
    ],
)
def test_two_unit_character_never_straddles_a_part_boundary(text, expected):
    assert encode_info(text) == expected


# --- reserve for the operator code ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a" * 155, SmsLength("gsm7", 155, 1, 155, 148)),
        ("a" * 156, SmsLength("gsm7", 156, 2, 155, 148)),
        ("a" * 296, SmsLength("gsm7", 296, 2, 155, 148)),
        ("a" * 297, SmsLength("gsm7", 297, 3, 155, 148)),
        ("ş" * 150, SmsLength("gsm7-tr", 150, 1, 150, 144)),
        ("ş" * 151, SmsLength("gsm7-tr", 151, 2, 150, 144)),
        ("ş" * 288, SmsLength("gsm7-tr", 288, 2, 150, 144)),
        ("ş" * 289, SmsLength("gsm7-tr", 289, 3, 150, 144)),
        ("â" * 65, SmsLength("ucs2", 65, 1, 65, 62)),
        ("â" * 66, SmsLength("ucs2", 66, 2, 65, 62)),
        ("", SmsLength("gsm7", 0, 1, 155, 148)),
    ],
)
def test_reserve_of_five_is_taken_from_both_limits(text, expected):
    assert encode_info(text, reserve=5) == expected


@pytest.mark.parametrize(
    ("encoding", "parts", "expected"),
    [
        ("gsm7", 1, 155),
        ("gsm7", 2, 296),
        ("gsm7", 7, 1036),
        ("gsm7-tr", 1, 150),
        ("gsm7-tr", 2, 288),
        ("ucs2", 1, 65),
        ("ucs2", 2, 124),
    ],
)
def test_max_chars_with_reserve_of_five(encoding, parts, expected):
    assert max_chars(encoding, parts, reserve=5) == expected


def test_largest_reserve_still_leaves_room_for_a_two_unit_character():
    assert encode_info("😀😀😀", reserve=65) == SmsLength("ucs2", 6, 3, 5, 2)


@pytest.mark.parametrize("reserve", [-1, 66])
def test_reserve_out_of_range_is_rejected(reserve):
    with pytest.raises(ValueError) as excinfo:
        encode_info("a", reserve=reserve)
    assert str(excinfo.value) == f"reserve must be between 0 and 65, got {reserve}"


def test_reserve_is_keyword_only():
    with pytest.raises(TypeError):
        encode_info("a", 5)  # type: ignore[misc]


def test_max_chars_rejects_unknown_encoding():
    with pytest.raises(ValueError) as excinfo:
        max_chars("latin1", 1)  # type: ignore[arg-type]
    assert str(excinfo.value) == (
        "unknown SMS encoding 'latin1'; expected one of gsm7, gsm7-tr, ucs2"
    )


def test_max_chars_rejects_zero_segments():
    with pytest.raises(ValueError) as excinfo:
        max_chars("gsm7", 0)
    assert str(excinfo.value) == "segments must be at least 1, got 0"


def test_sms_length_is_frozen():
    info = encode_info("a")
    with pytest.raises(AttributeError):
        info.units = 2  # type: ignore[misc]
