"""OPUS replicated in the paper's own setting, scaled down (arXiv 2602.05400, section 4).

The paper pretrains from scratch on a pool of medium- and low-quality web documents (FineWeb-Edu classifier
scores) and selects every step, from a buffer of 2x the batch, the rows whose optimizer-shaped update most lowers
the loss on a "Bench-Proxy" set: corpus documents retrieved by similarity to benchmark train/dev items. It
reports better downstream accuracy than random selection at equal update tokens and ~4.7% compute overhead.

Scaled down here:

- **Student**: a Llama from scratch on the demo world's 8k BPE tokenizer (a few million parameters).
- **Pool** (:func:`build_quality_pool`): medium quality = the world's pretraining text (prose, code, math,
  literature); low quality = the world's low-quality pool (archaic dictionary entries, test-suite code, fortune
  cookies; domain ``lowq``) plus degraded copies of other medium documents (their words shuffled: the vocabulary
  without the structure; domain ``degraded``). Every row carries ``quality`` (``medium`` / ``low``) and
  ``source``; OPUS's candidates are packed per domain, so every candidate row has one quality.
- **Proxy**: :func:`hf_select.opus.proxy_pool.build_proxy_pool` over the pool (lexical similarity) against the
  train splits of the world's evaluation tasks (:func:`~hf_select.opus.proxy_pool.benchmark_proxy_texts`; their
  test items are never used for it), not from the word-shuffled documents (``proxy_exclude_domains``: a
  bag-of-words retriever cannot tell them from their sources, an embedding retriever as the paper's would); the
  proxy documents stay in the pool.
- **Arms** at equal update tokens, paired seeds: ``baseline`` = the plain Trainer on the same packed pool (random
  batches: the paper's "random" arm, see below), ``opus_boltzmann`` (sequential Boltzmann draws, the paper's
  tau 0.9 on standardised utilities, redundancy term on) and ``opus_topk`` (the K largest alignments; GhostSuite's
  port found top-k at least as good).
- **Measures**: held-out bits per byte of medium-quality documents (the world's held-out split, per domain then
  averaged); the proxy-task loss: bits per byte of the gold answers of the tasks' *test* items
  (:func:`write_task_items`); the share of low-quality rows among the selected rows against their share among
  the candidates offered, per quarter of the run (:func:`low_share_by_quarter`); the wall-clock overhead of each
  OPUS arm over the baseline's training beside the floor that ``benchmarks/opus_overhead.py`` prints for the same
  batch, sequence, window and proxy sizes.

Random arm: the paper's baseline trains on random batches of the pool for the same steps. A random choice of K of
N random candidates is again a uniform random batch, so the plain Trainer on the same pool is that arm in
distribution; it is the study's baseline.
"""

from __future__ import annotations

import json
import math
import random
import re
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers.utils import logging

from . import ReplicationContext, Row, Section, register_replication

logger = logging.get_logger(__name__)

MEDIUM_DOMAINS = ("prose", "code", "math", "literature")
LOW_DOMAINS = ("lowq", "degraded")


