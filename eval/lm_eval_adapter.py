"""Bridge to lm-evaluation-harness 0.4.13 (optional extra ``hf-select[lm-eval]``).

- :func:`write_lm_eval_task` turns an hf-select task into a local lm-eval task (YAML with
  ``dataset_path: json`` and ``data_files``) over the same JSONL data, with the same prompt format;
- :func:`run_lm_eval` runs lm-eval tasks (built-in names or hf-select tasks) on an already-loaded model
  (``HFLM(pretrained=model, tokenizer=tokenizer)``, single process);
- :func:`agreement_check` runs both harnesses on the same model and tasks and compares acc / acc_norm and
  the per-choice log-likelihoods (multiple choice), bits per byte and the per-document rolling
  log-likelihoods (perplexity).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from transformers.utils import logging

from .tasks import Task, load_task

logger = logging.get_logger(__name__)

_METRICS = {
    "multiple_choice": ["acc", "acc_norm"],
    "perplexity": ["word_perplexity", "byte_perplexity", "bits_per_byte"],
    "generate": ["exact_match"],
}


def lm_eval_available() -> bool:
    try:
        import lm_eval.evaluator  # noqa: F401
    except ImportError:
        return False
    return True


def _require_lm_eval():
    if not lm_eval_available():
        raise ImportError("lm-evaluation-harness is not installed: pip install 'hf-select[lm-eval]'")


def lm_eval_task_config(task: Task, num_fewshot: int | None = None) -> dict[str, Any]:
    """The lm-eval task config (as a dict) equivalent to an hf-select multiple-choice, generate or perplexity task.

    A ``generate`` task becomes ``output_type: generate_until`` with greedy decoding, the task's ``until`` and
    ``max_gen_toks``; lm-eval grades it with its own ``exact_match`` (string equality), which is hf-select's
    ``exact_match`` too (``exact_match_numeric`` has no lm-eval counterpart). A ``perplexity`` task becomes
    ``loglikelihood_rolling`` over the text field.
    """
    if task.type not in _METRICS:
        raise NotImplementedError(
            f"task {task.name!r}: only multiple_choice, generate and perplexity tasks have an lm-eval "
            f"equivalent, not {task.type!r}"
        )
    if not task.data_files:
        raise ValueError(f"task {task.name!r} has inline data; lm-eval needs data_files")
    data_files = {split: [str(Path(p).resolve()) for p in paths] for split, paths in task.data_files.items()}
    config: dict[str, Any] = {
        "task": task.name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": data_files},
        "test_split": task.split,
        "num_fewshot": task.num_fewshot if num_fewshot is None else num_fewshot,
        "metric_list": [
            {
                "metric": m,
                "aggregation": _aggregation(m),
                "higher_is_better": m in ("acc", "acc_norm", "exact_match"),
            }
            for m in _METRICS[task.type]
        ],
        "metadata": {"version": 1.0},
    }
    prompted = {
        "doc_to_text": task.query_field,
        "doc_to_target": task.gold_field,
        "description": task.description,
        "target_delimiter": task.target_delimiter,
        "fewshot_delimiter": task.fewshot_delimiter,
    }
    if task.type == "multiple_choice":
        config.update(output_type="multiple_choice", doc_to_choice=task.choices_field, **prompted)
        if task.fewshot_split:
            config["fewshot_split"] = task.fewshot_split
    elif task.type == "generate":
        config.update(
            output_type="generate_until",
            **prompted,
            generation_kwargs={
                "until": list(task.until),
                "max_gen_toks": task.max_gen_toks,
                "do_sample": False,
                "temperature": 0.0,
            },
        )
        if task.fewshot_split:
            config["fewshot_split"] = task.fewshot_split
    else:
        config.update(output_type="loglikelihood_rolling", doc_to_text="", doc_to_target=task.text_field)
    return config


def _aggregation(metric: str) -> str:
    return {"word_perplexity": "weighted_perplexity", "byte_perplexity": "weighted_perplexity"}.get(
        metric, "bits_per_byte" if metric == "bits_per_byte" else "mean"
    )


def write_lm_eval_task(task: Task, folder: str | Path, num_fewshot: int | None = None) -> Path:
    """Write ``<folder>/<task.name>.yaml``: a local lm-eval task over the task's JSONL files."""
    import yaml

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{task.name}.yaml"
    path.write_text(yaml.safe_dump(lm_eval_task_config(task, num_fewshot), sort_keys=False))
    return path


def run_lm_eval(
    model,
    tokenizer,
    tasks,
    num_fewshot: int | None = None,
    batch_size: int = 16,
    limit: int | None = None,
    prefix: str | None = None,
    max_length: int | None = None,
    log_samples: bool = False,
    **simple_evaluate_kwargs,
) -> dict[str, Any]:
    """Run lm-eval on an already-loaded model and return its results dict.

    Args:
        tasks: lm-eval task names (strings that are not files) and/or hf-select tasks (files, dicts, Task);
            hf-select tasks are written as local lm-eval tasks and evaluated with their ``fewshot_seed``.
        prefix: passed as lm-eval's ``system_instruction`` (joined to the description as hf-select joins
            its prefix), so conditional-inference prompts match.
        Other keyword arguments go to ``lm_eval.simple_evaluate``.
    """
    _require_lm_eval()
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    if isinstance(tasks, (str, Path, dict, Task)):
        tasks = [tasks]
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length)
    merged: dict[str, Any] = {"results": {}, "samples": {}}
    with tempfile.TemporaryDirectory() as folder:
        runs: list[tuple[str, int | None]] = []  # (task name, few-shot seed of an hf-select task)
        for entry in tasks:
            if isinstance(entry, str) and not Path(entry).exists():
                runs.append((entry, None))
                continue
            task = load_task(entry)
            write_lm_eval_task(task, folder, num_fewshot)
            runs.append((task.name, task.fewshot_seed))
        # indexing lm-eval's thousands of built-in tasks takes long: only when a built-in name is asked for
        manager = TaskManager(include_path=folder, include_defaults=any(seed is None for _, seed in runs))
        for name, seed in runs:
            kwargs = dict(simple_evaluate_kwargs)
            if seed is not None:
                kwargs.setdefault("fewshot_random_seed", seed)
            out = simple_evaluate(
                model=lm,
                tasks=[name],
                num_fewshot=num_fewshot,
                limit=limit,
                system_instruction=prefix or None,
                log_samples=log_samples,
                task_manager=manager,
                **kwargs,
            )
            merged["results"].update(out["results"])
            merged["samples"].update(out.get("samples") or {})
    return merged


