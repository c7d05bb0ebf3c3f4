"""Scoring for the evaluation harness: tokenisation as lm-eval, row and mask layout, log-likelihoods, generation.

A (context, continuation) pair is tokenised as lm-evaluation-harness 0.4.13 (``HFLM``) does: trailing spaces
of the context move into the continuation, the continuation tokens are the tail of
``encode(context + continuation)`` after ``len(encode(context))`` tokens, the tokenizer's own special tokens
are used (``add_special_tokens=None``), and an empty context becomes the prefix token (BOS, else EOS). The
model input is ``context_tokens + continuation_tokens[:-1]``, left-truncated to ``max_length``.

Where it is faster than lm-eval: the continuations of one context are scored in ONE row that holds the context
once and every continuation after it, with a 4D attention mask (each continuation sees the context and itself)
and position ids that restart after the context -- a 4-choice item costs ``len(context) + sum(len(choice))``
tokens instead of ``4 * len(context) + ...``. Only the continuation positions go through the LM head
(:func:`hf_select.token_loss.logits_to_losses`, float32, exact).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers.utils import logging

from hf_select.model_adapter import unwrap_model
from hf_select.token_loss import final_hidden_states, logits_to_losses, split_causal_lm

logger = logging.get_logger(__name__)

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
    # lm-eval does not add special tokens to a string that already starts with its prefix token's text
    bos = tokenizer.decode(prefix_token_id(tokenizer)) if add_special_tokens is None else None
    if bos and any(t.startswith(bos) for t in texts):
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
    one per continuation with the context left-truncated as lm-eval truncates
    ``(context + continuation)[-(max_length + 1):]`` (the row then feeds exactly ``max_length`` tokens)."""
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


@dataclass
class _Layout:
    """A row as fed: the context, then the continuations' proper prefixes as a token tree (shared prefixes
    once, each continuation's last token never fed: its output predicts nothing), and what each target reads."""

    ids: list[int]
    positions: list[int]
    context: int
    paths: list[list[int]]  # fed indices of each continuation's tokens but its last
    sources: list[int]  # per target token: the fed index whose output predicts it
    targets: list[int]
    slots: list[int]  # per target token: which continuation it belongs to


def _row_layout(row: ScoringRow) -> _Layout:
    c = len(row.context)
    ids, positions = list(row.context), list(range(c))
    root: dict[int, tuple[int, dict]] = {}
    paths, sources, targets, slots = [], [], [], []
    for slot, cont in enumerate(row.continuations):
        node, path = root, []
        for depth, token in enumerate(cont[:-1]):
            if token not in node:
                node[token] = (len(ids), {})
                ids.append(token)
                positions.append(c + depth)
            index, node = node[token]
            path.append(index)
        paths.append(path)
        for t, token in enumerate(cont):
            sources.append(c - 1 if t == 0 else path[t - 1])
            targets.append(token)
            slots.append(slot)
    return _Layout(ids, positions, c, paths, sources, targets, slots)


