"""AttentionInfluence document scores (arXiv 2505.07293, Eq. 5): ``(L_ref - L_base) / L_base``.

``L_base`` is a document's mean token cross-entropy under the base model, ``L_ref`` under the same model with
its retrieval heads given causal uniform attention (:func:`hf_select.mask_heads`). Higher means the document
leans more on in-context retrieval / reasoning. Compare scores only within a domain.

Cost: the decoder layers below the lowest masked layer are identical in both passes. The plain pass caches
the output of the last of them; during the masked pass those layers are replaced by a stub returning the
cached output, so only the upper layers run twice (one copy of the weights; the model's own forward still
builds masks and rotary embeddings, so this works for every supported family).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from ..errors import InputIndexError, InputKeyError, InputTypeError
from ..fingerprint import fingerprint, model_fingerprint
from ..model_adapter import get_model_adapter, unwrap_model
from ..packing import document_token_ids
from ..token_loss import final_hidden_states, per_token_loss, prepare_model_inputs
from .head_masking import mask_heads, normalize_heads
from .prefilter import PREFILTERS, REASON_COLUMN, parse_prefilter_options

SCORE_COLUMNS = ("ai_loss_base", "ai_loss_ref", "ai_score", "ai_num_tokens", "ai_too_short")


@contextlib.contextmanager
def _reuse_lower_layers(layers: list[nn.Module], cached: Any):
    """Replace ``layers`` by stubs returning ``cached`` (the output of the last of them)."""

    def stub(*_args, **_kwargs):
        return cached

    # accelerate (device_map) wraps ``forward`` as an instance attribute: keep it to restore it
    saved = [layer.__dict__.get("forward") for layer in layers]
    for layer in layers:
        layer.forward = stub
    try:
        yield
    finally:
        for layer, forward in zip(layers, saved):
            if forward is None:
                del layer.forward
            else:
                layer.forward = forward


@torch.no_grad()
def base_and_reference_losses(
    model: nn.Module,
    heads: Iterable[Sequence[int]],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    reuse_lower_layers: bool = True,
    base_pass_hook: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token float32 losses of the base and the head-masked model, and the predicted-token mask.

    Alignment as in :func:`hf_select.per_token_loss` (labels are ``input_ids``, never pre-shifted). With
    ``reuse_lower_layers`` the layers below the lowest masked layer run once (see the module docstring);
    without it two full forward passes run (the naive method, kept for checks and benchmarks).
    ``base_pass_hook(hidden_states, losses, mask)``, when given, receives the base pass's final hidden states
    and per-token losses before the masked pass, so that other work on the same forward (RHO-1 reference
    losses) needs no pass of its own.
    """
    adapter = get_model_adapter(model)
    heads = normalize_heads(heads, adapter)
    if not heads:
        raise ValueError("AttentionInfluence needs at least one head to mask")
    model_inputs, position_ids = prepare_model_inputs(input_ids, attention_mask, position_ids, model)
    lowest = heads[0][0]
    cache: dict[str, Any] = {}
    handle = None
    if reuse_lower_layers and lowest > 0:
        handle = adapter.layers[lowest - 1].register_forward_hook(
            lambda _m, _a, output: cache.__setitem__("out", output)
        )
    try:
        hidden = final_hidden_states(model, **model_inputs)
    finally:
        if handle is not None:
            handle.remove()
    base = per_token_loss(model, input_ids, attention_mask, position_ids, hidden_states=hidden)
    if base_pass_hook is not None:
        base_pass_hook(hidden, base.losses, base.mask)
    reuse = (
        _reuse_lower_layers(adapter.layers[:lowest], cache["out"])
        if "out" in cache
        else contextlib.nullcontext()
    )
    with reuse, mask_heads(model, heads):
        hidden = final_hidden_states(model, **model_inputs)
    ref = per_token_loss(model, input_ids, attention_mask, position_ids, hidden_states=hidden)
    return base.losses, ref.losses, base.mask


