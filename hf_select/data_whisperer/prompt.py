"""Data Whisperer prompts: demonstrations and queries rendered (optionally through the chat template), and the
token spans of each demonstration and query found in the rendered text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers.utils import logging

from .config import DEFAULT_INSTRUCTION

logger = logging.get_logger(__name__)


@dataclass
class Prompt:
    """A few-shot prompt with the character spans of its demonstrations and query questions."""

    text: str
    demo_spans: list[tuple[int, int]]
    query_spans: list[tuple[int, int]]
    add_special_tokens: bool


def _plain_body(
    demos: Sequence[tuple[str, str]], queries: Sequence[str], instruction: str
) -> tuple[str, list, list]:
    parts, demo_spans, query_spans = [instruction + "\n\n"], [], []
    pos = len(parts[0])
    for question, answer in demos:
        block = f"Question: {question.strip()}\nAnswer: {answer.strip()}"
        demo_spans.append((pos, pos + len(block)))
        parts.append(block + "\n\n")
        pos += len(block) + 2
    for j, question in enumerate(queries, 1):
        label = f"Question {j}: "
        text = question.strip()
        query_spans.append((pos + len(label), pos + len(label) + len(text)))
        parts.append(label + text + "\n")
        pos += len(label) + len(text) + 1
    return "".join(parts), demo_spans, query_spans


def _relocate_spans(rendered: str, body: str, spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Each span of ``body`` located in ``rendered`` in order (a template may trim or re-wrap the body)."""
    head = body.strip()[:64]
    cursor = max(rendered.find(head), 0) if head else 0
    out = []
    for a, b in spans:
        piece = body[a:b]
        at = rendered.find(piece, cursor)
        if at < 0:
            raise ValueError(
                f"the chat template changed the prompt text: cannot find {piece[:40]!r} in the rendered prompt "
                "(set use_chat_template=False)"
            )
        out.append((at, at + len(piece)))
        cursor = at + len(piece)
    return out


def build_prompt(
    tokenizer,
    demos: Sequence[tuple[str, str]],
    queries: Sequence[str],
    instruction: str = DEFAULT_INSTRUCTION,
    use_chat_template: bool | None = None,
) -> Prompt:
    """The Data Whisperer prompt: instruction, ``(question, answer)`` demonstrations, numbered query questions,
    ending with ``"Answer 1:"``.

    With a chat template (``use_chat_template`` None = when the tokenizer has one, i.e. instruct models) the body
    is the user turn and the answers are the assistant turn; base models get the plain text. The spans are
    located in the rendered text one by one, so templates that trim or re-wrap the message (Llama-3) work.
    """
    body, demo_spans, query_spans = _plain_body(demos, queries, instruction)
    chat = (
        getattr(tokenizer, "chat_template", None) is not None
        if use_chat_template is None
        else use_chat_template
    )
    if not chat:
        return Prompt(body + "\nAnswer 1:", demo_spans, query_spans, add_special_tokens=True)
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("use_chat_template=True but the tokenizer has no chat template")
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": body}], tokenize=False, add_generation_prompt=True
    )
    located = _relocate_spans(rendered, body, [*demo_spans, *query_spans])
    return Prompt(
        rendered + "Answer 1:",
        located[: len(demo_spans)],
        located[len(demo_spans) :],
        add_special_tokens=False,
    )


def clip_field(text: str, limit: int | None) -> str:
    return text if limit is None or len(text) <= limit else text[:limit]


def char_spans_to_token_spans(
    offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]
) -> list[np.ndarray]:
    """Indices of the tokens overlapping each character span (special tokens, with empty offsets, never do)."""
    starts = np.array([o[0] for o in offsets])
    ends = np.array([o[1] for o in offsets])
    real = ends > starts
    out = []
    for a, b in spans:
        idx = np.nonzero(real & (starts < b) & (ends > a))[0]
        if idx.size == 0:
            raise ValueError(f"character span {(a, b)} covers no token")
        out.append(idx)
    return out


def tokenize_prompt(tokenizer, prompt: Prompt) -> tuple[torch.Tensor, list[np.ndarray], list[np.ndarray]]:
    """One tokenisation of the full prompt: ``input_ids [1, S]`` and the token indices of every demo and query."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("Data Whisperer needs a fast tokenizer (character offsets); got a slow one")
    enc = tokenizer(prompt.text, add_special_tokens=prompt.add_special_tokens, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    demos = char_spans_to_token_spans(offsets, prompt.demo_spans)
    queries = char_spans_to_token_spans(offsets, prompt.query_spans)
    return torch.tensor([enc["input_ids"]]), demos, queries


# ----------------------------------------------------------------------------------------------------------
# Attention weights
# ----------------------------------------------------------------------------------------------------------
