"""The evaluation harness: log-likelihood, generation and perplexity tasks on any transformers causal LM.

Numbers agree with lm-evaluation-harness 0.4.13 (``HFLM``) on the same model and task files:

- a (context, continuation) pair is tokenised as lm-eval does: trailing spaces of the context move into the
  continuation, the continuation tokens are the tail of ``encode(context + continuation)`` after
  ``len(encode(context))`` tokens, the tokenizer's own special tokens are used (``add_special_tokens=None``),
  and an empty context becomes the prefix token (BOS, else EOS);
- the model input is ``context_tokens + continuation_tokens[:-1]``, left-truncated to ``max_length``;
- acc = argmax of the summed log-likelihood, acc_norm = argmax of log-likelihood / character length of the
  choice (``np.argmax``: the first maximum wins ties).

Where it is faster: the continuations of one context are scored in ONE row that holds the context once and
every continuation after it, with a 4D attention mask (each continuation sees the context and itself) and
position ids that restart after the context -- a 4-choice item costs ``len(context) + sum(len(choice))``
tokens instead of ``4 * len(context) + ...``. Only the continuation positions go through the LM head
(:func:`hf_select.token_loss.logits_to_losses`, float32, exact). Rows are sorted by length so that batches
carry little padding, and under ``accelerate launch`` / ``torchrun`` each process scores every
``world_size``-th row; the results are gathered once at the end.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers.utils import logging

from hf_select.model_adapter import unwrap_model
from hf_select.text_metrics import exact_match
from hf_select.token_loss import final_hidden_states, logits_to_losses, split_causal_lm

from .tasks import Task, TaskError, load_tasks

logger = logging.get_logger(__name__)

LN2 = math.log(2)
_DEFAULT_MAX_LENGTH = 2048


@dataclass
class ScoringRow:
    """One forward row: a context and the continuations scored after it (``keys[i]`` names continuation i)."""

    context: list[int]
    continuations: list[list[int]]
    keys: list[tuple]

    @property
    def num_tokens(self) -> int:
        return len(self.context) + sum(len(c) for c in self.continuations)


# --------------------------------------------------------------------------------------------- tokenising


def prefix_token_id(tokenizer) -> int:
    """Token that stands in for an empty context (BOS, else EOS), as lm-eval."""
    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token is None:
        raise ValueError("the tokenizer has neither a BOS nor an EOS token to use for an empty context")
    return token


def _encode(tokenizer, texts: list[str], add_special_tokens: bool | None) -> list[list[int]]:
    if not texts:
        return []
    kwargs = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
    bos = tokenizer.bos_token
    if add_special_tokens is None and bos and any(t.startswith(bos) for t in texts):
        # lm-eval does not add special tokens to a string that already starts with BOS
        return [_encode(tokenizer, [t], False if t.startswith(bos) else None)[0] for t in texts]
    return tokenizer(texts, **kwargs)["input_ids"]


def encode_pairs(
    tokenizer, pairs: list[tuple[str, list[str]]], add_special_tokens: bool | None = None
) -> list[tuple[list[int], list[list[int]]]]:
    """Token ids ``(context, [continuation, ...])`` for each ``(context, [continuation strings])``.

    Follows lm-eval's ``_encode_pair``; the context tokens do not depend on the continuation, which is what
    lets one row share them. Raises a clear error for a continuation that tokenises to nothing.
    """
    contexts, wholes, empties = [], [], []
    for context, conts in pairs:
        if context == "":
            empties.extend(conts)
            continue
        stripped = context.rstrip()
        moved = context[len(stripped) :]
        contexts.append(stripped)
        wholes.extend(stripped + moved + c for c in conts)
    context_ids = iter(_encode(tokenizer, contexts, add_special_tokens))
    whole_ids = iter(_encode(tokenizer, wholes, add_special_tokens))
    empty_ids = iter(_encode(tokenizer, empties, False))
    prefix = prefix_token_id(tokenizer)
    encoded = []
    for context, conts in pairs:
        if context == "":
            ctx, cont_ids = [prefix], []
            for _ in conts:
                ids = next(empty_ids)
                if ids and ids[0] == prefix:  # lm-eval: the continuation already starts with the prefix
                    ids = ids[1:]
                cont_ids.append(ids)
        else:
            ctx = next(context_ids)
            cont_ids = [next(whole_ids)[len(ctx) :] for _ in conts]
        for text, ids in zip(conts, cont_ids):
            if not ids:
                raise ValueError(f"continuation {text!r} of context {context[-60:]!r} tokenises to no tokens")
        encoded.append((ctx, cont_ids))
    return encoded


def build_rows(
    context: list[int],
    continuations: list[list[int]],
    keys: list[tuple],
    max_length: int,
    share_limit: int | None,
) -> list[ScoringRow]:
    """Rows for one context: one shared row when its positions fit ``share_limit`` (None: never share), else
    one per continuation
    with the context left-truncated as lm-eval truncates ``(context + continuation)[-(max_length + 1):]``."""
    longest = max(len(c) for c in continuations)
    if share_limit and len(continuations) > 1 and len(context) + longest - 1 <= share_limit:
        return [ScoringRow(context, continuations, keys)]
    rows = []
    for cont, key in zip(continuations, keys):
        if len(cont) > max_length:
            raise ValueError(f"a continuation of {len(cont)} tokens does not fit max_length={max_length}")
        keep = max_length + 1 - len(cont)
        rows.append(ScoringRow(context[-keep:], [cont], [key]))
    return rows


# --------------------------------------------------------------------------------------------- scoring


def _row_layout(row: ScoringRow):
    """Token ids, position ids, (query, key) pairs allowed to attend, and (source, target, slot) per target."""
    c = len(row.context)
    ids, positions = list(row.context), list(range(c))
    sources, targets, slots = [], [], []
    spans = []
    for slot, cont in enumerate(row.continuations):
        start = len(ids)
        spans.append((start, len(cont)))
        ids.extend(cont)
        positions.extend(range(c, c + len(cont)))
        for t, token in enumerate(cont):
            sources.append(c - 1 if t == 0 else start + t - 1)
            targets.append(token)
            slots.append(slot)
    return ids, positions, spans, sources, targets, slots


def _batch_inputs(rows: list[ScoringRow], pad_id: int, device, dtype):
    layouts = [_row_layout(r) for r in rows]
    length = max(len(lay[0]) for lay in layouts)
    batch = len(rows)
    input_ids = torch.full((batch, length), pad_id, dtype=torch.long)
    position_ids = torch.zeros((batch, length), dtype=torch.long)
    shared = any(len(r.continuations) > 1 for r in rows)
    if shared:
        allowed = torch.eye(length, dtype=torch.bool).repeat(batch, 1, 1)  # padding attends to itself only
    else:
        attention_mask = torch.zeros((batch, length), dtype=torch.long)
    gather_rows, gather_cols, gather_targets, gather_slots = [], [], [], []
    for b, (ids, positions, spans, sources, targets, slots) in enumerate(layouts):
        n = len(ids)
        input_ids[b, :n] = torch.tensor(ids)
        position_ids[b, :n] = torch.tensor(positions)
        c = len(rows[b].context)
        if shared:
            allowed[b, :c, :c] = torch.ones(c, c, dtype=torch.bool).tril()
            for start, k in spans:
                allowed[b, start : start + k, :c] = True
                allowed[b, start : start + k, start : start + k] = torch.ones(k, k, dtype=torch.bool).tril()
        else:
            attention_mask[b, :n] = 1
        gather_rows.extend([b] * len(sources))
        gather_cols.extend(sources)
        gather_targets.extend(targets)
        gather_slots.extend(slots)
    if shared:
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
        mask = mask[:, None].to(device)
    else:
        mask = attention_mask.to(device)
    gather = (
        torch.tensor(gather_rows, device=device),
        torch.tensor(gather_cols, device=device),
        torch.tensor(gather_targets, device=device),
    )
    return input_ids.to(device), mask, position_ids.to(device), gather, gather_slots


def score_rows(
    model, rows: list[ScoringRow], batch_size: int = 16, pad_id: int = 0, show_progress: bool = True
) -> list[list[float]]:
    """Summed log-likelihood of every continuation of every row (same order), in float64.

    Rows are scored in the order given (sort them by length first); each batch is one forward pass of the
    backbone and one chunked LM-head projection of the continuation positions only.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    inner = unwrap_model(model)
    _, head, softcap = split_causal_lm(inner)
    param = next(inner.parameters())
    results: list[list[float]] = []
    starts = range(0, len(rows), batch_size)
    for start in tqdm(starts, desc="log-likelihood", disable=not show_progress or len(starts) < 2):
        batch = rows[start : start + batch_size]
        input_ids, mask, position_ids, (rb, cb, tgt), slots = _batch_inputs(
            batch, pad_id, param.device, param.dtype
        )
        with torch.no_grad():
            hidden = final_hidden_states(
                inner, input_ids=input_ids, attention_mask=mask, position_ids=position_ids
            )
            nll = logits_to_losses(hidden[rb, cb], tgt, head, softcap).double().cpu()
        counts = torch.tensor([len(r.continuations) for r in batch])
        owner = (counts.cumsum(0) - counts)[rb.cpu()] + torch.tensor(slots)
        total = int(counts.sum())
        sums = torch.zeros(total, dtype=torch.float64).index_add_(0, owner, -nll).tolist()
        offset = 0
        for r in batch:
            results.append(sums[offset : offset + len(r.continuations)])
            offset += len(r.continuations)
    return results


