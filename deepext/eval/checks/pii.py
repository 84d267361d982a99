"""Finding personal data in text (emails, phone numbers, IBANs, payment card numbers), masked for
reasons. Pure text scanning, used by the `pii` business rule; kept apart because the patterns and
their validity checks (Luhn, IBAN mod-97, phone digit counts) are a job of their own."""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Iterable

_EMAIL = re.compile(r"(?<![\w.+%-])[\w.+%-]{1,64}@[^\W_][\w-]{0,62}(?:\.[\w-]{1,63}){1,8}")
_PHONE = re.compile(
    r"""
    (?<![\w+])(?<!\d[.\-])                                      # not inside a word or a longer number
    (?: (?P<intl> \+\d{1,3}(?:[ .\-]?\(\d{1,4}\))?(?:[ .\-]?\d{1,5}){1,5} )      # +44 20 7946 0958
      | (?P<paren> \(\d{2,5}\)[ .\-]?\d{2,4}(?:[ .\-]?\d{2,5}){1,3} )            # (555) 123-4567
      | (?P<grouped> \d{2,5}(?P<sep>[ .\-])\d{2,5}(?:(?P=sep)\d{2,5}){0,3} )      # 555-123-4567, 06 12 34 56 78
      | (?P<split> \d{3,5}[ \-]\d{6,8} )                                           # 030 1234567, 07700 900123
      | (?P<bare> 0\d{9,10} )                                                     # 0612345678
    )
    (?!\w)(?![.\-]\d)                                           # nor followed by more digits
    """,
    re.VERBOSE,
)
_CARD = re.compile(  # 13-19 digits: ungrouped, or 4 then groups of 3-6 ("4111 1111 1111 1111", "3782 822463 10005")
    r"(?<!\d)(?<!\d-)(?:[2-6]\d{12,18}|[2-6]\d{3}(?P<sep>[ \-])\d{3,6}(?:(?P=sep)\d{3,6}){1,3})(?!\d)"
)
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])")
PII_KINDS = ("email", "phone", "iban", "credit_card")


def _luhn(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = int(char) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _iban_valid(text: str) -> bool:
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _card(text: str) -> str | None:
    """The longest leading run of whole digit groups of a `_CARD` match that is a card number (13-19
    digits, Luhn valid): "4111 1111 1111 1111 123" (19 digits failing Luhn) -> its first 16."""
    ends = [m.start() for m in re.finditer(r"[ \-]", text)]
    for end in [len(text), *reversed(ends)]:
        digits = re.sub(r"\D", "", text[:end])
        if 13 <= len(digits) <= 19 and _luhn(digits):
            return text[:end]
    return None


def _phone_valid(match: re.Match[str], text_before: str) -> bool:
    if text_before[-1:] == " " and text_before[-2:-1].isdigit() and " " in match.group():
        return False  # a continuation of space-grouped digits ("4111 1111 1111 1111"), not a number of its own
    text = match.group()
    digits = sum(c.isdigit() for c in text)
    if match.group("intl"):
        return 8 <= digits <= 15
    if not 9 <= digits <= 12:
        return False
    if match.group("grouped"):
        groups, separators = re.split(r"[ .\-]", text), set(re.findall(r"[ .\-]", text))
        thousands = len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:])  # 1.234.567.890, an IP
        return len(separators) == 1 and not thousands
    return True


def _mask(text: str, keep_end: int, keep_start: int = 0) -> str:
    """Letters and digits replaced by '*' except the first `keep_start` and last `keep_end` of them."""
    total = sum(c.isalnum() for c in text)
    out, seen = [], 0
    for char in text:
        if char.isalnum():
            seen += 1
            out.append(char if seen <= keep_start or seen > total - keep_end else "*")
        else:
            out.append(char)
    return "".join(out)


def _disjoint(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Spans merged where they overlap, sorted by start."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def find_pii(text: str) -> list[tuple[str, str]]:
    """(kind, masked text) of each email, phone number, IBAN (mod-97 checked) and payment card number
    (13-19 digits starting 2-6, Luhn checked) in `text`, in order of appearance. A phone number has
    8-15 digits after "+", or 9-12 digits in a common local form ("(555) 123-4567", "555-123-4567",
    "06 12 34 56 78", "0612345678"); digits inside a card or an IBAN are not also a phone number."""
    text = unicodedata.normalize("NFKC", text)
    found: list[tuple[int, int, str, str]] = []
    for match in _IBAN.finditer(text):
        if _iban_valid(match.group()):
            found.append((match.start(), match.end(), "iban", _mask(match.group(), 4, 2)))
    for match in _CARD.finditer(text):
        card = _card(match.group())
        if card is not None:
            found.append((match.start(), match.start() + len(card), "credit_card", _mask(card, 4)))
    taken = _disjoint((start, end) for start, end, _, _ in found)
    starts = [start for start, _ in taken]
    for match in _PHONE.finditer(text):
        before = bisect.bisect_left(starts, match.end()) - 1  # the last span starting before the match ends
        overlaps = before >= 0 and taken[before][1] > match.start()
        if not overlaps and _phone_valid(match, text[max(0, match.start() - 2) : match.start()]):
            found.append((match.start(), match.end(), "phone", _mask(match.group(), 2)))
    if "@" in text:
        for match in _EMAIL.finditer(text):
            local, domain = match.group().split("@", 1)
            if re.search(r"[^\W\d_]", domain.rsplit(".", 1)[-1]):  # a top-level domain has letters
                found.append((match.start(), match.end(), "email", f"{local[0]}***@{domain}"))
    return [(kind, masked) for _, _, kind, masked in sorted(found)]
