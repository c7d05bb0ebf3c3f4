"""Data Whisperer: training-free scoring of fine-tuning examples by in-context usefulness (arXiv 2505.12212).

Each example serves as a *demonstration* in a few-shot prompt; the untuned model answers ``n_queries`` other
examples in one greedy generation. An example's score is the share of attention the query tokens pay to it at
one middle layer (length-normalised, normalised over the prompt's demonstrations), times the mean quality of
the answers the prompt produced: ``score_i = w_i * mean_j f_j``, averaged over every prompt the example was a
demonstration in. Every parameter lives in :class:`DataWhispererConfig` (the CLI parses it, the cache
fingerprint hashes it whole).

Choices where the paper is silent (all parameters):

- Groups: every round shuffles the pool with ``seed + round`` and splits it into two halves; the
  demonstrations of one half are answered with queries drawn from the other half, and vice versa, so every
  example is a demonstration once per round and never its own query. A last short group is filled with
  other examples of its half (their extra observation is averaged in). Each group draws its queries (and
  re-draws them on a retry) from its own random stream ``(seed, round, group)``, so a group's result does not
  depend on which groups share its generation batch, and a resumed run equals a clean one.
- Spans: the demonstration span runs from its question label to the end of its answer; the query span is the
  query's question text. Both come from the character offsets of ONE tokenisation of the full prompt; under a
  chat template every span is located in the rendered text on its own (templates such as Llama-3's trim the
  message, so the body is not found verbatim).
- Attention: ``a_i = sum_heads sum_query_tokens sum_demo_tokens A[h, q, t] / len(demo_i)`` at layer
  ``attn_layer`` (default ``round(0.4 * num_layers)``: the paper's layer 13 of 32); ``w_i = a_i / sum_k a_k``.
  The rows come from the prefill of the generation itself (:mod:`hf_select.attention_probe`): one prompt
  forward serves both.
- Generation: the prompts of several groups (``batch_prompts``) run in one left-padded, KV-cached ``generate``;
  a row ends once all its answers are parsed and the last one is closed (blank line, next label) or at EOS.
  Each row's new-token budget comes from its gold answers: ``sum_j min(max_answer_tokens,
  ceil(answer_budget_factor * len(gold_j)) + answer_budget_slack)`` tokens, so worked answers (GSM8K) fit.
- Parsing: the prompt ends with ``"Answer 1:"``; the first answer may be unlabelled. Answer ``j > 1`` follows
  the label ``Answer j:``. Every answer ends at a blank line, at a ``Question`` label and at any ``Answer k:``
  label, so text the model echoes after an answer never joins it. A group whose answers cannot all be parsed
  is *invalid*: it is re-drawn (new queries, shuffled demonstration order) up to ``max_retries`` times; if it
  still fails its demonstrations get no observation from that round (never a silent 0) and are counted in
  ``stats["invalid_groups"]``. Examples without any valid observation get ``NaN``; a pool where no example got
  a score is an error.
- Queries (``query_mode``): ``"joint"`` (the paper) -- one prompt lists the ``n_queries`` questions and one
  greedy generation answers them all; ``"separate"`` -- one prompt per query with the same demonstrations (the
  query is "Question 1"); the demonstration weights are the mean of the prompts' normalised weights.
- Metric ``"auto"``: a GSM8K reference (``#### N``) is graded by the prediction's last number; exact match
  (with number normalisation) when the gold answer is a number or has at most ``short_answer_words`` words;
  ROUGE-L F1 with the Porter stemmer (``rouge_score``, as the official code) otherwise.
- Resume: with a ``state_dir`` every finished group is appended to ``run-<fingerprint>/groups.jsonl`` there
  (one line, flushed and synced); a re-run with the same settings, data and weights skips the groups it holds
  (each group has its own random stream, so the result equals a clean run); other settings start afresh.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from transformers import LogitsProcessorList
from transformers.utils import logging

from ..attention_probe import attention_probe, probe_attention_rows
from ..errors import InputIndexError
from ..generation import generate_greedy, left_pad
from ..model_adapter import get_model_adapter, unwrap_model
from ..resume import ResumeFolder, write_atomic
from ..text_metrics import answer_metric
from .config import DEFAULT_INSTRUCTION, DataWhispererConfig
from .labels import AnswerFormat
from .parsing import parse_answers, parse_generation
from .prompt import Prompt, build_prompt, clip_field, tokenize_prompt

logger = logging.get_logger(__name__)

__all__ = [
    "DEFAULT_INSTRUCTION",
    "DataWhisperer",
    "DataWhispererConfig",
    "GroupResult",
    "Prompt",
    "answer_metric",
    "build_prompt",
    "demonstration_weights",
    "layer_attention_rows",
    "parse_answers",
    "tokenize_prompt",
]


def layer_attention_rows(model, input_ids: torch.Tensor, layer: int, rows: Sequence[int]) -> torch.Tensor:
    """Attention ``[heads, len(rows), seq]`` of prompt positions ``rows`` at ``layer`` (one forward pass that
    stops after ``layer``; :func:`hf_select.attention_probe.probe_attention_rows`)."""
    rows_t = torch.as_tensor(np.asarray(rows), dtype=torch.long, device=input_ids.device)
    return probe_attention_rows(model, input_ids, layer, rows_t)[0]


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
# Answers
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


@dataclass
class _Attempt:
    """One try of one group: its prompts (one, or one per query), filled in as they are generated."""

    round: int
    group: int
    attempt: int
    demos: list[int]
    queries: list[int]
    rng: np.random.Generator
    prompts: list[dict] = field(default_factory=list)


class DataWhisperer:
    """Training-free, attention-weighted in-context scoring of fine-tuning data (Data Whisperer, arXiv 2505.12212).

    Args:
        model: the scoring causal LM (any supported family; it may differ from the model you fine-tune --
            weak-to-strong selection).
        tokenizer: its fast tokenizer; a chat template is used when present (instruct models).
        config: a :class:`DataWhispererConfig` (every parameter, documented there).
        generate_fn: optional ``f(input_ids [1, S]) -> str`` replacing the model's generation (tests, custom
            decoders); the attention then comes from a separate forward pass per prompt.
        state_dir: folder where finished groups are persisted, so that a killed run resumes (see the module
            docstring).
        **overrides: fields of :class:`DataWhispererConfig` (``DataWhisperer(model, tok, n_demos=3)``).
    """

    generate_fn: Callable[[torch.Tensor], str] | None = None

    def __init__(
        self,
        model,
        tokenizer,
        config: DataWhispererConfig | None = None,
        generate_fn: Callable[[torch.Tensor], str] | None = None,
        state_dir: str | os.PathLike | None = None,
        **overrides,
    ):
        config = config or DataWhispererConfig()
        names = {f.name for f in fields(DataWhispererConfig)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown Data Whisperer parameters {unknown}; the config has {sorted(names)}")
        self.config = DataWhispererConfig(**{**asdict(config), **overrides})
        self.model, self.tokenizer = model, tokenizer
        if generate_fn is not None:
            self.generate_fn = generate_fn
        self.state_dir = None if state_dir is None else Path(state_dir)
        adapter = get_model_adapter(model)
        layers, layer = adapter.num_layers, self.config.attn_layer
        if layer is None:  # the paper's layer 13 of 32: ~40% depth
            layer = min(int(round(0.4 * layers)), layers - 1)
        if not 0 <= layer < layers:
            raise InputIndexError(f"attn_layer {layer} out of range: the model has {layers} layers (0 to {layers - 1})")
        self.attn_layer = layer
        self.stats: dict[str, int] = {}
        self.groups: list[GroupResult] = []
        self.unparsed: list[str] = []
        self.cached: bool | None = None
        self.resumed_seconds = 0.0
        self._model_fingerprint = None

    def __getattr__(self, name):
        # the config's fields read as attributes (whisperer.n_demos); only called when normal lookup fails
        config = self.__dict__.get("config")
        if config is not None and name in DataWhispererConfig.__dataclass_fields__:
            return getattr(config, name)
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r}")

    # -- one prompt --------------------------------------------------------------------------------------

    @property
    def context_length(self) -> int | None:
        config = unwrap_model(self.model).config
        return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)

    @property
    def prompt_budget(self) -> int | None:
        """Most prompt tokens that leave room for the longest possible answers in the model's context (None:
        unknown); a prompt is fitted to its own answer budget, which is at most this."""
        if self.config.max_prompt_tokens is not None:
            return self.config.max_prompt_tokens
        context = self.context_length
        return None if context is None else context - self.config.n_queries * self.config.max_answer_tokens

    def answer_budget(self, answers: Sequence[str], queries: Sequence[int]) -> int:
        """New tokens for a prompt answering ``queries``: per query ``min(max_answer_tokens, ceil(factor x gold
        tokens) + slack)``."""
        c = self.config
        total = 0
        for j in queries:
            gold = len(self.tokenizer(answers[j], add_special_tokens=False).input_ids)
            total += min(
                c.max_answer_tokens, math.ceil(c.answer_budget_factor * gold) + c.answer_budget_slack
            )
        return total

    def _fit_prompt(self, questions, answers, demos, queries, new_tokens: int | None = None):
        """Tokenised prompt, with every field clipped (characters) until it fits the context less the answer
        budget ``new_tokens`` (and ``max_prompt_tokens``); without ``new_tokens``, :attr:`prompt_budget`."""
        c = self.config
        context = self.context_length
        if new_tokens is None or context is None:
            budget = self.prompt_budget
        else:
            budget = context - new_tokens
            if c.max_prompt_tokens is not None:
                budget = min(budget, c.max_prompt_tokens)
        if budget is not None and budget < 16:
            raise ValueError(
                f"no room for a prompt: {budget} tokens are left for it after the answer budget in the model's "
                f"context (lower max_answer_tokens or n_queries)"
            )
        limit = c.max_chars_per_field
        while True:
            prompt = build_prompt(
                self.tokenizer,
                [(clip_field(questions[i], limit), clip_field(answers[i], limit)) for i in demos],
                [clip_field(questions[j], limit) for j in queries],
                c.instruction,
                c.use_chat_template,
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

    def _prompts(self, questions, answers, attempt: _Attempt) -> list[dict]:
        per_prompt = (
            [attempt.queries] if self.config.query_mode == "joint" else [[j] for j in attempt.queries]
        )
        out = []
        for queries in per_prompt:
            budget = self.answer_budget(answers, queries)
            ids, demo_tokens, query_tokens = self._fit_prompt(
                questions, answers, attempt.demos, queries, budget
            )
            out.append(
                {
                    "ids": ids[0].tolist(),
                    "demo_tokens": demo_tokens,
                    "query_rows": np.concatenate(query_tokens),
                    "n_answers": len(queries),
                    "questions": [questions[j] for j in queries],
                    "multiline": any("\n" in answers[j].strip() for j in queries),
                    "budget": budget,
                }
            )
        return out

    def _generate_batch(self, prompts: list[dict]) -> None:
        """Fill ``text`` and ``weights`` of every prompt: one batched generate whose prefill gives the attention."""
        device = next(self.model.parameters()).device
        self.stats["prompt_tokens"] = self.stats.get("prompt_tokens", 0) + sum(len(p["ids"]) for p in prompts)
        if self.generate_fn is not None:
            for p in prompts:
                ids = torch.tensor([p["ids"]], device=device)
                rows = layer_attention_rows(self.model, ids, self.attn_layer, p["query_rows"])
                p["weights"] = demonstration_weights(rows, p["query_rows"], p["demo_tokens"])
                p["text"] = self.generate_fn(ids)
            return
        pad = (
            self.tokenizer.pad_token_id
            if self.tokenizer.pad_token_id is not None
            else self.tokenizer.eos_token_id
        )
        _, _, offsets = left_pad([p["ids"] for p in prompts], 0 if pad is None else pad)
        rows = [torch.as_tensor(p["query_rows"] + off, device=device) for p, off in zip(prompts, offsets)]

        def stop(i, new_ids):
            text = self.tokenizer.decode(new_ids, skip_special_tokens=True)
            answers, closed = parse_generation(text, prompts[i]["n_answers"], prompts[i]["questions"])
            return answers is not None and closed

        processors = None
        if self.config.force_answer_format:
            eos = unwrap_model(self.model).generation_config.eos_token_id
            eos = (eos[0] if isinstance(eos, (list, tuple)) else eos) if eos is not None else None
            eos = eos if eos is not None else self.tokenizer.eos_token_id
            if eos is not None:
                width = max(len(p["ids"]) for p in prompts)
                processors = LogitsProcessorList([AnswerFormat(
                    self.tokenizer, width, [p["n_answers"] for p in prompts], [p["multiline"] for p in prompts], eos,
                    [p["budget"] for p in prompts],
                )])  # fmt: skip
        with attention_probe(self.model, [self.attn_layer], rows, prefill_only=True) as probe:
            tokens = generate_greedy(
                self.model, self.tokenizer, input_ids=[p["ids"] for p in prompts],
                max_new_tokens=[p["budget"] for p in prompts], stop=stop, batch_size=None, decode=False,
                logits_processor=processors,
            )  # fmt: skip
        attention = probe.results[self.attn_layer]
        for p, off, att, new in zip(prompts, offsets, attention, tokens):
            p["weights"] = demonstration_weights(att[:, :, off:], p["query_rows"], p["demo_tokens"])
            p["text"] = self.tokenizer.decode(new, skip_special_tokens=True)
            self.stats["generated_tokens"] = self.stats.get("generated_tokens", 0) + len(new)

    def _finish(self, answers, attempt: _Attempt) -> GroupResult | None:
        parsed = [parse_answers(p["text"], p["n_answers"], p["questions"]) for p in attempt.prompts]
        if any(a is None for a in parsed):
            for p, a in zip(attempt.prompts, parsed):
                if a is None and len(self.unparsed) < 5:  # a few, to diagnose prompts the model cannot answer
                    self.unparsed.append(p["text"])
            return None
        flat = [a for group in parsed for a in group]
        metrics = [
            answer_metric(
                p, answers[j], self.config.metric, self.config.short_answer_words, self.config.rouge_stemmer
            )
            for p, j in zip(flat, attempt.queries)
        ]
        weights = np.mean([p["weights"] for p in attempt.prompts], axis=0)
        return GroupResult(list(attempt.demos), list(attempt.queries), weights, metrics, flat)

    # -- the pool ----------------------------------------------------------------------------------------

    def _groups(self, rng: np.random.Generator, n: int):
        order = rng.permutation(n)
        halves = (order[: n // 2], order[n // 2 :])
        n_demos = self.config.n_demos
        for side in (0, 1):
            demo_half, query_half = halves[side], halves[1 - side]
            for start in range(0, len(demo_half), n_demos):
                group = [int(i) for i in demo_half[start : start + n_demos]]
                if len(group) < n_demos:  # fill a short last group with other demos of this half
                    others = [int(i) for i in demo_half if i not in group]
                    group += [int(i) for i in rng.choice(others, n_demos - len(group), replace=False)]
                yield group, query_half

    def _draw(self, attempt: _Attempt, query_pool) -> None:
        if attempt.attempt > 0:
            attempt.rng.shuffle(attempt.demos)
        attempt.queries = [
            int(j) for j in attempt.rng.choice(query_pool, self.config.n_queries, replace=False)
        ]

    def _checked_columns(self, dataset) -> tuple[list[str], list[str]]:
        """Questions and answers of ``dataset``, refused when the pool is too small or an answer is empty."""
        c = self.config
        questions, answers = self._columns(dataset)
        n = len(questions)
        if n // 2 < max(c.n_demos, c.n_queries):
            need = 2 * max(c.n_demos, c.n_queries)
            raise ValueError(
                f"Data Whisperer needs at least {need} examples, got {n}: each prompt takes n_demos="
                f"{c.n_demos} demonstrations and n_queries={c.n_queries} queries from disjoint halves of the pool"
            )
        empty = [i for i, a in enumerate(answers) if not a.strip()]
        if empty:
            raise ValueError(
                f"{len(empty)} examples have an empty {c.answer_column!r} (first: row {empty[0]}); Data Whisperer "
                "grades answers against the gold ones -- drop or fill them"
            )
        return questions, answers

    def score(self, dataset, state_dir: str | os.PathLike | None = None) -> np.ndarray:
        """Score every example of ``dataset`` (a ``datasets.Dataset`` or a dict of columns).

        Returns a float array (NaN for an example no valid prompt scored). Details of every valid prompt are kept
        in ``self.groups`` and counters in ``self.stats``. With ``state_dir`` (or the constructor's) finished
        groups are persisted and a re-run resumes (``self.resumed_seconds``: the scoring wall-clock the resumed
        groups took in the earlier runs). Raises ``ValueError`` when no example got a score.
        """
        from tqdm.auto import tqdm

        c = self.config
        questions, answers = self._checked_columns(dataset)
        n = len(questions)
        state = _GroupLog(state_dir or self.state_dir, self._state_key(dataset, questions, answers))
        done = state.load()
        self.stats = {
            "groups": 0,
            "invalid_groups": 0,
            "retries": 0,
            "retried_groups": 0,
            "resumed_groups": 0,
            "generated_tokens": 0,
            "prompt_tokens": 0,
        }
        self.groups, self.unparsed = [], []
        records: dict[tuple[int, int], dict] = {}
        pending: list[tuple[_Attempt, np.ndarray]] = []
        for r in range(c.rounds):
            rng = np.random.default_rng(c.seed + r)
            for g, (demos, query_pool) in enumerate(self._groups(rng, n)):
                if (r, g) in done:
                    records[(r, g)] = done[(r, g)]
                    self.stats["resumed_groups"] += 1
                    continue
                attempt = _Attempt(r, g, 0, demos, [], np.random.default_rng([c.seed, r, g]))
                self._draw(attempt, query_pool)
                pending.append((attempt, query_pool))
        self.resumed_seconds = float(sum(rec.get("seconds", 0.0) for rec in records.values()))
        spent: dict[tuple[int, int], float] = {}
        bar = tqdm(total=len(pending), desc="data whisperer groups")
        while pending:
            started = time.perf_counter()
            batch, size = [], 0
            while pending and (not batch or size + self._prompt_count() <= c.batch_prompts):
                batch.append(pending.pop(0))
                size += self._prompt_count()
            for attempt, _ in batch:
                attempt.prompts = self._prompts(questions, answers, attempt)
            self._generate_batch([p for attempt, _ in batch for p in attempt.prompts])
            finished = []
            for attempt, _ in batch:  # the batch's wall-clock, shared by its groups (resumed runs add it up)
                key = (attempt.round, attempt.group)
                spent[key] = spent.get(key, 0.0) + (time.perf_counter() - started) / len(batch)
            for attempt, query_pool in batch:
                result = self._finish(answers, attempt)
                if result is None and attempt.attempt < c.max_retries:
                    retry = _Attempt(
                        attempt.round, attempt.group, attempt.attempt + 1, attempt.demos, [], attempt.rng
                    )
                    self._draw(retry, query_pool)
                    pending.insert(0, (retry, query_pool))
                    continue
                record = {"round": attempt.round, "group": attempt.group, "retries": attempt.attempt,
                          "demos": attempt.demos, "valid": result is not None,
                          "seconds": spent[(attempt.round, attempt.group)]}  # fmt: skip
                if result is not None:
                    record.update(queries=result.queries, weights=result.weights.tolist(),
                                  metrics=result.metrics, answers=result.answers)  # fmt: skip
                records[(attempt.round, attempt.group)] = record
                finished.append(record)
                bar.update(1)
            state.append(finished)
        bar.close()
        return self._aggregate(records, n)

    def _prompt_count(self) -> int:
        return 1 if self.config.query_mode == "joint" else self.config.n_queries

    def _aggregate(self, records: dict, n: int) -> np.ndarray:
        sums, counts = np.zeros(n), np.zeros(n)
        for key in sorted(records):  # a fixed order: resumed and clean runs sum alike
            record = records[key]
            self.stats["groups"] += 1
            self.stats["retries"] += record["retries"]
            self.stats["retried_groups"] += record["retries"] > 0 or not record["valid"]
            if not record["valid"]:
                self.stats["invalid_groups"] += 1
                continue
            result = GroupResult(record["demos"], record["queries"], np.asarray(record["weights"]),
                                 record["metrics"], record["answers"])  # fmt: skip
            self.groups.append(result)
            np.add.at(sums, result.demos, result.scores)
            np.add.at(counts, result.demos, 1)
        if self.stats["invalid_groups"]:
            logger.warning(
                f"Data Whisperer: {self.stats['invalid_groups']} of {self.stats['groups']} groups stayed "
                f"unparseable after {self.config.max_retries} retries; their demonstrations got no score from them"
            )
        if not counts.any():
            raise ValueError(
                f"Data Whisperer: no example got a score -- all {self.stats['groups']} groups stayed unparseable "
                f"after {self.config.max_retries} retries (first unparsed generations: {self.unparsed[:2]!r}); "
                "check the prompt format (use_chat_template, instruction) and the answer budget"
            )
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)

    def _columns(self, dataset) -> tuple[list[str], list[str]]:
        c = self.config
        names = list(dataset.column_names) if hasattr(dataset, "column_names") else list(dataset)
        missing = [col for col in (c.question_column, c.answer_column) if col not in names]
        if missing:
            raise ValueError(
                f"Data Whisperer needs question/answer columns: missing {missing}; the data has {names} "
                f"(set question_column= / answer_column=)"
            )
        return [str(x) for x in dataset[c.question_column]], [str(x) for x in dataset[c.answer_column]]

    # -- caching and resume ------------------------------------------------------------------------------

    def model_fingerprint(self) -> dict:
        """:func:`hf_select.fingerprint.model_fingerprint` of the scoring model (computed once)."""
        from ..fingerprint import model_fingerprint

        if self._model_fingerprint is None:
            self._model_fingerprint = model_fingerprint(self.model, self.tokenizer)
        return self._model_fingerprint

    def _state_key(self, dataset, questions, answers) -> str:
        from ..fingerprint import fingerprint

        return fingerprint(self._config_payload(), self.model_fingerprint(), questions, answers)

    def _config_payload(self) -> dict:
        payload = asdict(self.config)
        if callable(self.config.metric):
            payload["metric"] = getattr(self.config.metric, "__qualname__", repr(self.config.metric))
        return {"config": payload, "attn_layer": self.attn_layer, "custom_generate": self.generate_fn is not None,
                "version": 2}  # fmt: skip

    def fingerprint(self, dataset) -> str:
        """A ``new_fingerprint`` for ``Dataset.map``: the whole config, the model's weights checksum, dtype and
        tokenizer, the data's fingerprint and its column names."""
        from ..fingerprint import fingerprint

        return fingerprint(
            self._config_payload(),
            self.model_fingerprint(),
            getattr(dataset, "_fingerprint", None),
            list(getattr(dataset, "column_names", [])),
        )

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        """``Dataset.map(whisperer, batched=True, batch_size=None)``: adds ``dw_score`` (the batch is the pool,
        so ``batch_size=None`` scores the whole dataset as one pool)."""
        self.cached = False
        return {"dw_score": self.score(batch).tolist()}

    def add_scores(self, dataset, column: str = "dw_score"):
        """``dataset`` with a ``column`` of Data Whisperer scores (through ``Dataset.map``, cached by fingerprint).

        ``self.cached`` tells whether the scores came from the ``datasets`` cache (then no scoring ran and its
        wall-clock must not be used, e.g. for STR).
        """
        from ..loading import check_text_column

        for text_column in (self.config.question_column, self.config.answer_column):
            check_text_column(dataset, text_column, "the dataset to score")
        self.cached = True
        scored = dataset.map(self, batched=True, batch_size=None, new_fingerprint=self.fingerprint(dataset))
        return scored if column == "dw_score" else scored.rename_column("dw_score", column)


class _GroupLog:
    """Finished groups of a scoring run, one JSON line each, under ``state_dir/run-<fingerprint>`` (None: not
    persisted). The folder is claimed by the run's fingerprint (:class:`hf_select.resume.ResumeFolder`); a
    line cut by a kill is dropped and its group scored again."""

    def __init__(self, state_dir: Path | None, key: str):
        # one sub-folder per fingerprint: a run with other settings, data or weights never resumes from it
        self.dir, self.key = (None if state_dir is None else Path(state_dir) / f"run-{key[:16]}"), key
        self.path = None if self.dir is None else self.dir / "groups.jsonl"

    def load(self) -> dict[tuple[int, int], dict]:
        if self.dir is None:
            return {}
        ResumeFolder(self.dir, self.key, what="Data Whisperer groups").claim(name="state.json")
        text = self.path.read_text() if self.path.exists() else ""
        if text and not text.endswith("\n"):  # a line cut by a kill: drop it, that group is scored again
            text = text[: text.rfind("\n") + 1]
            write_atomic(self.path, text)
        done = {}
        for line in text.splitlines():
            record = json.loads(line)
            done[(record["round"], record["group"])] = record
        return done

    def append(self, records: list[dict]) -> None:
        if self.path is None or not records:
            return
        with open(self.path, "a") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
