"""Retrieval-head detection for AttentionInfluence (arXiv 2505.07293, section 3.2; Wu et al. 2024,
arXiv 2404.15574).

A head "copy-pastes" at an answer step when the token being produced lies in the target value span of the
context and the head's largest attention weight (over the visible prefix) falls on a position of that span
holding the same token. A sample's score for a head is (#answer tokens copied) / (answer length); a head's
retrieval score is the mean over the samples the model answers. The top ``top_fraction`` heads are selected.

Memory: full attention is never materialised. The attention probe (:mod:`hf_select.attention_probe`) runs the
model's normal kernel and, for the few query rows that predict answer tokens only, computes the query-key
products of every query head against its KV head (grouped-query aware) and keeps their argmax.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers.utils import logging

from ..attention_probe import AttentionProbe, attention_probe
from ..errors import InputKeyError
from ..model_adapter import get_model_adapter, unwrap_model
from ..text_metrics import normalize_text
from ..token_loss import final_hidden_states, split_causal_lm

logger = logging.get_logger(__name__)

PROXY_COLUMNS = ("prompt", "answer", "value_span")


@dataclass
class RetrievalHeads:
    """Per-head retrieval scores ``[layers, query heads]`` and the selected ``(layer, head)`` pairs."""

    scores: torch.Tensor
    selected: list[tuple[int, int]]
    top_fraction: float = 0.05
    method: str = "teacher_forced"
    num_samples: int = 0
    num_dropped: int = 0
    model_name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_scores(cls, scores: torch.Tensor, top_fraction: float = 0.05, **kwargs) -> RetrievalHeads:
        """Select the top ``top_fraction`` of heads (at least one; ties broken by lower layer, then head)."""
        if not 0 < top_fraction <= 1:
            raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
        scores = scores.detach().float().cpu()
        count = max(1, round(top_fraction * scores.numel()))
        order = sorted(range(scores.numel()), key=lambda i: (-float(scores.view(-1)[i]), i))[:count]
        heads = scores.shape[1]
        selected = sorted((i // heads, i % heads) for i in order)
        return cls(scores=scores, selected=selected, top_fraction=top_fraction, **kwargs)

    def ranking(self) -> list[tuple[int, int, float]]:
        """All heads as ``(layer, head, score)``, best first."""
        flat = self.scores.view(-1)
        heads = self.scores.shape[1]
        order = sorted(range(flat.numel()), key=lambda i: (-float(flat[i]), i))
        return [(i // heads, i % heads, float(flat[i])) for i in order]

    def to_dict(self) -> dict[str, Any]:
        return {
            "scores": self.scores.tolist(),
            "selected": [list(h) for h in self.selected],
            "top_fraction": self.top_fraction,
            "method": self.method,
            "num_samples": self.num_samples,
            "num_dropped": self.num_dropped,
            "model_name": self.model_name,
            "extra": self.extra,
        }

    def save(self, path: str | Path) -> Path:
        """Write the heads as JSON."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> RetrievalHeads:
        data = json.loads(Path(path).read_text())
        if "scores" not in data or "selected" not in data:
            raise ValueError(f"{path} is not a RetrievalHeads JSON file (needs 'scores' and 'selected')")
        data["scores"] = torch.tensor(data["scores"], dtype=torch.float32)
        data["selected"] = [tuple(h) for h in data["selected"]]
        return cls(**data)

    def plot_heatmap(self, path: str | Path | None = None, title: str | None = None):
        """Heatmap of the scores (layers x heads), selected heads outlined. Saves a PNG when ``path`` is given."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle

        layers, heads = self.scores.shape
        fig, ax = plt.subplots(figsize=(max(4, 0.35 * heads + 2), max(3, 0.3 * layers + 1.5)))
        image = ax.imshow(self.scores.numpy(), aspect="auto", cmap="viridis", origin="lower")
        for layer, head in self.selected:
            ax.add_patch(Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, edgecolor="red", lw=1.5))
        ax.set_xlabel("query head")
        ax.set_ylabel("layer")
        ax.set_title(title or f"retrieval scores ({len(self.selected)} selected, red)")
        fig.colorbar(image, ax=ax)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=100)
        return fig


@contextlib.contextmanager
def record_attention_argmax(model: nn.Module) -> Iterator[AttentionProbe]:
    """Inside the block, every forward records per layer the argmax key position of ``recorder.rows``
    (``None``: the last row) in ``recorder.argmax[layer]`` (``[batch, heads, rows]``).

    A thin wrapper over :func:`hf_select.attention_probe.attention_probe` (grouped-query, soft-cap, scaling and
    sliding-window aware; registered once, removed on exit).
    """
    with attention_probe(model, mode="argmax") as probe:
        yield probe


def _encode(tokenizer, sample: dict[str, Any]) -> tuple[list[int], int, set[int]]:
    """Ids of prompt + answer, index of the first answer token, and the token positions of the value span."""
    prompt, answer = sample["prompt"], sample["answer"]
    if not prompt or not answer or not answer.strip():
        raise ValueError("proxy samples need a non-empty 'prompt' and 'answer'")
    enc = tokenizer(prompt + answer, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    start = next((i for i, (s, e) in enumerate(offsets) if e > len(prompt) and e > s), len(offsets))
    span_start, span_end = sample["value_span"]
    value_positions = {
        i for i, (s, e) in enumerate(offsets[:start]) if s < span_end and e > span_start and e > s
    }
    return enc["input_ids"], start, value_positions


def answer_quality(correct: torch.Tensor) -> float:
    """Teacher-forced quality of one proxy answer from its per-token correctness ``[answer_len]`` (bool).

    The token accuracy, or 0 when the first answer token is wrong: the first token is the key lookup itself,
    and once the gold prefix is given the later tokens of the value are easy to copy, so accuracy alone keeps
    samples whose lookup failed.
    """
    if correct.numel() == 0 or not bool(correct[0]):
        return 0.0
    return float(correct.float().mean())


def _rouge1_recall(prediction: str, reference: str) -> float:
    predicted = set(normalize_text(prediction).split())
    words = normalize_text(reference).split()
    return sum(w in predicted for w in words) / max(len(words), 1)


@torch.no_grad()
def _score_teacher_forced(model, recorder, head, ids, start, value_positions, num_layers):
    device = next(model.parameters()).device
    input_ids = torch.tensor([ids], device=device)
    rows = torch.arange(start - 1, len(ids) - 1, device=device)  # row t-1 predicts answer token t
    recorder.rows, recorder.argmax = rows, {}
    hidden = final_hidden_states(model, input_ids=input_ids)
    targets = input_ids[0, start:]
    correct = head(hidden[0, rows]).argmax(-1) == targets
    accuracy = answer_quality(correct)
    in_value = torch.zeros(len(ids), dtype=torch.bool, device=device)
    in_value[list(value_positions)] = True
    copies = []
    for layer in range(num_layers):
        position = recorder.argmax[layer][0]  # [H, R]
        copied = in_value[position] & (input_ids[0, position] == targets[None, :])
        copies.append(copied.float().sum(-1))
    return torch.stack(copies) / len(targets), accuracy


@torch.no_grad()
def _score_generated(
    model, tokenizer, recorder, head, ids, start, value_positions, num_layers, max_new_tokens
):
    device = next(model.parameters()).device
    prompt = torch.tensor([ids[:start]], device=device)
    answer_len = len(ids) - start
    value_tokens = {ids[p] for p in value_positions}
    copies = torch.zeros(num_layers, recorder.adapter.num_heads, device=device)
    recorder.rows = None
    sequence = prompt[0].tolist()
    past, step_input = None, prompt
    for _ in range(max_new_tokens or answer_len + 4):
        recorder.argmax = {}
        out = model(input_ids=step_input, past_key_values=past, use_cache=True)
        past = out.past_key_values
        token = int(out.logits[0, -1].argmax())
        if token == tokenizer.eos_token_id:
            break
        if token in value_tokens:
            for layer in range(num_layers):
                position = recorder.argmax[layer][0, :, 0]  # [H]
                hit = torch.tensor([p in value_positions and sequence[p] == token for p in position.tolist()])
                copies[layer] += hit.to(device).float()
        sequence.append(token)
        step_input = torch.tensor([[token]], device=device)
    generated = tokenizer.decode(sequence[start:], skip_special_tokens=True)
    reference = tokenizer.decode(ids[start:], skip_special_tokens=True)
    return copies / max(len(value_positions), 1), _rouge1_recall(generated, reference)


def build_default_proxy(
    tokenizer,
    values: Sequence[str],
    num_samples: int = 800,
    context_tokens: int = 4096,
    seed: int = 0,
    key_length: int = 32,
    max_value_tokens: int = 30,
) -> list[dict[str, Any]]:
    """Proxy samples from the proxy-task builder (:mod:`hf_select.attention_influence.proxy_task`; paper: 32-char
    keys, values of at most ~30 tokens)."""
    from .proxy_task import build_proxy_samples, clean_values

    cleaned = clean_values(values, tokenizer, max_value_tokens=max_value_tokens)
    return build_proxy_samples(
        cleaned,
        tokenizer,
        num_samples=num_samples,
        context_tokens=context_tokens,
        key_length=key_length,
        seed=seed,
    )


def _score_samples(model, tokenizer, samples, method: str, max_new_tokens, show_progress: bool):
    """Per-sample head scores ``[layers, heads]`` and answer quality, the model in eval mode (restored)."""
    adapter = get_model_adapter(model)
    head = split_causal_lm(model)[1]
    per_sample, quality = [], []
    was_training = model.training
    model.eval()
    try:
        with record_attention_argmax(model) as recorder:
            for sample in tqdm(samples, desc="retrieval heads", disable=not show_progress):
                ids, start, value_positions = _encode(tokenizer, sample)
                if start >= len(ids) or start == 0:
                    raise ValueError("a proxy sample's answer produced no tokens after the prompt")
                if method == "teacher_forced":
                    scores, ok = _score_teacher_forced(
                        model, recorder, head, ids, start, value_positions, adapter.num_layers
                    )
                else:
                    scores, ok = _score_generated(model, tokenizer, recorder, head, ids, start, value_positions,
                                                  adapter.num_layers, max_new_tokens)  # fmt: skip
                per_sample.append(scores.cpu())
                quality.append(ok)
    finally:
        model.train(was_training)
    return per_sample, quality


def detect_retrieval_heads(
    model: nn.Module,
    tokenizer,
    proxy: Sequence[dict[str, Any]] | None = None,
    top_fraction: float = 0.05,
    method: str = "teacher_forced",
    drop_failed: bool = True,
    min_accuracy: float = 0.5,
    values: Sequence[str] | None = None,
    num_samples: int = 800,
    context_tokens: int = 4096,
    max_new_tokens: int | None = None,
    seed: int = 0,
    key_length: int = 32,
    show_progress: bool = True,
) -> RetrievalHeads:
    """Score every (layer, query head) for retrieval and select the top ``top_fraction`` (arXiv 2505.07293).

    Args:
        model: a causal LM of a family known to :func:`hf_select.get_model_adapter`.
        tokenizer: its (fast) tokenizer; offsets locate the value span.
        proxy: samples with ``prompt``, ``answer`` and ``value_span`` (character span of the query value in the
            prompt), e.g. from :func:`hf_select.attention_influence.proxy_task.build_proxy_samples` or a ``Dataset`` of them.
            When None, they are built from ``values`` (value sentences) with that builder.
        top_fraction: share of heads to select (paper: 5%).
        method: ``"teacher_forced"`` (one pass over prompt + gold answer; answer token ``t`` is read from
            query row ``t - 1``) or ``"generation"`` (greedy decoding as Wu et al.; the score divides by the
            number of value tokens).
        drop_failed: drop samples the model fails (Wu et al.) instead of scoring them; failure is teacher-forced
            token accuracy < ``min_accuracy`` or a wrong first answer token, the lookup itself
            (teacher forced, :func:`answer_quality`), or ROUGE-1 recall < ``min_accuracy`` (generation). If
            every sample fails, all are kept with a warning.
        values, num_samples, context_tokens, seed, key_length: for building the default proxy (shorter keys
            suit models with short contexts).
        max_new_tokens: generation budget (default: answer length + 4).

    Returns a :class:`RetrievalHeads`.
    """
    if method not in ("teacher_forced", "generation"):
        raise ValueError(f"method must be 'teacher_forced' or 'generation', got {method!r}")
    if proxy is None:
        if values is None:
            raise ValueError("give proxy samples, or values (sentences) to build them from")
        proxy = build_default_proxy(tokenizer, values, num_samples, context_tokens, seed, key_length)
    samples = list(proxy)
    if not samples:
        raise ValueError("the proxy task has no samples")
    for row, sample in enumerate(samples):
        missing = [k for k in PROXY_COLUMNS if k not in sample]
        if missing:
            raise InputKeyError(
                f"proxy sample {row} lacks {missing}; proxy samples need the columns {list(PROXY_COLUMNS)} "
                f"(it has {sorted(sample)})"
            )
    per_sample, quality = _score_samples(model, tokenizer, samples, method, max_new_tokens, show_progress)
    keep = (
        [i for i, q in enumerate(quality) if q >= min_accuracy] if drop_failed else list(range(len(samples)))
    )
    if not keep:
        logger.warning(
            f"the model failed all {len(samples)} proxy samples (accuracy < {min_accuracy}); scoring all of them"
        )
        keep = list(range(len(samples)))
    scores = torch.stack([per_sample[i] for i in keep]).mean(0)
    return RetrievalHeads.from_scores(
        scores,
        top_fraction,
        method=method,
        num_samples=len(keep),
        num_dropped=len(samples) - len(keep),
        model_name=str(getattr(unwrap_model(model).config, "_name_or_path", "")),
        extra={"mean_answer_accuracy": sum(quality) / len(quality), "min_accuracy": min_accuracy},
    )