@dataclass
class OpusReplicationOptions:
    medium_documents_per_domain: int = field(
        default=500, metadata={"help": "Medium-quality documents per world domain (prose, code, math, literature)."}
    )
    lowq_documents: int = field(default=1500, metadata={"help": "Documents of the world's low-quality pool (domain lowq)."})
    degraded_documents: int = field(
        default=1000, metadata={"help": "Medium documents (not in the pool otherwise) with their words shuffled (domain degraded)."}
    )
    max_chars: int = field(default=2000, metadata={"help": "Clip every pool document to this many characters."})
    tasks_dir: str = field(default="{world}/eval_tasks", metadata={"help": "Folder of the harness tasks (proxy and task loss)."})
    proxy_pool_size: int = field(default=64, metadata={"help": "Proxy documents retrieved from the pool (Bench-Proxy)."})
    proxy_exclude_domains: list[str] = field(
        default_factory=lambda: ["degraded"],
        metadata={"help": "Pool domains the proxy is not retrieved from. The lexical retriever scores bags of words, "
                  "which word-shuffled documents keep; an embedding retriever (the paper's) would not pick them."},
    )
    task_items_per_task: int = field(
        default=20, metadata={"help": "Test items per task in the proxy-task loss (gold-answer bits per byte)."}
    )
    task_gold_max_chars: int = field(
        default=300, metadata={"help": "Clip each gold answer to this many characters (it must fit the student's context)."}
    )
    temperature: float = field(default=0.9, metadata={"help": "Boltzmann temperature of opus_boltzmann (paper: 0.9)."})
    buffer_factor: float = field(default=2.0, metadata={"help": "Candidates per selected row (paper: 2)."})
    score_window: int = field(default=64, metadata={"help": "Tokens scored per candidate and proxy row."})
    proxy_batch_size: int = field(default=8, metadata={"help": "Proxy rows per step (paper's run.sh: 8)."})
    sketch_dim: int = field(default=8192, metadata={"help": "CountSketch dimension (paper: 8192)."})
    overhead_steps: int = field(default=4, metadata={"help": "Timed steps of benchmarks/opus_overhead.py (0: skip it)."})
    overhead_repeats: int = field(default=1, metadata={"help": "Interleaved repeats of benchmarks/opus_overhead.py."})
    seed: int = field(default=0, metadata={"help": "Seed of the pool sample and of the degradation."})


# ---------------------------------------------------------------------------------------------- inputs
def degrade_text(text: str, rng: random.Random) -> str:
    """``text`` with its words shuffled across the document (the vocabulary of clean text, not its structure)."""
    words = re.findall(r"\S+", text)
    rng.shuffle(words)
    return " ".join(words)


def _sample(dataset, count: int, rng: random.Random, exclude: set[int] = frozenset()) -> list[int]:
    rows = [i for i in range(len(dataset)) if i not in exclude]
    return sorted(rng.sample(rows, min(count, len(rows))))


def build_quality_pool(medium, lowq, options: OpusReplicationOptions) -> list[dict[str, str]]:
    """The candidate pool: records ``text, domain, quality, source``.

    ``medium`` (with ``text`` and ``domain``) gives ``medium_documents_per_domain`` documents per domain of
    :data:`MEDIUM_DOMAINS` (quality ``medium``) and, from other documents, ``degraded_documents`` word-shuffled ones
    (domain ``degraded``, quality ``low``); ``lowq`` gives ``lowq_documents`` (domain ``lowq``, quality ``low``).
    Texts are clipped to ``max_chars``; empty ones are dropped. Seeded by ``options.seed``.
    """
    rng = random.Random(options.seed)
    clip = options.max_chars
    out: list[dict[str, str]] = []
    domains = medium["domain"]
    sources = medium["source"] if "source" in medium.column_names else ["pretrain"] * len(medium)
    by_domain: dict[str, list[int]] = {}
    for i, d in enumerate(domains):
        by_domain.setdefault(d, []).append(i)
    used: set[int] = set()
    for domain in MEDIUM_DOMAINS:
        rows = by_domain.get(domain, [])
        picked = sorted(rng.sample(rows, min(options.medium_documents_per_domain, len(rows))))
        used.update(picked)
        for i in picked:
            out.append({"text": medium[i]["text"][:clip], "domain": domain, "quality": "medium", "source": sources[i]})
    rest = [i for d in MEDIUM_DOMAINS for i in by_domain.get(d, []) if i not in used]
    for i in sorted(rng.sample(rest, min(options.degraded_documents, len(rest)))):
        text = degrade_text(medium[i]["text"][:clip], rng)
        out.append({"text": text, "domain": "degraded", "quality": "low", "source": f"degraded:{sources[i]}"})
    low_sources = lowq["source"] if "source" in lowq.column_names else ["lowq"] * len(lowq)
    for i in _sample(lowq, options.lowq_documents, rng):
        out.append({"text": lowq[i]["text"][:clip], "domain": "lowq", "quality": "low", "source": low_sources[i]})
    return [r for r in out if r["text"].strip()]


