"""Answer-grading functions shared by Data Whisperer, the evaluation harness and the ``evaluate`` modules.

Pure Python, no Hub. ``exact_match`` normalises numbers ("1,000.0" == "1000"); ``rouge_l_f1`` is the
longest-common-subsequence F1 over lower-cased word tokens (Lin 2004), with optional Porter-style suffix
stripping.
"""

from __future__ import annotations

import re
import string

_NUMBER = re.compile(r"^[-+]?\$?\s*(\d[\d,]*\.?\d*|\.\d+)\s*%?$")
_LAST_NUMBER = re.compile(r"[-+]?\d[\d,]*\.?\d*")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_number(text: str) -> str | None:
    """Canonical form of a number written as text ("$1,000.50" -> "1000.5"), or None if it is not one."""
    text = text.strip().rstrip(".")
    if not _NUMBER.match(text):
        return None
    digits = re.sub(r"[^\d.\-]", "", text)
    try:
        value = float(digits)
    except ValueError:
        return None
    return str(int(value)) if value == int(value) else repr(value)


def last_number(text: str) -> str | None:
    """The last number in ``text`` in canonical form (GSM8K-style answer extraction)."""
    matches = _LAST_NUMBER.findall(text)
    return normalize_number(matches[-1]) if matches else None


def normalize_text(text: str) -> str:
    """Lower-case, drop punctuation and articles, squeeze whitespace (SQuAD-style)."""
    text = text.lower().translate(_PUNCT)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 if the answers agree: numerically when both are numbers, else after text normalisation."""
    pred_num, ref_num = normalize_number(prediction), normalize_number(reference)
    if ref_num is not None:
        return float(pred_num == ref_num or last_number(prediction) == ref_num)
    return float(normalize_text(prediction) == normalize_text(reference))


def _stem(word: str) -> str:
    for suffix in (
        "ational",
        "ization",
        "fulness",
        "ousness",
        "iveness",
        "ing",
        "edly",
        "ed",
        "ly",
        "es",
        "s",
    ):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _tokens(text: str, stem: bool) -> list[str]:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return [_stem(w) for w in words] if stem else words


def _lcs_length(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l_f1(prediction: str, reference: str, stem: bool = False) -> float:
    """ROUGE-L F1 (beta = 1) between two strings over word tokens."""
    pred, ref = _tokens(prediction, stem), _tokens(reference, stem)
    if not pred or not ref:
        return float(pred == ref)
    lcs = _lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)
