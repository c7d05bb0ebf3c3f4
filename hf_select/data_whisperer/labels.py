"""Answer-format constraint for Data Whisperer's joint generation: the model writes every answer's words, the
format (``Answer j:`` labels, one answer per line) is enforced.

A small instruct model (SmolLM2-135M-Instruct) asked to answer ``n`` questions in one greedy generation often
breaks the format -- it opens with a blank line, invents a further ``Question: ... Answer: ...`` pair, or stops
after the first answer -- and the group is unparseable (arXiv 2505.12212 re-scores such groups). This logits
processor keeps the greedy choice of every content token and only steers the format:

- an answer cannot be empty: while the current answer has no visible character, EOS and tokens holding a line
  break are masked;
- an answer ends at its first line break (at a blank line when a gold answer of the prompt spans several lines,
  e.g. GSM8K worked solutions) -- not after a line ending in ``":"``, which only announces the answer; after it, the tokens of ``"Answer j+1:"`` are forced, and an EOS before the
  last answer is replaced by a line break and that label, as is the next token when the row's budget has
  only room left for the remaining labels;
- after the last answer's line break, EOS is forced;
- a token that would end the current answer before it holds any text (``Question:``, an ``Answer k:`` label)
  gives way to the model's next choice.

The output is then always in the format :func:`.parsing.parse_answers` reads.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from transformers import LogitsProcessor

from .parsing import _CUT


class AnswerFormat(LogitsProcessor):
    """Per-row format constraint (see the module docstring) for a batch of Data Whisperer prompts.

    Args:
        tokenizer: the model's tokenizer.
        prompt_length: width of the left-padded prompts (generated tokens start there).
        n_answers: answers each row must produce.
        multiline: per row, whether its answers may span lines (an answer then ends at a blank line).
        eos_token_id: the id that ends a row.
        budgets: per row, its new-token budget; an answer is closed early when only the room for the remaining
            labels (and one token of text each) is left, so every answer is written within the budget.
    """

    def __init__(
        self,
        tokenizer,
        prompt_length: int,
        n_answers: Sequence[int],
        multiline: Sequence[bool],
        eos_token_id: int,
        budgets: Sequence[int] | None = None,
    ):
        self.tokenizer, self.prompt_length, self.eos = tokenizer, prompt_length, int(eos_token_id)
        self.n_answers, self.multiline = list(n_answers), list(multiline)
        self.budgets = list(budgets) if budgets is not None else [None] * len(self.n_answers)
        self.queues: list[list[int]] = [[] for _ in self.n_answers]
        self.done = [False] * len(self.n_answers)
        self.newline = tokenizer("\n", add_special_tokens=False).input_ids
        vocab = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], clean_up_tokenization_spaces=False)
        self._break_ids = torch.tensor([i for i, t in enumerate(vocab) if "\n" in t], dtype=torch.long)

    def _label(self, j: int) -> list[int]:
        return self.tokenizer(f"Answer {j}:", add_special_tokens=False).input_ids

    def _reserve(self, j: int, n: int) -> int:
        """New tokens the answers after ``j`` need at least: a line break, the label and one token each."""
        return sum(len(self.newline) + len(self._label(k)) + 1 for k in range(j + 1, n + 1))

    @staticmethod
    def _state(text: str, n: int) -> tuple[int, str]:
        """``(j, text of answer j so far)``: the current answer is the one after the last label ``Answer k:``
        found in order (the first answer needs none: the prompt ends with its label)."""
        j, start = 1, 0
        while j < n:
            label = re.compile(rf"(?:\*\*)?Answer\s*{j + 1}\s*:(?:\*\*)?").search(text, start)
            if label is None:
                break
            j, start = j + 1, label.end()
        return j, text[start:]

    def _force(self, scores: torch.Tensor, row: int, token: int) -> None:
        scores[row] = float("-inf")
        scores[row, token] = 0.0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row in range(input_ids.shape[0]):
            new = input_ids[row, self.prompt_length :].tolist()
            if self.done[row] or self.eos in new:
                self.done[row] = True
                continue
            if self.queues[row]:
                self._force(scores, row, self.queues[row].pop(0))
                continue
            n = self.n_answers[row]
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            j, answer = self._state(text, n)
            if not answer.strip():  # nothing written yet: no line break, no EOS
                scores[row, self._break_ids.to(scores.device)] = float("-inf")
                scores[row, self.eos] = float("-inf")
                continue
            end = "\n\n" if self.multiline[row] else "\n"
            line = answer.rstrip(" \t")
            # the answer's line is closed, unless it only announced the answer ("... is:")
            if line.endswith(end) and not line.rstrip().endswith(":"):
                if j < n:
                    self.queues[row] = self._label(j + 1)
                    self._force(scores, row, self.queues[row].pop(0))
                else:
                    self._force(scores, row, self.eos)
                continue
            budget = self.budgets[row]
            out_of_room = budget is not None and budget - len(new) <= self._reserve(j, n)
            if j < n and (out_of_room or int(scores[row].argmax()) == self.eos):  # close the line, next label
                self.queues[row] = [*self.newline[1:], *self._label(j + 1)]
                self._force(scores, row, self.newline[0])
                continue
        for row in range(input_ids.shape[0]):
            if not (self.done[row] or self.queues[row]):
                self._reject_breaking(scores, row, input_ids[row, self.prompt_length :].tolist())
        return scores

    def _reject_breaking(self, scores: torch.Tensor, row: int, new: list[int], tries: int = 8) -> None:
        """Mask the best candidates that would leave the current answer empty before a cut (``Question:``, an
        ``Answer k:`` label, a markdown label) until one does not (at most ``tries``)."""
        n = self.n_answers[row]
        for _ in range(tries):
            token = int(scores[row].argmax())
            if token == self.eos or scores[row, token] == float("-inf"):
                return
            _, answer = self._state(self.tokenizer.decode([*new, token], skip_special_tokens=True), n)
            cut = _CUT.search(answer.lstrip())
            if cut is None or cut.start() > 0:
                return
            scores[row, token] = float("-inf")
