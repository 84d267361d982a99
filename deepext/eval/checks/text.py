"""Text comparison primitives: normalization into tokens, SQuAD token F1, LCS and ROUGE-L, word counts.
Pure functions over strings and token lists, used by the reference checks and the length rules."""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence


class _PunctuationTable(dict[int, int | None]):
    """`str.translate` table deleting Unicode punctuation (category P*) and ASCII punctuation
    (which includes symbols such as $ + < = > ^ ` | ~, as SQuAD's normalizer does); filled lazily."""

    def __missing__(self, code: int) -> int | None:
        char = chr(code)
        value = None if unicodedata.category(char).startswith("P") or char in string.punctuation else code
        self[code] = value
        return value


_PUNCTUATION = _PunctuationTable()
# scripts written without spaces between words: each character is a token of its own
_NO_SPACE_SCRIPT = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_TOKEN = re.compile(rf"[{_NO_SPACE_SCRIPT}]|[^\s{_NO_SPACE_SCRIPT}]+")
_ARTICLES = frozenset({"a", "an", "the"})


def normalize_text(
    text: str, *, case_sensitive: bool = False, remove_punctuation: bool = True, remove_articles: bool = False
) -> list[str]:
    """`text` as comparable tokens: Unicode NFKC (full-width forms, composed accents), casefolded unless
    `case_sensitive`, punctuation deleted, the English articles a/an/the dropped if `remove_articles`,
    split on whitespace with each CJK character a token of its own."""
    text = unicodedata.normalize("NFKC", text)
    if not case_sensitive:
        text = text.casefold()
    if remove_punctuation:
        text = text.translate(_PUNCTUATION)
    tokens = _TOKEN.findall(text)
    return [t for t in tokens if t.casefold() not in _ARTICLES] if remove_articles else tokens


def token_f1(prediction: Sequence[str], reference: Sequence[str]) -> float:
    """SQuAD token F1: with overlap = the tokens in common (as multisets), precision = overlap /
    len(prediction), recall = overlap / len(reference), F1 = 2PR / (P + R). Two empty sides score 1.0,
    one empty side 0.0."""
    if not prediction or not reference:
        return float(not prediction and not reference)
    overlap = sum((Counter(prediction) & Counter(reference)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(prediction), overlap / len(reference)
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences, bit-parallel (Hyyro 2004:
    one big-integer step per token of `a`), so O(len(a) * len(b) / 64) machine words."""
    masks: dict[str, int] = {}
    for i, token in enumerate(b):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(b)) - 1
    row = full  # a zero bit marks a column where the LCS grows
    for token in a:
        match = row & masks.get(token, 0)
        row = ((row + match) | (row - match)) & full
    return len(b) - row.bit_count()


def rouge_l(prediction: Sequence[str], reference: Sequence[str]) -> float:
    """ROUGE-L F-measure (beta = 1): with lcs = `lcs_length`, P = lcs / len(prediction),
    R = lcs / len(reference), F = 2PR / (P + R). Two empty sides score 1.0, one empty side 0.0."""
    if not prediction or not reference:
        return float(not prediction and not reference)
    common = lcs_length(prediction, reference)
    if common == 0:
        return 0.0
    precision, recall = common / len(prediction), common / len(reference)
    return 2 * precision * recall / (precision + recall)


def word_count(text: str) -> int:
    """Whitespace-separated words, each CJK character counting as one."""
    return sum(1 for _ in _TOKEN.finditer(text))
