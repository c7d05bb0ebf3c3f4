"""AttentionInfluence (Hua et al., arXiv 2505.07293, sections 3-4 and App. D) replicated on the demo world.

The paper's setting: a 1.3B selector's retrieval heads (top 5% on a 4K-token key/value proxy) are masked with
uniform attention; documents whose loss rises most are "reasoning-intensive"; the top 20% per domain of
SmolLM-Corpus is added once more to the full corpus (up-weighting) to pretrain a 7B model. It reports that
selected documents run about twice as long as the rest, that repetitive text inflates the score (so the corpus
is deduplicated first), and in App. D that masking the top heads wrecks GSM8K and an ICL task while masking as
many random heads costs little.

Scaled down here (every part on 2 CPU cores):

* **selector**: SmolLM2-135M-Instruct with the demo's retrieval heads (reused from ``demo_output`` when present,
  else detected on the demo's calibrated proxy: 320-token contexts, 8-character keys, 24 samples);
* **pool**: ``documents_per_domain`` documents of each domain of the world's corpus (the demo's own 24 per
  domain, then a disjoint seeded sample), clipped to ``max_chars`` characters and scored on their first
  ``max_length`` tokens; scores of the demo's AttentionInfluence stage are reused for the documents whose inputs
  (clipped text, heads, model, ``max_length``) are identical;
* **filtering**: :mod:`hf_select.attention_influence.prefilter` (exact dedup + datatrove's Gopher repetition
  filter; ``gopher`` adds the quality filter). A document's score does not depend on the others, so one scoring
  pass gives the selection before and after filtering (the filtered selection never takes a dropped document);
* **students**: one ``compare`` study from scratch on the world tokenizer: the whole pool (baseline), the
  up-weighted mixes (pool + the top ``fraction`` per domain again) without and with the prefilter, and a random
  up-weighted mix of the same size, at equal update tokens over paired seeds; held-out bits per byte per domain;
* **App. D**: proxy accuracy with the top heads masked against ``random_draws`` draws of as many random
  non-retrieval heads (:func:`hf_select.attention_influence.proxy_accuracy.masking_check`).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import ReplicationContext, Row, Section, register_replication

PAPER_APP_D = {"GSM8K": (0.182, 0.007, 0.127), "ICL": (0.415, 0.0001, 0.384)}  # none, top heads, random heads


@dataclass
class AttentionInfluenceReplicationOptions:
    demo_output: str = field(
        default="demo_output", metadata={"help": "Output folder of `make demo` (its heads and scores are reused)."}
    )
    heads_file: str | None = field(default=None, metadata={"help": "Retrieval heads JSON (default: the demo's, else detected)."})
    documents_per_domain: int = field(default=64, metadata={"help": "Pool documents per domain (the demo's 24 first)."})
    demo_documents_per_domain: int = field(default=24, metadata={"help": "The demo pool's documents per domain."})
    max_chars: int = field(default=900, metadata={"help": "Documents clipped to this many characters (the demo's)."})
    max_length: int = field(default=256, metadata={"help": "Tokens scored per document (the demo's)."})
    scoring_batch_size: int = field(default=8, metadata={"help": "Documents per scoring forward."})
    fraction: float = field(default=0.2, metadata={"help": "Share selected per domain (paper: 0.2)."})
    prefilter: str = field(default="repetition", metadata={"help": "Prefilter of the students' filtered mix."})
    report_prefilters: list[str] = field(
        default_factory=lambda: ["repetition", "gopher"], metadata={"help": "Prefilters whose selection is reported."}
    )
    context_tokens: int = field(default=320, metadata={"help": "Proxy context tokens (the demo's calibration)."})
    key_length: int = field(default=8, metadata={"help": "Proxy key characters."})
    max_value_tokens: int = field(default=16, metadata={"help": "Proxy value tokens at most."})
    detection_samples: int = field(default=24, metadata={"help": "Proxy samples of the head detection (no demo heads)."})
    check_samples: int = field(default=20, metadata={"help": "Proxy samples of the App. D check."})
    random_draws: int = field(default=6, metadata={"help": "Random-head draws of the App. D check."})
    non_retrieval_threshold: float = field(default=0.1, metadata={"help": "Random heads score below this."})
    bootstrap: int = field(default=2000, metadata={"help": "Bootstrap resamples of the length-ratio interval."})
    excerpt_chars: int = field(default=140, metadata={"help": "Characters of the shown excerpts."})


# ---------------------------------------------------------------------------------------------- pure pieces
def top_fraction_mask(domains: list[str], scores: list[float], fraction: float) -> np.ndarray:
    """Selected rows: per domain the ``round(fraction x n)`` highest non-NaN scores (NaN rows count in ``n``),
    as :func:`hf_select.selection.top_fraction_rows` selects."""
    from ..selection import top_fraction_indices

    mask = np.zeros(len(scores), dtype=bool)
    domains_arr = np.array(domains)
    values = np.array([math.nan if s is None else s for s in scores], dtype=float)
    for domain in sorted(set(domains)):
        rows = np.flatnonzero(domains_arr == domain)
        mask[rows[top_fraction_indices(values[rows], fraction)]] = True
    return mask


def length_ratio(lengths, selected, eligible, resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Mean length of the ``selected`` rows over that of the other ``eligible`` rows, with a percentile bootstrap
    95% interval (each group resampled with replacement)."""
    lengths = np.asarray(lengths, dtype=float)
    sel = lengths[np.asarray(selected) & np.asarray(eligible)]
    rest = lengths[~np.asarray(selected) & np.asarray(eligible)]
    if not len(sel) or not len(rest) or rest.mean() == 0:
        return {"ratio": None, "interval": None, "selected": len(sel), "rest": len(rest)}
    rng = np.random.default_rng(seed)
    boot = (
        rng.choice(sel, (resamples, len(sel))).mean(1) / np.maximum(rng.choice(rest, (resamples, len(rest))).mean(1), 1e-9)
    )
    low, high = np.percentile(boot, [2.5, 97.5])
    return {"ratio": float(sel.mean() / rest.mean()), "interval": [float(low), float(high)],
            "selected": len(sel), "rest": len(rest), "selected_mean": float(sel.mean()), "rest_mean": float(rest.mean())}  # fmt: skip