def retrieve_proxy(records: list[dict[str, str]], targets: list[str], size: int,
                   exclude_domains=()) -> list[dict[str, str]]:
    """Bench-Proxy: the ``size`` pool records (outside ``exclude_domains``) most similar to the benchmark items
    ``targets`` (:func:`~hf_select.opus.proxy_pool.build_proxy_pool`, lexical), most similar first, each with its
    ``proxy_similarity``. They stay in the pool: the paper's proxy documents are corpus documents."""
    from ..opus.proxy_pool import build_proxy_pool

    eligible = [r for r in records if r["domain"] not in set(exclude_domains)]
    order, sims = build_proxy_pool([r["text"] for r in eligible], targets, size)
    return [{**eligible[i], "proxy_similarity": float(s)} for i, s in zip(order.tolist(), sims.tolist())]


def task_files(tasks_dir: str | Path) -> list[Path]:
    """Task YAMLs of ``tasks_dir`` that have a train split (the proxy's source), sorted by name."""
    import yaml

    out = []
    for path in sorted(Path(tasks_dir).glob("*.yaml")):
        task = yaml.safe_load(path.read_text())
        if "train" in (task.get("data_files") or {}) and task.get("type") in ("multiple_choice", "gold_bpb"):
            out.append(path)
    return out


def task_item_records(task_paths: list[Path], per_task: int, max_chars: int | None = None) -> list[dict[str, str]]:
    """The first ``per_task`` items of each task's evaluated (test) split as gold_bpb records: ``query`` and
    ``gold`` = the task's delimiter + the gold answer (the gold choice of a multiple-choice item), the answer
    clipped to ``max_chars`` characters (worked solutions can be longer than a small student's context)."""
    import yaml

    records = []
    for path in task_paths:
        task = yaml.safe_load(path.read_text())
        split = task.get("split", "test")
        file = path.parent / task["data_files"][split]
        delimiter = task.get("target_delimiter", " ")
        with open(file) as f:
            items = [json.loads(line) for line in f if line.strip()][:per_task]
        for item in items:
            if task.get("type") == "multiple_choice":
                answer = item[task.get("choices_field", "choices")][item[task.get("gold_field", "gold")]]
            else:
                answer = item[task.get("gold_field", "gold")]
            answer = str(answer)[:max_chars] if max_chars else str(answer)
            records.append({"query": item[task.get("query_field", "query")], "gold": f"{delimiter}{answer}",
                            "task": task.get("name", path.stem)})  # fmt: skip
    return records


