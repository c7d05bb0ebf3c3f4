"""The built-in arms of ``hf-select compare``: one registered function per mechanism.

An arm function ``build(study, config, seed) -> ArmSetup`` says which Trainer (class and arguments class) trains
on which data; the runner adds what every arm shares (initial weights of the seed, budget, optimiser, seeds,
checkpoints, token counting, measurement). Work an arm does once for all seeds (scoring, reference losses,
selection) goes through ``study.cached(key, fn, arm=name, tokens=...)``, which times it as the arm's selection
cost.

Same data order where the mechanism allows: arms that train on a fixed set of rows (baseline, random,
attention_influence, slm) use the Trainer's random sampler seeded by the seed, so two arms with the same rows
see them in the same order. MeCo's schedule (conditioning then cooldown) and OPUS's per-step selection fix their
own order.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .config import ArmConfig, register_arm


@dataclass
class ArmSetup:
    """What one (arm, seed) run trains: ``trainer_class(model, args_class(**shared, **args), train_dataset,
    data_collator, processing_class, callbacks, **trainer_kwargs)``. ``info`` is recorded with the result."""

    train_dataset: Any
    trainer_class: type | None = None  # default transformers.Trainer
    args_class: type | None = None  # default transformers.TrainingArguments
    args: dict[str, Any] = field(default_factory=dict)
    data_collator: Any = "packed"  # "packed": the study's PackedCollator; None: the trainer's own
    trainer_kwargs: dict[str, Any] = field(default_factory=dict)
    callbacks: list = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    scoring_tokens_per_step: int = 0  # forward-only tokens the mechanism spends per optimizer step
    # more metrics of the trained model, ``extra_metrics(study, model) -> {name: value}`` (added to the held-out ones)
    extra_metrics: Any = None


def _tokens(rows) -> int:
    return sum(len(ids) for ids in rows["input_ids"])


# ---------------------------------------------------------------------------------------------- baseline
@register_arm("baseline", ArmConfig, help="Plain Trainer on the packed rows of the whole pool.")
def baseline(study, config: ArmConfig, seed: int):
    return ArmSetup(train_dataset=study.pool_rows, info={"rows": len(study.pool_rows)})


# ---------------------------------------------------------------------------------------------- selection arms
@dataclass
class SubsetConfig(ArmConfig):
    fraction: float = field(default=0.2, metadata={"help": "Share of the documents selected (per domain when by_domain)."})
    by_domain: bool = field(default=True, metadata={"help": "Select the fraction within each domain."})
    mode: str = field(
        default="mix",
        metadata={"help": "'mix': the whole pool plus `repeats` extra copies of the selected documents (the "
                  "AttentionInfluence paper's up-weighting); 'filter': the selected documents only."},
    )
    repeats: int = field(default=1, metadata={"help": "Extra copies of the selected documents in 'mix' mode."})

    def __post_init__(self):
        if not 0 < self.fraction <= 1:
            raise ValueError(f"arm {self.name}: fraction must be in (0, 1], got {self.fraction}")
        if self.mode not in ("mix", "filter"):
            raise ValueError(f"arm {self.name}: mode must be 'mix' or 'filter', got {self.mode!r}")


def _subset_rows(study, config: SubsetConfig, scored, column: str, pool=None):
    """Packed rows of the selection (top ``fraction`` by ``column``) as a filter or an up-weighted mix of
    ``pool`` (default: the study's pool; ``scored`` is ``pool`` plus the score column)."""
    from ..selection import select_top_fraction, upweighted_mix

    pool = study.pool if pool is None else pool
    selected = select_top_fraction(scored, column, config.fraction, "domain" if config.by_domain else None)
    selected = selected.select_columns(pool.column_names)
    if config.mode == "filter":
        documents = selected
    else:
        documents = upweighted_mix(pool, selected, config.repeats, seed=0, flag_column=None)
    from ..fingerprint import fingerprint

    rows = study.pack(documents)
    return rows, {"selected_documents": len(selected), "documents": len(documents), "rows": len(rows),
                  "selected_checksum": fingerprint(sorted(selected["text"])),
                  "selected_domains": {d: selected["domain"].count(d) for d in sorted(set(selected["domain"]))}}


@dataclass
class RandomConfig(SubsetConfig):
    selection_seed: int = field(default=0, metadata={"help": "Seed of the random selection (fixed across study seeds)."})
    eligible_column: str | None = field(
        default=None,
        metadata={"help": "Draw only among documents with a number in this column (e.g. ai_score: those a scoring "
                  "arm could select), so that the subset matches that arm's size per domain."},
    )


@register_arm("random", RandomConfig, help="A random subset (filter) or random up-weighted mix of the same size "
              "as a selecting arm with the same fraction, by_domain and mode.")
def random_subset(study, config: RandomConfig, seed: int):
    import numpy as np

    def build():
        rng = np.random.default_rng(config.selection_seed)
        scores = rng.random(len(study.pool))
        if config.eligible_column:
            eligible = np.array([v is not None and v == v for v in study.pool[config.eligible_column]])
            scores[~eligible] = np.nan
        scored = study.pool.add_column("_random_score", scores.tolist())
        return _subset_rows(study, config, scored, "_random_score")

    rows, info = study.cached(f"arm/{config.name}", build, arm=config.name)
    return ArmSetup(train_dataset=rows, info=info)


@dataclass
class AttentionInfluenceArmConfig(SubsetConfig):
    scores_column: str | None = field(
        default="ai_score", metadata={"help": "Pool column holding precomputed AttentionInfluence scores."}
    )
    selector_name_or_path: str | None = field(
        default=None, metadata={"help": "Score the pool with this selector model instead (needs heads_file)."}
    )
    heads_file: str | None = field(default=None, metadata={"help": "Retrieval heads JSON of hf-select detect-heads."})
    max_length: int = field(default=2048, metadata={"help": "Tokens per scored document (selector)."})
    scoring_batch_size: int = field(default=8, metadata={"help": "Documents per scoring forward (selector)."})


@register_arm("attention_influence", AttentionInfluenceArmConfig,
              help="AttentionInfluence (arXiv 2505.07293): top fraction per domain by ai_score, up-weighted mix "
              "(paper) or filter; scores from a pool column or from a selector model + heads file.")
def attention_influence(study, config: AttentionInfluenceArmConfig, seed: int):
    def build():
        if config.selector_name_or_path:
            scored, tokens = _score_with_selector(study, config)
            study.add_selection_tokens(config.name, tokens)
            column = "ai_score"
        else:
            column = config.scores_column
            if column not in study.pool.column_names:
                raise ValueError(
                    f"arm {config.name}: the pool has no {column!r} column; give scores_column or "
                    "selector_name_or_path + heads_file"
                )
            scored = study.pool
        return _subset_rows(study, config, scored, column)

    rows, info = study.cached(f"arm/{config.name}", build, arm=config.name)
    return ArmSetup(train_dataset=rows, info=info)


def _score_with_selector(study, config: AttentionInfluenceArmConfig):
    import torch

    from ..attention_influence.retrieval_heads import RetrievalHeads
    from ..attention_influence.scorer import AttentionInfluence
    from ..loading import load_causal_lm, load_tokenizer

    if not config.heads_file:
        raise ValueError(f"arm {config.name}: selector_name_or_path needs heads_file")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_causal_lm(config.selector_name_or_path, device=device)
    tokenizer = load_tokenizer(config.selector_name_or_path)
    heads = RetrievalHeads.load(config.heads_file).selected
    scorer = AttentionInfluence(model, tokenizer, heads, config.max_length, config.scoring_batch_size, text_column="text")
    scored = study.pool.map(scorer, batched=True, batch_size=64, keep_in_memory=True, desc="AttentionInfluence")
    # two passes (base and masked) over every document, the lower layers once
    tokens = 2 * sum(scored["ai_num_tokens"])
    return scored, tokens


# ---------------------------------------------------------------------------------------------- Data Whisperer
@dataclass
class _DataWhispererArmFields(SubsetConfig):
    mode: str = field(
        default="filter",
        metadata={"help": "'filter': train on the selected examples only (the paper's fine-tuning on the top "
                  "fraction); 'mix': the whole pool plus `repeats` extra copies of them."},
    )
    scores_column: str | None = field(
        default="dw_score",
        metadata={"help": "Pool column holding precomputed Data Whisperer scores (hf-select score data-whisperer); "
                  "used when no selector_name_or_path is given."},
    )
    selector_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Score the pool with this selector model (an instruct model; it may differ from the "
                  "student) and the Data Whisperer fields below."},
    )
    render: bool = field(
        default=True,
        metadata={"help": "Train on each example rendered as 'Question: {question}\\nAnswer: {answer}' (Data "
                  "Whisperer's fine-tuning format; the packing adds BOS/EOS); false: on the pool's text column."},
    )

    def whisperer_config(self):
        """The :class:`~hf_select.data_whisperer.config.DataWhispererConfig` of this arm's scoring fields."""
        from ..data_whisperer.config import DataWhispererConfig

        names = [f.name for f in dataclasses.fields(DataWhispererConfig)]
        return DataWhispererConfig(**{n: getattr(self, n) for n in names})

    def __post_init__(self):
        super().__post_init__()
        self.whisperer_config()  # the scorer's own checks, at parse time