def pack_rows(lengths: list[int], batch_size: int, pack: bool = True) -> list[list[list[int]]]:
    """Batches of bins of row indices for rows of ``lengths`` (fed tokens), sorted longest first.

    A batch holds up to ``batch_size`` bins; a bin is one sequence of the batch. With ``pack``, the shortest
    remaining rows fill the room a bin has left before the batch's longest row, so no bin is longer than the
    batch's longest row (memory and attention cost stay those of the unpacked batch) and padding is mostly
    gone; without, a bin is one row (2D attention masks, e.g. flash-attention).
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    lo, hi, batches = 0, len(order) - 1, []
    while lo <= hi:
        capacity = lengths[order[lo]]
        bins, rooms = [], []
        while lo <= hi and len(bins) < batch_size:
            bins.append([order[lo]])
            rooms.append(capacity - lengths[order[lo]])
            lo += 1
        if pack:
            for b in range(len(bins)):
                while lo <= hi and lengths[order[hi]] <= rooms[b]:
                    bins[b].append(order[hi])
                    rooms[b] -= lengths[order[hi]]
                    hi -= 1
        batches.append(bins)
    return batches


def _batch_inputs(bins: list[list[_Layout]], pad_id: int, device, dtype, custom_mask: bool):
    """Model inputs of one batch (one sequence per bin) and, per target token, (sequence, column, target id).

    With ``custom_mask`` the attention mask is 4D: each context attends causally to itself, each fed
    continuation token to its context and its own prefix (the tree path), padding to itself only; nothing
    crosses rows packed into one sequence. Otherwise a 2D padding mask (one row per sequence).
    """
    length = max(sum(len(lay.ids) for lay in layouts) for layouts in bins)
    batch = len(bins)
    input_ids = torch.full((batch, length), pad_id, dtype=torch.long)
    position_ids = torch.zeros((batch, length), dtype=torch.long)
    if custom_mask:
        allowed = torch.eye(length, dtype=torch.bool).repeat(batch, 1, 1)
        tril = torch.ones(length, length, dtype=torch.bool).tril()
    else:
        attention_mask = torch.zeros((batch, length), dtype=torch.long)
    g_rows, g_cols, g_targets = [], [], []
    for b, layouts in enumerate(bins):
        offset = 0
        for lay in layouts:
            n, c = len(lay.ids), lay.context
            input_ids[b, offset : offset + n] = torch.tensor(lay.ids)
            position_ids[b, offset : offset + n] = torch.tensor(lay.positions)
            if custom_mask:
                allowed[b, offset : offset + c, offset : offset + c] = tril[:c, :c]
                for path in lay.paths:
                    if path:
                        idx = torch.tensor(path) + offset
                        allowed[b, idx, offset : offset + c] = True
                        allowed[b, idx[:, None], idx[None, :]] |= tril[: len(path), : len(path)]
            else:
                attention_mask[b, offset : offset + n] = 1
            g_rows.extend([b] * len(lay.sources))
            g_cols.extend(offset + s for s in lay.sources)
            g_targets.extend(lay.targets)
            offset += n
    if custom_mask:
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
        mask = mask[:, None].to(device)
    else:
        mask = attention_mask.to(device)
    gather = (
        torch.tensor(g_rows, device=device),
        torch.tensor(g_cols, device=device),
        torch.tensor(g_targets, device=device),
    )
    return input_ids.to(device), mask, position_ids.to(device), gather


def score_rows(
    model,
    rows: list[ScoringRow],
    batch_size: int = 16,
    pad_id: int = 0,
    show_progress: bool = True,
    pack: bool = True,
) -> list[list[float]]:
    """Summed log-likelihood of every continuation of every row (same order as ``rows``), in float64.

    Each row is fed as its context plus a token tree of its continuations' proper prefixes (a prefix shared by
    several continuations is computed once; lm-eval feeds ``context + continuation[:-1]`` per continuation,
    the same tokens for one continuation). Rows are sorted longest first; each batch is one forward pass of
    the backbone and one chunked LM-head projection of the predicting positions only.

    Rows with several continuations need a 4D attention mask; with ``pack`` they are also packed several to
    a sequence (:func:`pack_rows`). Rows with one continuation keep a 2D padding mask, so the model applies
    its own causal and sliding-window masking (such rows may be as long as the context window) and the
    attention kernel may be flash-attention.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    inner = unwrap_model(model)
    _, head, softcap = split_causal_lm(inner)
    param = next(inner.parameters())
    layouts = [_row_layout(r) for r in rows]
    shared = [i for i, r in enumerate(rows) if len(r.continuations) > 1]
    single = [i for i, r in enumerate(rows) if len(r.continuations) == 1]
    batches = []
    for group, custom_mask in ((shared, True), (single, False)):
        packed = pack_rows([len(layouts[i].ids) for i in group], batch_size, pack and custom_mask)
        batches.extend(([[group[j] for j in b] for b in bins], custom_mask) for bins in packed)
    results: list[list[float]] = [[] for _ in rows]
    for bins, custom_mask in tqdm(
        batches, desc="log-likelihood", disable=not show_progress or len(batches) < 2
    ):
        input_ids, mask, position_ids, (rb, cb, tgt) = _batch_inputs(
            [[layouts[i] for i in b] for b in bins], pad_id, param.device, param.dtype, custom_mask
        )
        with torch.no_grad():
            hidden = final_hidden_states(
                inner, input_ids=input_ids, attention_mask=mask, position_ids=position_ids
            )
            nll = logits_to_losses(hidden[rb, cb], tgt, head, softcap).double().cpu()
        members = [i for b in bins for i in b]  # rows in the order their targets were gathered
        owners, base = [], 0
        for i in members:
            owners.extend(base + slot for slot in layouts[i].slots)
            base += len(rows[i].continuations)
        sums = torch.zeros(base, dtype=torch.float64)
        sums = sums.index_add_(0, torch.tensor(owners, dtype=torch.long), -nll).tolist()
        base = 0
        for i in members:
            results[i] = sums[base : base + len(rows[i].continuations)]
            base += len(rows[i].continuations)
    return results


# --------------------------------------------------------------------------------------------- row limits


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
    """(context, continuation) windows that predict every token once, as lm-eval 0.4.13's
    ``loglikelihood_rolling`` builds them (``get_rolling_token_windows`` with ``context_len=1``, then
    ``make_disjoint_window``): the first window predicts up to ``max_length`` tokens after the prefix token,
    every later one predicts up to ``max_length`` tokens after as much of the preceding text as fits.

    ``tokens`` is the document encoded with the tokenizer's default special tokens, as lm-eval encodes it: with a
    BOS-adding (Llama-style) tokenizer the first predicted token is that BOS, read after the BOS prefix token.
    """
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
