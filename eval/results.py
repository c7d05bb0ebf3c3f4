"""Results of the evaluation harness: the metric functions, one metric table keyed by task type, and reports.

The metric functions here are the only implementation of each metric: the harness aggregates with them and the
project's ``evaluate`` modules (``eval/metrics/<name>/<name>.py``) call them, so both give the same numbers.

- acc = argmax of the summed log-likelihood == gold; acc_norm = argmax of log-likelihood / character length of
  the choice (lm-evaluation-harness 0.4.13; ``np.argmax``: the first maximum wins ties);
- bits per byte = summed negative log-likelihood (nats) / ln 2 / UTF-8 bytes, pooled over items;
- exact match = :func:`string_exact_match`: the generation equals ``str(gold)`` character for character, as
  lm-eval's default ``exact_match`` of a ``generate_until`` task;
- exact_match_numeric = :func:`hf_select.text_metrics.exact_match` (numbers compare by value; the last number
  of the prediction counts when the reference is a number, GSM8K-style; other text after SQuAD-style
  normalisation): a separate, more lenient metric with no lm-eval counterpart.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hf_select.text_metrics import exact_match
from hf_select.token_loss import bits_per_byte

from .tasks import Task, TaskError

# --------------------------------------------------------------------------------------------- metric functions


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (``ddof=1``, NaN for one value), as lm-eval's ``mean`` / stderr."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("the mean of an empty list is undefined")
    stderr = float(arr.std(ddof=1) / math.sqrt(len(arr))) if len(arr) > 1 else float("nan")
    return float(arr.mean()), stderr


def multiple_choice_metrics(
    loglikelihoods: Sequence[float], choices: Sequence[str], gold: int
) -> dict[str, float]:
    """acc and acc_norm of one item (lm-eval: acc_norm divides by the character length of each choice)."""
    lls = np.asarray(loglikelihoods, dtype=np.float64)
    if len(lls) != len(choices) or len(lls) == 0:
        raise ValueError(f"{len(lls)} log-likelihoods for {len(choices)} choices")
    lengths = np.asarray([float(len(c)) for c in choices])
    return {
        "acc": float(int(np.argmax(lls)) == gold),
        "acc_norm": float(int(np.argmax(lls / lengths)) == gold),
    }


def accuracy(predictions: Sequence, references: Sequence) -> float:
    """Share of predictions equal to their reference."""
    if len(predictions) == 0:
        raise ValueError("accuracy of an empty list is undefined")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    return sum(int(p == r) for p, r in zip(predictions, references)) / len(predictions)




def string_exact_match(prediction: str, reference) -> float:
    """1.0 when ``prediction == str(reference)``: lm-eval 0.4.13's ``exact_match`` with its default arguments
    (no case, punctuation or number normalisation; a non-string gold is cast to ``str`` as lm-eval casts it)."""
    return float(prediction == str(reference))


def token_perplexity(nll: float, num_tokens: int) -> float:
    """exp(summed negative log-likelihood / predicted tokens)."""
    return math.exp(nll / max(num_tokens, 1))


# --------------------------------------------------------------------------------------------- per task type

Scores = dict[tuple, float]


def _multiple_choice(task: Task, docs, scores: Scores, generations, num_tokens):
    per_item, samples = defaultdict(list), []
    for i, doc in enumerate(docs):
        lls = [scores[(task.name, i, j)] for j in range(len(task.choices(doc)))]
        item = multiple_choice_metrics(lls, task.choices(doc), doc[task.gold_field])
        for k, v in item.items():
            per_item[k].append(v)
        samples.append({"doc_id": i, "loglikelihoods": lls, "gold": doc[task.gold_field], **item})
    out = {}
    for metric, values in per_item.items():
        out[metric], out[f"{metric}_stderr"] = mean_and_stderr(values)
    return out, samples


def _gold_bpb(task: Task, docs, scores: Scores, generations, num_tokens):
    nll = [-scores[(task.name, i, 0)] for i in range(len(docs))]
    nbytes = [len(task.continuations(doc)[0].encode("utf-8")) for doc in docs]
    samples = [{"doc_id": i, "nll": n, "num_bytes": b} for i, (n, b) in enumerate(zip(nll, nbytes))]
    return {"bits_per_byte": bits_per_byte(nll, nbytes)}, samples


def _generate(task: Task, docs, scores: Scores, generations, num_tokens):
    matches, numeric, samples = [], [], []
    for i, doc in enumerate(docs):
        pred, gold = generations[(task.name, i)], doc[task.gold_field]
        matches.append(string_exact_match(pred, gold))
        numeric.append(exact_match(pred, str(gold)))
        samples.append(
            {"doc_id": i, "prediction": pred, "gold": gold, "exact_match": matches[-1],
             "exact_match_numeric": numeric[-1]}
        )  # fmt: skip
    out = {}
    out["exact_match"], out["exact_match_stderr"] = mean_and_stderr(matches)
    out["exact_match_numeric"], out["exact_match_numeric_stderr"] = mean_and_stderr(numeric)
    return out, samples


def _perplexity(task: Task, docs, scores: Scores, generations, num_tokens):
    by_domain = defaultdict(lambda: [0.0, 0, 0])  # nll, tokens, bytes
    windows_of = defaultdict(list)
    for key in scores:
        if key[0] == task.name:
            windows_of[key[1]].append(key)
    samples = []
    for i, doc in enumerate(docs):
        nll = -sum(scores[k] for k in windows_of[i])
        tokens = num_tokens[(task.name, i)]
        nbytes = len(doc[task.text_field].encode("utf-8"))
        domains = ["all"] + ([str(doc[task.domain_field])] if task.domain_field in doc else [])
        for d in domains:
            by_domain[d][0] += nll
            by_domain[d][1] += tokens
            by_domain[d][2] += nbytes
        samples.append({"doc_id": i, "nll": nll, "num_tokens": tokens, "num_bytes": nbytes})

    def summary(nll, tokens, nbytes):
        return {
            "bits_per_byte": bits_per_byte(nll, max(nbytes, 1)),
            "token_perplexity": token_perplexity(nll, tokens),
        }

    out = summary(*by_domain.pop("all"))
    if by_domain:
        out["domains"] = {d: summary(*v) for d, v in sorted(by_domain.items())}
    return out, samples


TaskMetrics = Callable[[Task, list, Scores, dict, dict], tuple[dict[str, Any], list[dict[str, Any]]]]

#: task type -> ``fn(task, docs, scores, generations, num_tokens) -> (metrics, per-item samples)``, where
#: ``scores[(task, doc, continuation or window)]`` is a summed log-likelihood, ``generations[(task, doc)]`` a
#: generated text and ``num_tokens[(task, doc)]`` the predicted tokens of a perplexity document.
TASK_METRICS: dict[str, TaskMetrics] = {
    "multiple_choice": _multiple_choice,
    "gold_bpb": _gold_bpb,
    "generate": _generate,
    "perplexity": _perplexity,
}


def task_results(
    task: Task,
    docs: list[dict[str, Any]],
    scores: Scores,
    generations: dict[tuple, str],
    num_tokens: dict[tuple, int],
    contexts: list[str] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics of one task (``num_items`` included) and its per-item samples (with ``context`` when given)."""
    if task.type not in TASK_METRICS:
        raise TaskError(
            f"task {task.name!r}: no metrics for type {task.type!r}; known: {sorted(TASK_METRICS)}"
        )
    out, samples = TASK_METRICS[task.type](task, docs, scores, generations, num_tokens)
    out["num_items"] = len(docs)
    if contexts is not None:
        for sample, ctx in zip(samples, contexts):
            sample["context"] = ctx
    return out, samples


# --------------------------------------------------------------------------------------------- reporting

SHOWN_METRICS = ("acc", "acc_norm", "exact_match", "exact_match_numeric", "bits_per_byte", "token_perplexity")


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def markdown_table(output: dict[str, Any]) -> str:
    """A markdown table of one :func:`evaluate` output: one line per (task, metric), domains included."""
    lines = ["| task | metric | value | stderr | items |", "|---|---|---|---|---|"]
    for task, metrics in output["results"].items():
        for metric in SHOWN_METRICS:
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
            for metric in SHOWN_METRICS:
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