def agreement_check(
    model,
    tokenizer,
    tasks,
    num_fewshot: int | None = None,
    batch_size: int = 16,
    limit: int | None = None,
    prefix: str | None = None,
    max_length: int | None = None,
    tolerance: float = 1e-4,
) -> dict[str, Any]:
    """Run hf-select and lm-eval on the same model and multiple-choice / perplexity tasks; compare the numbers.

    Returns ``{task: {"hf_select": {...}, "lm_eval": {...}, "max_loglik_diff": float, "num_items": int,
    "agree": bool}}``. Multiple choice: acc and acc_norm, ``agree`` when both are identical;
    ``max_loglik_diff`` is the largest per-choice gap. Perplexity: bits per byte, ``max_loglik_diff`` is the
    largest per-document gap of the rolling log-likelihood (nats), ``agree`` when it is within ``tolerance``.
    ``max_length`` (both harnesses; default the model's) sets the rolling windows of perplexity tasks.
    """
    from .harness import evaluate

    tasks = [load_task(t) for t in ([tasks] if isinstance(tasks, (str, Path, dict, Task)) else tasks)]
    ours = evaluate(
        model,
        tokenizer,
        tasks,
        num_fewshot=num_fewshot,
        batch_size=batch_size,
        limit=limit,
        prefix=prefix,
        max_length=max_length,
        log_samples=True,
        show_progress=False,
    )
    theirs = run_lm_eval(
        model,
        tokenizer,
        tasks,
        num_fewshot,
        batch_size,
        limit=limit,
        prefix=prefix,
        max_length=max_length,
        log_samples=True,
    )
    report = {}
    for task in tasks:
        if task.type == "perplexity":
            report[task.name] = _perplexity_agreement(ours, theirs, task.name, tolerance)
        if task.type != "multiple_choice":
            continue
        mine = ours["results"][task.name]
        ref = theirs["results"][task.name]
        ref_metrics = {m: ref[f"{m},none"] for m in ("acc", "acc_norm")}
        diff = 0.0
        by_doc = {s["doc_id"]: s for s in ours["samples"][task.name]}
        for sample in theirs["samples"].get(task.name, []):
            lls = [float(r[0]) for r in sample["filtered_resps"]]
            diff = max([diff] + [abs(a - b) for a, b in zip(lls, by_doc[sample["doc_id"]]["loglikelihoods"])])
        report[task.name] = {
            "hf_select": {m: mine[m] for m in ("acc", "acc_norm")},
            "lm_eval": ref_metrics,
            "max_loglik_diff": diff,
            "num_items": mine["num_items"],
            "agree": all(mine[m] == ref_metrics[m] for m in ("acc", "acc_norm")),
        }
    return report


def _perplexity_agreement(ours: dict, theirs: dict, name: str, tolerance: float) -> dict[str, Any]:
    nll = {s["doc_id"]: s["nll"] for s in ours["samples"][name]}
    samples = theirs["samples"].get(name, [])
    if len(samples) != len(nll):
        raise ValueError(f"task {name!r}: lm-eval scored {len(samples)} documents, hf-select {len(nll)}")
    diff = 0.0
    for sample in samples:
        ll = sample["filtered_resps"]
        ll = float(ll[0] if isinstance(ll, (list, tuple)) else ll)
        diff = max(diff, abs(ll + nll[sample["doc_id"]]))
    ref = theirs["results"][name]["bits_per_byte,none"]
    return {
        "hf_select": {"bits_per_byte": ours["results"][name]["bits_per_byte"]},
        "lm_eval": {"bits_per_byte": ref},
        "max_loglik_diff": diff,
        "num_items": len(nll),
        "agree": diff <= tolerance,
    }


def format_agreement(report: dict[str, Any]) -> str:
    """One line per task: both harnesses' acc / acc_norm (bits per byte for perplexity) and the largest
    log-likelihood gap."""
    lines = []
    for name, r in report.items():
        a, b = r["hf_select"], r["lm_eval"]
        if "bits_per_byte" in a:
            lines.append(
                f"{name}: n={r['num_items']} bits/byte {a['bits_per_byte']:.6f} vs lm-eval "
                f"{b['bits_per_byte']:.6f}, max |loglik diff| {r['max_loglik_diff']:.2e} -> "
                f"{'AGREE' if r['agree'] else 'DISAGREE'}"
            )
            continue
        lines.append(
            f"{name}: n={r['num_items']} acc {a['acc']:.4f} vs lm-eval {b['acc']:.4f}, "
            f"acc_norm {a['acc_norm']:.4f} vs lm-eval {b['acc_norm']:.4f}, "
            f"max |loglik diff| {r['max_loglik_diff']:.2e} -> {'AGREE' if r['agree'] else 'DISAGREE'}"
        )
    return "\n".join(lines)
