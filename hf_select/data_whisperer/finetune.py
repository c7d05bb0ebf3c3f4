"""Fine-tune a causal LM on (a selected subset of) question/answer data, fully or with LoRA, and compare subsets.

The comparison the Data Whisperer paper makes (arXiv 2505.12212): fine-tune on the selected subset, on a random
subset of the same size and on the full set, then evaluate each on the held-out split (the task metric on
greedy answers and the gold-answer loss). The selection-to-tuning ratio ``STR = selection wall-clock /
full-set fine-tuning wall-clock`` says whether selecting paid off in time.

Training format (a choice; the same as the Data Whisperer demonstrations): ``"Question: {q}\\nAnswer:"`` is the
prompt (labels ``-100``) and ``" {a}"`` + EOS the target.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers.utils import logging

from ..loading import require_columns
from ..text_metrics import answer_metric
from ..token_loss import IGNORE_INDEX, per_token_loss
from ..training_args import HfSelectTrainingArguments

logger = logging.get_logger(__name__)


@dataclass
class FinetuneArguments(HfSelectTrainingArguments):
    """``TrainingArguments`` plus the fine-tuning method (full or LoRA) and the example format."""

    use_lora: bool = field(
        default=True, metadata={"help": "Train LoRA adapters (peft) instead of all weights."}
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA path."})
    lora_target_modules: str = field(
        default="all-linear",
        metadata={"help": "Modules that get adapters: 'all-linear' or a comma-separated list of names."},
    )
    max_length: int = field(default=256, metadata={"help": "Truncate prompt + answer to this many tokens."})
    question_column: str = field(default="question", metadata={"help": "Column holding the question."})
    answer_column: str = field(default="answer", metadata={"help": "Column holding the gold answer."})


def prompt_text(question: str) -> str:
    return f"Question: {question.strip()}\nAnswer:"


def encode_example(tokenizer, question: str, answer: str, max_length: int = 256) -> dict[str, list[int]]:
    """``input_ids`` / ``labels`` of one example: prompt tokens are not trained on (label ``-100``)."""
    prompt = tokenizer(prompt_text(question)).input_ids
    target = tokenizer(" " + answer.strip(), add_special_tokens=False).input_ids
    if tokenizer.eos_token_id is not None:
        target = [*target, tokenizer.eos_token_id]
    ids = (prompt + target)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt) + target)[:max_length]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def encode_dataset(
    dataset, tokenizer, max_length: int = 256, question_column="question", answer_column="answer"
):
    """Tokenised training rows of a question/answer dataset (other columns dropped)."""
    require_columns(dataset, [question_column, answer_column], "fine-tuning data")

    def encode(batch):
        rows = [
            encode_example(tokenizer, str(q), str(a), max_length)
            for q, a in zip(batch[question_column], batch[answer_column])
        ]
        return {k: [r[k] for r in rows] for k in ("input_ids", "attention_mask", "labels")}

    return dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc="encode Q/A")


def apply_lora(model, args: FinetuneArguments):
    """Wrap ``model`` with LoRA adapters (peft); only the adapters train."""
    from peft import LoraConfig, get_peft_model

    targets = args.lora_target_modules
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    config = LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def finetune(model, tokenizer, train_dataset, args: FinetuneArguments):
    """Fine-tune ``model`` on a question/answer dataset. Returns ``(trained model, wall-clock seconds)``.

    With ``args.use_lora`` the returned model is the peft-wrapped model (adapters trained, base frozen). The
    seed (``args.seed``) is set before the adapters are created, so their random initialisation, and hence the
    trained weights, repeat from run to run (``Trainer`` only seeds when it is built, after the adapters).
    """
    from transformers import DataCollatorForSeq2Seq, Trainer, set_seed

    if len(train_dataset) == 0:
        raise ValueError("cannot fine-tune on an empty dataset")
    rows = encode_dataset(train_dataset, tokenizer, args.max_length, args.question_column, args.answer_column)
    set_seed(args.seed)
    if args.use_lora:
        model = apply_lora(model, args)
    model.train()
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)
    trainer = Trainer(
        model=model, args=args, train_dataset=rows, data_collator=collator, processing_class=tokenizer
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    return model.eval(), seconds


def gold_loss(model, tokenizer, dataset, question_column="question", answer_column="answer", batch_size=16):
    """Mean per-token cross-entropy of the gold answers (+ EOS) given their prompts, over ``dataset``."""
    total, count = 0.0, 0
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for start in range(0, len(dataset), batch_size):
        batch = dataset[start : start + batch_size]
        rows = [
            encode_example(tokenizer, str(q), str(a), 10**9)
            for q, a in zip(batch[question_column], batch[answer_column])
        ]
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), pad)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n], mask[i, :n], labels[i, :n] = (
                torch.tensor(r["input_ids"]),
                1,
                torch.tensor(r["labels"]),
            )
        out = per_token_loss(model, ids.to(device), mask.to(device), labels=labels.to(device))
        total += float(out.losses[out.mask].sum())
        count += int(out.mask.sum())
    return total / max(count, 1)


def generate_answers(
    model, tokenizer, questions: Sequence[str], max_new_tokens: int = 32, batch_size: int = 8
) -> list[str]:
    """Greedy answers (batched), cut at the first newline after any leading whitespace.

    A row stops generating once that line is closed: the tokens after it would be cut anyway, so the answers
    equal a run to the full ``max_new_tokens`` (greedy rows are independent), at a fraction of the decode steps.
    """
    from ..generation import generate_greedy

    def line_closed(_, new_ids: list[int]) -> bool:
        return "\n" in tokenizer.decode(new_ids, skip_special_tokens=True).lstrip()

    texts = generate_greedy(
        model, tokenizer, [prompt_text(q) for q in questions], max_new_tokens, batch_size=batch_size,
        stop=line_closed,
    )  # fmt: skip
    return [text.strip().split("\n")[0].strip() for text in texts]


def evaluate_qa(
    model,
    tokenizer,
    heldout,
    metric: str | Callable = "auto",
    max_generate: int | None = 64,
    max_new_tokens: int = 32,
    question_column: str = "question",
    answer_column: str = "answer",
) -> dict[str, float]:
    """Held-out ``gold_loss`` (all rows) and the mean answer ``metric`` (greedy, first ``max_generate`` rows)."""
    require_columns(heldout, [question_column, answer_column], "held-out data")
    model.eval()
    loss = gold_loss(model, tokenizer, heldout, question_column, answer_column)
    subset = heldout if max_generate is None else heldout.select(range(min(max_generate, len(heldout))))
    preds = generate_answers(model, tokenizer, subset[question_column], max_new_tokens)
    scores = [answer_metric(p, str(r), metric) for p, r in zip(preds, subset[answer_column])]
    return {"gold_loss": loss, "metric": float(np.mean(scores)) if scores else float("nan")}


def random_subset_indices(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def compare_subsets(
    model_factory: Callable[[], torch.nn.Module],
    tokenizer,
    train_dataset,
    heldout,
    selected: Sequence[int],
    args: FinetuneArguments,
    selection_seconds: float | None = None,
    include_full: bool = True,
    metric: str | Callable = "auto",
    max_generate: int | None = 64,
    max_new_tokens: int = 32,
    random_seeds: Sequence[int] | None = None,
    larger_selected: Sequence[int] | None = None,
) -> dict:
    """Fine-tune fresh copies (``model_factory()``) on the selected subset, random subsets of the same size (one
    per seed of ``random_seeds``, default ``args.seed``), optionally a larger selected budget
    (``larger_selected``, run ``selected_large``) and the full set; evaluate each on ``heldout``.

    ``results["random"]`` holds the mean over the random seeds (``runs`` the single runs, ``*_std`` their
    spread). Adds ``STR`` when ``selection_seconds`` and the full run are both there. Every run uses the same
    ``args`` (so the same epochs; smaller subsets take fewer steps)."""
    selected = np.asarray(selected)
    seeds = list(random_seeds) if random_seeds else [args.seed]
    subsets = {"selected": selected}
    for seed in seeds:
        subsets[f"random_seed{seed}"] = random_subset_indices(len(train_dataset), len(selected), seed)
    if larger_selected is not None:
        subsets["selected_large"] = np.asarray(larger_selected)
    if include_full:
        subsets["full"] = np.arange(len(train_dataset))

    def evaluate(model):
        q, a = args.question_column, args.answer_column
        return evaluate_qa(model, tokenizer, heldout, metric, max_generate, max_new_tokens, q, a)

    results: dict = {"base": evaluate(model_factory())}
    for name, idx in subsets.items():
        model, seconds = finetune(model_factory(), tokenizer, train_dataset.select(idx.tolist()), args)
        results[name] = {"size": len(idx), "train_seconds": seconds, **evaluate(model)}
        logger.info(f"fine-tune {name}: {results[name]}")
    runs = [results.pop(f"random_seed{seed}") for seed in seeds]
    results["random"] = {
        "size": len(selected),
        "train_seconds": float(np.mean([r["train_seconds"] for r in runs])),
        "gold_loss": float(np.mean([r["gold_loss"] for r in runs])),
        "metric": float(np.mean([r["metric"] for r in runs])),
        "gold_loss_std": float(np.std([r["gold_loss"] for r in runs], ddof=1)) if len(runs) > 1 else 0.0,
        "metric_std": float(np.std([r["metric"] for r in runs], ddof=1)) if len(runs) > 1 else 0.0,
        "seeds": seeds,
        "runs": runs,
    }
    if selection_seconds is not None:
        results["selection_seconds"] = selection_seconds
        if include_full:
            results["STR"] = selection_seconds / results["full"]["train_seconds"]
    return results


def format_comparison(results: dict) -> str:
    """A plain-text table of :func:`compare_subsets`' results (random: mean over its seeds)."""
    lines = [f"{'run':<15}{'size':>7}{'train s':>10}{'gold loss':>11}{'metric':>9}"]
    for name in ("base", "selected", "random", "selected_large", "full"):
        if name in results:
            r = results[name]
            size = r.get("size", 0)
            secs = r.get("train_seconds", 0.0)
            label = f"random x{len(r['seeds'])}" if name == "random" and "seeds" in r else name
            lines.append(f"{label:<15}{size:>7}{secs:>10.1f}{r['gold_loss']:>11.4f}{r['metric']:>9.4f}")
    if "STR" in results:
        lines.append(
            f"STR = selection {results['selection_seconds']:.1f}s / full fine-tuning "
            f"{results['full']['train_seconds']:.1f}s = {results['STR']:.3f}"
        )
    return "\n".join(lines)
