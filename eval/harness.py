"""The evaluation harness: log-likelihood, generation and perplexity tasks on any transformers causal LM.

Numbers agree with lm-evaluation-harness 0.4.13 (``HFLM``) on the same model and task files. The work is split
in three modules, and this one runs them:

- :mod:`.tasks`: the task format and the prompts (lm-eval's few-shot sampling and delimiters);
- :mod:`.scoring`: tokenisation as lm-eval, the shared-context rows and their masks, log-likelihoods and
  greedy generation;
- :mod:`.results`: the metric functions (shared with the ``evaluate`` modules), one metric table keyed by task
  type, and the markdown / JSON reports.

Here: the plan (which rows and prompts each task needs), the run (rows sorted by length so that batches carry
little padding; under ``accelerate launch`` / ``torchrun`` each process scores every ``world_size``-th row and
the results are gathered once at the end) and the entry point :func:`evaluate`.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers.utils import logging

from hf_select.generation import generate_greedy
from hf_select.model_adapter import unwrap_model
from hf_select.validation import check_value

from .results import (
    SHOWN_METRICS,
    TASK_METRICS,
    comparison_markdown,
    comparison_table,
    markdown_table,
    mean_and_stderr,
    multiple_choice_metrics,
    task_results,
    write_results,
)
from .scoring import (
    ScoringRow,
    _encode,
    _perplexity_windows,
    build_rows,
    encode_pairs,
    prefix_token_id,
    resolve_max_length,
    score_rows,
    shared_row_limit,
)
from .tasks import Task, TaskError, load_tasks

logger = logging.get_logger(__name__)

__all__ = [
    "SHOWN_METRICS",
    "TASK_METRICS",
    "ScoringRow",
    "build_rows",
    "comparison_markdown",
    "comparison_table",
    "encode_pairs",
    "evaluate",
    "markdown_table",
    "mean_and_stderr",
    "multiple_choice_metrics",
    "prefix_token_id",
    "resolve_max_length",
    "score_rows",
    "shared_row_limit",
    "task_results",
    "write_results",
]

# --------------------------------------------------------------------------------------------- planning


@dataclass
class _Plan:
    rows: list[ScoringRow]
    prompts: dict[tuple, tuple[list[int], list[str], int]]  # generation key -> (prompt, until, max_gen_toks)
    docs: dict[str, list[dict[str, Any]]]
    contexts: dict[str, list[str]]
    num_tokens: dict[tuple, int]  # perplexity (task, doc) -> predicted tokens


def _plan(
    tasks: list[Task], tokenizer, num_fewshot, prefix, limit, max_length, share_limit, add_special_tokens
):
    rows, prompts, docs_by_task, contexts_by_task, num_tokens = [], {}, {}, {}, {}
    for task in tasks:
        docs = task.docs()[:limit] if limit is not None else task.docs()
        docs_by_task[task.name] = docs
        if task.type == "perplexity":
            contexts_by_task[task.name] = [""] * len(docs)
            prefix_id = prefix_token_id(tokenizer)
            texts = [d[task.text_field] for d in docs]
            for i, ids in enumerate(_encode(tokenizer, texts, add_special_tokens)):
                num_tokens[(task.name, i)] = len(ids)
                for w, (ctx, cont) in enumerate(_perplexity_windows(ids, prefix_id, max_length)):
                    rows.append(ScoringRow(ctx, [cont], [(task.name, i, w)]))
            continue
        shots = task.fewshot_examples(task.num_fewshot if num_fewshot is None else num_fewshot, limit)
        contexts = [task.context(doc, fs, prefix) for doc, fs in zip(docs, shots)]
        contexts_by_task[task.name] = contexts
        if task.type == "generate":
            ids = _encode(tokenizer, contexts, add_special_tokens)
            for i, prompt in enumerate(ids):
                keep = max(1, max_length - task.max_gen_toks)
                prompts[(task.name, i)] = (prompt[-keep:], task.until, task.max_gen_toks)
            continue
        pairs = [(ctx, task.continuations(doc)) for ctx, doc in zip(contexts, docs)]
        for i, (ctx_ids, cont_ids) in enumerate(encode_pairs(tokenizer, pairs, add_special_tokens)):
            keys = [(task.name, i, j) for j in range(len(cont_ids))]
            rows.extend(build_rows(ctx_ids, cont_ids, keys, max_length, share_limit))
    return _Plan(rows, prompts, docs_by_task, contexts_by_task, num_tokens)


# --------------------------------------------------------------------------------------------- entry point


def _distributed_state() -> tuple[int, int]:
    """(rank, world size) of the current launch (``accelerate launch`` or ``torchrun``).

    Under a multi-process launch whose process group is not up yet, accelerate's ``PartialState`` brings it up
    (NCCL on GPUs, gloo on CPU); the rank and size are then read from ``torch.distributed`` itself, because
    accelerate reports CPU runs under torchrun as non-distributed.
    """
    import torch.distributed as dist

    if dist.is_available() and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        PartialState()
        if not dist.is_initialized():
            dist.init_process_group("gloo")
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather(local: dict) -> dict:
    """Merge every process's ``{key: value}`` results (one collective call)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, list(local.items()))
    merged = {}
    for part in parts:
        merged.update(part)
    return merged


