"""The SMS opt-out keyword parser: RET, IPTAL, STOP, DUR in every case and spelling, alone, with
the brand word (glued to it too) or a filler word; never when the keyword is only part of other
words; a keyword in a sentence is kept for a person to read."""

from __future__ import annotations

import pytest

from izin.consent import optout_keywords
from izin.consent.optout_keywords import FILLERS, KEYWORDS, classify, fold, parse, words

#: classify's answers (the names OPT_OUT and NOT_OPT_OUT are taken by the lists of texts below)
YES, REVIEW, NO = optout_keywords.OPT_OUT, optout_keywords.NEEDS_REVIEW, optout_keywords.NOT_OPT_OUT

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
    # glued to the brand word, either side
    "RETORNEKTIC", "retornektic", "ORNEKTICRET", "ornektıcıptal", "İPTALORNEKTIC", "STOPORNEKTIC!",
    # with filler words
    "IPTAL ET", "iptal et", "İPTAL ET.", "SMS IPTAL", "sms iptal", "RET lütfen", "ret lutfen", "Lütfen RET",
    "iptal etmek istiyorum", "İPTAL ETMEK İSTİYORUM", "ıptal etmek ıstıyorum", "Mesaj iptal", "SMS RET ORNEKTIC",
    "RETORNEKTIC lütfen", "STOP SMS", "dur mesaj",
    # compatibility forms: full-width letters, a decomposed dotted capital I
    "ＲＥＴ", "I\u0307ptal",
]

NOT_OPT_OUT = [
    # the keyword inside a longer word
    "Retro", "RETRO", "reti", "iptaller", "Durum", "STOPPED", "duran", "ret1", "RET4609",
    # the keyword inside a sentence
    "durum nedir", "STOP etmeyin mesajı gelmesin", "ret etmeyin", "lütfen iptal etmeyin", "Dur bir dakika",
    "RET yazip 4609'a gonderin", "Siparişim ne zaman gelir", "iptal etmek istemiyorum", "iptal etme",
    "SMS mesajı iptal olmasın", "ret etmeyin lütfen",
    # fillers alone, or a keyword glued to something that is not a brand word
    "SMS", "lütfen", "ET", "RETSMS", "IPTALET", "RETORNEK", "ORNEKTICRETX", "ORNEKTICORNEKTICRET",
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
    ("RET4609", ("ORNEKTIC", "4609"), True),     # glued to the short number
    ("4609RET", ("ORNEKTIC", "4609"), True),
    ("RET4609", ("ORNEKTIC",), False),
    ("RET46090", ("4609",), False),
    ("RETA", ("Örnek Ticaret A.Ş.",), False),     # a brand word shorter than three letters is not glued
    ("RET A", ("Örnek Ticaret A.Ş.",), True),     # ...but stands apart
    ("RETTIC", ("TIC",), True),
    ("iptalörnekticaret", ("Örnek Ticaret",), True),  # a brand of several words, written as one
    ("RET ORNEKTICARET", ("Örnek Ticaret",), True),
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


@pytest.mark.parametrize("text, expected", [
    ("RET", YES), ("RET4609", YES), ("IPTAL ET", YES), ("iptal etmek istiyorum", YES),
    ("ret etmeyin", REVIEW), ("STOP etmeyin mesajı gelmesin", REVIEW),
    ("RET yazip 4609'a gonderin", REVIEW), ("iptal etmek istemiyorum", REVIEW),
    ("Dur bir dakika", REVIEW), ("RETORNEKTIC nedir", REVIEW), ("Merhaba RET4609", REVIEW),
    ("Retro", NO), ("durum nedir", NO), ("Merhaba", NO), ("", NO),
    ("ORNEKTIC", NO), ("4609", NO), ("SMS lütfen", NO), ("RETSMS gelmesin", NO),
    ("R E T", NO),
])
def test_classify(text, expected):
    assert classify(text, ("ORNEKTIC", "4609")) == expected


def test_verdicts_are_the_inbound_actions():
    assert (YES, REVIEW, NO) == ("opt_out", "needs_review", "not_opt_out")


def test_fillers():
    assert FILLERS == {"ET", "ETMEK", "ISTIYORUM", "LUTFEN", "SMS", "MESAJ"}
    assert not FILLERS & KEYWORDS
