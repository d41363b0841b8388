"""The SMS opt-out keyword parser: RET, IPTAL, STOP, DUR in every case and spelling, alone or with
the brand word; never when the keyword is only part of other words."""

from __future__ import annotations

import pytest

from izin.consent.optout_keywords import KEYWORDS, fold, parse, words

BRAND = ("ORNEKTIC",)

OPT_OUT = [
    # the four keywords, upper case
    "RET", "IPTAL", "İPTAL", "STOP", "DUR",
    # any case, Turkish letters or not
    "ret", "Ret", "rEt", "rET", "iptal", "İptal", "ıptal", "IPTAL", "Iptal", "iPTAL", "İPTAL",
    "stop", "Stop", "sToP", "dur", "Dur", "dUR",
    # surrounding whitespace and punctuation
    " RET ", "\tret\n", "RET.", "ret!", "!!RET!!", "'ret'", '"IPTAL"', "(STOP)", "dur...", "RET\r\n",
    "- İptal -", "ret?", "«RET»",
    # with the brand word, either side, any case, any separator
    "RET ORNEKTIC", "ORNEKTIC IPTAL", "ornektic ret", "İptal ORNEKTIC", "ORNEKTIC-STOP", "ret,ornektic",
    "DUR ORNEKTIC.", "ORNEKTIC  ıptal", "Ornektic Dur",
    # more than one keyword
    "RET IPTAL", "stop stop", "İPTAL RET ORNEKTIC",
    # compatibility forms: full-width letters, a decomposed dotted capital I
    "ＲＥＴ", "I\u0307ptal",
]

NOT_OPT_OUT = [
    # the keyword inside a longer word
    "Retro", "RETRO", "reti", "iptaller", "Durum", "STOPPED", "duran", "ret1", "RET4609",
    # the keyword inside a sentence
    "durum nedir", "STOP etmeyin mesajı gelmesin", "ret etmeyin", "lütfen iptal etmeyin", "Dur bir dakika",
    "RET yazip 4609'a gonderin", "Siparişim ne zaman gelir",
    # other texts
    "Merhaba", "Teşekkürler", "Evet", "", "   ", "...", "?", "ORNEKTIC", "4609",
    # spelled apart or misspelled
    "R E T", "R.E.T", "REТ",  # the last one has a Cyrillic Т
    "RED", "iptl", "STPO",
]


@pytest.mark.parametrize("text", OPT_OUT)
def test_opt_out_texts(text):
    assert parse(text, BRAND) is True


@pytest.mark.parametrize("text", NOT_OPT_OUT)
def test_texts_that_are_not_opt_outs(text):
    assert parse(text, BRAND) is False


@pytest.mark.parametrize("text, brands, expected", [
    ("RET ORNEKTIC", (), False),                 # without the brand word known, another word: not sure
    ("RET", (), True),
    ("RET 4609", ("ORNEKTIC", "4609"), True),    # the short number given as a brand word
    ("RET 4609", ("ORNEKTIC",), False),
    ("ÖRNEK TİCARET iptal", ("Örnek Ticaret",), True),  # a brand of several words, Turkish letters
    ("iptal ORNEK", ("Örnek Ticaret",), True),
    ("RET ORNEKTIC", ("", "ornektic"), True),     # empty brand words are harmless
    ("ORNEKTIC", ("ORNEKTIC", "RET"), False),     # a brand word alone is no opt-out
])
def test_brand_words(text, brands, expected):
    assert parse(text, brands) is expected


def test_folding_is_turkish_aware():
    assert fold("ıptal") == fold("İptal") == fold("IPTAL") == fold("iptal") == "IPTAL"
    assert fold("Şükrü Gök Çağ") == "SUKRU GOK CAG"
    assert words("  ret,ORNEKTIC!! ") == ["RET", "ORNEKTIC"]
    assert words("") == []
    assert KEYWORDS == {"RET", "IPTAL", "STOP", "DUR"}