def _data_whisperer_config_class():
    # the scorer's fields come from DataWhispererConfig, its single source (help, defaults, checks)
    from ..data_whisperer.config import DataWhispererConfig

    own = {f.name for f in dataclasses.fields(_DataWhispererArmFields)}
    extra = [(f.name, f.type, field(default=f.default, metadata=f.metadata))
             for f in dataclasses.fields(DataWhispererConfig) if f.name not in own]  # fmt: skip
    cls = dataclasses.make_dataclass("DataWhispererArmConfig", extra, bases=(_DataWhispererArmFields,))
    cls.__module__ = __name__
    cls.__doc__ = "Fields of the ``data_whisperer`` arm: the selection, the scores' source and DataWhispererConfig."
    return cls


DataWhispererArmConfig = _data_whisperer_config_class()


def render_qa(question: str, answer: str) -> str:
    """One question/answer example as training text: Data Whisperer's fine-tuning prompt and target
    (:func:`hf_select.data_whisperer.finetune.prompt_text` + ``" " + answer``), trained on every token."""
    from ..data_whisperer.finetune import prompt_text

    return f"{prompt_text(str(question))} {str(answer).strip()}"


@register_arm("data_whisperer", DataWhispererArmConfig,
              help="Data Whisperer (arXiv 2505.12212): top fraction (per domain) of a question/answer pool by "
              "Data Whisperer score, from a pool column or scored by a selector model; trained on as text.")
