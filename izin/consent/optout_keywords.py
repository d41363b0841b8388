"""Is an SMS reply an opt-out? `RET`, `IPTAL`, `STOP`, `DUR` in any case and spelling (invariant 6).

The rule: after folding case and letters the Turkish way, the reply's words must be opt-out
keywords and brand words only, with at least one keyword. Punctuation and spacing do not matter.

    "RET", " ret! ", "İptal", "ıptal", "rEt", "DUR."     opt-out
    "RET ORNEKTIC", "ORNEKTIC IPTAL", "ret 4609"         opt-out (the brand word, the short number
                                                         when the caller names them as brand words)
    "Retro", "durum nedir", "STOP etmeyin mesajı gelmesin", "Merhaba", "ORNEKTIC"   not an opt-out

Anything with other words is kept for a person to read rather than guessed at: "RET" inside a
sentence may mean the opposite ("ret etmeyin"). Folding: NFKD with combining marks removed (so
`İ` is `I`, full-width letters are ASCII), dotless `ı` is `i`, then upper case; `ş ğ ü ö ç`
become `S G U O C`. So `IPTAL`, `İPTAL`, `iptal`, `ıptal` and `İptal` are all `IPTAL`.

Pure: no database, no configuration; the webhook passes the brand words it knows.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["KEYWORDS", "fold", "parse", "words"]

#: the opt-out keywords, folded
KEYWORDS: frozenset[str] = frozenset({"RET", "IPTAL", "STOP", "DUR"})

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


def parse(text: str, brand_words: tuple[str, ...] = ()) -> bool:
    """True when the text is an opt-out: only keywords and brand words, at least one keyword.

    `brand_words` are words a reply may carry next to the keyword: the SMS originator
    ("ORNEKTIC"), the provider's routing keyword, the short number. Each may be several words.
    """
    found = words(text or "")
    if not found:
        return False
    allowed = set(KEYWORDS)
    for brand in brand_words:
        allowed.update(words(brand or ""))
    return all(word in allowed for word in found) and any(word in KEYWORDS for word in found)
