"""Run a study: every (arm, seed) as an ordinary, resumable Trainer run, then the paired statistics and report.

Layout of ``output_dir``::

    init/seed<s>/              initial weights of seed s (safetensors), loaded by every arm of that seed
    runs/<arm>/seed<s>/        the Trainer's output_dir: checkpoint-<step>/ while it runs,
        run.json               the run's fingerprint, written when it starts
        result.json            the completion marker: metrics, counted tokens, costs, loss curve
    selection.json             per arm: wall seconds and tokens of its one-off selection / scoring work
    results.json, report.html, figures/*.png

A run whose ``result.json`` carries the fingerprint of the current configuration is never repeated; a run with a
``run.json`` but no result resumes from its last checkpoint (``Trainer.train(resume_from_checkpoint=...)``: model,
optimizer, scheduler, RNG states, token count, loss history and the cost callback's clock all come back). A run
folder holding another configuration's run is an error, never silently reused or overwritten.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState, PrinterCallback
from transformers.utils import logging

from ..fingerprint import fingerprint, weights_checksum
from ..resume import read_marker, write_marker
from .config import ArmConfig, StudyConfig, arm_types
from .study import Study

logger = logging.get_logger(__name__)

# StudyConfig fields that change no run's result (bookkeeping, statistics, planning, the list of other arms)
NOT_IN_RUN_FINGERPRINT = frozenset({
    "output_dir", "arms", "baseline", "alpha", "power", "plan", "plan_seeds", "plan_steps", "plan_points",
    "plan_effect", "keep_checkpoints", "save_models", "save_steps", "seeds", "eval_batch_size",
})  # fmt: skip


class CostCallback(TrainerCallback, ExportableState):
    """Wall seconds spent in training steps, carried across a resume in the checkpoint's trainer state."""

    def __init__(self, seconds: float = 0.0):
        self.seconds = seconds
        self._start = None
        self._base = seconds

    def on_train_begin(self, args, state, control, **kwargs):
        self._base, self._start = self.seconds, time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._start is not None:
            self.seconds = self._base + time.perf_counter() - self._start

    def state(self) -> dict:
        return {"args": {"seconds": self.seconds}, "attributes": {}}


class QuarterLogCallback(TrainerCallback):
    """One log line per quarter of the run (the console stays readable with many arms and seeds)."""

    def __init__(self, label: str = ""):
        self.label, self.shown = label, 0

    def on_log(self, args, state, control, logs=None, **kwargs):
        quarter = state.global_step * 4 // max(1, state.max_steps)
        if logs and "loss" in logs and quarter > self.shown:
            self.shown = quarter
            logger.warning(f"[compare] {self.label}: step {state.global_step}/{state.max_steps}, loss {logs['loss']:.4f}")


def run_fingerprint(config: StudyConfig, kind: str, arm: ArmConfig, seed: int) -> str:
    study = {k: v for k, v in asdict(config).items() if k not in NOT_IN_RUN_FINGERPRINT}
    return fingerprint("compare-run/v1", study, kind, arm, seed)


def _last_checkpoint(run_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(run_dir)) if run_dir.is_dir() else None


def heldout_metrics(study: Study, model) -> dict[str, float]:
    """Held-out bits per UTF-8 byte per domain (``heldout_bpb/<domain>``) and their unweighted mean over domains
    (``heldout_bpb``, the headline: every domain counts the same whatever its size)."""
    import torch

    from ..meco.conditional import prefixed_text_losses
    from ..token_loss import bits_per_byte

    was_training = model.training
    model.eval()
    out: dict[str, float] = {}
    with torch.no_grad():
        for domain, texts in study.heldout_by_domain().items():
            losses = prefixed_text_losses(model, study.tokenizer, texts, None, study.config.eval_batch_size)
            out[f"heldout_bpb/{domain}"] = bits_per_byte(sum(losses["nats"]), sum(losses["num_bytes"]))
    model.train(was_training)
    out["heldout_bpb"] = sum(out.values()) / len(out)
    return out


def task_metrics(study: Study, model) -> dict[str, float]:
    """Harness task metrics (``task/<task>/<metric>``) of the trained model."""
    if not study.config.tasks:
        return {}
    from ..eval.harness import evaluate

    result = evaluate(model, study.tokenizer, study.config.tasks, limit=study.config.task_limit, show_progress=False)
    return {
        f"task/{task}/{metric}": float(value)
        for task, metrics in result["results"].items()
        for metric, value in metrics.items()
        if metric != "num_items" and isinstance(value, (int, float)) and not metric.endswith("_stderr")
    }


def lower_is_better(metric: str) -> bool:
    return any(word in metric for word in ("bpb", "bits_per_byte", "perplexity", "loss", "nll"))