@dataclass
class AttentionInfluenceConfig:
    """Every parameter of the AttentionInfluence scorer (arXiv 2505.07293), in one place.

    The scorer reads only this, on every path (``Dataset.map``, :func:`hf_select.sharded_map`, the datatrove
    step) and ``hf-select score attention-influence`` parses it, so a flag behaves the same everywhere;
    :meth:`AttentionInfluence.fingerprint` hashes it whole, so a new field can never be left out of the cache
    key.

    Short documents (a choice: the paper scores web documents, where they are rare): a document with fewer than
    ``min_tokens`` predicted tokens, or of whitespace only, is flagged ``ai_too_short`` and gets a NaN
    ``ai_score``, so that no selection keeps it (a loss ratio over 1-3 tokens is noise that can land in any
    top fraction). Its losses and token count are kept.
    """

    heads: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Heads to mask as LAYER:HEAD (e.g. 3:1 5:0), or (layer, head) pairs from Python; "
            "default: those of --heads_file (paper: the top 5 percent)."
        },
    )
    heads_file: str | None = field(
        default=None, metadata={"help": "RetrievalHeads JSON from hf-select detect-heads (its selected heads)."}
    )
    max_length: int = field(
        default=2048, metadata={"help": "Tokens per chunk (longer documents are cut into chunks)."}
    )
    batch_size: int = field(default=8, metadata={"help": "Chunks per forward pass."})
    text_column: str = field(default="text", metadata={"help": "Column holding the documents."})
    min_tokens: int = field(
        default=16,
        metadata={
            "help": "Documents with fewer predicted tokens, and whitespace-only ones, are flagged ai_too_short "
            "and get a NaN ai_score, so that no selection keeps them (a 1-3 token loss ratio is noise)."
        },
    )
    reuse_lower_layers: bool = field(
        default=True,
        metadata={
            "help": "Run the layers below the lowest masked layer once instead of twice (same result)."
        },
    )
    add_bos: bool = field(
        default=False,
        metadata={
            "help": "Encode each document as the tokenizer's BOS token + its tokens without special tokens "
            "(hf_select.packing.document_token_ids, no EOS), so that the first text token is predicted too; "
            "default: the tokenizer's own special tokens (add_special_tokens=True)."
        },
    )
    prefilter: str = field(
        default="none",
        metadata={
            "help": "Before scoring: none; repetition (exact dedup + datatrove's GopherRepetitionFilter); gopher "
            "(also GopherQualityFilter, tuned for English prose: it drops most code and math). Dropped documents "
            "get a null ai_score and their reason in ai_filter_reason (the paper dedups first: repetitive text "
            "inflates the score).",
            "choices": ["none", "repetition", "gopher"],
        },
    )
    prefilter_options: str | None = field(
        default=None,
        metadata={
            "help": "JSON object overriding the Gopher filters' thresholds by datatrove's argument names, e.g. "
            '\'{"dup_line_frac": 0.5, "min_doc_words": 20}\' (default: datatrove\'s defaults).'
        },
    )

    def __post_init__(self):
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.min_tokens < 1:
            raise ValueError(f"min_tokens must be >= 1, got {self.min_tokens}")
        if self.prefilter not in PREFILTERS:
            raise ValueError(f"prefilter must be one of {PREFILTERS}, got {self.prefilter!r}")
        if isinstance(self.prefilter_options, dict):  # from YAML / Python: kept as canonical JSON
            self.prefilter_options = json.dumps(self.prefilter_options, sort_keys=True)
        options = parse_prefilter_options(self.prefilter_options)
        if options and self.prefilter == "none":
            raise ValueError("prefilter_options given but prefilter is 'none'")
        if not self.heads and self.heads_file:
            from .retrieval_heads import RetrievalHeads

            self.heads = list(RetrievalHeads.load(self.heads_file).selected)
        self.heads = [_parse_head(head) for head in self.heads]


def _parse_head(head: str | Sequence[int]) -> tuple[int, int]:
    parts = head.replace(",", ":").split(":") if isinstance(head, str) else list(head)
    try:
        layer, index = (int(x) for x in parts)
    except (TypeError, ValueError):
        raise ValueError(f"a head is (layer, head) or LAYER:HEAD, got {head!r}") from None
    return layer, index


def flag_short_documents(out: dict[str, list], min_tokens: int, texts: Sequence[Any] | None = None) -> dict:
    """Apply the short-document policy of :class:`AttentionInfluenceConfig` to scorer output ``out`` (in place):
    fewer than ``min_tokens`` predicted tokens, or a whitespace-only text, sets ``ai_too_short`` and a NaN
    ``ai_score``."""
    for i, n in enumerate(out["ai_num_tokens"]):
        blank = texts is not None and not str(texts[i]).strip()
        if n < min_tokens or blank:
            out["ai_too_short"][i] = True
            out["ai_score"][i] = math.nan
    return out


def _device_of(model: nn.Module) -> torch.device:
    return next(unwrap_model(model).parameters()).device


