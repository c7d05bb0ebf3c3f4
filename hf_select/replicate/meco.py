"""MeCo replication (Gao et al. 2025, arXiv 2501.01956, sections 3-5), scaled down: Llama students trained from
scratch on the demo world's pretraining text, whose ``url`` column names each document's real source
(foldoc.org, wordnetweb.princeton.edu, docs.sympy.org, github.com, ...: 13 hosts, one per source).

Three arms at equal update tokens, paired over seeds (same initial weights per seed):

* ``standard`` -- the plain Trainer on plain documents (the paper's baseline);
* ``meco`` -- the first ``1 - cooldown_fraction`` of the steps on ``"URL: <host>\\n\\n" + document`` (labels
  -100 on the prefix), the rest on plain documents of a disjoint pool, in the same run (the paper's 90/10);
* ``meco_no_cooldown`` -- URL conditioning to the end (the paper's metadata-only ablation).

Every model is measured on the same held-out documents with four contexts: no URL (the headline
``heldout_bpb``), the document's own host, another source's host seen in training (``other_source_hosts``: the
next host in sorted order) and a host never seen (``www.factquizmaster.com``, the paper's OBQA URL). Own below
other-source is the check that conditioning was learned; on the standard model, which never saw a URL, the same
gap is the control.

What is scaled down: 1.6B parameters and 160B DCLM tokens become a 2-layer, 128-wide Llama and a few hundred
steps of 8 x 256 tokens; downstream accuracy becomes held-out bits per byte. Hosts of short documents take a
larger share of each row than in the paper (reported as the prefix token share): at equal update tokens MeCo
trains on that many fewer document tokens.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from ..compare.arms import ArmSetup, MeCoArmConfig, baseline, meco
from ..compare.config import ArmConfig, register_arm
from ..compare.stats import paired_comparison, seeds_needed
from . import ReplicationContext, Row, Section, register_replication

CONTEXTS = ("none", "own", "other_source", "unseen")
METRICS = {
    "none": "heldout_bpb",
    "own": "heldout_bpb_own_url",
    "other_source": "heldout_bpb_other_source_url",
    "unseen": "heldout_bpb_unseen_url",
}
LABELS = {"none": "no URL", "own": "own URL", "other_source": "another source's URL", "unseen": "unseen URL"}


@dataclass
class MeCoReplicationOptions:
    """Knobs of the MeCo replication (the study's budget, model and seeds are in the YAML's ``study``)."""

    cooldown_fraction: float = field(default=0.1, metadata={"help": "Last share of the steps without URLs in the 'meco' arm (paper: 0.1)."})
    cooldown_pool_fraction: float = field(
        default=0.1,
        metadata={"help": "Share of the pool kept apart for the cooldown; the no-cooldown arm conditions on the "
                  "same remaining documents."},
    )  # fmt: skip
    metadata_column: str = field(default="url", metadata={"help": "Pool column holding each document's URL."})
    metadata_mode: str = field(default="host", metadata={"help": "How a URL becomes metadata (host: the official rule)."})
    unseen_url: str = field(default="www.factquizmaster.com", metadata={"help": "A host no document has (paper Table 11, OBQA)."})
    adam_beta2: float = field(
        default=0.95,
        metadata={"help": "AdamW beta2 of every arm (the paper's 0.95). MeCoConfig defaults to it while a plain "
                  "TrainingArguments has 0.999, so it is set on all arms: they must differ in the data only."},
    )  # fmt: skip
    min_lr_rate: float | None = field(
        default=0.1,
        metadata={"help": "Every arm's learning rate decays by cosine to this share of the peak (the paper's 0.1; "
                  "the cooldown then still learns); empty: the study's lr_scheduler_type."},
    )  # fmt: skip
    pilot: str = field(
        default="", metadata={"help": "The pilot run that sized the design (shown in the section as written)."}
    )


# ---------------------------------------------------------------------------------------------- metrics
def other_source_hosts(hosts: list[str], seen: list[str]) -> list[str]:
    """For each host, another host seen in training: the next one in sorted order (cyclic), never itself.

    A deterministic derangement: every held-out document gets a real, trained-on URL of another source.
    """
    ordered = sorted(set(seen))
    if len(ordered) < 2:
        raise ValueError(f"another source's URL needs at least 2 hosts in training, got {ordered}")
    out = []
    for host in hosts:
        if host in ordered:
            out.append(ordered[(ordered.index(host) + 1) % len(ordered)])
        else:
            out.append(next(h for h in ordered if h != host))
    return out


def url_metrics(study, model, metadata_column: str, mode: str, unseen_url: str) -> dict[str, float]:
    """Held-out bits per byte of the same tokens given the document's own host, another source's host and an
    unseen host (each the unweighted mean over domains, like ``heldout_bpb``)."""
    import torch

    from ..meco.conditional import prefixed_text_losses, url_prefix
    from ..meco.metadata import format_metadata, metadata_value
    from ..token_loss import bits_per_byte

    seen = study.cached(
        f"url_hosts/{metadata_column}/{mode}",
        lambda: sorted({metadata_value(u, mode) for u in study.pool[metadata_column]}),
    )
    heldout = study.heldout
    own = [metadata_value(u, mode) for u in heldout[metadata_column]]
    prefixes = {
        "own": [format_metadata(h) for h in own],
        "other_source": [format_metadata(h) for h in other_source_hosts(own, seen)],
        "unseen": [url_prefix(unseen_url)] * len(own),
    }
    domains, all_texts = heldout["domain"], heldout["text"]
    per_domain: dict[str, list[float]] = {key: [] for key in prefixes}
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for domain in sorted(set(domains)):
            rows = [i for i, d in enumerate(domains) if d == domain]
            texts = [all_texts[i] for i in rows]
            for key, prefix in prefixes.items():
                losses = prefixed_text_losses(
                    model, study.tokenizer, texts, [prefix[i] for i in rows], study.config.eval_batch_size
                )
                per_domain[key].append(bits_per_byte(sum(losses["nats"]), sum(losses["num_bytes"])))
    model.train(was_training)
    return {METRICS[key]: sum(v) / len(v) for key, v in per_domain.items()}


def prefix_token_share(rows) -> float:
    """Share of the tokens of packed conditioned rows that are metadata prefix (label -100, not BOS)."""
    masked = documents = total = 0
    for labels, positions in zip(rows["labels"], rows["position_ids"]):
        total += len(labels)
        masked += sum(1 for x in labels if x == -100)
        documents += sum(1 for p in positions if p == 0)
    return (masked - documents) / total if total else 0.0


# ---------------------------------------------------------------------------------------------- arms
def optimiser_args(config) -> dict[str, Any]:
    """``TrainingArguments`` fields every arm of the replication shares: AdamW beta2 and, with ``min_lr_rate``,
    the paper's cosine decay to that share of the peak (a cosine to 0 would leave the cooldown almost no
    learning rate)."""
    args: dict[str, Any] = {"adam_beta2": config.adam_beta2}
    if config.min_lr_rate is not None:
        args.update(lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": config.min_lr_rate})
    return args


@dataclass
class UrlProbeFields:
    """What both probe arms add to their arm: the unseen host measured, and the optimiser every arm shares."""

    unseen_url: str = field(default="www.factquizmaster.com", metadata={"help": "A host no document has."})
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2 (MeCoConfig's default, the paper's 0.95)."})
    min_lr_rate: float | None = field(default=0.1, metadata={"help": "Cosine decay to this share of the peak (paper: 0.1); empty: the study's schedule."})


@dataclass
class UrlProbeBaselineConfig(UrlProbeFields, ArmConfig):
    metadata_column: str = field(default="url", metadata={"help": "Held-out column holding each document's URL."})
    metadata_mode: str = field(default="host", metadata={"help": "How a URL becomes metadata."})


@register_arm("baseline_url_probe", UrlProbeBaselineConfig,
              help="The baseline (plain Trainer on the whole pool), also measured with URL prefixes (a control: "
              "it never saw one).")  # fmt: skip
def baseline_url_probe(study, config: UrlProbeBaselineConfig, seed: int):
    setup = baseline(study, config, seed)
    setup.args = {**setup.args, **optimiser_args(config)}
    setup.extra_metrics = lambda study, model: url_metrics(
        study, model, config.metadata_column, config.metadata_mode, config.unseen_url
    )
    return setup


@dataclass
class MeCoUrlProbeConfig(UrlProbeFields, MeCoArmConfig):
    pass


@register_arm("meco_url_probe", MeCoUrlProbeConfig,
              help="The meco arm measured with the own, another source's and an unseen URL; its pools are "
              "tokenised and packed once per study (the same rows MeCoTrainer would build).")  # fmt: skip
def meco_url_probe(study, config: MeCoUrlProbeConfig, seed: int) -> ArmSetup:
    from ..meco.metadata import add_metadata_tokens
    from ..packing import pack_dataset

    setup = meco(study, config, seed)
    length = study.config.seq_length

    def build():
        conditioned = add_metadata_tokens(
            setup.train_dataset, study.tokenizer, metadata_column=config.metadata_column, mode=config.metadata_mode
        )
        cooldown = add_metadata_tokens(setup.trainer_kwargs["cooldown_dataset"], study.tokenizer, metadata_column=None)
        conditioned = pack_dataset(conditioned, length, overflow="discard", keep_in_memory=True)
        cooldown = pack_dataset(cooldown, length, overflow="discard", keep_in_memory=True)
        return conditioned, cooldown, prefix_token_share(conditioned)

    key = f"meco_rows/{config.cooldown_pool_fraction or config.cooldown_fraction}/{config.metadata_column}/{config.metadata_mode}"
    conditioned, cooldown, share = study.cached(key, build, arm=config.name)
    setup.train_dataset = conditioned
    setup.args = {**setup.args, **optimiser_args(config)}
    setup.trainer_kwargs = {**setup.trainer_kwargs, "cooldown_dataset": cooldown}
    setup.info = {**setup.info, "conditioned_rows": len(conditioned), "cooldown_rows": len(cooldown),
                  "prefix_token_share": share}  # fmt: skip
    setup.extra_metrics = lambda study, model: url_metrics(
        study, model, config.metadata_column, config.metadata_mode, config.unseen_url
    )
    return setup


def arms(options: MeCoReplicationOptions) -> list[dict[str, Any]]:
    """The three arms of the study: standard (baseline), MeCo 90/10, MeCo without cooldown."""
    common = {"metadata_column": options.metadata_column, "metadata_mode": options.metadata_mode,
              "unseen_url": options.unseen_url, "adam_beta2": options.adam_beta2, "min_lr_rate": options.min_lr_rate}  # fmt: skip
    return [
        {"type": "baseline_url_probe", "name": "standard", **common},
        {"type": "meco_url_probe", "name": "meco", "cooldown_fraction": options.cooldown_fraction,
         "cooldown_pool_fraction": options.cooldown_pool_fraction, **common},
        {"type": "meco_url_probe", "name": "meco_no_cooldown", "cooldown_fraction": 0.0,
         "cooldown_pool_fraction": options.cooldown_pool_fraction, **common},
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------- the section
def per_seed(results: dict[str, Any], arm: str, metric: str) -> dict[int, float]:
    """``{seed: value}`` of one metric of one arm."""
    return {r["seed"]: r["metrics"][metric] for r in results["arms"][arm]["runs"] if metric in r["metrics"]}


def paired(results: dict[str, Any], arm_a: str, metric_a: str, arm_b: str, metric_b: str,
           alpha: float = 0.05, power: float = 0.8) -> dict[str, Any]:  # fmt: skip
    """Paired comparison (seed by seed) of ``arm_a``'s ``metric_a`` minus ``arm_b``'s ``metric_b`` (lower is better)."""
    a, b = per_seed(results, arm_a, metric_a), per_seed(results, arm_b, metric_b)
    seeds = sorted(set(a) & set(b))
    return paired_comparison([a[s] for s in seeds], [b[s] for s in seeds], True, alpha, power)


def _f(x: float | None, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:+.4f}" if sign else f"{x:.4f}"


def stat_row(measure: str, arm: str, paper: str, comp: dict[str, Any], a: float, b: float) -> Row:
    ci = comp["ci"]
    return Row(
        measure=measure, arm=arm, paper=paper, ours=f"{_f(comp['difference'], True)} ({_f(a)} vs {_f(b)})",
        interval=f"[{_f(ci[0], True)}, {_f(ci[1], True)}]" if ci else "-", verdict=comp["verdict"],
        detectable=_f(comp["detectable_effect"]) if comp["verdict"] == "undetermined" else "",
    )  # fmt: skip


def budget_to_decide(comp: dict[str, Any], seconds_per_seed: float) -> str:
    """Seeds (and wall seconds at this run's pace) whose detectable effect reaches the observed difference."""
    if comp["sd"] is None or not comp["difference"]:
        return "-"
    n = seeds_needed(comp["sd"], abs(comp["difference"]), max_seeds=10_000)
    if n is None:
        return "over 10000 seeds"
    return f"{n} seeds (~{n * seconds_per_seed / 60:.0f} min at this run's pace)"


@register_replication("meco", MeCoReplicationOptions)
def replicate_meco(ctx: ReplicationContext) -> Section:
    """MeCo (arXiv 2501.01956) sections 3-5, scaled down: see the module docstring."""
    o = ctx.options
    config = ctx.study_config("compare", arms=arms(o), baseline="standard")
    results = ctx.run_study(config)
    arms_ = list(results["arms"])
    mean = {(arm, key): results["arms"][arm]["metrics"].get(METRICS[key], {}).get("mean") for arm in arms_ for key in CONTEXTS}
    paper = ctx.paper
    rows: list[Row] = []
    gaps = {}
    for arm in arms_:
        comp = paired(results, arm, METRICS["own"], arm, METRICS["other_source"], config.alpha, config.power)
        gaps[arm] = comp
        what = "control: never saw a URL" if arm == "standard" else "conditioning learned when < 0"
        rows.append(stat_row(f"bpb own URL - another source's URL ({what})", arm,
                             paper.get("conditioning", "URLs steer the model (sec. 5)") if arm != "standard" else "~0",
                             comp, mean[(arm, "own")], mean[(arm, "other_source")]))  # fmt: skip
    for row in ctx.compare_rows(results, metric="heldout_bpb", paper=paper.get("figure", ""),
                                measure="held-out bpb, no URL, vs standard at equal tokens"):  # fmt: skip
        rows.append(row)
    cooldown = paired(results, "meco", "heldout_bpb", "meco_no_cooldown", "heldout_bpb", config.alpha, config.power)
    rows.append(stat_row("held-out bpb, no URL: 90/10 - no cooldown", "meco vs meco_no_cooldown",
                         paper.get("cooldown", ""), cooldown, mean[("meco", "none")],
                         mean[("meco_no_cooldown", "none")]))  # fmt: skip
    conditional = paired(results, "meco", METRICS["own"], "standard", "heldout_bpb", config.alpha, config.power)
    rows.append(stat_row("conditional inference: meco with own URL - standard without", "meco",
                         paper.get("conditional_inference", ""), conditional, mean[("meco", "own")],
                         mean[("standard", "none")]))  # fmt: skip

    seeds = config.seeds
    table = ["| arm | no URL | own URL | another source's URL | unseen URL | prefix share of row tokens |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for arm in arms_:
        stats = results["arms"][arm]["metrics"]
        cells = [f"{_f(stats[METRICS[k]]['mean'])} ± {_f(stats[METRICS[k]]['sd'])}" if METRICS[k] in stats else "-"
                 for k in CONTEXTS]  # fmt: skip
        shares = [r["info"].get("prefix_token_share") for r in results["arms"][arm]["runs"]]
        share = f"{shares[0]:.3f}" if shares and shares[0] is not None else "0 (no prefix)"
        table.append(f"| {arm} | " + " | ".join(cells) + f" | {share} |")
    update_tokens = {arm: sorted({r["update_tokens"] for r in results["arms"][arm]["runs"]}) for arm in arms_}
    inits = {}
    for arm in arms_:
        for r in results["arms"][arm]["runs"]:
            inits.setdefault(r["seed"], set()).add(r["init_checksum"])
    same_init = all(len(v) == 1 for v in inits.values())
    equal_tokens = len({tuple(v) for v in update_tokens.values()}) == 1
    c = results["study"]
    setting = (
        f"From scratch: Llama {c['model_config'].get('num_hidden_layers')} layers x "
        f"{c['model_config'].get('hidden_size')} wide, the world's 8k BPE tokenizer; pool = the world's pretraining "
        f"text ({c.get('documents_per_domain')} documents per domain, clipped to {c.get('max_chars')} characters), "
        f"each document's `url` naming its real source (one host per source). {c['max_steps']} steps x {c['batch_size']} rows x "
        f"{c['seq_length']} tokens = {results['update_tokens_per_run']} update tokens per arm and seed, seeds "
        f"{seeds}, AdamW lr {c['learning_rate']} (betas 0.9/{o.adam_beta2}, weight decay {c['weight_decay']}), "
        + (f"cosine to {o.min_lr_rate:g} of the peak" if o.min_lr_rate is not None else c["lr_scheduler_type"])
        + f", {c['warmup_steps']:g} warm-up. Arms: standard (baseline), meco "
        f"({1 - o.cooldown_fraction:.0%} URL-conditioned then {o.cooldown_fraction:.0%} cooldown on a disjoint "
        f"{o.cooldown_pool_fraction:.0%} of the pool), meco_no_cooldown (URL to the end). Measured on "
        f"up to {c['heldout_documents_per_domain']} held-out documents per domain (the world's held-out split) with no URL, "
        "the own host, another source's host (next host in sorted order) and an unseen host "
        f"({o.unseen_url})."
    )
    body = ["Held-out bits per byte (mean ± sd over seeds) by the context given before the same tokens:", "",
            *table, ""]  # fmt: skip
    domains = sorted({m.split("/", 1)[1] for a in arms_ for m in results["arms"][a]["metrics"] if m.startswith("heldout_bpb/")})
    body += ["No-URL held-out bits per byte per domain (mean ± sd over seeds; the headline is their unweighted mean):", "",
             "| arm | " + " | ".join(domains) + " |", "|---|" + "---|" * len(domains)]  # fmt: skip
    for arm in arms_:
        stats = results["arms"][arm]["metrics"]
        body.append(f"| {arm} | " + " | ".join(
            f"{_f(stats[f'heldout_bpb/{d}']['mean'])} ± {_f(stats[f'heldout_bpb/{d}']['sd'])}" for d in domains) + " |")  # fmt: skip
    body.append("")
    if o.pilot:
        body += [f"**Pilot (sized the design before the run).** {o.pilot}", ""]
    checks = [
        f"Every arm trained the same update tokens ({'yes' if equal_tokens else 'NO'}: {update_tokens}) from the "
        f"same initial weights per seed ({'yes' if same_init else 'NO'}).",
        "Conditioning (own - another source's URL): "
        + "; ".join(f"{arm} {_f(g['difference'], True)} ({g['verdict']})" for arm, g in gaps.items())
        + ". The standard model never saw a URL, so its gap is the control for the prefix's mere tokens.",
    ]
    train_seconds = statistics.fmean(results["arms"][a]["cost"]["train_seconds_per_seed"] for a in arms_)
    decided = {"90/10 vs no cooldown": cooldown, "meco own URL vs standard": conditional}
    for arm in ("meco", "meco_no_cooldown"):
        decided[f"{arm} vs standard"] = results["arms"][arm]["vs_baseline"]["heldout_bpb"]
    learned = all(gaps[a]["verdict"] == "better" for a in ("meco", "meco_no_cooldown"))
    for name, comp in decided.items():
        if comp["verdict"] == "worse" and name != "90/10 vs no cooldown":
            checks.append(
                f"{name}: against the paper. Checked: equal update tokens and initial weights (above); the model "
                f"{'does' if learned else 'does NOT'} read the URL (conditioning rows); the URL prefix takes the "
                "share of every conditioned row printed in the table, so at equal update tokens MeCo trains on that "
                "many fewer document tokens -- negligible on the paper's 8k-token rows of web pages, not here."
            )
        elif comp["verdict"] == "worse":
            checks.append(
                f"{name}: against the paper (the cooldown should help without metadata). Checked: both arms "
                "condition on the same documents from the same weights; the cooldown steps train on plain "
                "documents of a disjoint pool."
            )
        elif comp["verdict"] == "undetermined":
            checks.append(
                f"{name}: undetermined; smallest detectable effect {_f(comp['detectable_effect'])} bpb with "
                f"{comp['n']} seeds; the observed {_f(comp['difference'], True)} would need "
                f"{budget_to_decide(comp, 3 * train_seconds)}."
            )
    cost_lines = []
    for arm in arms_:
        cost = results["arms"][arm]["cost"]
        cost_lines.append(f"{arm} {cost['train_seconds_per_seed']:.0f} s training per seed "
                          f"({cost['ratio_to_baseline_training']:.2f}x standard)")  # fmt: skip
    return Section(setting=setting, rows=rows, body="\n".join(body), checks=" ".join(checks),
                   cost="; ".join(cost_lines) + ".")  # fmt: skip
