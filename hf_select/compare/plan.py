"""``hf-select compare --plan``: size a study before running it.

The baseline arm trains over ``plan_seeds`` (default 2) for ``plan_steps`` steps; its held-out bpb is measured at
``plan_points`` evenly spaced steps. At each of these budgets (update tokens) the seed-to-seed standard
deviation ``sd`` of the baseline gives the spread of a paired difference, conservatively ``sd_d = sqrt(2) * sd``
(two independent runs; pairing by seed can only shrink it when arm and baseline runs of a seed are positively
correlated). The effect to detect is ``plan_effect`` times the baseline's bpb at that budget; the seeds needed
are the fewest ``n`` whose smallest detectable effect (:func:`hf_select.compare.stats.detectable_effect`, alpha
and power of the study) is at most that effect. The cost is the measured training seconds per run, scaled
linearly to the budget, times seeds and arms (selection work not included).

With 2 planning seeds ``sd`` has a single degree of freedom: it is a rough guide, off by a factor of 2 either way
one time in five; plan with 3 seeds for a firmer figure. The budgets before the last are points of one run whose
learning-rate schedule spans ``plan_steps``: there the rate has not decayed yet, so their bpb is higher than a run
of that length would reach (use a constant schedule, ``lr_scheduler_type: constant_with_warmup``, to read them as
short runs).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from transformers import TrainerCallback

from .config import StudyConfig
from .stats import seeds_needed
from .study import Study


class HeldoutAtSteps(TrainerCallback):
    """Measure held-out bpb at the given steps (appended to ``values``)."""

    def __init__(self, study: Study, steps: list[int]):
        self.study, self.steps, self.values = study, set(steps), {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step in self.steps:
            from .runner import heldout_metrics

            self.values[state.global_step] = heldout_metrics(self.study, model)["heldout_bpb"]


def run_plan(config: StudyConfig) -> dict[str, Any]:
    """Run the planning baseline (resumable like any run) and return the plan (also written to
    ``output_dir/plan/plan.json``)."""
    from ..resume import read_marker, write_marker
    from .runner import run_one
    from .study import distributed_state

    arms = config.arm_configs()
    kind, baseline = arms[0]
    steps = config.plan_steps or config.max_steps
    points = sorted({max(1, round(steps * (i + 1) / config.plan_points)) for i in range(config.plan_points)})
    study = Study.load(config)
    per_seed = {}
    for seed in config.plan_seeds:
        callback = HeldoutAtSteps(study, points[:-1])
        result = run_one(study, kind, baseline, seed, max_steps=steps, callbacks=(callback,), run_root="plan")
        values = dict(result.get("info", {}).get("plan_points", {}))
        values = {int(k): v for k, v in values.items()} or callback.values
        values[steps] = result["metrics"]["heldout_bpb"]
        per_seed[seed] = {"bpb": values, "train_seconds": result["train_seconds"]}
        path = study.output_dir / "plan" / baseline.name / f"seed{seed}" / "result.json"
        if distributed_state().is_main_process and callback.values:
            stored = read_marker(path) or result
            stored.setdefault("info", {})["plan_points"] = {str(k): v for k, v in callback.values.items()}
            write_marker(path, stored)
    seconds_per_step = statistics.fmean(r["train_seconds"] for r in per_seed.values()) / steps
    rows = []
    for step in points:
        values = [r["bpb"][step] for r in per_seed.values() if step in r["bpb"]]
        mean = statistics.fmean(values)
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        effect = config.plan_effect * mean
        sd_diff = math.sqrt(2) * sd
        n = seeds_needed(sd_diff, effect, config.alpha, config.power) if sd_diff > 0 else 2
        run_seconds = seconds_per_step * step
        rows.append({
            "steps": step, "update_tokens": step * config.batch_size * config.seq_length, "heldout_bpb": mean,
            "seed_sd": sd, "effect": effect, "paired_sd_estimate": sd_diff, "seeds_needed": n,
            "seconds_per_run": run_seconds,
            "study_seconds": None if n is None else n * len(arms) * run_seconds,
        })  # fmt: skip
    plan = {"plan_seeds": list(config.plan_seeds), "plan_steps": steps, "effect_fraction": config.plan_effect,
            "alpha": config.alpha, "power": config.power, "arms": len(arms), "budgets": rows}  # fmt: skip
    if distributed_state().is_main_process:
        write_marker(study.output_dir / "plan" / "plan.json", plan)
    return plan


def plan_table(plan: dict[str, Any]) -> str:
    """The plan as a plain-text table."""
    lines = [
        f"baseline over seeds {plan['plan_seeds']}, {plan['plan_steps']} steps; effect to detect: "
        f"{100 * plan['effect_fraction']:g}% of held-out bpb (alpha {plan['alpha']}, power {plan['power']}); "
        f"{plan['arms']} arm(s)",
        f"{'steps':>7} {'update tokens':>14} {'bpb':>8} {'seed sd':>9} {'effect':>8} {'seeds':>6} "
        f"{'s / run':>9} {'study s':>10}",
    ]
    for r in plan["budgets"]:
        seeds = "n/a" if r["seeds_needed"] is None else str(r["seeds_needed"])
        study = "n/a" if r["study_seconds"] is None else f"{r['study_seconds']:.0f}"
        lines.append(
            f"{r['steps']:>7} {r['update_tokens']:>14,} {r['heldout_bpb']:>8.4f} {r['seed_sd']:>9.5f} "
            f"{r['effect']:>8.4f} {seeds:>6} {r['seconds_per_run']:>9.1f} {study:>10}"
        )
    lines.append("seeds: fewest seeds whose smallest detectable paired effect is at most 'effect' (paired sd "
                 "estimated as sqrt(2) x seed sd); study s: seeds x arms x s / run on this machine, selection excluded")
    return "\n".join(lines)