def evaluate(
    model,
    tokenizer,
    tasks,
    num_fewshot: int | None = None,
    batch_size: int = 16,
    prefix: str | None = None,
    limit: int | None = None,
    max_length: int | None = None,
    share_context: bool = True,
    add_special_tokens: bool | None = None,
    log_samples: bool = False,
    output_dir: str | Path | None = None,
    model_name: str | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a causal LM on harness tasks; data-parallel when launched with ``accelerate``/``torchrun``.

    Args:
        model: a transformers causal LM (peft / DDP wrappers are unwrapped), already on its device.
        tokenizer: its tokenizer.
        tasks: task files, folders of task files, dicts or :class:`Task` objects (see ``eval/TASK_FORMAT.md``).
        num_fewshot: few-shot examples per item (default: each task's ``num_fewshot``).
        batch_size: rows per forward pass (a row is one context with all its continuations).
        prefix: conditional-inference prefix put before every prompt (MeCo, arXiv:2501.01956), overriding
            each task's ``prefix``; ``""`` removes the tasks' prefixes.
        limit: evaluate only the first ``limit`` items of each task (quick runs); ``None`` evaluates all, ``0``
            is refused.
        max_length: context window (default: the model config's).
        share_context: score all continuations of a context in one row (False: one row per continuation,
            lm-eval's layout; needed for attention kernels without arbitrary masks, e.g. flash-attention).
        add_special_tokens: passed to the tokenizer; None uses the tokenizer's default, like lm-eval.
        log_samples: also return per-item outputs under ``"samples"``.
        output_dir: where the main process writes ``results.json`` and ``results.md``.
        model_name: name recorded in the results (default: the model config's ``_name_or_path``).

    Returns:
        ``{"results": {task: {metric: value, ..., "num_items": n}}, "config": {...}, "samples"?: {...}}``.
        Every process returns the full results.
    """
    for name, value in (("limit", limit), ("num_fewshot", num_fewshot), ("batch_size", batch_size)):
        check_value(name, value)
    tasks = load_tasks(tasks)
    if not tasks:
        raise TaskError("no tasks to evaluate")
    rank, world = _distributed_state()
    show_progress = show_progress and rank == 0
    started = time.perf_counter()
    max_length = resolve_max_length(model, tokenizer, max_length)
    share_limit = shared_row_limit(model, max_length) if share_context else None
    plan = _plan(tasks, tokenizer, num_fewshot, prefix, limit, max_length, share_limit, add_special_tokens)
    was_training = model.training
    model.eval()

    # processes take interleaved rows of the length order; score_rows packs them longest first (fails early
    # when a batch does not fit)
    order = sorted(range(len(plan.rows)), key=lambda i: -plan.rows[i].num_tokens)[rank::world]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else prefix_token_id(tokenizer)
    rows = [plan.rows[i] for i in order]
    sums = score_rows(model, rows, batch_size, pad_id, show_progress)
    local: dict = {}
    for i, row_sums in zip(order, sums):
        local.update(zip(plan.rows[i].keys, row_sums))
    by_setting = defaultdict(list)
    for key, (prompt, until, max_gen) in plan.prompts.items():
        by_setting[(tuple(until), max_gen)].append((key, prompt))
    for (until, max_gen), items in by_setting.items():
        items = sorted(items, key=lambda kv: -len(kv[1]))[rank::world]
        texts = generate_greedy(model, tokenizer, input_ids=[p for _, p in items], max_new_tokens=max_gen,
                                batch_size=batch_size, stop_strings=list(until), cut_at_stop=True)  # fmt: skip
        local.update({("gen", *key): text for (key, _), text in zip(items, texts)})
    merged = _gather(local)
    model.train(was_training)

    generations = {key[1:]: v for key, v in merged.items() if key[0] == "gen"}
    scores = {key: v for key, v in merged.items() if key[0] != "gen"}
    results, samples = {}, {}
    for task in tasks:
        contexts = plan.contexts[task.name] if log_samples else None
        results[task.name], samples[task.name] = task_results(
            task, plan.docs[task.name], scores, generations, plan.num_tokens, contexts
        )
    config = unwrap_model(model).config
    output = {
        "results": results,
        "config": {
            "model": model_name
            or getattr(config, "_name_or_path", None)
            or type(unwrap_model(model)).__name__,
            "num_fewshot": num_fewshot,
            "batch_size": batch_size,
            "prefix": prefix,
            "limit": limit,
            "max_length": max_length,
            "share_context": share_limit is not None,
            "num_processes": world,
            "tasks": {t.name: {"type": t.type, "metadata": t.metadata} for t in tasks},
        },
        "seconds": round(time.perf_counter() - started, 3),
    }
    if log_samples:
        output["samples"] = samples
    if output_dir is not None and rank == 0:
        write_results(output, output_dir)
    return output