def generate_greedy(
    model,
    tokenizer,
    prompts: list[list[int]],
    until: list[str],
    max_gen_toks: int,
    batch_size: int = 16,
    show_progress: bool = True,
) -> list[str]:
    """Greedy continuations of token-id prompts (left-padded batches), cut at the first stop sequence."""
    inner = unwrap_model(model)
    device = next(inner.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else prefix_token_id(tokenizer)
    outputs = []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc="generate", disable=not show_progress or len(starts) < 2):
        batch = prompts[start : start + batch_size]
        length = max(len(p) for p in batch)
        input_ids = torch.full((len(batch), length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), length), dtype=torch.long)
        for b, p in enumerate(batch):
            input_ids[b, length - len(p) :] = torch.tensor(p)
            attention_mask[b, length - len(p) :] = 1
        with torch.no_grad():
            generated = inner.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                max_new_tokens=max_gen_toks,
                do_sample=False,
                num_beams=1,
                pad_token_id=pad_id,
                stop_strings=[s for s in until if s] or None,
                tokenizer=tokenizer,
            )
        for row in generated[:, length:].tolist():
            text = tokenizer.decode(row, skip_special_tokens=True)
            for stop in until:
                if stop:
                    text = text.split(stop)[0]
            outputs.append(text)
    return outputs