def data_whisperer(study, config, seed: int):
    """Examples no valid prompt scored (NaN) rank below every scored one, so each domain's selection holds
    exactly ``round(fraction x n)`` examples, like a ``random`` arm with the same fraction and by_domain."""
    import math

    columns = [config.question_column, config.answer_column]
    missing = [c for c in columns if c not in study.pool.column_names]
    if missing:
        raise ValueError(f"arm {config.name}: Data Whisperer needs a question/answer pool; the pool has no "
                         f"{missing} column(s) (set question_column / answer_column)")  # fmt: skip

    def build():
        if config.selector_name_or_path:
            scores, stats = _score_with_whisperer(study, config)
        elif config.scores_column and config.scores_column in study.pool.column_names:
            scores, stats = study.pool[config.scores_column], {}
        else:
            raise ValueError(f"arm {config.name}: the pool has no {config.scores_column!r} column; give "
                             "scores_column or selector_name_or_path")  # fmt: skip
        pool = study.pool
        if config.render:
            def text(batch):
                return {"text": [render_qa(q, a) for q, a in zip(batch[columns[0]], batch[columns[1]])]}

            pool = pool.map(text, batched=True, keep_in_memory=True, desc="render Q/A")
        ranked = [-math.inf if s is None or s != s else float(s) for s in scores]
        scored = pool.add_column("_dw_rank", ranked)
        rows, info = _subset_rows(study, config, scored, "_dw_rank", pool=pool)
        info["unscored_examples"] = sum(r == -math.inf for r in ranked)
        info.update({f"scoring_{k}": v for k, v in stats.items()})
        return rows, info

    rows, info = study.cached(f"arm/{config.name}", build, arm=config.name)
    return ArmSetup(train_dataset=rows, info=info)


