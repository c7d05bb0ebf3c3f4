"""Answer-grading functions shared by Data Whisperer, the evaluation harness and the ``evaluate`` modules.

No Hub. ``exact_match`` normalises numbers ("1,000.0" == "1000"); ``rouge_l_f1`` is the ROUGE-L F1 of the
``rouge_score`` package (optionally with its Porter stemmer); ``answer_metric`` picks the metric per answer
(GSM8K final number, exact match or ROUGE-L) as Data Whisperer grades answers.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable

_NUMBER = re.compile(r"^[-+]?\$?\s*(\d[\d,]*\.?\d*|\.\d+)\s*%?$")
_LAST_NUMBER = re.compile(r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)")  # "0.75", "1,200.5", ".75"
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


@functools.lru_cache(maxsize=2)
def _rouge_scorer(stem: bool):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=stem)


def rouge_l_f1(prediction: str, reference: str, stem: bool = False) -> float:
    """ROUGE-L F1 (beta = 1) between two strings, computed by the ``rouge_score`` package (Lin 2004).

    Tokenisation is ``rouge_score``'s (lower-cased ``[a-z0-9]`` words); ``stem=True`` applies its Porter
    stemmer, as the official Data Whisperer code does. A string without any such token (empty, CJK) scores 0.
    """
    return float(_rouge_scorer(bool(stem)).score(reference, prediction)["rougeL"].fmeasure)


_GSM8K_FINAL = re.compile(r"####\s*([-+]?\$?\s*[\d,]*\.?\d+)")


def gsm8k_final_number(reference: str) -> str | None:
    """The canonical final answer ``N`` of a GSM8K-style reference ending in ``#### N``, or None."""
    match = _GSM8K_FINAL.search(reference)
    return normalize_number(match.group(1)) if match else None


def answer_metric(
    prediction: str,
    reference: str,
    metric: str | Callable = "auto",
    short_answer_words: int = 3,
    stem: bool = True,
) -> float:
    """Per-answer quality in [0, 1] (Data Whisperer's ``f_j``, arXiv 2505.12212; also used for held-out grading).

    ``"auto"``: a GSM8K-style reference holding ``#### N`` is graded by the last number of the prediction against
    ``N`` (as the official code does: the worked solution itself is never compared); a numeric gold answer or
    one of at most ``short_answer_words`` words by :func:`exact_match`; anything else by ROUGE-L F1 (Porter
    stemmer with ``stem``, as the official code). ``metric`` may also be ``"exact_match"``, ``"rouge_l"``,
    ``"gsm8k"`` or ``f(prediction, reference) -> float``.
    """
    if callable(metric):
        return float(metric(prediction, reference))
    final = gsm8k_final_number(reference) if metric in ("auto", "gsm8k") else None
    if metric == "gsm8k" or final is not None:
        if final is None:
            raise ValueError(f"metric 'gsm8k' needs references ending in '#### N', got {reference[:60]!r}")
        return float(last_number(prediction) == final)
    if metric == "auto":
        short = normalize_number(reference) is not None or len(reference.split()) <= short_answer_words
        metric = "exact_match" if short else "rouge_l"
    if metric == "exact_match":
        return exact_match(prediction, reference)
    if metric == "rouge_l":
        return rouge_l_f1(prediction, reference, stem=stem)
    raise ValueError(
        f"unknown metric {metric!r}; use 'auto', 'exact_match', 'rouge_l', 'gsm8k' or a callable"
    )
