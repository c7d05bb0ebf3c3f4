"""Question -> answer pairs for the fine-tuning stage (Data Whisperer, arXiv 2505.12212), with a quality tier.

Tiers follow the natural quality gradient of the sources: ``high`` (hand-written FAQs: Python FAQ, perlfaq),
``medium`` (encyclopedic entries: FOLDOC, Jargon File; docstrings in the PyPI-only world), ``low`` (short,
templated or archaic definitions: WordNet, GCIDE 1913 Webster).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from . import text_sources as ts

QA = dict[str, str]


def _clean_markup(text: str) -> str:
    text = re.sub(r"\{([^{}]*)\}", r"\1", text)  # dictd cross references {word}
    text = re.sub(r":\w+:`~?([^`]*)`", r"\1", text)  # reST roles
    text = re.sub(r"[BCIFL]<([^<>]*)>", r"\1", text)  # POD formatting codes
    return re.sub(r"[ \t]+", " ", text).strip()


def rst_questions(text: str) -> Iterator[tuple[str, str]]:
    """``(heading, body)`` of reST sections whose heading ends with ``?``."""
    lines = text.splitlines()
    heads = [
        i
        for i in range(len(lines) - 1)
        if lines[i].strip()
        and len(set(lines[i + 1].strip())) == 1
        and set(lines[i + 1].strip()) <= set("=-~^*#\"'")
        and len(lines[i + 1].strip()) >= len(lines[i].strip()) - 2
    ]
    for j, i in enumerate(heads):
        end = heads[j + 1] if j + 1 < len(heads) else len(lines)
        title = lines[i].strip()
        if title.endswith("?"):
            yield title, "\n".join(lines[i + 2 : end]).strip()


def python_faq_pairs(root: Path) -> Iterator[QA]:
    base = Path(root) / "usr/share/doc/python3.11/html/_sources/faq"
    for path in sorted(base.glob("*.rst.txt")):
        for question, answer in rst_questions(ts._read(path)):
            if len(answer) >= 40:
                yield {
                    "question": question,
                    "answer": _clean_markup(answer),
                    "tier": "high",
                    "source": "python-faq",
                }


def perlfaq_pairs(root: Path) -> Iterator[QA]:
    base = Path(root) / "usr/share/perl/5.36.0/pod"
    for path in sorted(base.glob("perlfaq[1-9].pod")):
        for question, answer in ts.pod_sections(ts._read(path)):
            answer = re.sub(r"^=\w+.*$", "", answer, flags=re.M).strip()
            if question.endswith("?") and len(answer) >= 40:
                yield {
                    "question": _clean_markup(question),
                    "answer": _clean_markup(answer),
                    "tier": "high",
                    "source": "perlfaq",
                }


def dictionary_pairs(
    docs: Iterator[dict], source: str, tier: str, template: str, max_pairs: int | None = None
) -> Iterator[QA]:
    """``template.format(word=...)`` -> entry body, for dictd readers' documents."""
    count = 0
    for doc in docs:
        answer = _clean_markup(ts._entry_body(doc["text"]) or doc["text"])
        if len(answer) < 20 or not doc["title"].strip():
            continue
        yield {
            "question": template.format(word=doc["title"]),
            "answer": answer,
            "tier": tier,
            "source": source,
        }
        count += 1
        if max_pairs is not None and count >= max_pairs:
            return


def docstring_pairs(docs: Iterator[dict], source: str, max_pairs: int | None = None) -> Iterator[QA]:
    """ "What does ``name`` do?" -> its docstring's first paragraph (the PyPI-only fallback)."""
    count = 0
    for doc in docs:
        answer = doc["text"].split("\n\n")[0].strip()
        if len(answer) >= 40:
            yield {
                "question": f"What does `{doc['title']}` do?",
                "answer": answer,
                "tier": "medium",
                "source": source,
            }
            count += 1
            if max_pairs is not None and count >= max_pairs:
                return
