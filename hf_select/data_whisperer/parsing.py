"""Parsing the answers of one Data Whisperer generation: every answer cut at a blank line, a ``Question`` label
or any ``Answer k:`` label; an unlabelled first answer is accepted."""

from __future__ import annotations

import re
from collections.abc import Sequence

_ANY_ANSWER_LABEL = r"(?:\*\*)?Answer\s*\d+\s*:(?:\*\*)?"
# an answer ends at a blank line, at a "Question" label or a line starting with "Question" (an echoed or
# invented next question), at a line starting with an unnumbered "Answer:" or at any "Answer k:" label; "Question" inside a sentence does not end it
_CUT = re.compile(
    rf"\n\s*\n|\n\s*(?:\*\*)?(?:Question|Answer\s*:)|(?:\*\*)?Question\s*\d*\s*:|{_ANY_ANSWER_LABEL}"
)


def _answer_label(j: int) -> re.Pattern:
    return re.compile(rf"(?:\*\*)?Answer\s*{j}\s*:(?:\*\*)?")


def _question_label(j: int) -> re.Pattern:
    return re.compile(rf"(?:\*\*)?Question\s*{j}\s*:(?:\*\*)?")


def _squash(text: str) -> str:
    return " ".join(text.split()).lower()


def _drop_preamble(answer: str) -> str:
    """An answer whose first line only announces it ("The answer to the question is:") is the lines after."""
    head, _, rest = answer.partition("\n")
    return rest.strip() if head.rstrip().endswith(":") and rest.strip() else answer


def parse_generation(
    generation: str, n_queries: int, questions: Sequence[str] | None = None
) -> tuple[list[str] | None, bool]:
    """``(answers or None, closed)``: ``closed`` when the last answer ended at a cut, not at the end of text."""
    text = generation
    first = re.match(rf"\s*{_answer_label(1).pattern}", text)  # the model may repeat the prompted label
    pos = first.end() if first else 0
    answers, closed = [], False
    for j in range(1, n_queries + 1):
        if j > 1:
            label = _answer_label(j).search(text, pos)
            if label is None:  # instruct models (SmolLM2) often write "Question j:" before their answer
                label = _question_label(j).search(text, pos)
                if label is None:
                    return None, False
                pos = label.end()
                rest = text[pos:].lstrip()
                question = questions[j - 1].strip() if questions is not None else ""
                if question and _squash(rest).startswith(_squash(question)):  # an echo of the question
                    words = len(question.split())
                    echo = re.match(r"\s*" + r"\s+".join([r"\S+"] * words), text[pos:])
                    pos += echo.end() if echo else 0
                    after = re.match(
                        rf"\s*(?:{_answer_label(j).pattern}|(?:\*\*)?Answer\s*:(?:\*\*)?)", text[pos:]
                    )
                    pos += after.end() if after else 0
            else:
                pos = label.end()
        pos += len(text[pos:]) - len(text[pos:].lstrip())  # blank lines before an answer do not end it
        cut = _CUT.search(text, pos)
        end = cut.start() if cut else len(text)
        answer = _drop_preamble(text[pos:end].strip())
        if not answer:
            return None, False
        answers.append(answer)
        closed = cut is not None
        pos = end
    return answers, closed


def parse_answers(
    generation: str, n_queries: int, questions: Sequence[str] | None = None
) -> list[str] | None:
    """Answers from a generation that continues ``"Answer 1:"``; None when any label or answer is missing.

    The first answer may be unlabelled (the prompt already ends with its label); answer ``j > 1`` follows the
    label ``Answer j:`` (optionally in markdown bold), or -- when the generation has no such label -- the label
    ``Question j:`` that instruct models write before their answer; an echo of query ``j``'s text
    (``questions``) right after that label is skipped. Blank lines before an answer are skipped; every answer
    ends at a blank line, at a ``Question`` label or at any ``Answer k:`` label.
    """
    return parse_generation(generation, n_queries, questions)[0]


# ----------------------------------------------------------------------------------------------------------
# The scorer
# ----------------------------------------------------------------------------------------------------------