def _score_with_whisperer(study, config):
    """Data Whisperer scores of the pool (one pool, domains mixed in the prompts, as the paper scores a dataset).
    Finished groups persist under ``output_dir/selection/<arm>`` so a killed scoring resumes; the selection
    cost adds the resumed groups' earlier seconds and counts prompt plus generated tokens."""
    import torch

    from ..data_whisperer.scorer import DataWhisperer
    from ..loading import load_causal_lm, load_tokenizer
    from .study import distributed_state

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_causal_lm(config.selector_name_or_path, device=device).eval()
    tokenizer = load_tokenizer(config.selector_name_or_path)
    state_dir = study.output_dir / "selection" / config.name / f"rank{distributed_state().process_index}"
    whisperer = DataWhisperer(model, tokenizer, config.whisperer_config(), state_dir=state_dir)
    scores = whisperer.score(study.pool.select_columns([config.question_column, config.answer_column]))
    study.selection_seconds[config.name] = study.selection_seconds.get(config.name, 0.0) + whisperer.resumed_seconds
    stats = dict(whisperer.stats)
    study.add_selection_tokens(config.name, stats.get("prompt_tokens", 0) + stats.get("generated_tokens", 0))
    del model
    return scores.tolist(), stats


# ---------------------------------------------------------------------------------------------- SLM
@dataclass
class SLMArmConfig(ArmConfig):
    token_select_ratio: float = field(default=0.6, metadata={"help": "Share of tokens trained (RHO-1: 0.6-0.7)."})
    select_scope: str = field(default="global", metadata={"help": "Where the top share is taken: global, batch or row."})
    score: str = field(default="excess_loss", metadata={"help": "Token score (excess_loss or a self-reference score)."})
    reference: str = field(
        default="precomputed",
        metadata={"help": "'precomputed': reference losses computed once over the packed pool (or projected "
                  "across tokenizers when the reference has its own); 'online': a frozen reference forward per step."},
    )
    reference_model_name_or_path: str | None = field(
        default=None, metadata={"help": "The reference model (RHO-1: the same base trained on high-quality data)."}
    )
    reference_batch_size: int = field(default=8, metadata={"help": "Rows per reference forward (precomputed)."})
    reference_losses_column: str | None = field(
        default=None,
        metadata={"help": "Pool column holding reference losses computed earlier, one per token of the study "
                  "tokenizer's document encoding BOS + tokens + EOS (the 'ref_loss' of "
                  "cross_tokenizer_reference_losses / hf-select reference-losses); documents whose value is null "
                  "are scored by reference_model_name_or_path (precomputed)."},
    )


def _same_vocabulary(a, b) -> bool:
    return len(a) == len(b) and a.get_vocab() == b.get_vocab()


@register_arm("slm", SLMArmConfig, help="RHO-1 Selective Language Modeling (arXiv 2404.07965): loss on the "
              "top share of tokens by excess loss over a reference model.")
