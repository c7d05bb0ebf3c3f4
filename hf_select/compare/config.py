"""Configuration of a ``compare`` study: :class:`StudyConfig` (model, tokenizer, pool, held-out sets, tasks,
budget, seeds) and one config dataclass per arm type, plus the arm registry.

An arm type is registered with :func:`register_arm`: a name, its config dataclass (a subclass of
:class:`ArmConfig`) and a function ``build(study, config, seed) -> ArmSetup`` that says what Trainer to run on
what data (see :mod:`hf_select.compare.arms`). The runner never names an arm type, so a user adds one without
touching it::

    from hf_select.compare import ArmConfig, ArmSetup, register_arm

    @dataclass
    class ShortestConfig(ArmConfig):
        fraction: float = field(default=0.5, metadata={"help": "Share of documents kept."})

    @register_arm("shortest", ShortestConfig)
    def shortest(study, config, seed):
        docs = study.pool.sort("doc_chars").select(range(int(config.fraction * len(study.pool))))
        return ArmSetup(train_dataset=study.pack(docs))

In YAML the study lists its arms as mappings with a ``type`` and the fields of that type's config (``name``
defaults to the type; two arms of one type need distinct names).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..loading import DatasetSourceArguments


@dataclass
class ArmConfig:
    """Fields every arm has."""

    name: str | None = field(default=None, metadata={"help": "Name of the arm in the report (default: its type)."})


@dataclass
class ArmType:
    name: str
    config_class: type[ArmConfig]
    build: Callable[..., Any]
    help: str = ""


ARMS: dict[str, ArmType] = {}


def register_arm(name: str, config_class: type[ArmConfig] = ArmConfig, help: str | None = None):
    """Decorator registering ``build(study, config, seed) -> ArmSetup`` as arm type ``name``."""
    if not (dataclasses.is_dataclass(config_class) and issubclass(config_class, ArmConfig)):
        raise TypeError(f"the config of arm {name!r} must be a dataclass subclassing ArmConfig")

    def wrap(build):
        text = help if help is not None else (build.__doc__ or "").strip().split("\n\n")[0]
        ARMS[name] = ArmType(name, config_class, build, " ".join(text.split()))
        return build

    return wrap


def arm_types() -> dict[str, ArmType]:
    """Registered arm types (the built-in ones are registered on first use)."""
    from . import arms  # noqa: F401  (registers the built-in arms)

    return ARMS


def parse_arm(spec: str | dict[str, Any]) -> tuple[str, ArmConfig]:
    """``(type, config)`` of one entry of ``arms``: a type name, or a mapping with ``type`` and config fields."""
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"each arm must be a mapping with a 'type' (one of {sorted(arm_types())}), got {spec!r}")
    spec = dict(spec)
    kind = spec.pop("type")
    types = arm_types()
    if kind not in types:
        raise ValueError(f"unknown arm type {kind!r}; registered: {', '.join(sorted(types))}")
    cls = types[kind].config_class
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(spec) - names)
    if unknown:
        raise ValueError(f"arm {kind!r} has no field(s) {unknown}; its fields: {sorted(names)}")
    config = cls(**spec)
    if config.name is None:
        config.name = kind
    return kind, config


def arms_help() -> str:
    """Every registered arm type with its fields (for ``hf-select compare --help``)."""
    lines = []
    for kind, arm in arm_types().items():
        lines.append(f"{kind}: {arm.help}")
        for f in dataclasses.fields(arm.config_class):
            if f.name == "name":
                continue
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
            )
            lines.append(f"    {f.name} (default {default!r}): {f.metadata.get('help', '')}")
    return "\n".join(lines)


@dataclass
class StudyConfig(DatasetSourceArguments):
    """A paired bake-off of data-selection arms at equal update tokens (``hf-select compare``).

    The candidate pool is named by the shared dataset options (:class:`~hf_select.loading.DatasetSourceArguments`:
    ``dataset_name_or_path``, ``dataset_config``, ``split`` and their aliases), spelt as in every other command.

    Every arm of seed ``s`` starts from the same initial weights and sees the same data order where its
    mechanism allows; every arm trains for ``max_steps`` steps of ``batch_size`` rows of ``seq_length`` tokens
    (the update tokens). Each (arm, seed) is an ordinary Trainer run under ``output_dir/runs/<arm>/seed<s>``
    that resumes from its last checkpoint after a kill; a finished run is never repeated.
    """

    output_dir: str = field(default="compare_output", metadata={"help": "Where runs, results.json, report.html and figures go."})
    # --- model and tokenizer
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Pretrained checkpoint (continual pretraining / fine-tuning), or with from_scratch the "
                  "model whose config is initialised randomly. Leave empty to build a config from model_config."},
    )
    from_scratch: bool = field(
        default=True, metadata={"help": "Initialise the weights randomly (per seed) instead of loading them."}
    )
    model_config: dict = field(
        default_factory=dict,
        metadata={"help": "Config fields for a model trained from scratch, e.g. {model_type: llama, hidden_size: "
                  "64, num_hidden_layers: 2, ...}; override model_name_or_path's config when both are given."},
    )
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer (default: model_name_or_path's)."}
    )
    train_tokenizer_vocab_size: int | None = field(
        default=None,
        metadata={"help": "Train a byte-level BPE tokenizer of this size on the pool instead of loading one."},
    )
    # --- data
    dataset_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Candidate pool: Hub id, save_to_disk folder or .jsonl/.json/.parquet/.csv file.",
                  "aliases": ["--dataset_name"]},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Configuration name of the pool dataset."})
    split: str = field(default="train", metadata={"help": "Split of the pool dataset.", "aliases": ["--dataset_split"]})
    builtin_pool: str | None = field(
        default=None,
        metadata={"help": "Build the pool offline instead of loading one: 'stdlib' = this Python's standard "
                  "library, domains code (modules) and prose (docstrings) plus a low-quality domain 'lowq' "
                  "(shuffled words), written to output_dir/data/pool.jsonl."},
    )
    text_column: str = field(default="text", metadata={"help": "Column holding the document text."})
    domain_column: str | None = field(
        default="domain", metadata={"help": "Column naming each document's domain (held-out bpb per domain)."}
    )
    max_documents: int | None = field(default=None, metadata={"help": "Use at most this many pool documents (the first ones)."})
    documents_per_domain: int | None = field(
        default=None, metadata={"help": "Use a seeded sample of at most this many documents per domain (pool and held-out set)."}
    )
    max_chars: int | None = field(default=None, metadata={"help": "Clip every document to this many characters."})
    heldout_name_or_path: str | None = field(
        default=None, metadata={"help": "Held-out documents (default: heldout_documents_per_domain split off the pool)."}
    )
    heldout_split: str = field(default="train", metadata={"help": "Split of heldout_name_or_path."})
    heldout_documents_per_domain: int = field(
        default=16, metadata={"help": "Held-out documents per domain: sampled from heldout_name_or_path, or taken out of the pool."}
    )
    heldout_exclude_domains: list[str] = field(
        default_factory=list, metadata={"help": "Domains never held out nor measured (e.g. a low-quality pool)."}
    )
    proxy_documents_per_domain: int = field(
        default=0,
        metadata={"help": "Documents per measured domain taken out of the pool as a target set for arms that need "
                  "one (OPUS's proxy) when the arm names none; no arm trains on them."},
    )
    tasks: list[str] = field(default_factory=list, metadata={"help": "Harness task YAML files evaluated after training."})
    task_limit: int | None = field(default=None, metadata={"help": "Evaluate at most this many items per task."})
    # --- budget
    seq_length: int = field(default=256, metadata={"help": "Tokens per packed training row."})
    batch_size: int = field(
        default=8, metadata={"help": "Rows per optimizer step over all processes (split over devices and accumulation)."}
    )
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    max_steps: int = field(default=100, metadata={"help": "Optimizer steps of every arm."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Seeds; seed s gives every arm the same initial weights and data order."})
    # --- optimisation (shared by every arm)
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate."})
    warmup_steps: float = field(default=0.05, metadata={"help": "Warmup steps (a fraction of max_steps when < 1)."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1 of every arm."})
    adam_beta2: float = field(
        default=0.999,
        metadata={"help": "AdamW beta2 of every arm (set for all arms alike: a method's trainer config may default "
                  "to another value, e.g. MeCo's paper uses 0.95)."},
    )
    logging_steps: int = field(default=5, metadata={"help": "Log the training loss every N steps (the loss curves)."})
    save_steps: int = field(default=50, metadata={"help": "Checkpoint every N steps (a killed run resumes from the last)."})
    keep_checkpoints: bool = field(default=False, metadata={"help": "Keep checkpoints after a run finishes."})
    save_models: bool = field(default=False, metadata={"help": "Save each trained model under its run folder."})
    bf16: bool = field(default=False, metadata={"help": "Train in bfloat16 mixed precision."})
    eval_batch_size: int = field(default=8, metadata={"help": "Documents per forward when measuring held-out bpb."})
    # --- arms and statistics
    arms: list[str] = field(
        default_factory=lambda: ["baseline"],
        metadata={"help": "The arms: each a type name or a mapping {type: T, name: N, <fields of T>}. The "
                  "arm types and their fields are listed below."},
    )
    baseline: str = field(default="baseline", metadata={"help": "Name of the arm the others are compared to."})
    alpha: float = field(default=0.05, metadata={"help": "Two-sided level of the paired t interval (0.05: a 95 per cent interval)."})
    power: float = field(default=0.8, metadata={"help": "Power of the smallest detectable effect."})
    # --- planning (hf-select compare --plan)
    plan: bool = field(
        default=False,
        metadata={"help": "Plan instead of comparing: train the baseline over plan_seeds seeds and print the seeds "
                  "and update tokens that would detect plan_effect, and their cost on this machine."},
    )
    plan_seeds: list[int] = field(default_factory=lambda: [0, 1], metadata={"help": "Seeds of the planning run."})
    plan_steps: int | None = field(default=None, metadata={"help": "Steps of the planning run (default: max_steps)."})
    plan_points: int = field(default=4, metadata={"help": "Budgets (evenly spaced steps) measured by the planning run."})
    plan_effect: float = field(
        default=0.01, metadata={"help": "Effect to detect, as a fraction of the baseline's held-out bpb (0.01: one per cent)."}
    )

    def __post_init__(self):
        super().__post_init__()  # the value rules of every field (hf_select.validation)
        if self.model_config is None:
            self.model_config = {}
        if isinstance(self.seeds, int):
            self.seeds = [self.seeds]
        if isinstance(self.arms, (str, dict)):
            self.arms = [self.arms]
        if not self.seeds:
            raise ValueError("seeds: give at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        for name in ("seq_length", "batch_size", "max_steps", "gradient_accumulation_steps", "logging_steps", "save_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.alpha < 1 or not 0 < self.power < 1:
            raise ValueError("alpha and power must be in (0, 1)")
        if self.plan_points < 1 or self.plan_effect <= 0 or (self.plan_steps is not None and self.plan_steps < 1):
            raise ValueError("plan_points and plan_steps must be >= 1 and plan_effect > 0")
        if len(set(self.plan_seeds)) < 2:
            raise ValueError(f"plan_seeds: give at least 2 distinct seeds (a spread needs two), got {self.plan_seeds}")
        if self.builtin_pool not in (None, "stdlib"):
            raise ValueError(f"builtin_pool must be 'stdlib' or empty, got {self.builtin_pool!r}")
        if not (self.dataset_name_or_path or self.builtin_pool):
            raise ValueError("give the candidate pool: dataset_name_or_path (or builtin_pool: stdlib)")
        if not (self.model_name_or_path or self.model_config):
            raise ValueError("give the model: model_name_or_path, or model_config (with from_scratch)")
        if not self.from_scratch and not self.model_name_or_path:
            raise ValueError("from_scratch: false needs model_name_or_path (the pretrained checkpoint)")
        if not (self.tokenizer_name_or_path or self.model_name_or_path or self.train_tokenizer_vocab_size):
            raise ValueError("give the tokenizer: tokenizer_name_or_path or train_tokenizer_vocab_size")

    @property
    def update_tokens(self) -> int:
        """Tokens of every arm's optimizer updates: ``seq_length x batch_size x max_steps``."""
        return self.seq_length * self.batch_size * self.max_steps

    def arm_configs(self) -> list[tuple[str, ArmConfig]]:
        """``(type, config)`` of every arm, baseline first; names must be unique and include the baseline."""
        parsed = [parse_arm(spec) for spec in self.arms]
        names = [c.name for _, c in parsed]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"arm names must be unique; repeated: {duplicates} (give each a 'name')")
        if self.baseline not in names:
            raise ValueError(f"the baseline arm {self.baseline!r} is not among the arms {names}")
        return sorted(parsed, key=lambda kc: kc[1].name != self.baseline)
