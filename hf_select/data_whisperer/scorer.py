"""Data Whisperer: training-free scoring of fine-tuning examples by in-context usefulness (arXiv 2505.12212).

Each example serves as a *demonstration* in a few-shot prompt; the untuned model answers ``n_queries`` other
examples in one greedy generation. An example's score is the share of attention the query tokens pay to it at
one middle layer (length-normalised, normalised over the prompt's demonstrations), times the mean quality of
the answers the prompt produced: ``score_i = w_i * mean_j f_j``, averaged over every prompt the example was a
demonstration in.

Choices where the paper is silent (all parameters):

- Groups: every round shuffles the pool with ``seed + round`` and splits it into two halves; the
  demonstrations of one half are answered with queries drawn from the other half, and vice versa, so every
  example is a demonstration once per round and never its own query. A last short group is filled with
  other examples of its half (their extra observation is averaged in).
- Spans: the demonstration span runs from its question label to the end of its answer; the query span is the
  query's question text. Both come from the character offsets of ONE tokenisation of the full prompt.
- Attention: ``a_i = sum_heads sum_query_tokens sum_demo_tokens A[h, q, t] / len(demo_i)`` at layer
  ``attn_layer`` (default ``num_layers // 2``); ``w_i = a_i / sum_k a_k``. Only the query rows of that layer are
  computed, through a capture function registered with ``transformers.AttentionInterface`` that delegates every
  layer to the model's own kernel (sdpa/eager); grouped-query attention reads the KV head of each query head.
- Parsing: the prompt ends with ``"Answer 1:"``; the generation must contain ``Answer 2:`` ... ``Answer n:`` in
  order with a non-empty answer after each label. A group that fails is *invalid*: it is re-drawn (new
  queries, shuffled demonstration order) up to ``max_retries`` times; if it still fails its demonstrations
  get no observation from that round (never a silent 0) and are counted in ``stats["invalid_groups"]``.
  Examples without any valid observation get ``NaN``.
- Queries (``query_mode``): ``"joint"`` (the paper) -- one prompt lists the ``n_queries`` questions and one
  greedy generation answers them all; ``"separate"`` -- one prompt per query with the same demonstrations (the
  query is "Question 1"), the ``n_queries`` prompts generated in one left-padded batch, each answer ending at a
  blank line; the demonstration weights are the mean of the prompts' normalised weights. Small instruct models
  rarely keep the numbered-answer format of the joint prompt (SmolLM2-135M-Instruct: 2 of 4 groups unparseable
  after answer clipping, 4 of 4 before), while a single few-shot continuation is nearly always parseable.
- Metric ``"auto"``: exact match (with number normalisation) when the gold answer is a number or has at most
  ``short_answer_words`` words, ROUGE-L F1 otherwise.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers.utils import logging

from ..model_adapter import get_model_adapter, unwrap_model
from ..text_metrics import exact_match, normalize_number, rouge_l_f1

logger = logging.get_logger(__name__)

DEFAULT_INSTRUCTION = (
    "Here are some questions with their answers. Answer the questions at the end in the same style, "
    "one answer per line, each after its label."
)


# ----------------------------------------------------------------------------------------------------------
# Prompt and spans
# ----------------------------------------------------------------------------------------------------------


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
    is the user turn and the answers are the assistant turn; base models get the plain text.
    """
    body, demo_spans, query_spans = _plain_body(demos, queries, instruction)
    chat = (
        getattr(tokenizer, "chat_template", None) is not None
        if use_chat_template is None
        else use_chat_template
    )
    if not chat:
        return Prompt(body + "\nAnswer 1:", demo_spans, query_spans, add_special_tokens=True)
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": body}], tokenize=False, add_generation_prompt=True
    )
    shift = rendered.find(body)
    if shift < 0:
        raise ValueError("the chat template changed the prompt text; cannot locate the demonstrations in it")
    shifted = [[(a + shift, b + shift) for a, b in spans] for spans in (demo_spans, query_spans)]
    return Prompt(rendered + "Answer 1:", shifted[0], shifted[1], add_special_tokens=False)


def _clip(text: str, limit: int | None) -> str:
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
# Attention rows of one layer, for the query tokens only
# ----------------------------------------------------------------------------------------------------------

