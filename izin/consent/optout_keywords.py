"""Is an SMS reply an opt-out? `RET`, `IPTAL`, `STOP`, `DUR` in any case and spelling (invariant 6).

The rule: after folding case and letters the Turkish way, the reply's words must be opt-out
keywords, brand words and filler words only, with at least one keyword. Punctuation and spacing
do not matter. A keyword may be glued to one brand word of at least three characters, before or
after it, with no space ("RET4609", "RETORNEKTIC", "ORNEKTICIPTAL").

    "RET", " ret! ", "İptal", "ıptal", "rEt", "DUR."     opt-out
    "RET ORNEKTIC", "ORNEKTIC IPTAL", "ret 4609"         opt-out (the brand word, the short number
    "RET4609", "RETORNEKTIC"                             when the caller names them as brand words)
    "IPTAL ET", "SMS IPTAL", "RET lütfen",               opt-out (filler words: ET, ETMEK, ISTIYORUM,
    "iptal etmek istiyorum"                              LUTFEN, SMS, MESAJ)
    "Retro", "durum nedir", "Merhaba", "ORNEKTIC"        not an opt-out, nothing to read
    "STOP etmeyin mesajı gelmesin", "ret etmeyin"        not an opt-out, but a person should read it

Anything with other words is kept for a person to read rather than guessed at: "RET" inside a
sentence may mean the opposite ("ret etmeyin"). `classify` says which: ``opt_out``,
``needs_review`` (a keyword stands in the reply as a word, or glued to a brand word, but the reply
is not only keywords, brand words and fillers) or ``not_opt_out``. Folding: NFKD with combining
marks removed (so `İ` is `I`, full-width letters are ASCII), dotless `ı` is `i`, then upper case;
`ş ğ ü ö ç` become `S G U O C`. So `IPTAL`, `İPTAL`, `iptal`, `ıptal` and `İptal` are all `IPTAL`.

Pure: no database, no configuration; the webhook passes the brand words it knows.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["FILLERS", "KEYWORDS", "NEEDS_REVIEW", "NOT_OPT_OUT", "OPT_OUT", "classify", "fold", "parse", "words"]

#: the opt-out keywords, folded
KEYWORDS: frozenset[str] = frozenset({"RET", "IPTAL", "STOP", "DUR"})
#: words that may stand by a keyword without changing what it says ("IPTAL ET", "SMS IPTAL",
#: "RET lütfen", "iptal etmek istiyorum"), folded; never negations ("ETMEYIN", "ISTEMIYORUM")
FILLERS: frozenset[str] = frozenset({"ET", "ETMEK", "ISTIYORUM", "LUTFEN", "SMS", "MESAJ"})
#: a brand word glued to a keyword must be at least this long ("RETA" is no opt-out for a brand "A.Ş.")
GLUE_MIN = 3

#: what `classify` answers
OPT_OUT, NEEDS_REVIEW, NOT_OPT_OUT = "opt_out", "needs_review", "not_opt_out"

#: letters NFKD does not take apart, folded by hand
_LETTERS = str.maketrans({"ı": "i", "ł": "l", "ø": "o", "đ": "d", "ß": "ss"})
#: anything that is not a letter or digit separates words
_SEPARATORS = re.compile(r"[\W_]+", re.UNICODE)


def fold(text: str) -> str:
    """Upper-case ASCII-ish form of a text, the Turkish way: 'ıptal', 'İptal', 'IPTAL' → 'IPTAL'."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return plain.translate(_LETTERS).upper()


def words(text: str) -> list[str]:
    """The folded words of a text, punctuation and spacing dropped."""
    return [word for word in _SEPARATORS.split(fold(text)) if word]


def _brands(brand_words: tuple[str, ...]) -> set[str]:
    """The folded brand words: each word of each brand, and a brand of several words written as one."""
    found: set[str] = set()
    for brand in brand_words:
        parts = words(brand or "")
        found.update(parts)
        if len(parts) > 1:
            found.add("".join(parts))
    return found


def _glued(word: str, brands: set[str]) -> bool:
    """A keyword with a brand word right before or after it, no space: 'RET4609', 'ORNEKTICIPTAL'."""
    for keyword in KEYWORDS:
        if word.startswith(keyword) and word[len(keyword):] in brands and len(word) - len(keyword) >= GLUE_MIN:
            return True
        if word.endswith(keyword) and word[:-len(keyword)] in brands and len(word) - len(keyword) >= GLUE_MIN:
            return True
    return False


def classify(text: str, brand_words: tuple[str, ...] = ()) -> str:
    """OPT_OUT, NEEDS_REVIEW (a keyword in a reply that says more) or NOT_OPT_OUT.

    `brand_words` are words a reply may carry next to the keyword: the SMS originator
    ("ORNEKTIC"), the provider's routing keyword, the short number. Each may be several words.
    """
    found = words(text or "")
    brands = _brands(brand_words)
    keyed = [word in KEYWORDS or _glued(word, brands) for word in found]
    if not any(keyed):
        return NOT_OPT_OUT
    if all(k or word in brands or word in FILLERS for word, k in zip(found, keyed)):
        return OPT_OUT
    return NEEDS_REVIEW


def parse(text: str, brand_words: tuple[str, ...] = ()) -> bool:
    """True when the text is an opt-out: only keywords, brand words and fillers, at least one keyword."""
    return classify(text, brand_words) == OPT_OUT
