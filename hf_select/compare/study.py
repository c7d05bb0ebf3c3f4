"""What every arm of a study sees (:class:`Study`): the tokenizer, the candidate pool, the held-out and proxy
documents, packing, the per-seed initial weights and the shared training arguments.

Documents are split once, before any arm runs: held-out documents (and, when asked, proxy documents) leave the
pool, so that no arm trains on what is measured. The initial weights of seed ``s`` are written once to
``output_dir/init/seed<s>`` (safetensors) and every arm loads them from there: paired seeds start from
byte-identical weights whatever the arm does to the global random state.
"""

from __future__ import annotations

import json
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers.utils import logging

from .config import StudyConfig

logger = logging.get_logger(__name__)

LOWQ_DOMAIN = "lowq"


def distributed_state():
    """accelerate's process state as the Trainer sets it up (gloo on CPU, NCCL on GPUs under torchrun)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def stdlib_pool(path: Path, documents_per_domain: int = 200, max_chars: int = 1500, seed: int = 0) -> Path:
    """Write a small offline pool from this Python's standard library to ``path`` (JSON lines).

    Domains: ``code`` (module sources), ``prose`` (docstrings) and ``lowq`` (the words of prose documents
    shuffled: the vocabulary of clean text without its structure). Columns ``text, domain, url``.
    """
    from ..dataset_scripts.text_sources import stdlib_code_docs, stdlib_docstring_docs

    rng = random.Random(seed)
    out = []
    for domain, source in (("code", stdlib_code_docs()), ("prose", stdlib_docstring_docs())):
        docs = []
        for doc in source:
            docs.append({"text": doc["text"][:max_chars], "domain": domain, "url": doc["url"]})
            if len(docs) >= 4 * documents_per_domain:
                break
        rng.shuffle(docs)
        out += docs[:documents_per_domain]
    prose = [d for d in out if d["domain"] == "prose"]
    for i in range(documents_per_domain // 2):
        words = re.findall(r"\S+", prose[i % len(prose)]["text"])
        rng.shuffle(words)
        out.append({"text": " ".join(words), "domain": LOWQ_DOMAIN, "url": f"https://spam.example/{i}"})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(d) + "\n" for d in out))
    return path


def _clip(dataset, text_column: str, max_chars: int | None):
    def clip(batch):
        texts = batch[text_column]
        return {"text": [t[:max_chars] if max_chars else t for t in texts], "doc_chars": [len(t) for t in texts]}

    return dataset.map(clip, batched=True, keep_in_memory=True, desc="clip")


def _sample_per_domain(dataset, per_domain: int, seed: int):
    """At most ``per_domain`` seeded rows of every domain (original order kept)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    domains = np.array(dataset["domain"])
    keep = []
    for d in sorted(set(domains.tolist())):
        rows = np.nonzero(domains == d)[0]
        keep += rng.choice(rows, min(per_domain, len(rows)), replace=False).tolist()
    return dataset.select(sorted(keep))


def _with_domain(dataset, column: str | None):
    if column and column in dataset.column_names:
        if column == "domain":
            return dataset
        return dataset.map(lambda d: {"domain": str(d)}, input_columns=column, keep_in_memory=True)
    return dataset.map(lambda _: {"domain": "all"}, keep_in_memory=True)