_CAPTURE = threading.local()
_REGISTERED: set[str] = set()


class _StopForward(Exception):
    """Raised after the captured layer when nothing later in the forward pass is needed."""


def _query_rows(module, query, key, attention_mask, scaling, softcap=None, sliding_window=None):
    """Softmax attention ``[batch, heads, rows, keys]`` of the captured query rows (float32, GQA-aware)."""
    rows = _CAPTURE.rows
    q = query[:, :, rows].float()
    k = key.float()
    if k.shape[1] != q.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    scores = q @ k.transpose(-1, -2) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is not None and attention_mask.ndim == 4:
        mask = attention_mask[:, :, rows, : k.shape[2]]
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    else:
        keys = torch.arange(k.shape[2], device=q.device)
        allowed = keys[None, :] <= rows[:, None]
        if sliding_window is not None:
            allowed &= rows[:, None] - keys[None, :] < sliding_window
        scores = scores.masked_fill(~allowed, float("-inf"))
    return scores.softmax(-1)


def _make_capture(delegate_name: str):
    from transformers import AttentionInterface

    def capture(module, query, key, value, attention_mask, scaling=None, **kwargs):
        state = getattr(_CAPTURE, "layer", None)
        if state is not None and getattr(module, "layer_idx", None) == state and query.shape[2] > 1:
            scale = scaling if scaling is not None else query.shape[-1] ** -0.5
            _CAPTURE.result = _query_rows(
                module, query, key, attention_mask, scale, kwargs.get("softcap"), kwargs.get("sliding_window")
            )
            if getattr(_CAPTURE, "stop", False):
                raise _StopForward
        if delegate_name in AttentionInterface._global_mapping:
            delegate = AttentionInterface._global_mapping[delegate_name]
        else:  # "eager": every modelling file defines its own eager_attention_forward
            delegate = sys.modules[type(module).__module__].eager_attention_forward
        return delegate(module, query, key, value, attention_mask, scaling=scaling, **kwargs)

    return capture


def _capture_name(model) -> str:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    original = unwrap_model(model).config._attn_implementation or "eager"
    if original not in ("sdpa", "eager"):
        raise ValueError(
            f"Data Whisperer attention capture supports sdpa and eager attention, not {original!r}"
        )
    name = f"hf_select_dw_{original}"
    if name not in _REGISTERED:
        AttentionInterface.register(name, _make_capture(original))
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[original])
        _REGISTERED.add(name)
    return name


@contextmanager
def capture_attention_rows(model, layer: int, rows: torch.Tensor, stop: bool = False):
    """While active, forward passes of ``model`` record ``_CAPTURE.result``: the attention of the prompt rows
    ``rows`` at decoder layer ``layer`` (``[batch, heads, len(rows), keys]``); every layer still runs through the
    model's own attention kernel, so outputs are unchanged. With ``stop`` the forward pass is abandoned (a
    private exception) right after the captured layer, skipping the later layers and the LM head."""
    inner = unwrap_model(model)
    original = inner.config._attn_implementation
    name = _capture_name(inner)
    _CAPTURE.layer, _CAPTURE.rows, _CAPTURE.result, _CAPTURE.stop = layer, rows, None, stop
    inner.set_attn_implementation(name)
    try:
        yield _CAPTURE
    finally:
        inner.set_attn_implementation(original)
        _CAPTURE.layer = None


def layer_attention_rows(model, input_ids: torch.Tensor, layer: int, rows: Sequence[int]) -> torch.Tensor:
    """Attention ``[heads, len(rows), seq]`` of prompt positions ``rows`` at ``layer``.

    One forward pass without cache that stops right after ``layer``: only that layer's query rows are scored.
    """
    rows_t = torch.as_tensor(np.asarray(rows), dtype=torch.long, device=input_ids.device)
    with (
        torch.no_grad(),
        capture_attention_rows(model, layer, rows_t, stop=True) as cap,
        suppress(_StopForward),
    ):
        model(input_ids=input_ids, use_cache=False)
    if cap.result is None:
        raise RuntimeError(
            f"layer {layer} of {type(unwrap_model(model)).__name__} never called its attention function"
        )
    return cap.result[0]