def mean_interval(values: list[float]) -> tuple[float, list[float] | None]:
    """Mean and paired-t style 95% interval (t quantile) of ``values``."""
    from ..compare.stats import t_quantile

    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    half = t_quantile(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, [mean - half, mean + half]


def _excerpt(text: str, chars: int) -> str:
    return "`" + " ".join(text[:chars].split()).replace("`", "'") + "`"


# ---------------------------------------------------------------------------------------------- steps
def _sample_rows(domains: np.ndarray, size: int, seed: int, exclude: set[int] = frozenset()) -> list[int]:
    rng = np.random.default_rng(seed)
    out = []
    for domain in sorted(set(domains.tolist())):
        rows = np.array([i for i in np.nonzero(domains == domain)[0] if i not in exclude])
        out += sorted(rng.choice(rows, min(size, len(rows)), replace=False).tolist())
    return out


def build_pool(ctx: ReplicationContext) -> list[dict]:
    """The demo pool's clean documents (same seeded draw: ``demo_documents_per_domain`` per domain, seed 0) and
    a disjoint draw (seed 1) up to ``documents_per_domain`` per domain, clipped to ``max_chars``."""
    from datasets import load_from_disk

    o = ctx.options
    train = load_from_disk(str(ctx.world_dir / "pretrain"))["train"]
    domains = np.array(train["domain"])
    first = _sample_rows(domains, o.demo_documents_per_domain, seed=0)
    extra = _sample_rows(domains, max(0, o.documents_per_domain - o.demo_documents_per_domain), 1, set(first))
    rows = train.select(first + extra)
    return [
        {"text": r["text"][: o.max_chars], "domain": r["domain"], "doc_chars": len(r["text"]), "source": r["source"],
         "url": r["url"]}
        for r in rows
    ]  # fmt: skip


def _proxy_values(ctx: ReplicationContext, tokenizer) -> list[str]:
    from datasets import load_from_disk

    from ..attention_influence.proxy_task import clean_values
    from ..dataset_scripts.demo_world import sample_sentences

    heldout = load_from_disk(str(ctx.world_dir / "pretrain"))["heldout"]
    sentences = sample_sentences(heldout, limit=4000, domain="prose")
    if len(sentences) < 200:
        sentences += [s for d in ("literature", "math", "code") for s in sample_sentences(heldout, 2000, d)]
    return clean_values(sentences, tokenizer, max_value_tokens=ctx.options.max_value_tokens)


def _proxy_samples(ctx, tokenizer, n: int, seed: int):
    from ..attention_influence.proxy_task import build_proxy_samples

    o = ctx.options
    return build_proxy_samples(_proxy_values(ctx, tokenizer), tokenizer, num_samples=n,
                               context_tokens=o.context_tokens, key_length=o.key_length, seed=seed)  # fmt: skip


def _heads_file(ctx: ReplicationContext, model, tokenizer) -> tuple[Path, str]:
    """The demo's heads when present, else detected once on the demo's calibrated proxy."""
    o = ctx.options
    candidates = [Path(o.heads_file)] if o.heads_file else []
    candidates.append(Path(o.demo_output) / "stages" / "retrieval_heads" / "retrieval_heads.json")
    for path in candidates:
        if path.exists():
            return path, f"reused from {path}"
    from ..attention_influence.retrieval_heads import detect_retrieval_heads

    path = ctx.output_dir / "retrieval_heads.json"
    if not path.exists():
        samples = _proxy_samples(ctx, tokenizer, o.detection_samples, ctx.seed)
        heads = detect_retrieval_heads(model, tokenizer, proxy=samples, top_fraction=0.05, show_progress=False)
        heads.model_name = "SmolLM2-135M-Instruct (embedded)"
        heads.save(path)
    return path, f"detected on {o.detection_samples} proxy samples"


def _demo_scores(ctx: ReplicationContext, heads: list) -> dict[str, dict]:
    """The demo's AttentionInfluence scores by clipped text, when its inputs match ours (heads, max_length)."""
    import json

    o = ctx.options
    stage = Path(o.demo_output) / "stages"
    result, scored = stage / "attention_influence.json", stage / "attention_influence" / "scored"
    if not (result.exists() and scored.exists()):
        return {}
    info = json.loads(result.read_text())
    if sorted(map(tuple, info.get("heads", []))) != sorted(map(tuple, heads)) or info.get("max_length") != o.max_length:
        return {}
    from datasets import load_from_disk

    from ..attention_influence.scorer import SCORE_COLUMNS

    data = load_from_disk(str(scored))
    return {r["text"]: {c: r[c] for c in SCORE_COLUMNS} for r in data}


def score_pool(ctx: ReplicationContext, pool: list[dict], model, tokenizer, heads: list) -> list[dict]:
    """AttentionInfluence columns of every pool document, one resumable step per domain."""
    from ..attention_influence.scorer import AttentionInfluence

    o = ctx.options
    cache = _demo_scores(ctx, heads)
    scorer = AttentionInfluence(model, tokenizer, heads, max_length=o.max_length, batch_size=o.scoring_batch_size)
    out: list[dict | None] = [None] * len(pool)
    for domain in sorted({d["domain"] for d in pool}):
        rows = [i for i, d in enumerate(pool) if d["domain"] == domain]

        def score(rows=rows):
            todo = [i for i in rows if pool[i]["text"] not in cache]
            values = {i: {**cache[pool[i]["text"]], "reused": True} for i in rows if pool[i]["text"] in cache}
            for start in range(0, len(todo), 32):
                part = todo[start : start + 32]
                scored = scorer({"text": [pool[i]["text"] for i in part]})
                for j, i in enumerate(part):
                    values[i] = {k: v[j] for k, v in scored.items()} | {"reused": False}
            return [values[i] for i in rows]

        for i, value in zip(rows, ctx.step(f"scores_{domain}", score)):
            out[i] = value
    return out  # type: ignore[return-value]


def app_d(ctx: ReplicationContext, model, tokenizer, heads_path: Path) -> dict:
    from ..attention_influence.proxy_accuracy import masking_check
    from ..attention_influence.retrieval_heads import RetrievalHeads

    o = ctx.options
    heads = RetrievalHeads.load(heads_path)
    samples = _proxy_samples(ctx, tokenizer, o.check_samples, ctx.seed + 7919)  # the demo's check samples
    check = masking_check(model, tokenizer, samples, heads, o.random_draws, ctx.seed, o.non_retrieval_threshold)
    check["chance"] = sum(1 / s["num_pairs"] for s in samples) / len(samples)
    check["mean_pairs"] = sum(s["num_pairs"] for s in samples) / len(samples)
    return check


# ---------------------------------------------------------------------------------------------- the section
def _selection_rows(pool, scores, reasons_by_filter, o) -> tuple[list[Row], list[str], dict]:
    domains = [d["domain"] for d in pool]
    lengths = [d["doc_chars"] for d in pool]
    base = [s["ai_score"] for s in scores]
    variants = {"none": base}
    for name, reasons in reasons_by_filter.items():
        variants[name] = [math.nan if r else s for s, r in zip(base, reasons)]
    rows, lines, summary = [], [], {}
    lines += ["| domain | prefilter | kept | selected | selected chars | rest chars | ratio [95% bootstrap] | "
              "selected tokens / rest tokens | highest-scored document (score) |", "|" + "---|" * 9]  # fmt: skip
    for domain in sorted(set(domains)):
        for name, values in variants.items():
            mask = top_fraction_mask(domains, values, o.fraction)
            idx = [i for i, d in enumerate(domains) if d == domain]
            eligible = np.array([not math.isnan(values[i]) for i in idx])
            selected = mask[idx]
            ratio = length_ratio([lengths[i] for i in idx], selected, eligible, o.bootstrap)
            tokens = length_ratio([scores[i]["ai_num_tokens"] for i in idx], selected, eligible, o.bootstrap)
            summary[f"{domain}/{name}"] = {"chars": ratio, "tokens": tokens}
            top = max((i for i in idx if mask[i]), key=lambda i: values[i], default=None)
            ci = ratio["interval"]
            verdict = "undetermined"
            if ci and ci[0] > 1:
                verdict = "longer (paper's direction)"
            elif ci and ci[1] < 1:
                verdict = "shorter (against the paper)"
            r = ratio["ratio"]
            rows.append(Row(
                measure=f"length ratio selected/rest, {domain}", arm=f"prefilter {name}", paper="~2x longer",
                ours=f"{r:.2f}x" if r else "-", interval=f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "",
                verdict=verdict,
            ))  # fmt: skip
            excerpt = f"{_excerpt(pool[top]['text'], o.excerpt_chars)} ({values[top]:.3f})" if top is not None else "-"
            means = [f"{ratio[k]:.0f}" if k in ratio else "-" for k in ("selected_mean", "rest_mean")]
            lines.append(
                f"| {domain} | {name} | {int(eligible.sum())}/{len(idx)} | {int(selected.sum())} | "
                f"{means[0]} | {means[1]} | "
                + (f"{r:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "-") + " | "
                + (f"{tokens['ratio']:.2f}" if tokens["ratio"] else "-") + f" | {excerpt} |"
            )
    return rows, lines, summary


def _student_rows(results: dict, arms: list[str], o) -> tuple[list[Row], list[str]]:
    from ..compare.stats import paired_comparison

    def values(arm: str, metric: str) -> dict[int, float]:
        return {r["seed"]: r["metrics"][metric] for r in results["arms"][arm]["runs"] if metric in r["metrics"]}

    rows, lines = [], ["| arm | " + " | ".join(f"{m} (mean ± sd)" for m in ("code", "math", "all")) + " |", "|---|---|---|---|"]
    metrics = {"code": "heldout_bpb/code", "math": "heldout_bpb/math", "all": "heldout_bpb"}
    for arm in results["arms"]:
        cells = []
        for metric in metrics.values():
            stat = results["arms"][arm]["metrics"].get(metric)
            cells.append(f"{stat['mean']:.4f} ± {stat['sd']:.4f}" if stat and stat.get("sd") is not None else "-")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    for arm in arms:
        for reference in ("baseline", "random_mix"):
            for label, metric in metrics.items():
                a, b = values(arm, metric), values(reference, metric)
                seeds = sorted(set(a) & set(b))
                comp = paired_comparison([a[s] for s in seeds], [b[s] for s in seeds])
                ci = comp["ci"]
                rows.append(Row(
                    measure=f"held-out bpb, {label}", arm=f"{arm} vs {reference}",
                    paper="mix better (7B: GSM8K +2.7, HumanEval +3.5)",
                    ours=f"{comp['difference']:+.4f}", interval=f"[{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "",
                    verdict=comp["verdict"],
                    detectable=f"{comp['detectable_effect']:.4f}" if comp["verdict"] == "undetermined" and comp["detectable_effect"] else "",
                ))  # fmt: skip
    return rows, lines


def _app_d_rows(check: dict) -> tuple[list[Row], list[str]]:
    none, top = check["none"]["sample_accuracy"], check["top"]["sample_accuracy"]
    draws = [d["sample_accuracy"] for d in check["random_draws"]]
    mean, ci = mean_interval(draws)
    paper = "; ".join(f"{k} {v[0]} -> {v[1]} (top), {v[2]} (random)" for k, v in PAPER_APP_D.items())
    rows = [
        Row("App. D proxy accuracy, top heads masked", "top 5% heads", paper, f"{none:.3f} -> {top:.3f}",
            verdict="drop" + (" >= 80% (paper's direction)" if none and top <= 0.2 * none else " < 80%")),
        Row("App. D proxy accuracy, random heads masked", f"{len(draws)} random draws", paper,
            f"{none:.3f} -> {mean:.3f}", interval=f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "",
            verdict="smaller drop than top heads" if ci and ci[0] > top else "undetermined"),
    ]  # fmt: skip
    rel = {k: (1 - v[2] / v[0]) for k, v in PAPER_APP_D.items()}
    lines = [
        "| masked | whole answer | first token | all answer tokens | relative drop (whole) |", "|---|---|---|---|---|",
        f"| none | {none:.3f} | {check['none']['first_token_accuracy']:.3f} | {check['none']['token_accuracy']:.3f} | |",
        f"| top heads | {top:.3f} | {check['top']['first_token_accuracy']:.3f} | {check['top']['token_accuracy']:.3f} | "
        f"{(1 - top / none) if none else float('nan'):.0%} |",
    ]  # fmt: skip
    for i, d in enumerate(check["random_draws"]):
        lines.append(f"| random draw {i} | {d['sample_accuracy']:.3f} | {d['first_token_accuracy']:.3f} | "
                     f"{d['token_accuracy']:.3f} | {(1 - d['sample_accuracy'] / none) if none else float('nan'):.0%} |")  # fmt: skip
    lines.append(f"| random, mean | {mean:.3f} | {check['random']['first_token_accuracy']:.3f} | "
                 f"{check['random']['token_accuracy']:.3f} | {(1 - mean / none) if none else float('nan'):.0%} |")  # fmt: skip
    lines.append(
        "| paper, random heads | GSM8K 0.182 -> 0.127; ICL 0.415 -> 0.384 | | | "
        + ", ".join(f"{k} {v:.0%}" for k, v in rel.items()) + " |"
    )
    return rows, lines


@register_replication("attention_influence", AttentionInfluenceReplicationOptions)
def replicate_attention_influence(ctx: ReplicationContext) -> Section:
    """AttentionInfluence's length finding, selection, up-weighted students and App. D, scaled down (module docs)."""
    import torch

    from ..attention_influence.prefilter import filter_reasons
    from ..attention_influence.retrieval_heads import RetrievalHeads
    from ..loading import load_causal_lm, load_tokenizer

    o = ctx.options
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_causal_lm(str(ctx.model_dir), device=device).eval()
    tokenizer = load_tokenizer(str(ctx.model_dir))
    heads_path, heads_origin = _heads_file(ctx, model, tokenizer)
    heads = [tuple(h) for h in RetrievalHeads.load(heads_path).selected]
    pool = ctx.step("pool", lambda: build_pool(ctx))
    scores = score_pool(ctx, pool, model, tokenizer, heads)
    filters = sorted(set(o.report_prefilters) | {o.prefilter})
    reasons = ctx.step("prefilter", lambda: {f: filter_reasons([d["text"] for d in pool], f) for f in filters})
    check = ctx.step("app_d", lambda: app_d(ctx, model, tokenizer, heads_path))
    model = None  # the selector is done: free it before the students train

    # students: the pool with its scores as a parquet file, four arms
    from datasets import Dataset

    pool_path = ctx.output_dir / "pool.parquet"
    if not pool_path.exists():
        table = [{**d, "ai_score": s["ai_score"],
                  "ai_score_filtered": math.nan if reasons[o.prefilter][i] else s["ai_score"]}
                 for i, (d, s) in enumerate(zip(pool, scores))]  # fmt: skip
        Dataset.from_list(table).to_parquet(str(pool_path.with_suffix(".tmp")))
        pool_path.with_suffix(".tmp").rename(pool_path)
    filtered_arm = f"ai_mix_{o.prefilter}"
    arms = [
        "baseline",
        {"type": "attention_influence", "name": "ai_mix", "scores_column": "ai_score", "fraction": o.fraction},
        {"type": "attention_influence", "name": filtered_arm, "scores_column": "ai_score_filtered", "fraction": o.fraction},
        {"type": "random", "name": "random_mix", "fraction": o.fraction, "selection_seed": 0},
    ]  # fmt: skip
    config = ctx.study_config("compare", dataset_name_or_path=str(pool_path), arms=arms)
    results = ctx.run_study(config)

    sel_rows, sel_lines, _ = _selection_rows(pool, scores, {f: reasons[f] for f in o.report_prefilters}, o)
    st_rows, st_lines = _student_rows(results, ["ai_mix", filtered_arm], o)
    d_rows, d_lines = _app_d_rows(check)
    from collections import Counter

    drops = {f: Counter(r.split(":")[0] + (":" + r.split(":")[1] if ":" in r else "") for r in reasons[f] if r)
             for f in filters}  # fmt: skip
    per_domain_kept = {f: {dom: sum(1 for d, r in zip(pool, reasons[f]) if d["domain"] == dom and not r)
                           for dom in sorted({d["domain"] for d in pool})} for f in filters}  # fmt: skip
    reused = sum(1 for s in scores if s.get("reused"))
    tokens = sum(int(s["ai_num_tokens"]) for s in scores)
    setting = (
        f"Selector SmolLM2-135M-Instruct, {len(heads)} retrieval heads ({heads_origin}). Pool: {len(pool)} documents of "
        f"the demo world ({o.documents_per_domain} per domain), clipped to {o.max_chars} characters and scored on "
        f"their first {o.max_length} tokens ({tokens} tokens; {reused} documents' scores reused from the demo). "
        f"Selection: top {o.fraction:.0%} per domain, before filtering and after each prefilter "
        f"({', '.join(o.report_prefilters)}; datatrove's default thresholds). Students: "
        f"{config.model_config.get('num_hidden_layers', '?')}-layer Llama, hidden {config.model_config.get('hidden_size', '?')}, "
        f"from scratch on the world tokenizer, {config.max_steps} steps x {config.batch_size} x {config.seq_length} "
        f"tokens, seeds {config.seeds}; arms: baseline (pool), ai_mix (pool + top {o.fraction:.0%} again), "
        f"{filtered_arm} (the same after prefilter {o.prefilter}), random_mix (pool + a random {o.fraction:.0%} per "
        f"domain again). App. D on {o.check_samples} held-out proxy samples ({check['mean_pairs']:.1f} pairs, chance "
        f"{check['chance']:.3f}); random heads among the {check['random_pool']}. Tasks are not run (students this "
        "size score 0 on the world's tasks)."
    )
    body = "\n".join([
        "**Selection per domain, before and after filtering** (lengths in characters of the full documents; "
        "tokens = scored tokens):", "", *sel_lines, "",
        "**Prefilter drops** (whole pool): " + "; ".join(
            f"{f}: {sum(drops[f].values())} of {len(pool)} ({', '.join(f'{k} {v}' for k, v in drops[f].most_common(6))}); "
            f"kept per domain {per_domain_kept[f]}" for f in filters), "",
        "**Students** (held-out bits per byte):", "", *st_lines, "",
        "**App. D** (whole-answer proxy accuracy; the paper's random-head drops beside ours):", "", *d_lines,
    ])  # fmt: skip
    checks = (
        "A length ratio below 1 or an interval containing 1 is read against the paper only after these checks: "
        "the ratio is computed on the full (unclipped) document lengths and on the scored tokens; the scorer is "
        "exact against an independent computation (tests/hf_select/attention_influence); the world caps documents "
        "near 6,000 characters, so code and literature (almost all at the cap) cannot show a 2x ratio, and "
        "documents are clipped to the first "
        f"{o.max_chars} characters for scoring, so the score of a longer document reads only its beginning (the gpu "
        "profile scores longer windows). For the students, an undetermined difference comes with the smallest "
        "effect these seeds could detect; the seeds needed for a given effect grow as (detectable / effect)^2."
    )
    cost = (
        f"Scoring {tokens} tokens ({reused} documents reused) {sum(v for k, v in ctx.seconds.items() if k.startswith('scores_')):.0f} s; "
        f"App. D {ctx.seconds.get('app_d', 0):.0f} s; students {ctx.seconds.get('study:compare', 0):.0f} s "
        f"({len(arms)} arms x {len(config.seeds)} seeds)."
    )
    return Section(setting=setting, rows=sel_rows + st_rows + d_rows, body=body, checks=checks, cost=cost)