def _take_per_domain(dataset, per_domain: int, exclude: list[str], seed: int):
    """Split ``dataset`` into (taken, rest): ``per_domain`` seeded rows of every domain not in ``exclude``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    domains = np.array(dataset["domain"])
    taken = []
    for d in sorted(set(domains.tolist())):
        if d in exclude:
            continue
        rows = np.nonzero(domains == d)[0]
        if len(rows) <= per_domain:
            raise ValueError(f"domain {d!r} has {len(rows)} documents: too few to take {per_domain} out of the pool")
        taken += rng.choice(rows, per_domain, replace=False).tolist()
    chosen = set(taken)
    rest = [i for i in range(len(dataset)) if i not in chosen]
    return dataset.select(sorted(taken)), dataset.select(rest)


@dataclass
class Study:
    """The shared state of one study (built by :meth:`Study.load`); arms read it, never change it."""

    config: StudyConfig
    output_dir: Path
    tokenizer: Any
    pool: Any  # documents: text, domain, doc_chars and the dataset's other columns
    heldout: Any  # documents measured after training
    proxy: Any | None = None  # target documents for arms that need one (OPUS)
    world_size: int = 1
    _cache: dict[str, Any] = field(default_factory=dict)
    selection_seconds: dict[str, float] = field(default_factory=dict)
    selection_tokens: dict[str, int] = field(default_factory=dict)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, config: StudyConfig) -> Study:
        from ..loading import load_any_dataset, require_columns

        out = Path(config.output_dir)
        state = distributed_state()
        if config.builtin_pool:
            path = out / "data" / "pool.jsonl"
            with state.main_process_first():
                if state.is_main_process and not path.exists():
                    stdlib_pool(path)
            data = load_any_dataset(str(path), "train")
        else:
            data = config.load_dataset()
        require_columns(data, [config.text_column], "the pool")
        if config.max_documents:
            data = data.select(range(min(config.max_documents, len(data))))
        data = _with_domain(data, config.domain_column)
        if config.documents_per_domain:
            data = _sample_per_domain(data, config.documents_per_domain, seed=10_000)
        data = _clip(data, config.text_column, config.max_chars)
        exclude = list(config.heldout_exclude_domains)
        if config.heldout_name_or_path:
            heldout = load_any_dataset(config.heldout_name_or_path, config.heldout_split)
            require_columns(heldout, [config.text_column], "the held-out set")
            heldout = _with_domain(heldout, config.domain_column)
            heldout = heldout.filter(lambda d: d not in exclude, input_columns="domain", keep_in_memory=True)
            heldout = _sample_per_domain(heldout, config.heldout_documents_per_domain, seed=10_001)
            heldout = _clip(heldout, config.text_column, config.max_chars)
            pool = data
        else:
            heldout, pool = _take_per_domain(data, config.heldout_documents_per_domain, exclude, seed=10_001)
        proxy = None
        if config.proxy_documents_per_domain:
            proxy, pool = _take_per_domain(pool, config.proxy_documents_per_domain, exclude, seed=10_002)
        tokenizer = cls._tokenizer(config, pool, out, state)
        study = cls(config, out, tokenizer, pool, heldout, proxy, world_size=state.num_processes)
        logger.warning(
            f"[compare] pool {len(pool)} documents, held-out {len(heldout)}, proxy {0 if proxy is None else len(proxy)}; "
            f"{config.max_steps} steps x {config.batch_size} rows x {config.seq_length} tokens = "
            f"{config.update_tokens} update tokens per arm and seed"
        )
        return study

    @staticmethod
    def _tokenizer(config: StudyConfig, pool, out: Path, state):
        from ..loading import load_tokenizer

        if config.tokenizer_name_or_path or (config.model_name_or_path and not config.train_tokenizer_vocab_size):
            return load_tokenizer(config.tokenizer_name_or_path or config.model_name_or_path)
        from ..bpe import train_bpe_tokenizer

        path = out / "tokenizer"
        with state.main_process_first():
            if state.is_main_process and not (path / "tokenizer.json").exists():
                tok = train_bpe_tokenizer(pool["text"], config.train_tokenizer_vocab_size, min_frequency=2)
                tok.save_pretrained(path)
        return load_tokenizer(str(path))

    # ------------------------------------------------------------------ data helpers for arms
    def cached(self, key: str, build, arm: str | None = None, tokens: int = 0):
        """``build()`` once per process (keyed by ``key``); with ``arm``, its first wall time (and ``tokens``
        processed) count as that arm's selection / scoring cost."""
        if key not in self._cache:
            start = time.perf_counter()
            self._cache[key] = build()
            if arm is not None:
                self.selection_seconds[arm] = self.selection_seconds.get(arm, 0.0) + time.perf_counter() - start
                self.selection_tokens[arm] = self.selection_tokens.get(arm, 0) + int(tokens)
        return self._cache[key]

    def add_selection_tokens(self, arm: str, tokens: int) -> None:
        self.selection_tokens[arm] = self.selection_tokens.get(arm, 0) + int(tokens)

    def tokenize(self, documents):
        """``documents`` with ``input_ids`` = BOS + tokens + EOS (:func:`hf_select.packing.tokenize_documents`)."""
        from ..packing import tokenize_documents

        return tokenize_documents(documents, self.tokenizer, "text", keep_in_memory=True)

    def pack(self, documents, group_column: str | None = None, keep_partial: bool = False):
        """Document-masked packed rows of ``seq_length`` tokens (overflow discarded) of raw ``documents``.

        Only full rows are kept (unless ``keep_partial``), so every optimizer step of every arm holds exactly
        ``batch_size x seq_length`` tokens.
        """
        from ..packing import pack_dataset

        if "input_ids" not in documents.column_names:
            documents = self.tokenize(documents)
        rows = pack_dataset(documents, self.config.seq_length, group_column=group_column, keep_in_memory=True)
        if not keep_partial:
            rows = rows.filter(lambda ids: len(ids) == self.config.seq_length, input_columns="input_ids", keep_in_memory=True)
        if len(rows) == 0:
            raise ValueError(f"no full row of {self.config.seq_length} tokens could be packed from {len(documents)} documents")
        return rows

    @property
    def pool_rows(self):
        """Packed rows of the whole pool (the baseline's training data)."""
        return self.cached("pool_rows", lambda: self.pack(self.pool))

    def heldout_by_domain(self) -> dict[str, list[str]]:
        """Held-out texts per domain."""

        def build():
            out: dict[str, list[str]] = {}
            for text, domain in zip(self.heldout["text"], self.heldout["domain"]):
                out.setdefault(domain, []).append(text)
            return dict(sorted(out.items()))

        return self.cached("heldout_by_domain", build)

    def collator(self):
        from ..packing import PackedCollator

        return PackedCollator(pad_token_id=self.tokenizer.pad_token_id or 0)

    # ------------------------------------------------------------------ model
    def model_config(self):
        from transformers import AutoConfig

        cfg = dict(self.config.model_config)
        if self.config.model_name_or_path:
            config = AutoConfig.from_pretrained(self.config.model_name_or_path, **cfg)
            resized = {"hidden_size", "num_attention_heads"} & set(cfg)
            if resized and "head_dim" not in cfg and getattr(config, "head_dim", None) is not None:
                config.head_dim = config.hidden_size // config.num_attention_heads
        else:
            if "model_type" not in cfg:
                raise ValueError("model_config needs model_type (e.g. llama) when no model_name_or_path is given")
            config = AutoConfig.for_model(**cfg)
        tok = self.tokenizer
        if self.config.from_scratch:
            config.vocab_size = len(tok)
            for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
                if getattr(tok, name, None) is not None:
                    setattr(config, name, getattr(tok, name))
        return config

    def init_dir(self, seed: int) -> Path:
        return self.output_dir / "init" / f"seed{seed}"

    def initial_model(self, seed: int):
        """The model every arm of ``seed`` starts from (written once, then loaded: byte-identical per seed)."""
        import torch
        from transformers import AutoModelForCausalLM

        from ..loading import load_causal_lm

        if not self.config.from_scratch:
            return load_causal_lm(self.config.model_name_or_path, dtype="float32").train()
        path = self.init_dir(seed)
        state = distributed_state()
        with state.main_process_first():
            if state.is_main_process and not (path / "config.json").exists():
                torch.manual_seed(seed)
                model = AutoModelForCausalLM.from_config(self.model_config())
                tmp = path.with_name(path.name + ".tmp")
                model.save_pretrained(tmp)
                tmp.rename(path)
        return AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, dtype=torch.float32).train()

    def training_arguments(self, run_dir: Path, seed: int) -> dict[str, Any]:
        """``TrainingArguments`` fields shared by every arm: same budget, optimiser, schedule and seeds."""
        import torch

        c = self.config
        per_step = self.world_size * c.gradient_accumulation_steps
        if c.batch_size % per_step:
            raise ValueError(
                f"batch_size {c.batch_size} must be a multiple of processes x gradient_accumulation_steps ({per_step})"
            )
        return {
            "output_dir": str(run_dir), "per_device_train_batch_size": c.batch_size // per_step,
            "gradient_accumulation_steps": c.gradient_accumulation_steps, "max_steps": c.max_steps,
            "learning_rate": c.learning_rate, "warmup_steps": c.warmup_steps, "lr_scheduler_type": c.lr_scheduler_type,
            "weight_decay": c.weight_decay, "adam_beta1": c.adam_beta1, "adam_beta2": c.adam_beta2, "logging_steps": c.logging_steps, "save_strategy": "steps",
            "save_steps": c.save_steps, "report_to": "none", "seed": seed, "data_seed": seed,
            "use_cpu": not torch.cuda.is_available(), "dataloader_num_workers": 0, "remove_unused_columns": False,
            "disable_tqdm": True, "bf16": c.bf16, "include_num_input_tokens_seen": True,
            "dataloader_drop_last": True,  # a partial batch at an epoch's end would train fewer tokens
        }  # fmt: skip