def demonstration_weights(
    attention_rows: torch.Tensor, query_rows: np.ndarray, demo_tokens: Sequence[np.ndarray]
) -> np.ndarray:
    """``w_i = a_i / sum_k a_k`` with ``a_i`` = attention of the query rows to demo ``i``'s tokens, summed over
    heads and rows, divided by the demo's token count.

    Args:
        attention_rows: ``[heads, rows, seq]`` attention of the query token positions.
        query_rows: unused except for its length check (the rows are already the query tokens).
        demo_tokens: token indices of every demonstration.
    """
    if attention_rows.shape[1] != len(query_rows):
        raise ValueError("attention_rows must hold exactly the query-token rows")
    per_key = attention_rows.double().sum(dim=(0, 1)).cpu().numpy()
    raw = np.array([per_key[idx].sum() / len(idx) for idx in demo_tokens])
    total = raw.sum()
    return raw / total if total > 0 else np.full(len(raw), 1.0 / len(raw))


# ----------------------------------------------------------------------------------------------------------
# Answers and metrics
# ----------------------------------------------------------------------------------------------------------


def _label(j: int) -> re.Pattern:
    # "Answer j:" as prompted; instruct models (SmolLM2) often label their answers "Question j:" instead
    return re.compile(rf"(?:\*\*)?(?:Answer|Question)\s*{j}\s*:(?:\*\*)?")


def parse_answers(generation: str, n_queries: int) -> list[str] | None:
    """Answers from a generation that continues ``"Answer 1:"``; None when any label or answer is missing.

    Answer ``j`` follows the label ``Answer j:`` -- or ``Question j:``, which instruct models often write before
    their answer (optionally in markdown bold) -- and runs to the next label; the last one ends at a blank line
    or at the next question/answer label.
    """
    text = "Answer 1:" + generation
    answers, pos = [], 0
    for j in range(1, n_queries + 1):
        match = _label(j).search(text, pos)
        if match is None:
            return None
        pos = match.end()
        answers.append(pos)
    out = []
    for j, start in enumerate(answers):
        stop = _label(j + 2).search(text, start) if j + 1 < n_queries else None
        chunk = text[start : stop.start() if stop else len(text)]
        if stop is None:  # the last answer ends at a blank line or at the next question
            chunk = re.split(r"\n\s*\n|\nQuestion\b|\nAnswer \d+\s*:", chunk.lstrip())[0]
        chunk = chunk.strip()
        if not chunk:
            return None
        out.append(chunk)
    return out


def answer_metric(
    prediction: str, reference: str, metric: str | Callable = "auto", short_answer_words: int = 3
):
    """Per-query quality ``f_j``: exact match for numeric/short gold answers, ROUGE-L F1 for free text."""
    if callable(metric):
        return float(metric(prediction, reference))
    if metric == "auto":
        short = normalize_number(reference) is not None or len(reference.split()) <= short_answer_words
        metric = "exact_match" if short else "rouge_l"
    if metric == "exact_match":
        return exact_match(prediction, reference)
    if metric == "rouge_l":
        return rouge_l_f1(prediction, reference)
    raise ValueError(f"unknown metric {metric!r}; use 'auto', 'exact_match', 'rouge_l' or a callable")


# ----------------------------------------------------------------------------------------------------------
# The scorer
# ----------------------------------------------------------------------------------------------------------


@dataclass
class GroupResult:
    """One valid prompt: demonstration indices, their weights, the per-query metrics and the answers."""

    demos: list[int]
    queries: list[int]
    weights: np.ndarray
    metrics: list[float]
    answers: list[str] = field(default_factory=list)

    @property
    def scores(self) -> np.ndarray:
        return self.weights * float(np.mean(self.metrics))