# --------------------------------------------------------------------------------------------- planning


def shared_row_limit(model, max_length: int) -> int | None:
    """Most positions a shared row may span: the context window, or the sliding window when the model has one
    (a custom 4D mask replaces the model's own sliding-window mask, so rows stay inside it); None when the
    attention kernel takes no arbitrary mask (flash-attention), which turns sharing off."""
    config = unwrap_model(model).config
    kernel = str(getattr(config, "_attn_implementation", "") or "")
    if "flash" in kernel:
        logger.warning(
            f"attention kernel {kernel!r} takes no custom masks: continuations are scored one per row"
        )
        return None
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    window = getattr(text_config, "sliding_window", None)
    return min(max_length, int(window)) if window else max_length


def resolve_max_length(model, tokenizer, max_length: int | None = None) -> int:
    """``max_length`` if given, else the model's context length (config), else the tokenizer's, else 2048."""
    if max_length:
        return int(max_length)
    config = unwrap_model(model).config
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, attr, None)
        if value:
            return int(value)
    model_max = getattr(tokenizer, "model_max_length", None)
    if model_max and model_max < 1_000_000:
        return int(model_max)
    return _DEFAULT_MAX_LENGTH


def _perplexity_windows(tokens: list[int], prefix: int, max_length: int):
    """(context, continuation) windows that predict every token once, as lm-eval's rolling log-likelihood."""
    if not tokens:
        return
    first = min(max_length, len(tokens))
    yield [prefix], tokens[:first]
    predicted = first
    while predicted < len(tokens):
        size = min(len(tokens) - predicted, max_length)
        end = predicted + size
        window = tokens[max(0, end - max_length - 1) : end - 1]
        yield window[: len(window) - size + 1], tokens[end - size : end]
        predicted = end


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
        docs = task.docs()[:limit] if limit else task.docs()
        docs_by_task[task.name] = docs
        if task.type == "perplexity":
            contexts_by_task[task.name] = [""] * len(docs)
            prefix_id = prefix_token_id(tokenizer)
            texts = [d[task.text_field] for d in docs]
            for i, ids in enumerate(_encode(tokenizer, texts, False)):
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


