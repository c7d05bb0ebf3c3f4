"""Data Whisperer replication (Wang et al., ACL 2025, arXiv 2505.12212, section 4), scaled down.

The paper scores every example of a task's training set with Data Whisperer (few-shot in-context answers of the
untuned model, weighted by attention; :class:`~hf_select.data_whisperer.DataWhisperer`), keeps the top 10% and
fine-tunes on it; the top 10% matches or beats fine-tuning on the full set (GSM8K, Llama-3-8B: 72.46% vs 71.39%)
and beats random subsets of the same size, at a selection-to-tuning time ratio (STR) of about 0.03-0.25.

Here, scaled down to two CPU cores:

- **Pool and held-out set.** The demo world's fine-tuning set (``question``, ``answer``, ``tier``, ``source``):
  ``per_tier`` examples of every tier from its ``train`` split (300 by default) and ``heldout_per_tier`` of every
  tier from its ``heldout`` split, both seeded (``data_seed``), so the held-out set is drawn like the pool (the
  paper evaluates on the same task's test split). Answers are cut to their first sentence and ``answer_chars``
  characters (:func:`~hf_select.data_whisperer.experiment.short_answers`): the world mixes one-line definitions
  with multi-paragraph FAQ answers that a 135M model cannot imitate within a generation budget.
- **Model.** SmolLM2-135M-Instruct both scores (the untuned model, as in the paper) and is fine-tuned (LoRA
  via peft, :func:`~hf_select.data_whisperer.finetune.finetune`; the paper used LLaMA-Factory's LoRA defaults).
- **Arms.** ``top`` (highest 10% by score), ``bottom`` (lowest 10% of the scored examples; the many examples
  whose group answered every query wrongly tie at 0 and are drawn at random among themselves), ``random`` (10%
  drawn uniformly) and ``full`` (the pool). Examples no valid prompt scored rank in neither ``top`` nor
  ``bottom``.
- **Protocol: equal epochs.** As in the paper, every subset is fine-tuned for the same ``epochs`` with the same
  LoRA settings, so ``top``, ``bottom`` and ``random`` train the same number of steps on the same number of
  examples (equal compute among them) and ``full`` trains ten times as many steps. The question the paper asks
  is whether 10% of the data, selected, is as good as all of it at the usual number of epochs; equal compute
  would instead repeat the subset ten times as often as ``full`` sees its examples.
- **Seeds.** Seed ``s`` sets the LoRA initialisation and data order of a run; the random arm's seed ``s`` also
  draws its subset (the random draws are the seeds of the random arm: ``random_seeds``, at least 5). ``top``
  and ``bottom`` run ``seeds`` (their subset is fixed: the seeds vary the initialisation and order only),
  ``full`` runs ``full_seeds``. Top vs another arm is paired on the seeds both ran (paired t intervals,
  :mod:`hf_select.compare.stats`); each arm's own interval uses all its runs.
- **Measures.** Held-out gold-answer loss (mean per answer token, :func:`~hf_select.data_whisperer.finetune.
  gold_loss`) and the task metric on greedy answers (``metric="auto"``: exact match for answers of at most three
  words, ROUGE-L F1 otherwise; :func:`~hf_select.data_whisperer.finetune.evaluate_qa`); STR = the scoring
  wall-clock / the wall-clock of fine-tuning on the full pool (mean of its seeds), measured in the same run; the
  share of invalid groups (groups whose in-context answers still could not be parsed after ``max_retries``
  re-draws).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from . import ReplicationContext, Row, Section, register_replication

ARMS = ("top", "random", "bottom", "full")

DEFAULT_SCORER = {
    "n_demos": 5,
    "n_queries": 3,
    "query_mode": "joint",
    "max_answer_tokens": 48,
    "max_retries": 2,
    "max_chars_per_field": 300,
    "rounds": 1,
    "seed": 0,
}


@dataclass
class DataWhispererReplicationOptions:
    """Knobs of the Data Whisperer replication (the YAML's ``options``)."""

    model_name_or_path: str = field(
        default="{model}", metadata={"help": "Scoring model and student (the untuned model scores, as in the paper)."}
    )
    dataset_name_or_path: str = field(
        default="{world}/finetune",
        metadata={"help": "save_to_disk folder with question/answer/tier splits `train` (pool) and `heldout`."},
    )
    per_tier: int = field(default=100, metadata={"help": "Pool examples drawn per tier from the train split."})
    heldout_per_tier: int = field(default=16, metadata={"help": "Held-out examples drawn per tier."})
    answer_chars: int | None = field(
        default=100, metadata={"help": "Cut every answer to its first sentence and this many characters (None: keep)."}
    )
    data_seed: int = field(default=0, metadata={"help": "Seed of the pool and held-out draws."})
    fraction: float = field(default=0.1, metadata={"help": "Share of the pool kept by top, bottom and random (paper: 10%)."})
    seeds: list[int] = field(
        default_factory=lambda: [0, 1, 2], metadata={"help": "Seeds (LoRA initialisation, data order) of top and bottom."}
    )
    random_seeds: list[int] = field(
        default_factory=lambda: [0, 1, 2, 3, 4],
        metadata={"help": "Draws of the random arm: seed s draws its subset and sets its LoRA init and order."},
    )
    full_seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Seeds of the full-pool arm."})
    epochs: float = field(default=2.0, metadata={"help": "Epochs of every arm (equal epochs, as in the paper)."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate (cosine, no warmup)."})
    batch_size: int = field(default=4, metadata={"help": "Examples per optimizer step."})
    max_length: int = field(default=96, metadata={"help": "Tokens of prompt + answer kept per example."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    max_generate: int | None = field(
        default=24, metadata={"help": "Held-out examples answered by generation for the metric (None: all)."}
    )
    max_new_tokens: int = field(default=32, metadata={"help": "New tokens of a held-out answer."})
    scorer: dict = field(
        default_factory=lambda: dict(DEFAULT_SCORER),
        metadata={"help": "Fields of DataWhispererConfig for the scoring (the paper: 5 demonstrations, joint queries)."},
    )

    def __post_init__(self):
        if not 0 < self.fraction < 1:
            raise ValueError(f"fraction must be in (0, 1), got {self.fraction}")
        for name in ("seeds", "random_seeds", "full_seeds"):
            values = getattr(self, name)
            if len(set(values)) != len(values) or len(values) < 2:
                raise ValueError(f"{name}: give at least 2 distinct seeds (intervals need two), got {values}")
        if not set(self.seeds) <= set(self.random_seeds):
            raise ValueError(f"seeds {self.seeds} must be among random_seeds {self.random_seeds} (paired comparisons)")
        if self.per_tier < 1 or self.heldout_per_tier < 1:
            raise ValueError("per_tier and heldout_per_tier must be >= 1")

    def whisperer_config(self):
        from ..data_whisperer.config import DataWhispererConfig

        return DataWhispererConfig(**self.scorer)


# ---------------------------------------------------------------------------------------------- pieces
def arm_subsets(scores, fraction: float, seeds, tie_seed: int = 0) -> dict[str, dict[int, np.ndarray]]:
    """Pool indices of every arm and seed: ``top`` / ``bottom`` = the ``round(fraction * n)`` highest / lowest
    scores among the scored examples (NaN never selected; the same subset for every seed), ``random`` = a draw of
    the same size from the whole pool with seed ``s``
    (:func:`~hf_select.data_whisperer.finetune.random_subset_indices`), ``full`` = every index.

    Equal scores are ordered by a random permutation (``tie_seed``), not by position: a group whose queries were
    all answered wrongly gives its demonstrations a score of exactly 0, so many examples tie at the bottom, and a
    pool ordered by source would otherwise fill ``bottom`` with its first source."""
    from ..data_whisperer.finetune import random_subset_indices

    values = np.asarray(scores, dtype=np.float64)
    size = max(1, round(fraction * len(values)))
    valid = np.flatnonzero(~np.isnan(values))
    tiebreak = np.random.default_rng(tie_seed).permutation(len(values))[valid]
    ascending = valid[np.lexsort((tiebreak, values[valid]))]
    descending = valid[np.lexsort((tiebreak, -values[valid]))]
    top, bottom = np.sort(descending[:size]), np.sort(ascending[:size])
    return {
        "top": {s: top for s in seeds},
        "bottom": {s: bottom for s in seeds},
        "random": {s: random_subset_indices(len(values), len(top), seed=s) for s in seeds},
        "full": {s: np.arange(len(values)) for s in seeds},
    }


def invalid_share(stats: dict) -> float:
    """Share of groups whose in-context answers could not be parsed after every re-draw (resumed groups count
    with the share they had; ``stats`` as :attr:`DataWhisperer.stats`)."""
    groups = stats.get("groups", 0)
    return stats.get("invalid_groups", 0) / groups if groups else float("nan")


def mean_interval(values, alpha: float = 0.05) -> tuple[float, float | None, float | None]:
    """Mean and two-sided ``1 - alpha`` Student-t interval of independent runs (no interval below 2 runs)."""
    from ..compare.stats import t_quantile

    values = [float(v) for v in values]
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, None, None
    half = t_quantile(1 - alpha / 2, len(values) - 1) * float(np.std(values, ddof=1)) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def _fmt_interval(low, high, digits: int = 4) -> str:
    return "n/a (1 run)" if low is None else f"[{low:.{digits}f}, {high:.{digits}f}]"


def paired_row(measure: str, label: str, paper: str, arm: dict, other: dict, key: str, lower_is_better: bool,
               seeds) -> tuple[Row, dict]:  # fmt: skip
    """A :class:`Row` for ``arm - other`` on ``key`` paired over ``seeds`` (both arms must hold every seed), and
    the :func:`~hf_select.compare.stats.paired_comparison` behind it."""
    from ..compare.stats import paired_comparison

    a = [arm[s][key] for s in seeds]
    b = [other[s][key] for s in seeds]
    cmp = paired_comparison(a, b, lower_is_better=lower_is_better)
    mde = cmp["detectable_effect"]
    row = Row(
        measure=measure,
        arm=label,
        paper=paper,
        ours=f"{cmp['difference']:+.4f} ({np.mean(a):.4f} vs {np.mean(b):.4f}, {len(seeds)} paired seeds)",
        interval=_fmt_interval(*(cmp["ci"] or (None, None))),
        verdict=cmp["verdict"],
        detectable="" if mde is None else f"{mde:.4f}",
    )
    return row, cmp


def deciding_budget(cmp: dict, seconds_per_seed: float) -> str:
    """For an undetermined paired comparison: the seeds (and wall-clock) a paired t-test would need to detect
    the observed difference with power 0.8, holding the spread of the per-seed differences fixed."""
    from ..compare.stats import seeds_needed

    diff, sd = abs(cmp["difference"] or 0.0), cmp["sd"]
    if not sd or diff == 0:
        return "no observed difference to size a budget on"
    need = seeds_needed(sd, diff)
    if need is None:
        return f"the observed difference ({diff:.4f}) needs more than 1000 paired seeds"
    return f"the observed difference ({diff:.4f}) needs about {need} paired seeds (~{need * seconds_per_seed / 60:.0f} min here)"


# ---------------------------------------------------------------------------------------------- the run
def _data(o: DataWhispererReplicationOptions):
    from ..data_whisperer.experiment import short_answers, stratified_sample
    from ..loading import load_any_dataset

    train = load_any_dataset(o.dataset_name_or_path, "train")
    heldout = load_any_dataset(o.dataset_name_or_path, "heldout")
    pool = stratified_sample(train, o.per_tier, o.data_seed)
    # shuffled, so that the first max_generate examples (the metric's) mix the tiers like the whole set
    held = stratified_sample(heldout, o.heldout_per_tier, o.data_seed).shuffle(seed=o.data_seed)
    held = held.flatten_indices()
    if o.answer_chars:
        pool, held = short_answers(pool, o.answer_chars), short_answers(held, o.answer_chars)
    return pool, held


def _finetune_arguments(o: DataWhispererReplicationOptions, output_dir, seed: int):
    import torch

    from ..data_whisperer.finetune import FinetuneArguments

    return FinetuneArguments(
        output_dir=str(output_dir), use_lora=True, lora_r=o.lora_r, lora_alpha=o.lora_alpha,
        num_train_epochs=o.epochs, learning_rate=o.learning_rate, per_device_train_batch_size=o.batch_size,
        max_length=o.max_length, lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0,
        save_strategy="no", report_to="none", use_cpu=not torch.cuda.is_available(), seed=seed, data_seed=seed,
        disable_tqdm=True, logging_steps=1000,
    )  # fmt: skip


def _score(ctx: ReplicationContext, pool) -> dict:
    from ..data_whisperer.experiment import tier_auroc, tier_ranks
    from ..data_whisperer.scorer import DataWhisperer
    from ..loading import load_causal_lm, load_tokenizer

    o = ctx.options
    device = _device()
    model = load_causal_lm(o.model_name_or_path, device=device).eval()
    tokenizer = load_tokenizer(o.model_name_or_path)
    whisperer = DataWhisperer(model, tokenizer, o.whisperer_config(), state_dir=ctx.output_dir / "dw_state")
    start, cpu = time.perf_counter(), time.process_time()
    scores = whisperer.score(pool.select_columns(["question", "answer"]))
    seconds = time.perf_counter() - start + whisperer.resumed_seconds
    cpu = time.process_time() - cpu  # CPU seconds: the machine's load does not inflate them
    return {
        "scores": [None if math.isnan(s) else float(s) for s in scores],
        "selection_seconds": seconds,
        "selection_cpu_seconds": None if whisperer.resumed_seconds else cpu,
        "stats": dict(whisperer.stats),
        "attn_layer": whisperer.attn_layer,
        "tier_auroc": tier_auroc(scores, tier_ranks(pool["tier"])),
    }


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _run(ctx: ReplicationContext, pool, held, indices, seed: int) -> dict:
    """Fine-tune a fresh model on ``pool[indices]`` with seed ``seed`` and evaluate it on ``held``."""
    from ..data_whisperer.finetune import evaluate_qa, finetune
    from ..loading import load_causal_lm, load_tokenizer

    o = ctx.options
    tokenizer = load_tokenizer(o.model_name_or_path)
    args = _finetune_arguments(o, ctx.output_dir / "trainer", seed)
    cpu = time.process_time()
    model, seconds = finetune(load_causal_lm(o.model_name_or_path, device=_device()), tokenizer,
                              pool.select([int(i) for i in indices]), args)  # fmt: skip
    cpu = time.process_time() - cpu
    start = time.perf_counter()
    metrics = evaluate_qa(model, tokenizer, held, max_generate=o.max_generate, max_new_tokens=o.max_new_tokens)
    steps = math.ceil(len(indices) / o.batch_size) * math.ceil(o.epochs)
    return {"size": len(indices), "train_seconds": seconds, "train_cpu_seconds": cpu, "steps": steps,
            "eval_seconds": time.perf_counter() - start, **metrics}  # fmt: skip


def _base(ctx: ReplicationContext, held) -> dict:
    from ..data_whisperer.finetune import evaluate_qa
    from ..loading import load_causal_lm, load_tokenizer

    o = ctx.options
    model = load_causal_lm(o.model_name_or_path, device=_device())
    return evaluate_qa(model, load_tokenizer(o.model_name_or_path), held, max_generate=o.max_generate,
                       max_new_tokens=o.max_new_tokens)  # fmt: skip


def _arm_seeds(o: DataWhispererReplicationOptions) -> dict[str, list[int]]:
    return {"top": list(o.seeds), "random": list(o.random_seeds), "bottom": list(o.seeds), "full": list(o.full_seeds)}


@register_replication("data_whisperer", DataWhispererReplicationOptions)
def replicate_data_whisperer(ctx: ReplicationContext) -> Section:
    """Data Whisperer, paper section 4 scaled down (see the module docstring): top / random / bottom 10% and the
    full pool, LoRA fine-tuning of SmolLM2-135M-Instruct for equal epochs, held-out gold loss and task metric,
    STR and the invalid-group share."""
    o: DataWhispererReplicationOptions = ctx.options
    pool, held = _data(o)
    scoring = ctx.step("scores", lambda: _score(ctx, pool))
    scores = [math.nan if s is None else s for s in scoring["scores"]]
    arm_seeds = _arm_seeds(o)
    subsets = arm_subsets(scores, o.fraction, sorted(set().union(*arm_seeds.values())), tie_seed=o.data_seed)
    base = ctx.step("base", lambda: _base(ctx, held))
    runs: dict[str, dict[int, dict]] = {arm: {} for arm in ARMS}
    for arm in ARMS:
        for seed in arm_seeds[arm]:
            idx = subsets[arm][seed]
            runs[arm][seed] = ctx.step(f"run_{arm}_seed{seed}", lambda idx=idx, seed=seed: _run(ctx, pool, held, idx, seed))
    return _section(ctx, pool, held, scoring, subsets, base, runs)


# ---------------------------------------------------------------------------------------------- the report
def _tier_shares(pool, indices) -> str:
    tiers = np.array([str(t) for t in pool["tier"]])[np.asarray(indices, dtype=int)]
    names = [t for t in ("high", "medium", "low") if t in set(pool["tier"])]
    return ", ".join(f"{t} {np.mean(tiers == t):.0%}" for t in names)


def _section(ctx, pool, held, scoring, subsets, base, runs) -> Section:
    o: DataWhispererReplicationOptions = ctx.options
    arm_seeds = _arm_seeds(o)
    seeds, full_seeds = arm_seeds["top"], arm_seeds["full"]
    stats = scoring["stats"]
    full_seconds = float(np.mean([runs["full"][s]["train_seconds"] for s in full_seeds]))
    str_ratio = scoring["selection_seconds"] / full_seconds
    cpu_str = ""
    if scoring.get("selection_cpu_seconds") and all("train_cpu_seconds" in runs["full"][s] for s in full_seeds):
        full_cpu = float(np.mean([runs["full"][s]["train_cpu_seconds"] for s in full_seeds]))
        cpu_str = f"; CPU-time STR {scoring['selection_cpu_seconds'] / full_cpu:.2f}"
    size = len(subsets["top"][seeds[0]])
    metric_name = "task metric (ROUGE-L F1 / exact match)"

    specs = [
        ("held-out gold loss", "top 10% vs random 10%", "top < random (DW above random at 10%)", "random",
         "gold_loss", True),
        (metric_name, "top 10% vs random 10%", "top > random", "random", "metric", False),
        ("held-out gold loss", "top 10% vs bottom 10%", "top < bottom (the score ranks usefulness)", "bottom",
         "gold_loss", True),
        (metric_name, "top 10% vs bottom 10%", "top > bottom", "bottom", "metric", False),
        ("held-out gold loss", "top 10% vs full pool", "top <= full (GSM8K, Llama-3-8B)", "full", "gold_loss",
         True),
        (metric_name, "top 10% vs full pool", "72.46% vs 71.39% (GSM8K, Llama-3-8B)", "full", "metric", False),
    ]  # fmt: skip
    paired = [
        paired_row(measure, label, paper, runs["top"], runs[other], key, lower,
                   [s for s in seeds if s in arm_seeds[other]])  # fmt: skip
        for measure, label, paper, other, key, lower in specs
    ]
    rows = [row for row, _ in paired] + [
        Row("STR (selection / full fine-tuning wall-clock)", "top 10%", "0.03-0.25", f"{str_ratio:.2f}{cpu_str}",
            f"{scoring['selection_seconds']:.0f} s / {full_seconds:.0f} s", "descriptive"),
        Row("invalid groups (answers not parsed after re-draws)", "scoring", "not reported",
            f"{invalid_share(stats):.1%} ({stats.get('invalid_groups', 0)} of {stats.get('groups', 0)})",
            f"{stats.get('retries', 0)} re-draws", "descriptive"),
    ]  # fmt: skip

    lines = ["| arm | examples | steps | seeds | gold loss (mean, 95% CI) | metric (mean, 95% CI) | train s |",
             "|---|---|---|---|---|---|---|",
             f"| untuned | 0 | 0 | - | {base['gold_loss']:.4f} | {base['metric']:.4f} | 0 |"]  # fmt: skip
    for arm in ARMS:
        done = runs[arm]
        loss = mean_interval([r["gold_loss"] for r in done.values()])
        metric = mean_interval([r["metric"] for r in done.values()])
        first = next(iter(done.values()))
        lines.append(
            f"| {arm} | {first['size']} | {first['steps']} | {len(done)} | {loss[0]:.4f} {_fmt_interval(*loss[1:])} "
            f"| {metric[0]:.4f} {_fmt_interval(*metric[1:])} "
            f"| {np.mean([r['train_seconds'] for r in done.values()]):.1f} |"
        )
    per_seed = ["| seed | " + " | ".join(f"{a} loss / metric" for a in ARMS) + " |", "|---" * (len(ARMS) + 1) + "|"]
    for s in sorted(set().union(*arm_seeds.values())):
        cells = [f"{runs[a][s]['gold_loss']:.4f} / {runs[a][s]['metric']:.4f}" if s in runs[a] else "-" for a in ARMS]
        per_seed.append(f"| {s} | " + " | ".join(cells) + " |")
    scored = int(np.sum([x is not None for x in scoring["scores"]]))
    zeros = int(np.sum([x == 0 for x in scoring["scores"]]))
    body = "\n".join([
        "Per arm (each run: LoRA on a fresh SmolLM2-135M-Instruct, evaluated on the same held-out set):", "",
        *lines, "", "Per seed (gold loss / metric):", "", *per_seed, "",
        f"Scores: {scored} of {len(pool)} pool examples scored (attention layer {scoring['attn_layer']}), {zeros} of "
        "them exactly 0 (their group answered every query wrongly; the bottom arm draws among ties); AUROC of "
        f"score vs tier (high > medium > low) {scoring['tier_auroc']:.3f} (0.5 = chance). Tier shares: pool "
        f"{_tier_shares(pool, np.arange(len(pool)))}; top {_tier_shares(pool, subsets['top'][seeds[0]])}; bottom "
        f"{_tier_shares(pool, subsets['bottom'][seeds[0]])}.",
    ])  # fmt: skip

    checks = [
        "Scorer exactness: the attention weights equal an independent per-head computation and upstream's "
        "(9e-8), the spans come from one tokenisation (tests/hf_select/data_whisperer); metric arguments are "
        "(prediction, reference).",
        f"Fine-tuning works: the full-pool arm moves the held-out gold loss from {base['gold_loss']:.4f} (untuned) "
        f"to {np.mean([runs['full'][s]['gold_loss'] for s in full_seeds]):.4f}.",
        f"Scoring is informative only as far as it parses: {invalid_share(stats):.1%} of groups invalid; score vs "
        f"tier AUROC {scoring['tier_auroc']:.3f}.",
    ]
    per_seed_seconds = {
        "subset": float(np.mean([r["train_seconds"] + r["eval_seconds"] for r in runs["top"].values()])),
        "full": float(np.mean([r["train_seconds"] + r["eval_seconds"] for r in runs["full"].values()])),
    }
    for (row, cmp), spec in zip(paired, specs):
        if row.verdict == "undetermined" and cmp["sd"] is not None:
            # a seed of a paired comparison runs both of its arms
            seconds = per_seed_seconds["subset"] + per_seed_seconds["full" if spec[3] == "full" else "subset"]
            checks.append(f"{row.measure}, {row.arm}: undetermined; smallest detectable effect {row.detectable} "
                          f"with these seeds; {deciding_budget(cmp, seconds)}.")  # fmt: skip
        elif row.verdict == "worse":
            checks.append(f"{row.measure}, {row.arm}: against the paper (see the checks above and the per-seed "
                          "table: the direction holds seed by seed).")  # fmt: skip
    cost = (
        f"Selection (scoring {len(pool)} examples, {stats.get('groups', 0)} groups, "
        f"{stats.get('prompt_tokens', 0) + stats.get('generated_tokens', 0)} prompt + generated tokens): "
        f"{scoring['selection_seconds']:.0f} s; fine-tuning: full pool {full_seconds:.0f} s per seed, a "
        f"{size}-example subset {np.mean([r['train_seconds'] for r in runs['top'].values()]):.1f} s; evaluation "
        f"{np.mean([r['eval_seconds'] for a in ARMS for r in runs[a].values()]):.0f} s per run "
        f"({len(held)} held-out examples); STR {str_ratio:.2f}."
    )
    setting = (
        f"SmolLM2-135M-Instruct scores (untuned, {o.scorer.get('n_demos', 5)} demonstrations, "
        f"{o.scorer.get('n_queries', 3)} joint queries) and is LoRA fine-tuned (r {o.lora_r}, lr "
        f"{o.learning_rate}, {o.epochs:g} epochs for every arm: the paper's equal-epochs protocol) on a pool of "
        f"{len(pool)} question/answer examples ({o.per_tier} per tier of the demo world's fine-tuning set); "
        f"held-out: {len(held)} examples ({o.heldout_per_tier} per tier). Arms: top / bottom / random {o.fraction:.0%} "
        f"({size} examples): top and bottom with seeds {seeds}, random with {len(arm_seeds['random'])} draws "
        f"(seed s draws the subset and sets the LoRA init and order), the full pool with seeds {full_seeds}."
    )
    return Section(setting=setting, rows=rows, body=body, checks="\n".join(f"- {c}" for c in checks), cost=cost)


__all__ = ["DataWhispererReplicationOptions", "arm_subsets", "invalid_share", "mean_interval", "paired_row",
           "replicate_data_whisperer"]  # fmt: skip