def write_task_items(records: list[dict[str, str]], folder: Path, name: str = "proxy_task_items") -> Path:
    """A gold_bpb harness task (YAML + JSONL) of ``records``; returns the YAML's path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / f"{name}.yaml").write_text(
        f"name: {name}\ntype: gold_bpb\ndata_files:\n  test: {name}.test.jsonl\nsplit: test\ntarget_delimiter: ''\n"
    )
    return folder / f"{name}.yaml"


# ---------------------------------------------------------------------------------------------- measures
def low_share_by_quarter(runs: list[dict], low_domains=LOW_DOMAINS, bins: int = 4) -> list[dict[str, float]]:
    """Per part of the run (``bins`` equal step ranges), the low-quality share of the selected rows and of the
    offered candidates, mean over the runs (each run's ``info["domain_shares"]``: one entry per logging step)."""
    out = []
    for b in range(bins):
        selected, offered = [], []
        for run in runs:
            entries = run.get("info", {}).get("domain_shares") or []
            steps = max(run.get("steps", 0), max((e["step"] for e in entries), default=0), 1)
            part = [e for e in entries if min(bins - 1, (e["step"] - 1) * bins // steps) == b]
            if part:
                selected.append(statistics.fmean(sum(e["selected"].get(d, 0.0) for d in low_domains) for e in part))
                offered.append(statistics.fmean(sum(e["offered"].get(d, 0.0) for d in low_domains) for e in part))
        out.append({"selected": statistics.fmean(selected) if selected else math.nan,
                    "offered": statistics.fmean(offered) if offered else math.nan})  # fmt: skip
    return out


def run_low_shares(run: dict, low_domains=LOW_DOMAINS) -> tuple[float, float]:
    """(selected, offered) low-quality share over a whole run."""
    entries = run.get("info", {}).get("domain_shares") or []
    if not entries:
        return math.nan, math.nan
    sel = statistics.fmean(sum(e["selected"].get(d, 0.0) for d in low_domains) for e in entries)
    off = statistics.fmean(sum(e["offered"].get(d, 0.0) for d in low_domains) for e in entries)
    return sel, off


def domain_shares(runs: list[dict]) -> dict[str, tuple[float, float]]:
    """Per domain, (selected, offered) share over the runs' logged steps (mean of the per-step shares)."""
    entries = [e for run in runs for e in run.get("info", {}).get("domain_shares") or []]
    domains = sorted({d for e in entries for d in (*e["offered"], *e["selected"])})
    return {d: (statistics.fmean(e["selected"].get(d, 0.0) for e in entries),
                statistics.fmean(e["offered"].get(d, 0.0) for e in entries)) for d in domains} if entries else {}  # fmt: skip


_FLOOR = re.compile(r"floor = .*= ([0-9.]+)\s*$", re.M)
_VARIANT = re.compile(r"^(random|opus)\s+([0-9.]+)\s+([0-9.]+)", re.M)


def parse_overhead(text: str) -> dict[str, float]:
    """``floor`` and ``opus_x_random`` from ``benchmarks/opus_overhead.py``'s printout."""
    out: dict[str, float] = {}
    match = _FLOOR.search(text)
    if match:
        out["floor"] = float(match.group(1))
    for name, _seconds, ratio in _VARIANT.findall(text):
        if name == "opus":  # the first table (whole steps); the second times the scoring call alone
            out["opus_x_random"] = float(ratio)
            break
    return out


def overhead_floor(ctx: ReplicationContext, batch: int, seq: int, vocab_size: int) -> dict[str, Any]:
    """Run ``benchmarks/opus_overhead.py`` (random and opus only) at this study's batch, sequence, window, proxy
    and vocabulary sizes (its model: hidden 128 x 4 layers); its floor and its own measured ratio."""
    o = ctx.options
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "opus_overhead.py"
    if o.overhead_steps < 1 or not script.exists():
        return {"skipped": "benchmarks/opus_overhead.py not run" if o.overhead_steps < 1 else f"{script} not found"}
    argv = [sys.executable, str(script), "--steps", str(o.overhead_steps), "--repeats", str(o.overhead_repeats),
            "--batch", str(batch), "--seq", str(seq), "--window", str(o.score_window), "--proxy",
            str(o.proxy_batch_size), "--sketch_dim", str(o.sketch_dim), "--vocab_size", str(vocab_size),
            "--variants", "random,opus"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    text = done.stdout
    return {**parse_overhead(text), "command": " ".join(["benchmarks/opus_overhead.py", *argv[2:]]), "output": text}


def _share_figure(ctx: ReplicationContext, results: dict, arms: list[str]) -> str | None:
    from ..figures import figure_png, new_figure

    fig, ax = new_figure((5.5, 3.2))
    drawn = False
    for name in arms:
        runs = results["arms"][name]["runs"]
        series: dict[int, list[float]] = {}
        offered: dict[int, list[float]] = {}
        for run in runs:
            for e in run.get("info", {}).get("domain_shares") or []:
                series.setdefault(e["step"], []).append(sum(e["selected"].get(d, 0.0) for d in LOW_DOMAINS))
                offered.setdefault(e["step"], []).append(sum(e["offered"].get(d, 0.0) for d in LOW_DOMAINS))
        if not series:
            continue
        steps = sorted(series)
        ax.plot(steps, [statistics.fmean(series[s]) for s in steps], label=f"{name}: selected")
        if not drawn:
            ax.plot(steps, [statistics.fmean(offered[s]) for s in steps], "k--", label="offered (candidates)")
        drawn = True
    if not drawn:
        return None
    ax.set_xlabel("step")
    ax.set_ylabel("low-quality share of rows")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return ctx.figure("opus_low_quality_share", figure_png(fig))


def _fmt(x: float, digits: int = 3) -> str:
    return "-" if x is None or x != x else f"{x:.{digits}f}"


def _checks(results: dict, opus_arms: list[str], metrics: list[tuple[str, str]]) -> str:
    """What the page says to trust the verdicts: the pairing held, the selection saw the quality labels, and per
    verdict against the paper what else was checked; per undetermined verdict the seeds (and seconds) that the
    observed difference would need at these settings."""
    from ..compare.stats import seeds_needed

    arms = results["arms"]
    by_seed: dict[int, set] = {}
    tokens = set()
    for arm in arms.values():
        for run in arm["runs"]:
            by_seed.setdefault(run["seed"], set()).add(run["init_checksum"])
            tokens.add(run["tokens_seen"])
    paired = all(len(v) == 1 for v in by_seed.values())
    out = [f"Pairing: every arm of a seed started from the same weights ({'yes' if paired else 'NO'}) and trained "
           f"{'the same' if len(tokens) == 1 else 'DIFFERENT'} update tokens ({', '.join(f'{t:,}' for t in sorted(tokens))})."]  # fmt: skip
    for name in opus_arms:
        shares = [run_low_shares(r) for r in arms[name]["runs"]]
        out.append(f"{name} selected low-quality rows at {statistics.fmean(s for s, _ in shares):.3f} of its picks "
                   f"against {statistics.fmean(o for _, o in shares):.3f} offered.")  # fmt: skip
    base_seconds = arms[results["baseline"]]["cost"]["train_seconds_per_seed"]
    for metric, label in metrics:
        for name in opus_arms:
            comp = arms[name]["vs_baseline"].get(metric)
            if not comp or comp.get("difference") is None:
                continue
            seconds = base_seconds + arms[name]["cost"]["train_seconds_per_seed"]
            if comp["verdict"] == "worse":
                out.append(
                    f"{name}, {label}: worse than random. Checked: the pairing above; the utilities and their "
                    "preconditioning are exact against independent autograd computations and equal the official "
                    "code's where it is right (tests/hf_select/opus/, docs/opus.md); the proxy is retrieved for the "
                    "tasks' train items only; the low-quality share row shows what the selection preferred."
                )
            elif comp["verdict"] == "undetermined" and comp.get("sd"):
                need = seeds_needed(comp["sd"], abs(comp["difference"])) if comp["difference"] else None
                detectable = comp.get("detectable_effect")
                out.append(
                    f"{name}, {label}: undetermined; smallest detectable effect {detectable:.4f} with "
                    f"{comp['n']} seeds; the observed {comp['difference']:+.4f} would need "
                    + (f"{need} seeds (~{need * seconds / 60:.0f} min of training at this machine's pace, this "
                       "arm and the baseline)" if need else "more than 1000 seeds (no effect at this budget)")
                    + "."
                )  # fmt: skip
    return " ".join(out)


# ---------------------------------------------------------------------------------------------- replication
@register_replication("opus", OpusReplicationOptions)
def replicate_opus(ctx: ReplicationContext) -> Section:
    """OPUS (arXiv 2602.05400, section 4) from scratch on a medium + low quality pool (module docstring)."""
    o = ctx.options
    tasks_dir = Path(o.tasks_dir)

    def pool_step():
        from ..loading import load_any_dataset

        medium = load_any_dataset(str(ctx.world_dir / "pretrain"), "train")
        lowq = load_any_dataset(str(ctx.world_dir / "lowq"), "train")
        records = build_quality_pool(medium, lowq, o)
        path = ctx.output_dir / "data" / "pool.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        counts: dict[str, dict[str, int]] = {}
        for r in records:
            c = counts.setdefault(r["domain"], {"documents": 0, "chars": 0})
            c["documents"] += 1
            c["chars"] += len(r["text"])
        return {"path": str(path), "domains": counts}

    pool = ctx.step("pool", pool_step)
    paths = task_files(tasks_dir)
    if not paths:
        raise ValueError(f"opus replication: no task with a train split under {tasks_dir}")
    items = ctx.step("task_items", lambda: {"path": str(write_task_items(
        task_item_records(paths, o.task_items_per_task, o.task_gold_max_chars), ctx.output_dir / "tasks")),
        "tasks": [p.stem for p in paths]})  # fmt: skip

    def proxy_step():
        from ..opus.proxy_pool import benchmark_proxy_texts

        with open(pool["path"]) as f:
            records = [json.loads(line) for line in f]
        docs = retrieve_proxy(records, benchmark_proxy_texts([str(p) for p in paths]), o.proxy_pool_size,
                              o.proxy_exclude_domains)  # fmt: skip
        path = ctx.output_dir / "data" / "proxy.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in docs))
        domains: dict[str, int] = {}
        for r in docs:
            domains[r["domain"]] = domains.get(r["domain"], 0) + 1
        return {"path": str(path), "domains": dict(sorted(domains.items()))}

    proxy = ctx.step("proxy", proxy_step)
    common = dict(buffer_factor=o.buffer_factor, score_window=o.score_window, proxy_batch_size=o.proxy_batch_size,
                  sketch_dim=o.sketch_dim, proxy_dataset_name_or_path=proxy["path"])  # fmt: skip
    arms = [
        "baseline",
        {"type": "opus", "name": "opus_boltzmann", "selection": "boltzmann", "temperature": o.temperature, **common},
        {"type": "opus", "name": "opus_topk", "selection": "topk", **common},
    ]
    heldout_exclude = sorted(set(ctx.study.get("heldout_exclude_domains", [])) | set(LOW_DOMAINS))
    config = ctx.study_config(
        "compare", dataset_name_or_path=pool["path"], domain_column="domain", arms=arms, baseline="baseline",
        tasks=[items["path"]], heldout_exclude_domains=heldout_exclude,
    )  # fmt: skip
    def floor_step():
        from ..loading import load_tokenizer

        vocab = len(load_tokenizer(config.tokenizer_name_or_path)) if config.tokenizer_name_or_path else 0
        return overhead_floor(ctx, config.batch_size, config.seq_length, vocab)

    overhead = ctx.step("overhead_floor", floor_step)
    results = ctx.run_study(config)
    opus_arms = [a for a in results["arms"] if a != results["baseline"]]

    task_metric = "task/proxy_task_items/bits_per_byte"
    rows = ctx.compare_rows(results, metric="heldout_bpb", measure="held-out bits per byte (medium quality)",
                            paper="OPUS < random (better)")  # fmt: skip
    rows += ctx.compare_rows(results, metric=task_metric, measure="proxy-task loss (gold-answer bpb, test items)",
                             paper="OPUS better on the benchmarks (+2.2% avg accuracy, FineWeb)")  # fmt: skip
    for name in opus_arms:
        shares = [run_low_shares(r) for r in results["arms"][name]["runs"]]
        sel = statistics.fmean(s for s, _ in shares)
        off = statistics.fmean(o_ for _, o_ in shares)
        rows.append(Row(measure="low-quality share of the selected rows (offered share)", arm=name,
                        paper="below the offered share", ours=f"{_fmt(sel)} ({_fmt(off)})",
                        interval=f"per seed {', '.join(_fmt(s) for s, _ in shares)}",
                        verdict="lower" if sel < off else "not lower"))  # fmt: skip
    base_train = results["arms"][results["baseline"]]["cost"]["train_seconds_per_seed"]
    floor = overhead.get("floor")
    for name in opus_arms:
        ratio = results["arms"][name]["cost"]["train_seconds_per_seed"] / base_train
        rows.append(Row(measure="training wall time / baseline's", arm=name, paper="1.047 (~4.7% overhead)",
                        ours=f"{ratio:.2f}x", interval="",
                        verdict=f"floor {floor:.2f}x at these sizes" if floor else "floor not measured"))  # fmt: skip

    # ---- body: pool, proxy, share over time, per-domain held-out, overhead
    lines = ["Pool (documents, characters): " + ", ".join(
        f"{d} {c['documents']} / {c['chars']:,}" for d, c in pool["domains"].items()) + "."]  # fmt: skip
    info = results["arms"][opus_arms[0]]["runs"][0]["info"] if opus_arms else {}
    lines.append(
        f"Proxy: {sum(proxy['domains'].values())} pool documents retrieved (lexical similarity) for the train items of "
        f"{len(items['tasks'])} tasks, not from {', '.join(o.proxy_exclude_domains) or 'no domain'}; by domain: "
        + ", ".join(f"{d} {n}" for d, n in proxy["domains"].items()) + "."
    )  # fmt: skip
    if info.get("candidate_row_domains"):
        lines.append("Candidate rows by domain: " + ", ".join(f"{d} {n}" for d, n in info["candidate_row_domains"].items()) + ".")
    lines += ["", "Low-quality share (lowq + degraded) of the selected rows per quarter of the run, mean over seeds "
              "(offered: among the candidates of the same steps):", "",
              "| arm | " + " | ".join(f"Q{i + 1} selected (offered)" for i in range(4)) + " | mean ESS of the first draw |",
              "|---|" + "---|" * 5]  # fmt: skip
    for name in opus_arms:
        quarters = low_share_by_quarter(results["arms"][name]["runs"])
        ess = [e["ess"] for r in results["arms"][name]["runs"] for e in r["info"].get("domain_shares", []) if e.get("ess")]
        lines.append(f"| {name} | " + " | ".join(f"{_fmt(q['selected'])} ({_fmt(q['offered'])})" for q in quarters)
                     + f" | {_fmt(statistics.fmean(ess), 1) if ess else '-'} |")  # fmt: skip
    per_domain = {name: domain_shares(results["arms"][name]["runs"]) for name in opus_arms}
    domains = sorted({d for shares in per_domain.values() for d in shares})
    if domains:
        lines += ["", "Share of each domain among the selected rows (offered), whole run, mean over seeds:", "",
                  "| arm | " + " | ".join(domains) + " |", "|---|" + "---|" * len(domains)]  # fmt: skip
        for name, shares in per_domain.items():
            lines.append(f"| {name} | " + " | ".join(
                f"{_fmt(shares[d][0])} ({_fmt(shares[d][1])})" if d in shares else "-" for d in domains) + " |")  # fmt: skip
    figure = _share_figure(ctx, results, opus_arms)
    if figure:
        lines += ["", f"![low-quality share of the selected rows]({figure})"]
    metric_names = sorted(m for m in results["arms"]["baseline"]["metrics"] if m.startswith("heldout_bpb/"))
    lines += ["", "Per arm, mean ± sd over seeds:", "",
              "| arm | " + " | ".join(metric_names + [task_metric]) + " |", "|---|" + "---|" * (len(metric_names) + 1)]  # fmt: skip
    for name, arm in results["arms"].items():
        cells = [f"{arm['metrics'][m]['mean']:.4f} ± {arm['metrics'][m]['sd']:.4f}" if m in arm["metrics"] else "-"
                 for m in metric_names + [task_metric]]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    study = results["study"]
    model = study["model_config"]
    setting = (
        f"From scratch: Llama (hidden {model.get('hidden_size')}, {model.get('num_hidden_layers')} layers) on the "
        f"world's 8k BPE; pool of medium-quality world text and low-quality text (the world's low-quality pool + "
        f"word-shuffled documents); {study['max_steps']} steps x {study['batch_size']} rows x {study['seq_length']} "
        f"tokens = {results['update_tokens_per_run']:,} update tokens per arm and seed, seeds {study['seeds']}. OPUS "
        f"scores {int(o.buffer_factor * study['batch_size'])} candidates + {o.proxy_batch_size} proxy rows on "
        f"{o.score_window}-token windows per step (AdamW preconditioner, sketch {o.sketch_dim}); baseline = the plain "
        f"Trainer on the same pool (random batches, the paper's random arm)."
    )
    checks = _checks(results, opus_arms, [("heldout_bpb", "held-out bpb"), (task_metric, "proxy-task loss")])
    cost_lines = [
        f"Baseline training {base_train:.0f} s per seed; "
        + "; ".join(f"{n} {results['arms'][n]['cost']['train_seconds_per_seed']:.0f} s per seed "
                    f"({results['arms'][n]['cost']['train_seconds_per_seed'] / base_train:.2f}x, scoring tokens "
                    f"{results['arms'][n]['cost']['scoring_tokens_per_seed']:,.0f} per seed)" for n in opus_arms) + "."
    ]  # fmt: skip
    if floor:
        cost_lines.append(
            f"`{overhead['command']}` (one run; the same batch, sequence, window, proxy and vocabulary "
            f"sizes; hidden 128 x 4 layers; CPU seconds): floor {floor:.3f}x, its OPUS step "
            f"{overhead.get('opus_x_random', float('nan')):.3f}x its random step."
        )
    elif overhead.get("skipped"):
        cost_lines.append(f"Overhead floor: {overhead['skipped']}.")
    return Section(setting=setting, rows=rows, body="\n".join(lines), checks=checks, cost=" ".join(cost_lines))