# --------------------------------------------------------------------------------------------- metrics


def _mean_and_stderr(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    stderr = float(arr.std(ddof=1) / math.sqrt(len(arr))) if len(arr) > 1 else float("nan")
    return float(arr.mean()), stderr


def multiple_choice_metrics(loglikelihoods: list[float], choices: list[str], gold: int) -> dict[str, float]:
    """acc and acc_norm of one item (lm-eval: acc_norm divides by the character length of each choice)."""
    lls = np.asarray(loglikelihoods, dtype=np.float64)
    lengths = np.asarray([float(len(c)) for c in choices])
    return {
        "acc": float(int(np.argmax(lls)) == gold),
        "acc_norm": float(int(np.argmax(lls / lengths)) == gold),
    }


def _task_results(task: Task, plan: _Plan, scores, generations, log_samples):
    docs, contexts = plan.docs[task.name], plan.contexts[task.name]
    samples = []
    if task.type == "multiple_choice":
        per_item = defaultdict(list)
        for i, doc in enumerate(docs):
            lls = [scores[(task.name, i, j)] for j in range(len(task.choices(doc)))]
            item = multiple_choice_metrics(lls, task.choices(doc), doc[task.gold_field])
            for k, v in item.items():
                per_item[k].append(v)
            samples.append({"doc_id": i, "loglikelihoods": lls, "gold": doc[task.gold_field], **item})
        out = {}
        for metric, values in per_item.items():
            out[metric], out[f"{metric}_stderr"] = _mean_and_stderr(values)
    elif task.type == "gold_bpb":
        nll = [-scores[(task.name, i, 0)] for i in range(len(docs))]
        nbytes = [len(task.continuations(doc)[0].encode("utf-8")) for doc in docs]
        out = {"bits_per_byte": sum(nll) / LN2 / sum(nbytes)}
        samples = [{"doc_id": i, "nll": n, "num_bytes": b} for i, (n, b) in enumerate(zip(nll, nbytes))]
    elif task.type == "generate":
        matches = []
        for i, doc in enumerate(docs):
            pred = generations[(task.name, i)]
            matches.append(exact_match(pred, doc[task.gold_field]))
            samples.append(
                {"doc_id": i, "prediction": pred, "gold": doc[task.gold_field], "exact_match": matches[-1]}
            )
        out = {}
        out["exact_match"], out["exact_match_stderr"] = _mean_and_stderr(matches)
    else:  # perplexity
        by_domain = defaultdict(lambda: [0.0, 0, 0])  # nll, tokens, bytes
        windows_of = defaultdict(list)
        for key in scores:
            if key[0] == task.name:
                windows_of[key[1]].append(key)
        for i, doc in enumerate(docs):
            nll = -sum(scores[k] for k in windows_of[i])
            tokens = plan.num_tokens[(task.name, i)]
            nbytes = len(doc[task.text_field].encode("utf-8"))
            domains = ["all"] + ([str(doc[task.domain_field])] if task.domain_field in doc else [])
            for d in domains:
                by_domain[d][0] += nll
                by_domain[d][1] += tokens
                by_domain[d][2] += nbytes
            samples.append({"doc_id": i, "nll": nll, "num_tokens": tokens, "num_bytes": nbytes})

        def summary(nll, tokens, nbytes):
            return {
                "bits_per_byte": nll / LN2 / max(nbytes, 1),
                "token_perplexity": math.exp(nll / max(tokens, 1)),
            }

        out = summary(*by_domain.pop("all"))
        if by_domain:
            out["domains"] = {d: summary(*v) for d, v in sorted(by_domain.items())}
    out["num_items"] = len(docs)
    if log_samples:
        for sample, ctx in zip(samples, contexts):
            sample["context"] = ctx
    return out, samples


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
        limit: evaluate only the first ``limit`` items of each task (quick runs).
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

    # longest first (fails early when a batch does not fit); processes take interleaved rows
    order = sorted(range(len(plan.rows)), key=lambda i: -plan.rows[i].num_tokens)[rank::world]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else prefix_token_id(tokenizer)
    sums = score_rows(model, [plan.rows[i] for i in order], batch_size, pad_id, show_progress)
    local: dict = {}
    for i, row_sums in zip(order, sums):
        local.update(zip(plan.rows[i].keys, row_sums))
    by_setting = defaultdict(list)
    for key, (prompt, until, max_gen) in plan.prompts.items():
        by_setting[(tuple(until), max_gen)].append((key, prompt))
    for (until, max_gen), items in by_setting.items():
        items = sorted(items, key=lambda kv: -len(kv[1]))[rank::world]
        texts = generate_greedy(
            model, tokenizer, [p for _, p in items], list(until), max_gen, batch_size, show_progress
        )
        local.update({("gen", *key): text for (key, _), text in zip(items, texts)})
    merged = _gather(local)
    model.train(was_training)

    generations = {key[1:]: v for key, v in merged.items() if key[0] == "gen"}
    scores = {key: v for key, v in merged.items() if key[0] != "gen"}
    results, samples = {}, {}
    for task in tasks:
        results[task.name], samples[task.name] = _task_results(task, plan, scores, generations, log_samples)
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


# --------------------------------------------------------------------------------------------- reporting

_SHOWN = ("acc", "acc_norm", "exact_match", "bits_per_byte", "token_perplexity")


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def markdown_table(output: dict[str, Any]) -> str:
    """A markdown table of one :func:`evaluate` output: one line per (task, metric), domains included."""
    lines = ["| task | metric | value | stderr | items |", "|---|---|---|---|---|"]
    for task, metrics in output["results"].items():
        for metric in _SHOWN:
            if metric in metrics:
                stderr = metrics.get(f"{metric}_stderr")
                lines.append(
                    f"| {task} | {metric} | {_fmt(metrics[metric])} | "
                    f"{'' if stderr is None else _fmt(stderr)} | {metrics['num_items']} |"
                )
        for domain, values in metrics.get("domains", {}).items():
            for metric, value in values.items():
                lines.append(f"| {task} [{domain}] | {metric} | {_fmt(value)} |  |  |")
    return "\n".join(lines) + "\n"


def comparison_table(outputs: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows comparing several models: one row per model, one column per task metric."""
    columns = []
    for output in outputs.values():
        for task, metrics in output["results"].items():
            for metric in _SHOWN:
                if metric in metrics and (task, metric) not in columns:
                    columns.append((task, metric))
    header = ["model"] + [f"{task} {metric}" for task, metric in columns]
    rows = [
        [name] + [_fmt(output["results"].get(task, {}).get(metric, "")) for task, metric in columns]
        for name, output in outputs.items()
    ]
    return header, rows


def comparison_markdown(outputs: dict[str, dict[str, Any]]) -> str:
    header, rows = comparison_table(outputs)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_results(output: dict[str, Any], output_dir: str | Path) -> Path:
    """Write ``results.json`` and ``results.md`` (the table) into ``output_dir``; returns the JSON path."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "results.json"
    path.write_text(json.dumps(output, indent=2, default=str))
    (folder / "results.md").write_text(markdown_table(output))
    return path