class DataWhisperer:
    """Training-free, attention-weighted in-context scoring of fine-tuning data (Data Whisperer, arXiv 2505.12212).

    Args:
        model: the scoring causal LM (any supported family; it may differ from the model you fine-tune --
            weak-to-strong selection).
        tokenizer: its fast tokenizer; a chat template is used when present (instruct models).
        n_demos: demonstrations per prompt (paper: 5).
        n_queries: queries answered per prompt (paper: 3-5).
        attn_layer: decoder layer whose attention weighs the demonstrations (default ``num_layers // 2``).
        metric: ``"auto"``, ``"exact_match"``, ``"rouge_l"`` or ``f(prediction, reference) -> float``.
        rounds: passes over the pool; an example's observations are averaged.
        seed: shuffling seed (round ``r`` uses ``seed + r``).
        question_column / answer_column: dataset columns.
        max_answer_tokens: new-token budget per query (the generation gets ``n_queries x`` that).
        max_retries: re-draws of an invalid group before giving up on it for the round.
        instruction: first line of the prompt.
        use_chat_template: force (True) or forbid (False) the chat template; None = when the tokenizer has one.
        short_answer_words: ``"auto"`` grades gold answers of at most this many words by exact match.
        max_chars_per_field: clip every question and answer to this many characters.
        max_prompt_tokens: longest prompt; longer ones get every field clipped further until they fit (default:
            the model's context minus the answer budget ``n_queries x max_answer_tokens``).
        query_mode: ``"joint"`` (one prompt answers every query, the paper) or ``"separate"`` (one batched prompt
            per query; see the module docstring).
    """

    def __init__(
        self,
        model,
        tokenizer,
        n_demos: int = 5,
        n_queries: int = 3,
        attn_layer: int | None = None,
        metric: str | Callable = "auto",
        rounds: int = 1,
        seed: int = 0,
        question_column: str = "question",
        answer_column: str = "answer",
        max_answer_tokens: int = 48,
        max_retries: int = 3,
        instruction: str = DEFAULT_INSTRUCTION,
        use_chat_template: bool | None = None,
        short_answer_words: int = 3,
        max_chars_per_field: int | None = 600,
        max_prompt_tokens: int | None = None,
        query_mode: str = "joint",
    ):
        if n_demos < 1 or n_queries < 1 or rounds < 1:
            raise ValueError("n_demos, n_queries and rounds must be >= 1")
        if query_mode not in ("joint", "separate"):
            raise ValueError(f"query_mode must be 'joint' or 'separate', got {query_mode!r}")
        self.query_mode = query_mode
        self.model, self.tokenizer = model, tokenizer
        adapter = get_model_adapter(model)
        self.attn_layer = adapter.num_layers // 2 if attn_layer is None else attn_layer
        if not 0 <= self.attn_layer < adapter.num_layers:
            raise IndexError(
                f"attn_layer {self.attn_layer} out of range: the model has {adapter.num_layers} layers"
            )
        self.n_demos, self.n_queries, self.metric, self.rounds, self.seed = (
            n_demos,
            n_queries,
            metric,
            rounds,
            seed,
        )
        self.question_column, self.answer_column = question_column, answer_column
        self.max_answer_tokens, self.max_retries = max_answer_tokens, max_retries
        self.instruction, self.use_chat_template = instruction, use_chat_template
        self.short_answer_words, self.max_chars_per_field = short_answer_words, max_chars_per_field
        self.max_prompt_tokens = max_prompt_tokens
        self.stats: dict[str, int] = {}
        self.groups: list[GroupResult] = []
        self.unparsed: list[str] = []

    # -- one prompt --------------------------------------------------------------------------------------

    @property
    def prompt_budget(self) -> int | None:
        """Most prompt tokens that leave room for the answers in the model's context (None: unknown)."""
        if self.max_prompt_tokens is not None:
            return self.max_prompt_tokens
        config = unwrap_model(self.model).config
        context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        return None if context is None else context - self.n_queries * self.max_answer_tokens

    def _fit_prompt(self, questions, answers, demos, queries):
        """Tokenised prompt, with every field clipped (characters) until it fits :attr:`prompt_budget`."""
        budget = self.prompt_budget
        if budget is not None and budget < 16:
            raise ValueError(
                f"no room for a prompt: the model's context minus n_queries x max_answer_tokens is {budget} tokens"
            )
        limit = self.max_chars_per_field
        while True:
            prompt = build_prompt(
                self.tokenizer,
                [(_clip(questions[i], limit), _clip(answers[i], limit)) for i in demos],
                [_clip(questions[j], limit) for j in queries],
                self.instruction,
                self.use_chat_template,
            )
            encoded = tokenize_prompt(self.tokenizer, prompt)
            if budget is None or encoded[0].shape[1] <= budget:
                return encoded
            longest = max(
                len(t) for t in [*(questions[i] for i in (*demos, *queries)), *(answers[i] for i in demos)]
            )
            limit = int(0.75 * min(limit or longest, longest))
            if limit < 8:
                raise ValueError(
                    f"cannot fit {len(demos)} demonstrations and {len(queries)} queries in {budget} tokens"
                )

    def generate(self, input_ids: torch.Tensor) -> str:
        """Greedy continuation of the prompt (one generation answers every query)."""
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        with torch.no_grad():
            out = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=torch.ones_like(input_ids, device=device),
                max_new_tokens=self.max_answer_tokens * self.n_queries,
                do_sample=False,
                pad_token_id=pad,
            )
        return self.tokenizer.decode(out[0, input_ids.shape[1] :], skip_special_tokens=True)

    def score_group(
        self, questions: Sequence[str], answers: Sequence[str], demos: Sequence[int], queries: Sequence[int]
    ) -> GroupResult | None:
        """Score one prompt (or, with ``query_mode="separate"``, one batch of prompts); None when a generation
        cannot be parsed (an invalid group)."""
        if self.query_mode == "separate":
            return self._score_separate(questions, answers, demos, queries)
        input_ids, demo_tokens, query_tokens = self._fit_prompt(questions, answers, demos, queries)
        query_rows = np.concatenate(query_tokens)
        device = next(self.model.parameters()).device
        rows = layer_attention_rows(self.model, input_ids.to(device), self.attn_layer, query_rows)
        generation = self.generate(input_ids)
        parsed = parse_answers(generation, len(queries))
        if parsed is None:
            if len(self.unparsed) < 5:  # a few examples, to diagnose prompts the model cannot answer
                self.unparsed.append(generation)
            return None
        weights = demonstration_weights(rows, query_rows, demo_tokens)
        return self._result(answers, demos, queries, weights, parsed)

    def _result(self, answers, demos, queries, weights, parsed) -> GroupResult:
        metrics = [
            answer_metric(p, answers[j], self.metric, self.short_answer_words)
            for p, j in zip(parsed, queries)
        ]
        return GroupResult(list(demos), list(queries), weights, metrics, parsed)

    def _score_separate(self, questions, answers, demos, queries) -> GroupResult | None:
        from ..generation import greedy_generate

        device = next(self.model.parameters()).device
        weights, prompts = [], []
        for j in queries:
            input_ids, demo_tokens, query_tokens = self._fit_prompt(questions, answers, demos, [j])
            rows = layer_attention_rows(self.model, input_ids.to(device), self.attn_layer, query_tokens[0])
            weights.append(demonstration_weights(rows, query_tokens[0], demo_tokens))
            prompts.append(input_ids[0].tolist())
        generations = greedy_generate(
            self.model, self.tokenizer, None, self.max_answer_tokens, batch_size=len(prompts),
            add_special_tokens=False, stop_strings=["\nQuestion"], input_ids=prompts,
        )  # fmt: skip
        parsed = [parse_answers(g, 1) for g in generations]
        if any(p is None for p in parsed):
            if len(self.unparsed) < 5:
                self.unparsed.extend(g for g, p in zip(generations, parsed) if p is None)
            return None
        return self._result(answers, demos, queries, np.mean(weights, axis=0), [p[0] for p in parsed])

    # -- the pool ----------------------------------------------------------------------------------------

    def _groups(self, rng: np.random.Generator, n: int):
        order = rng.permutation(n)
        halves = (order[: n // 2], order[n // 2 :])
        for side in (0, 1):
            demo_half, query_half = halves[side], halves[1 - side]
            for start in range(0, len(demo_half), self.n_demos):
                group = list(demo_half[start : start + self.n_demos])
                if len(group) < self.n_demos:  # fill a short last group with other demos of this half
                    others = [i for i in demo_half if i not in group]
                    group += list(rng.choice(others, self.n_demos - len(group), replace=False))
                yield group, query_half

    def score(self, dataset) -> np.ndarray:
        """Score every example of ``dataset`` (a ``datasets.Dataset`` or a dict of columns).

        Returns a float array (NaN for an example no valid prompt scored). Details of every valid prompt are kept
        in ``self.groups`` and counters in ``self.stats``.
        """
        questions, answers = self._columns(dataset)
        n = len(questions)
        half = n // 2
        if half < max(self.n_demos, self.n_queries):
            need = 2 * max(self.n_demos, self.n_queries)
            raise ValueError(
                f"Data Whisperer needs at least {need} examples, got {n}: each prompt takes n_demos="
                f"{self.n_demos} demonstrations and n_queries={self.n_queries} queries from disjoint halves "
                f"of the pool"
            )
        sums, counts = np.zeros(n), np.zeros(n)
        self.stats = {"groups": 0, "invalid_groups": 0, "retries": 0}
        self.groups, self.unparsed = [], []
        from tqdm.auto import tqdm

        for r in range(self.rounds):
            rng = np.random.default_rng(self.seed + r)
            n_groups = -(-half // self.n_demos) + -(-(n - half) // self.n_demos)
            for demos, query_pool in tqdm(
                self._groups(rng, n), total=n_groups, desc=f"data whisperer round {r}"
            ):
                result = self._score_with_retries(questions, answers, demos, query_pool, rng)
                self.stats["groups"] += 1
                if result is None:
                    self.stats["invalid_groups"] += 1
                    continue
                self.groups.append(result)
                np.add.at(sums, result.demos, result.scores)
                np.add.at(counts, result.demos, 1)
        if self.stats["invalid_groups"]:
            logger.warning(
                f"Data Whisperer: {self.stats['invalid_groups']} of {self.stats['groups']} prompts stayed "
                f"unparseable after {self.max_retries} retries; their demonstrations got no score from them"
            )
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)

    def _score_with_retries(self, questions, answers, demos, query_pool, rng):
        demos = list(demos)
        for attempt in range(self.max_retries + 1):
            queries = list(rng.choice(query_pool, self.n_queries, replace=False))
            result = self.score_group(questions, answers, demos, queries)
            if result is not None:
                return result
            if attempt < self.max_retries:
                self.stats["retries"] += 1
                rng.shuffle(demos)
        return None

    def _columns(self, dataset) -> tuple[list[str], list[str]]:
        names = list(dataset.column_names) if hasattr(dataset, "column_names") else list(dataset)
        missing = [c for c in (self.question_column, self.answer_column) if c not in names]
        if missing:
            raise ValueError(
                f"Data Whisperer needs question/answer columns: missing {missing}; the data has {names} "
                f"(set question_column= / answer_column=)"
            )
        return [str(x) for x in dataset[self.question_column]], [str(x) for x in dataset[self.answer_column]]

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        """``Dataset.map(whisperer, batched=True, batch_size=None)``: adds ``dw_score`` (the batch is the pool,
        so ``batch_size=None`` scores the whole dataset as one pool)."""
        return {"dw_score": self.score(batch).tolist()}

    def fingerprint(self, dataset) -> str:
        """A ``new_fingerprint`` for ``Dataset.map`` built from the data, the model and the parameters."""
        from datasets.fingerprint import Hasher

        inner = unwrap_model(self.model)
        params = (
            self.n_demos,
            self.n_queries,
            self.attn_layer,
            str(self.metric),
            self.rounds,
            self.seed,
            self.max_answer_tokens,
            self.max_retries,
            self.instruction,
            self.query_mode,
            self.max_chars_per_field,
            self.use_chat_template,
        )
        model_id = (getattr(inner.config, "_name_or_path", ""), getattr(inner.config, "_commit_hash", None))
        return Hasher.hash((getattr(dataset, "_fingerprint", None), model_id, params))

    def add_scores(self, dataset, column: str = "dw_score"):
        """``dataset`` with a ``column`` of Data Whisperer scores (through ``Dataset.map``, cached by fingerprint)."""
        scored = dataset.map(self, batched=True, batch_size=None, new_fingerprint=self.fingerprint(dataset))
        return scored if column == "dw_score" else scored.rename_column("dw_score", column)