def run_one(study: Study, kind: str, arm: ArmConfig, seed: int, max_steps: int | None = None,
            callbacks: tuple = (), run_root: str = "runs") -> dict[str, Any]:  # fmt: skip
    """Train arm ``arm`` (of type ``kind``) for ``seed`` -- or resume it, or read its finished result."""
    from transformers import Trainer, TrainingArguments

    from .study import distributed_state

    state = distributed_state()
    config = study.config
    run_dir = study.output_dir / run_root / arm.name / f"seed{seed}"
    fp = run_fingerprint(config, kind, arm, seed) + (f"-steps{max_steps}" if max_steps else "")
    marker, started = run_dir / "result.json", run_dir / "run.json"
    # a marker cut by a kill is removed (read_marker) and its run redone
    stored_result = read_marker(marker)
    for meta in (stored_result, read_marker(started)):
        if meta is not None:
            stored = meta.get("fingerprint")
            if stored != fp:
                raise ValueError(
                    f"{run_dir} holds a run of another configuration (fingerprint {stored}, now {fp}); "
                    "use another output_dir or delete that folder"
                )
    if stored_result is not None:
        logger.warning(f"[compare] {arm.name} seed {seed}: finished earlier, reusing {marker}")
        return stored_result
    if state.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not started.exists():
            write_marker(started, {"fingerprint": fp, "arm": arm.name, "type": kind, "seed": seed})
    state.wait_for_everyone()
    setup = arm_types()[kind].build(study, arm, seed)
    model = study.initial_model(seed)
    init_checksum = weights_checksum(model)
    shared = study.training_arguments(run_dir, seed)
    if max_steps:
        shared["max_steps"] = max_steps
    shared["restore_callback_states_from_checkpoint"] = True
    args = (setup.args_class or TrainingArguments)(**{**shared, **setup.args})
    kwargs = dict(setup.trainer_kwargs)
    collator = study.collator() if setup.data_collator == "packed" else setup.data_collator
    if collator is not None:
        kwargs["data_collator"] = collator
    trainer = (setup.trainer_class or Trainer)(
        model=model, args=args, train_dataset=setup.train_dataset, processing_class=study.tokenizer,
        callbacks=[CostCallback(), QuarterLogCallback(f"{arm.name} seed {seed}"), *setup.callbacks, *callbacks],
        **kwargs,
    )  # fmt: skip
    trainer.remove_callback(PrinterCallback)  # the loss curve is in the result; keep the console readable
    checkpoint = _last_checkpoint(run_dir)
    if checkpoint:
        logger.warning(f"[compare] {arm.name} seed {seed}: resuming from {checkpoint}")
    else:
        logger.warning(f"[compare] {arm.name} seed {seed}: training")
    trainer.train(resume_from_checkpoint=checkpoint)
    cost = next(c for c in trainer.callback_handler.callbacks if isinstance(c, CostCallback))
    start = time.perf_counter()
    metrics = heldout_metrics(study, model)
    if setup.extra_metrics is not None:
        metrics.update(setup.extra_metrics(study, model))
    metrics.update(task_metrics(study, model))
    eval_seconds = time.perf_counter() - start
    steps = trainer.state.global_step
    result = {
        "arm": arm.name, "type": kind, "seed": seed, "fingerprint": fp, "init_checksum": init_checksum,
        "steps": steps, "update_tokens": steps * config.batch_size * config.seq_length,
        "tokens_seen": int(trainer.state.num_input_tokens_seen),
        "scoring_tokens": setup.scoring_tokens_per_step * steps,
        "train_seconds": cost.seconds, "eval_seconds": eval_seconds, "resumed": bool(checkpoint),
        "metrics": metrics,
        "loss_curve": [[h["step"], h["loss"]] for h in trainer.state.log_history if "loss" in h],
        "info": setup.info,
    }  # fmt: skip
    if config.save_models:
        trainer.save_model(str(run_dir / "model"))  # every process (sharded strategies gather the weights)
    if state.is_main_process:
        write_marker(marker, result)
        if not config.keep_checkpoints:
            for path in run_dir.glob("checkpoint-*"):
                shutil.rmtree(path, ignore_errors=True)
    state.wait_for_everyone()
    return json.loads(json.dumps(result, default=str))


def _selection_costs(study: Study, names: list[str]) -> dict[str, dict[str, float]]:
    """Selection cost per arm: measured in this process, or the first measurement stored earlier."""
    path = study.output_dir / "selection.json"
    stored = read_marker(path) or {}
    for name in names:
        if name not in stored and name in study.selection_seconds:
            stored[name] = {"seconds": study.selection_seconds[name], "tokens": study.selection_tokens.get(name, 0)}
    return stored


def run_study(config: StudyConfig) -> dict[str, Any]:
    """Run (or resume) every arm over every seed, then write ``results.json``, ``report.html`` and figures.

    Returns the results (see :func:`hf_select.compare.report.summarize`).
    """
    from .report import summarize, write_report
    from .study import distributed_state

    arms = config.arm_configs()
    study = Study.load(config)
    runs: dict[str, list[dict]] = {arm.name: [] for _, arm in arms}
    for seed in config.seeds:
        for kind, arm in arms:
            runs[arm.name].append(run_one(study, kind, arm, seed))
    selection = _selection_costs(study, [a.name for _, a in arms])
    results = summarize(config, arms, runs, selection)
    if distributed_state().is_main_process:
        write_marker(study.output_dir / "selection.json", selection)
        write_report(study.output_dir, results)
    return results