class AttentionInfluence:
    """AttentionInfluence scorer for ``Dataset.map(batched=True)`` / ``IterableDataset.map(batched=True)``.

    Adds ``ai_loss_base``, ``ai_loss_ref`` (token-weighted mean float32 cross-entropy), ``ai_score`` =
    ``(L_ref - L_base) / L_base`` (arXiv 2505.07293, Eq. 5), ``ai_num_tokens`` (predicted tokens) and
    ``ai_too_short`` (documents with fewer than ``min_tokens`` predicted tokens or of whitespace only, whose
    ``ai_score`` is NaN; see :class:`AttentionInfluenceConfig`).

    Choices: texts are tokenised with the tokenizer's special tokens (BOS where it adds one; with ``add_bos``
    always BOS); a document longer than ``max_length`` is cut into consecutive chunks of ``max_length`` tokens
    scored independently (the first token of each chunk is not predicted) and combined with token-weighted
    means; the chunks of one ``map`` batch are sorted by length and run ``batch_size`` at a time with right
    padding.

    Args:
        model: base causal LM (any family of :mod:`hf_select.model_adapter`), in eval mode.
        tokenizer: its tokenizer.
        heads, max_length, batch_size, text_column, reuse_lower_layers, min_tokens, add_bos: the fields of
            :class:`AttentionInfluenceConfig` (see there), when no ``config`` is given.
        config: an :class:`AttentionInfluenceConfig`, the single source of the parameters (``heads``, if given
            too, replaces its heads).

    Example::

        scorer = AttentionInfluence(model, tokenizer, heads.selected, max_length=1024)
        scored = dataset.map(scorer, batched=True, batch_size=256, new_fingerprint=scorer.fingerprint(dataset))

    For several devices use ``with_rank=True`` (the model moves to ``cuda:<rank>`` in each worker).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        heads: Iterable[Sequence[int]] | None = None,
        max_length: int = 2048,
        batch_size: int = 8,
        text_column: str = "text",
        reuse_lower_layers: bool = True,
        config: AttentionInfluenceConfig | None = None,
        min_tokens: int = 16,
        add_bos: bool = False,
    ):
        if config is None:
            config = AttentionInfluenceConfig(
                heads=list(heads or []),
                max_length=max_length,
                batch_size=batch_size,
                text_column=text_column,
                reuse_lower_layers=reuse_lower_layers,
                min_tokens=min_tokens,
                add_bos=add_bos,
            )
        elif heads is not None:
            config = replace(config, heads=list(heads))
        try:
            heads = normalize_heads(config.heads, get_model_adapter(model))
        except InputIndexError as exc:
            if not config.heads_file:
                raise
            raise InputIndexError(f"{exc} (a head of --heads_file {config.heads_file})") from None
        config = replace(config, heads=heads)
        if not config.heads:
            raise ValueError("AttentionInfluence needs at least one head to mask")
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    heads = property(lambda self: self.config.heads)
    max_length = property(lambda self: self.config.max_length)
    batch_size = property(lambda self: self.config.batch_size)
    text_column = property(lambda self: self.config.text_column)
    reuse_lower_layers = property(lambda self: self.config.reuse_lower_layers)
    min_tokens = property(lambda self: self.config.min_tokens)

    def fingerprint(self, dataset=None) -> str:
        """A ``new_fingerprint`` for ``Dataset.map``: the whole :class:`AttentionInfluenceConfig`, the model
        (:func:`hf_select.fingerprint.model_fingerprint`: weights checksum, dtype, tokenizer) and the dataset's
        own fingerprint. A checkpoint retrained in place, or the same weights in another dtype, scores anew."""
        return fingerprint(
            "attention_influence/v3",
            replace(self.config, heads_file=None),  # the heads it held are in ``heads``
            model_fingerprint(unwrap_model(self.model), self.tokenizer),
            getattr(dataset, "_fingerprint", None),
        )

    def encode(self, texts: list[Any]) -> list[list[int]]:
        """Token ids of each document as the scorer reads them (see ``add_bos``)."""
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputTypeError(
                    f"column {self.text_column!r} must hold strings; row {i} is {type(text).__name__}"
                )
        if self.config.add_bos:
            return document_token_ids(self.tokenizer, texts, add_bos=True, add_eos=False)
        return self.tokenizer(texts, add_special_tokens=True).input_ids

    def score_token_ids(
        self, documents: list[list[int]], base_pass_hook: Callable[..., None] | None = None
    ) -> dict[str, list]:
        """Scores of already tokenised documents (same output columns as :meth:`__call__`).

        ``base_pass_hook(document, start, ids, hidden_states, losses, mask)``, when given, is called for every
        scored chunk with its base (unmasked) pass: the document's index, the chunk's first token in it, the
        chunk's ids and, for those ids, the final hidden states ``[n, hidden]``, per-token losses and
        predicted-token mask (:func:`hf_select.per_token_loss` alignment). It lets work that needs the same
        forward (RHO-1 reference losses of the same model) reuse it.
        """
        chunks = [
            (doc, ids[start : start + self.max_length], start)
            for doc, ids in enumerate(documents)
            for start in range(0, max(len(ids), 1), self.max_length)
        ]
        chunks = [(doc, ids, start) for doc, ids, start in chunks if len(ids) >= 2]
        order = sorted(range(len(chunks)), key=lambda i: -len(chunks[i][1]))
        sums = torch.zeros(len(documents), 2, dtype=torch.float64)
        counts = torch.zeros(len(documents), dtype=torch.long)
        device = _device_of(self.model)
        for start in range(0, len(order), self.batch_size):
            batch = [chunks[i] for i in order[start : start + self.batch_size]]
            length = max(len(ids) for _, ids, _ in batch)
            input_ids = torch.full((len(batch), length), self.pad_id, dtype=torch.long)
            attention_mask = torch.zeros_like(input_ids)
            for row, (_, ids, _) in enumerate(batch):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                attention_mask[row, : len(ids)] = 1

            def hook(hidden, losses, mask, batch=batch):
                for row, (doc, ids, start) in enumerate(batch):
                    n = len(ids)
                    base_pass_hook(doc, start, ids, hidden[row, :n], losses[row, :n], mask[row, :n])

            base, ref, mask = base_and_reference_losses(
                self.model,
                self.heads,
                input_ids.to(device),
                attention_mask.to(device),
                reuse_lower_layers=self.reuse_lower_layers,
                base_pass_hook=hook if base_pass_hook is not None else None,
            )
            for row, (doc, _, _) in enumerate(batch):
                sums[doc, 0] += base[row][mask[row]].double().sum().cpu()
                sums[doc, 1] += ref[row][mask[row]].double().sum().cpu()
                counts[doc] += int(mask[row].sum())
        out: dict[str, list] = {name: [] for name in SCORE_COLUMNS}
        for doc in range(len(documents)):
            n = int(counts[doc])
            base_loss = float(sums[doc, 0] / n) if n else math.nan
            ref_loss = float(sums[doc, 1] / n) if n else math.nan
            out["ai_loss_base"].append(base_loss)
            out["ai_loss_ref"].append(ref_loss)
            out["ai_score"].append((ref_loss - base_loss) / base_loss if n and base_loss > 0 else math.nan)
            out["ai_num_tokens"].append(n)
            out["ai_too_short"].append(n == 0)
        return flag_short_documents(out, self.min_tokens)

    def __call__(
        self, batch: dict[str, list], rank: int | None = None, base_pass_hook: Callable[..., None] | None = None
    ) -> dict[str, list]:
        """Score a ``map`` batch; ``base_pass_hook`` as in :meth:`score_token_ids` (document = row of the batch)."""
        if self.text_column not in batch:
            raise InputKeyError(
                f"text column {self.text_column!r} not in the batch (columns: {sorted(batch)}); "
                "set text_column="
            )
        if rank is not None and torch.cuda.is_available():
            self.model.to(f"cuda:{rank % torch.cuda.device_count()}")
        texts = list(batch[self.text_column])
        if self.config.prefilter == "none":
            out = self.score_token_ids(self.encode(texts), base_pass_hook=base_pass_hook)
            return flag_short_documents(out, self.min_tokens, texts)
        if REASON_COLUMN not in batch:
            raise InputKeyError(
                f"prefilter {self.config.prefilter!r} needs the {REASON_COLUMN!r} column of "
                "hf_select.attention_influence.prefilter_dataset (deduplication sees the whole dataset): use "
                "score_dataset, or run prefilter_dataset before Dataset.map"
            )
        reasons = list(batch[REASON_COLUMN])
        kept = [i for i, reason in enumerate(reasons) if not reason]
        hook = None
        if base_pass_hook is not None:  # the hook names documents by their row in the batch

            def hook(doc, *args):
                base_pass_hook(kept[doc], *args)

        scored = flag_short_documents(
            self.score_token_ids(self.encode([texts[i] for i in kept]), base_pass_hook=hook),
            self.min_tokens,
            [texts[i] for i in kept],
        )
        out = {name: [math.nan, math.nan, math.nan, 0, False][j] for j, name in enumerate(SCORE_COLUMNS)}
        out = {name: [value] * len(texts) for name, value in out.items()}
        for j, i in enumerate(kept):
            for name in SCORE_COLUMNS:
                out[name][i] = scored[name][j]
        return out


def score_dataset(dataset, scorer: AttentionInfluence, batch_size: int = 256, **map_kwargs):
    """``dataset.map(scorer, batched=True)`` with an explicit fingerprint (map-style datasets), after the
    scorer's ``prefilter`` (:func:`hf_select.attention_influence.prefilter.prefilter_dataset`) when it has one."""
    if scorer.config.prefilter != "none":
        from .prefilter import prefilter_dataset

        dataset = prefilter_dataset(dataset, scorer.config.prefilter, scorer.config.prefilter_options, scorer.text_column)
    kwargs = {"batched": True, "batch_size": batch_size, "desc": "AttentionInfluence", **map_kwargs}
    if hasattr(dataset, "_fingerprint"):
        kwargs.setdefault("new_fingerprint", scorer.fingerprint(dataset))
    return dataset.map(scorer, **kwargs)
