"""Teacher-forced accuracy on the key-value retrieval proxy task (is a model able to retrieve in context?)."""

from __future__ import annotations

import random
from typing import Any

import torch

from ..token_loss import final_hidden_states, split_causal_lm


def encode_prompt_answer(tokenizer, prompt: str, answer: str) -> tuple[list[int], int]:
    """Token ids of ``prompt + answer`` from one tokenisation, and the index of the first answer token."""
    enc = tokenizer(prompt + answer, return_offsets_mapping=True)
    start = next(
        (i for i, (s, e) in enumerate(enc["offset_mapping"]) if e > len(prompt) and e > s),
        len(enc["input_ids"]),
    )
    return enc["input_ids"], start


@torch.no_grad()
def proxy_task_accuracy(
    model, tokenizer, samples: list[dict[str, Any]], batch_size: int = 8
) -> dict[str, float]:
    """Teacher-forced greedy accuracy on proxy samples.

    Returns ``token_accuracy`` (share of answer tokens that are the argmax prediction),
    ``first_token_accuracy`` (the first answer token alone: the key lookup; the later tokens can be copied from
    the value once its start is given) and ``sample_accuracy`` (share of samples whose every answer token is the
    argmax).
    """
    backbone_head = split_causal_lm(model)[1]
    correct_tokens = total_tokens = correct_samples = correct_first = 0
    encoded = [encode_prompt_answer(tokenizer, s["prompt"], s["answer"]) for s in samples]
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        length = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), length), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, (tokens, _) in enumerate(chunk):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        hidden = final_hidden_states(model, input_ids=ids.to(device), attention_mask=mask.to(device))
        for row, (tokens, answer_start) in enumerate(chunk):
            positions = torch.arange(answer_start - 1, len(tokens) - 1, device=device)
            predicted = backbone_head(hidden[row, positions]).argmax(-1).cpu()
            hits = predicted == torch.tensor(tokens[answer_start:])
            correct_tokens += int(hits.sum())
            total_tokens += hits.numel()
            correct_samples += int(hits.all())
            correct_first += int(hits[:1].all())
    return {
        "token_accuracy": correct_tokens / max(total_tokens, 1),
        "first_token_accuracy": correct_first / max(len(samples), 1),
        "sample_accuracy": correct_samples / max(len(samples), 1),
    }


ACCURACY_KEYS = ("sample_accuracy", "first_token_accuracy", "token_accuracy")


def masking_check(
    model,
    tokenizer,
    samples: list[dict[str, Any]],
    heads,
    random_draws: int = 5,
    seed: int = 0,
    non_retrieval_threshold: float = 0.1,
) -> dict[str, Any]:
    """AttentionInfluence's App. D check (arXiv 2505.07293): proxy accuracy with no head masked, with
    ``heads.selected`` masked and with as many random non-retrieval heads masked (``random_draws`` draws).

    Non-retrieval heads score below ``non_retrieval_threshold`` (0.1, Wu et al. 2024's line for a retrieval
    head); a tiny model with too few of them draws from every other head (``random_pool`` says which). Returns
    the accuracies (:func:`proxy_task_accuracy`) of ``none``, ``top``, each draw (with its heads), their mean
    ``random`` and the relative drops of ``top`` and ``random`` (None where the unmasked accuracy is 0).
    """
    from .head_masking import mask_heads

    selected = heads.selected
    chosen = {tuple(h) for h in selected}
    layers, per_layer = heads.scores.shape
    others = [
        (layer, h) for layer in range(layers) for h in range(per_layer)
        if (layer, h) not in chosen and float(heads.scores[layer, h]) < non_retrieval_threshold
    ]  # fmt: skip
    pool = "non-retrieval heads"
    if len(others) < len(selected):  # tiny models: too few low-scoring heads, draw from every other head
        others = [(layer, h) for layer in range(layers) for h in range(per_layer) if (layer, h) not in chosen]
        pool = "other heads"
    rng = random.Random(seed)
    out: dict[str, Any] = {"none": proxy_task_accuracy(model, tokenizer, samples)}
    with mask_heads(model, selected):
        out["top"] = proxy_task_accuracy(model, tokenizer, samples)
    draws = []
    for _ in range(random_draws):
        drawn = rng.sample(others, len(selected))
        with mask_heads(model, drawn):
            draws.append({"heads": [list(h) for h in drawn], **proxy_task_accuracy(model, tokenizer, samples)})
    out["random_draws"] = draws
    out["random_pool"] = f"{pool} ({len(others)})"
    out["random"] = {k: sum(d[k] for d in draws) / max(len(draws), 1) for k in ACCURACY_KEYS}
    base = out["none"]
    out["relative_drop"] = {
        which: {k: (1 - out[which][k] / base[k]) if base[k] > 0 else None for k in ACCURACY_KEYS}
        for which in ("top", "random")
    }
    return out