def slm(study, config: SLMArmConfig, seed: int):
    from ..loading import load_causal_lm, load_tokenizer
    from ..trainer_ext.slm_config import SLMConfig
    from ..trainer_ext.slm_trainer import SLMTrainer

    if not config.reference_model_name_or_path:
        raise ValueError(f"arm {config.name}: reference_model_name_or_path is required")
    if config.reference not in ("precomputed", "online"):
        raise ValueError(f"arm {config.name}: reference must be 'precomputed' or 'online', got {config.reference!r}")
    args = {"token_select_ratio": config.token_select_ratio, "select_scope": config.select_scope, "score": config.score}
    ref_tokenizer = load_tokenizer(config.reference_model_name_or_path, pad=False)
    same = _same_vocabulary(ref_tokenizer, study.tokenizer)
    if config.reference == "online":
        if not same:
            raise ValueError(f"arm {config.name}: an online reference needs the study's tokenizer; use precomputed")
        ref = study.cached(f"ref_model/{config.reference_model_name_or_path}",
                           lambda: load_causal_lm(config.reference_model_name_or_path, dtype="float32"))
        rows = study.pool_rows
        return ArmSetup(
            train_dataset=rows, trainer_class=SLMTrainer, args_class=SLMConfig, args=args,
            data_collator=None, trainer_kwargs={"ref_model": ref},
            info={"reference": "online", "rows": len(rows)},
            scoring_tokens_per_step=study.config.batch_size * study.config.seq_length,
        )  # fmt: skip

    column = config.reference_losses_column
    if column and column not in study.pool.column_names:
        raise ValueError(f"arm {config.name}: the pool has no reference_losses_column {column!r}")

    def build():
        import torch
        from datasets import Dataset

        from ..packing import document_token_ids, pack_documents
        from ..slm.cross_tokenizer import cross_tokenizer_reference_losses
        from ..slm.reference_losses import compute_reference_losses

        device = "cuda" if torch.cuda.is_available() else "cpu"
        texts = study.pool["text"]
        given = study.pool[column] if column else [None] * len(texts)
        missing = [i for i, losses in enumerate(given) if losses is None]
        ref = None
        if missing:
            ref = load_causal_lm(config.reference_model_name_or_path, dtype="float32", device=device)
        if same and not column:
            rows = compute_reference_losses(
                study.pool_rows, ref, batch_size=config.reference_batch_size,
                pad_token_id=study.tokenizer.pad_token_id or 0,
            )  # fmt: skip
            tokens = _tokens(rows)
        else:
            # per document (its own context), given or computed here for the documents without a value
            student_ids = document_token_ids(study.tokenizer, texts)
            per_doc: list = [None] * len(texts)
            for i, losses in enumerate(given):
                if losses is None:
                    continue
                if len(losses) != len(student_ids[i]):
                    raise ValueError(
                        f"arm {config.name}: {column!r} of pool document {i} has {len(losses)} values for "
                        f"{len(student_ids[i])} tokens (BOS + tokens + EOS of the study tokenizer)"
                    )
                per_doc[i] = {"input_ids": student_ids[i], "ref_loss": losses}
            if missing:
                computed = cross_tokenizer_reference_losses(
                    [texts[i] for i in missing], ref, ref_tokenizer, study.tokenizer,
                    batch_size=config.reference_batch_size, max_length=max(1024, study.config.seq_length),
                )  # fmt: skip
                for i, doc in zip(missing, computed):
                    per_doc[i] = doc
            packed = pack_documents([d["input_ids"] for d in per_doc], study.config.seq_length, overflow="discard",
                                    columns={"ref_loss": [d["ref_loss"] for d in per_doc]})  # fmt: skip
            packed.pop("num_documents", None)
            rows = Dataset.from_dict(packed)
            rows = rows.filter(lambda ids: len(ids) == study.config.seq_length, input_columns="input_ids")
            # reference tokens scored here (the given documents cost their earlier pass, not this arm)
            tokens = sum(len(ref_tokenizer(texts[i]).input_ids) for i in missing)
        del ref
        study.add_selection_tokens(config.name, tokens)
        return rows, len(texts) - len(missing)

    rows, reused = study.cached(f"arm/{config.name}", build, arm=config.name)
    kind = "precomputed" if same else "precomputed, projected across tokenizers"
    return ArmSetup(
        train_dataset=rows, trainer_class=SLMTrainer, args_class=SLMConfig, args=args, data_collator=None,
        info={"reference": kind, "rows": len(rows), "documents_with_given_reference_losses": reused},
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- MeCo
@dataclass
class MeCoArmConfig(ArmConfig):
    cooldown_fraction: float = field(default=0.1, metadata={"help": "Last share of the steps on plain documents (paper: 0.1)."})
    cooldown_pool_fraction: float | None = field(
        default=None, metadata={"help": "Share of the pool kept apart for the cooldown (default: cooldown_fraction)."}
    )
    metadata_column: str = field(default="url", metadata={"help": "Pool column holding each document's URL."})
    metadata_mode: str = field(default="host", metadata={"help": "How the URL becomes metadata (host: official rule)."})
    unrelated_url: str | None = field(
        default="www.factquizmaster.com",
        metadata={"help": "Also measure held-out bpb given each document's own URL host (heldout_bpb_own_url) and "
                  "given this fixed URL (heldout_bpb_unrelated_url), when the held-out set has the metadata column; "
                  "empty: skip."},
    )


@register_arm("meco", MeCoArmConfig, help="MeCo (arXiv 2501.01956): URL-conditioned documents, then a cooldown "
              "on plain documents from a disjoint part of the pool, in one run.")
def meco(study, config: MeCoArmConfig, seed: int):
    from ..trainer_ext.meco_config import MeCoConfig
    from ..trainer_ext.meco_trainer import MeCoTrainer, split_cooldown_pool

    if config.metadata_column not in study.pool.column_names:
        raise ValueError(f"arm {config.name}: the pool has no {config.metadata_column!r} column")
    fraction = config.cooldown_pool_fraction or config.cooldown_fraction
    conditioning, cooldown = study.cached(
        f"arm/{config.name}", lambda: split_cooldown_pool(study.pool, fraction, seed=0), arm=config.name
    )
    args = {"cooldown_fraction": config.cooldown_fraction, "max_length": study.config.seq_length,
            "metadata_column": config.metadata_column, "metadata_mode": config.metadata_mode, "text_column": "text"}
    measure = config.unrelated_url and config.metadata_column in study.heldout.column_names
    return ArmSetup(
        train_dataset=conditioning, trainer_class=MeCoTrainer, args_class=MeCoConfig, args=args, data_collator=None,
        trainer_kwargs={"cooldown_dataset": cooldown},
        info={"conditioning_documents": len(conditioning), "cooldown_documents": len(cooldown)},
        extra_metrics=(lambda study, model: conditional_metrics(study, model, config)) if measure else None,
    )  # fmt: skip


def conditional_metrics(study, model, config: MeCoArmConfig) -> dict[str, float]:
    """MeCo's conditional inference on the held-out documents (arXiv 2501.01956, sec. 5): bits per byte of the
    same tokens given ``URL: <own host>`` and given a fixed unrelated URL (mean over domains, like
    ``heldout_bpb``)."""
    import torch

    from ..meco.conditional import prefixed_text_losses, url_prefix
    from ..meco.metadata import metadata_prefix
    from ..token_loss import bits_per_byte

    out: dict[str, list[float]] = {"heldout_bpb_own_url": [], "heldout_bpb_unrelated_url": []}
    model.eval()
    with torch.no_grad():
        for domain in sorted(set(study.heldout["domain"])):
            docs = study.heldout.filter(lambda d, x=domain: d == x, input_columns="domain", keep_in_memory=True)
            prefixes = {
                "heldout_bpb_own_url": [metadata_prefix(u, mode=config.metadata_mode) for u in docs[config.metadata_column]],
                "heldout_bpb_unrelated_url": url_prefix(config.unrelated_url),
            }
            for key, prefix in prefixes.items():
                losses = prefixed_text_losses(model, study.tokenizer, docs["text"], prefix, study.config.eval_batch_size)
                out[key].append(bits_per_byte(sum(losses["nats"]), sum(losses["num_bytes"])))
    model.train()
    return {key: sum(values) / len(values) for key, values in out.items()}


# ---------------------------------------------------------------------------------------------- OPUS
@dataclass
class OPUSArmConfig(ArmConfig):
    buffer_factor: float = field(default=2.0, metadata={"help": "Candidates per step / batch (paper: 2)."})
    temperature: float = field(default=0.9, metadata={"help": "Sampling temperature tau (paper: 0.9)."})
    score_window: int | None = field(default=None, metadata={"help": "Tokens scored per candidate (default: seq_length // 4, at least 16)."})
    proxy_batch_size: int = field(default=8, metadata={"help": "Proxy rows per step (paper: 8)."})
    sketch_dim: int | None = field(default=8192, metadata={"help": "CountSketch dimension (paper: 8192)."})
    selection: str = field(
        default="boltzmann",
        metadata={"help": "boltzmann (paper: draws p ~ exp(U/tau) with the redundancy term), greedy (argmax with "
                  "the redundancy term) or topk (the K largest alignments; GhostSuite found it at least as good)."},
    )
    standardize: bool = field(
        default=True,
        metadata={"help": "Z-score the utilities over the buffer before the softmax (false: the paper's raw "
                  "utilities, for which tau 0.9 is close to uniform sampling)."},
    )
    greedy: bool = field(default=False, metadata={"help": "Shorthand for selection: greedy."})
    proxy_dataset_name_or_path: str | None = field(
        default=None, metadata={"help": "Proxy (target) documents (default: the study's proxy documents)."}
    )
    proxy_split: str = field(default="train", metadata={"help": "Split of proxy_dataset_name_or_path."})
    proxy_tasks: list[str] = field(
        default_factory=list,
        metadata={"help": "Harness task files: proxy = pool documents most similar to their train/dev items."},
    )
    proxy_pool_size: float = field(default=32, metadata={"help": "Proxy documents from proxy_tasks (a count, or a fraction of the pool)."})

    def __post_init__(self):
        from ..opus.sampling import SELECTIONS

        if self.selection not in SELECTIONS:
            raise ValueError(f"arm {self.name}: selection must be one of {SELECTIONS}, got {self.selection!r}")
        if self.greedy and self.selection not in ("boltzmann", "greedy"):
            raise ValueError(f"arm {self.name}: greedy: true conflicts with selection: {self.selection}")


def _domain_share_callback(info: dict):
    """A callback that copies OPUS's logged shares (``opus_share_<domain>`` selected, ``opus_offered_<domain>``
    offered, per logging step) from the trainer's log history, which a resumed run restores, into the run's
    ``info["domain_shares"]`` when training ends."""
    from transformers import TrainerCallback

    class DomainShares(TrainerCallback):
        def on_train_end(self, args, state, control, **kwargs):
            def shares(entry: dict, prefix: str) -> dict[str, float]:
                return {k[len(prefix):]: v for k, v in entry.items() if k.startswith(prefix)}

            info["domain_shares"] = [
                {"step": h["step"], "selected": shares(h, "opus_share_"), "offered": shares(h, "opus_offered_"),
                 "ess": h.get("opus_ess")}
                for h in state.log_history if any(k.startswith("opus_share_") for k in h)
            ]  # fmt: skip

    return DomainShares()


@register_arm("opus", OPUSArmConfig, help="OPUS (arXiv 2602.05400): each step keeps the candidates whose "
              "optimizer-shaped update most lowers the loss on a proxy set.")
def opus(study, config: OPUSArmConfig, seed: int):
    from ..loading import load_any_dataset
    from ..trainer_ext.opus_config import OPUSConfig
    from ..trainer_ext.opus_trainer import OPUSTrainer

    def build():
        if config.proxy_dataset_name_or_path:
            docs = load_any_dataset(config.proxy_dataset_name_or_path, config.proxy_split)
        elif config.proxy_tasks:
            from ..opus.proxy_pool import benchmark_proxy_texts, build_proxy_pool

            docs = build_proxy_pool(study.pool, benchmark_proxy_texts(config.proxy_tasks), config.proxy_pool_size)
        elif study.proxy is not None:
            docs = study.proxy
        else:
            raise ValueError(
                f"arm {config.name}: OPUS needs a proxy set: proxy_dataset_name_or_path, proxy_tasks, or the "
                "study's proxy_documents_per_domain"
            )
        proxy = study.pack(docs.select_columns(["text"]), keep_partial=True)
        candidates = study.pack(study.pool, group_column="domain")
        domains = dict(sorted(Counter(docs["domain"]).items())) if "domain" in docs.column_names else {}
        return candidates, proxy, domains

    candidates, proxy, proxy_domains = study.cached(f"arm/{config.name}", build, arm=config.name)
    window = config.score_window or max(16, study.config.seq_length // 4)
    args = {"buffer_factor": config.buffer_factor, "temperature": config.temperature, "score_window": window,
            "proxy_batch_size": config.proxy_batch_size, "sketch_dim": config.sketch_dim, "greedy": config.greedy,
            "selection": config.selection, "standardize": config.standardize}
    batch = study.config.batch_size
    info = {"candidate_rows": len(candidates), "proxy_rows": len(proxy), "score_window": window}
    if "domain" in candidates.column_names:
        info["candidate_row_domains"] = dict(sorted(Counter(candidates["domain"]).items()))
    if proxy_domains:
        info["proxy_document_domains"] = proxy_domains
    return ArmSetup(
        train_dataset=candidates, trainer_class=OPUSTrainer, args_class=OPUSConfig, args=args, data_collator=None,
        trainer_kwargs={"proxy_dataset": proxy}, callbacks=[_domain_share_callback(info)], info=info,
        # candidates and proxy rows go through one extra forward + backward over a window each step
        scoring_tokens_per_step=int(config.buffer_factor * batch) * window + config.proxy_batch_size * window,
    )  # fmt: skip
