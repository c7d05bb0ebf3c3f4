"""RHO-1 Selective Language Modeling replicated in its own setting, scaled down (Lin et al., arXiv 2404.07965,
sections 2.2-3).

The paper's setting is *continual pretraining*: a base model (TinyLlama-1.1B) is trained further on a noisy
domain corpus (15B OpenWebMath tokens); the reference model is the same base trained on a small high-quality
corpus of that domain; SLM trains only on the 60% of tokens with the highest excess loss over the reference.
Here, on the demo world:

* **Base**: a small Llama (the world's 8k BPE tokenizer) pretrained from scratch on general world text (every
  domain, the pool and reference documents left out); computed once and saved under ``output_dir``.
* **Domain**: ``math`` (the world's SymPy / Maxima / PARI / mpmath documentation), as OpenWebMath is the paper's.
* **Reference**: the base trained further on clean math documents (disjoint from the pool), same tokenizer,
  about 3 passes over them (the paper's 3 epochs).
* **Pool**: other clean math documents into which :func:`add_text_noise` inserts, deterministically, the kinds
  of text RHO-1 calls noisy: web boilerplate, repeated lines, shuffled word spans and markup, until about
  ``noise_share`` of the characters are noise (0.25 by default: a sizeable minority, as RHO-1 describes web
  corpora: most tokens are learned or already easy, a minority stays hard or noisy; an option). Every
  character keeps its noise kind, so every student token has one (:func:`token_noise_kinds`). Reference, pool
  and dynamics documents are cut at line boundaries into pieces that fit one packed row with their noise
  (:func:`split_lines`): the study's packing keeps only the part of a document that fits its row.
* **Arms** (``hf_select.compare``, ``from_scratch: false`` from the base, equal update tokens, paired seeds):
  CLM (the plain Trainer), SLM at 60% with the reference's precomputed losses, and SLM with SmolLM2-135M as a
  cross-tokenizer reference (weak-to-strong in the other direction than the paper's: a stronger, general
  reference with another vocabulary; losses projected with
  :func:`hf_select.slm.cross_tokenizer.cross_tokenizer_reference_losses`).
* **Measured**: held-out clean math bits per byte (documents never trained on), optionally the world's math
  tasks, the share of noise tokens among the tokens each SLM arm selected against their share of the tokens it
  trained on (per noise kind too), and the H->H / L->H / H->L / L->L token-loss dynamics (paper 2.1) of the CLM
  run over evenly spaced checkpoints, on held-out noisy rows built the same way, split by clean / noise tokens.

Scaled down: millions of parameters instead of 1.1B, about 10^5 update tokens instead of 1.5 * 10^10, the pool
seen about twice (the cross-tokenizer reference's scoring of the pool dominates the CPU budget).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState
from transformers.utils import logging

from ..compare.arms import SLMArmConfig, baseline, slm
from ..compare.config import ArmConfig, register_arm
from ..text_split import greedy_pieces
from . import ReplicationContext, Row, Section, register_replication

logger = logging.get_logger(__name__)

NOISE_KINDS = ("clean", "boilerplate", "repeated_lines", "shuffled_span", "markup")
INSERTED_KINDS = NOISE_KINDS[1:]

_BOILERPLATE = (
    "Copyright (c) {year} {site}. All rights reserved.",
    "Home | About | Contact | Privacy Policy | Terms of Use",
    "Posted by {user} on {date} | {n} comments",
    "Share this: Twitter Facebook Reddit Email Print",
    "Subscribe to our newsletter to get the latest updates from {site}!",
    "Skip to main content",
    "This website uses cookies to improve your experience. Accept | Read more",
    "Page {n} of {m}   << Previous   Next >>",
    "Last updated: {date}. Powered by {site}.",
    "Related posts: {words}",
    "Tags: {words}",
    "Log in or register to post comments",
)
_MARKUP = (
    '<div class="{word}-{n}"><span style="font-size:{n}px">{words}</span></div>',
    '<a href="https://{site}/{word}/{n}.html" rel="nofollow">{words}</a>',
    '<li class="menu-item menu-item-{n}"><a href="/{word}">{word}</a></li>',
    "&nbsp;&nbsp;<br /><br />&nbsp;",
    '<script type="text/javascript">var _gaq = _gaq || []; _gaq.push(["_trackPageview"]);</script>',
    '<table border="0" cellpadding="{n}"><tr><td>{words}</td></tr></table>',
    '{{"@context": "https://schema.org", "@type": "{word}", "name": "{words}"}}',
)


def _donor_words(rng: random.Random, donors: Sequence[Sequence[str]], low: int, high: int) -> list[str]:
    words = donors[rng.randrange(len(donors))]
    k = min(len(words), rng.randint(low, high))
    start = rng.randrange(len(words) - k + 1)
    return list(words[start : start + k])


def _noise_piece(kind: str, rng: random.Random, donors: Sequence[Sequence[str]]) -> str:
    """One inserted noise line of ``kind`` (boilerplate, shuffled_span or markup), words from ``donors``."""
    def word() -> str:
        return re.sub(r"\W+", "", _donor_words(rng, donors, 1, 1)[0]).lower() or "page"

    fill = {
        "year": rng.randint(1998, 2024), "n": rng.randint(1, 99), "m": rng.randint(100, 400),
        "date": f"{rng.randint(2005, 2024)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "user": word(), "site": f"www.{word()}{word()}.com", "word": word(),
        "words": " ".join(_donor_words(rng, donors, 2, 6)),
    }  # fmt: skip
    if kind == "boilerplate":
        return rng.choice(_BOILERPLATE).format(**fill)
    if kind == "markup":
        return rng.choice(_MARKUP).format(**fill)
    if kind == "shuffled_span":
        words = _donor_words(rng, donors, 8, 24)
        rng.shuffle(words)
        return " ".join(words)
    raise ValueError(f"unknown noise kind {kind!r}; one of {INSERTED_KINDS}")


def add_text_noise(
    text: str, share: float, seed: int, donors: Sequence[Sequence[str]], kinds: Sequence[str] = INSERTED_KINDS
) -> tuple[str, list[list[int]]]:
    """Insert noise lines into ``text`` so that on average ``share`` of the characters of the result are noise.

    Kinds (the noisy tokens RHO-1 argues against training on, section 2.1): ``boilerplate`` (web page furniture: navigation,
    copyright, cookie and sharing lines), ``repeated_lines`` (a line of the document repeated 1-3 times right
    after itself: the original stays clean, the copies are noise), ``shuffled_span`` (8-24 consecutive words of a
    donor document in random order) and ``markup`` (HTML / JSON-LD fragments around donor words). Pieces go at
    line boundaries, the clean text keeps its order and characters. Deterministic in ``(text, share, seed,
    donors)``.

    Args:
        text: the clean document.
        share: target share of noise characters in ``[0, 1)``: pieces are added while the noise is below it, the
            last one with the probability that makes the expected noise exactly ``share / (1 - share)`` times the
            clean characters.
        seed: seed of this document's noise.
        donors: word lists of world documents the boilerplate, markup and shuffled spans draw words from.
        kinds: the noise kinds drawn (uniformly).

    Returns:
        ``(noisy_text, spans)`` with ``spans`` a list of ``[start, end, kind_index]`` (character offsets in
        ``noisy_text``, ``kind_index`` into :data:`NOISE_KINDS`).
    """
    if not 0 <= share < 1:
        raise ValueError(f"noise share must be in [0, 1), got {share}")
    unknown = sorted(set(kinds) - set(INSERTED_KINDS))
    if unknown or not kinds:
        raise ValueError(f"noise kinds must be among {INSERTED_KINDS}, got {list(kinds)}")
    if share and (not donors or not all(donors)):
        raise ValueError("noise donors must be non-empty word lists")
    rng = random.Random(seed)
    lines = text.splitlines(keepends=True) or [""]
    content = [i for i, line in enumerate(lines) if line.strip()]
    target = share / (1 - share) * len(text)
    inserts: dict[int, list[tuple[str, int]]] = {}
    total = 0
    while total < target:
        kind = rng.choice(list(kinds))
        if kind == "repeated_lines" and content:
            i = rng.choice(content)
            piece, at = lines[i].rstrip("\n") + "\n", i + 1
            piece *= rng.randint(1, 3)
        else:
            if kind == "repeated_lines":
                kind = "boilerplate"
            piece, at = _noise_piece(kind, rng, donors) + "\n", rng.randint(0, len(lines))
        if total + len(piece) > target and rng.random() >= (target - total) / len(piece):
            break  # the last piece is kept with the probability that makes the expected noise exactly the target
        inserts.setdefault(at, []).append((piece, NOISE_KINDS.index(kind)))
        total += len(piece)
    out, spans, pos = [], [], 0
    for i in range(len(lines) + 1):
        for piece, kind in inserts.get(i, ()):
            if pos and not out[-1].endswith("\n"):  # after a last line without newline: the newline leads
                piece = "\n" + piece[:-1]
            out.append(piece)
            spans.append([pos, pos + len(piece), kind])
            pos += len(piece)
        if i < len(lines):
            out.append(lines[i])
            pos += len(lines[i])
    return "".join(out), spans


def token_noise_kinds(offsets: Sequence[Sequence[int]], spans: Sequence[Sequence[int]], num_chars: int) -> list[int]:
    """Noise kind (index into :data:`NOISE_KINDS`, 0 = clean) of every token: the kind of the majority of its
    characters (ties to the lower index, so a token half clean, half noise is clean); tokens without characters
    (special tokens) are clean."""
    chars = np.zeros(num_chars + 1, dtype=np.int64)
    for start, end, kind in spans:
        chars[start:end] = kind
    out = []
    for start, end in offsets:
        if end <= start:
            out.append(0)
        else:
            out.append(int(np.bincount(chars[start:end], minlength=len(NOISE_KINDS)).argmax()))
    return out


def document_noise_labels(tokenizer, texts: Sequence[str], spans: Sequence[Sequence[Sequence[int]]]):
    """Per document ``BOS + tokens + EOS`` (:func:`hf_select.packing.document_token_ids`) and the noise kind of
    every token (BOS and EOS clean)."""
    from ..packing import special_token_ids

    bos, eos = special_token_ids(tokenizer)
    enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    ids, kinds = [], []
    for text, x, offsets, doc_spans in zip(texts, enc.input_ids, enc.offset_mapping, spans):
        ids.append(bos + list(x) + eos)
        kinds.append([0] * len(bos) + token_noise_kinds(offsets, doc_spans, len(text)) + [0] * len(eos))
    return ids, kinds


def noise_rows(rows, ids: list[list[int]], kinds: list[list[int]], seq_length: int) -> list[list[int]]:
    """The ``noise_kind`` column of packed training ``rows`` built from documents ``ids`` / ``kinds``.

    The rows were packed either by :func:`hf_select.packing.pack_dataset` (a study's ``pool_rows``) or by one
    :func:`hf_select.packing.pack_documents` call (cross-tokenizer reference losses); both packings are redone
    with the labels alongside, and the one whose ``input_ids`` equal the rows' is returned. Anything else is an
    error (the labels would not belong to the tokens)."""
    from datasets import Dataset

    from ..packing import pack_dataset, pack_documents

    def full(packed_ids, packed_kinds):
        keep = [i for i, r in enumerate(packed_ids) if len(r) == seq_length]
        return [packed_ids[i] for i in keep], [packed_kinds[i] for i in keep]

    target = rows["input_ids"]
    by_dataset = pack_dataset(Dataset.from_dict({"input_ids": ids, "noise_kind": kinds}), seq_length,
                              columns=("noise_kind",), keep_in_memory=True)  # fmt: skip
    candidates = [full(by_dataset["input_ids"], by_dataset["noise_kind"])]
    packed = pack_documents(ids, seq_length, overflow="discard", columns={"noise_kind": kinds})
    candidates.append(full(packed["input_ids"], packed["noise_kind"]))
    for packed_ids, packed_kinds in candidates:
        if packed_ids == target:
            return packed_kinds
    raise ValueError("noise labels: the packed documents do not reproduce the training rows")


# ---------------------------------------------------------------------------------------------- arms
class NoiseCounter(TrainerCallback, ExportableState):
    """Per optimizer step: trainable tokens, selected tokens, and both per noise kind (carried across a resume in
    the checkpoint's trainer state)."""

    def __init__(self, steps: list | None = None):
        self.steps = steps or []  # [valid per kind..., selected per kind...]
        self._current = np.zeros(2 * len(NOISE_KINDS), dtype=np.int64)

    def add(self, kinds, valid, selected) -> None:
        import torch

        n = len(NOISE_KINDS)
        kinds = kinds.long().clamp(0, n - 1)
        self._current[:n] += torch.bincount(kinds[valid], minlength=n).cpu().numpy()
        self._current[n:] += torch.bincount(kinds[valid & selected], minlength=n).cpu().numpy()

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(self._current.tolist())
        self._current[:] = 0

    def state(self) -> dict:
        return {"args": {"steps": self.steps}, "attributes": {}}

    def metrics(self) -> dict[str, float]:
        """``slm/pool_noise_share`` (noise among trainable tokens), ``slm/selected_noise_share`` (noise among
        selected tokens), both per kind, and the selected noise share per quarter of the run."""
        n = len(NOISE_KINDS)
        steps = np.array(self.steps, dtype=np.float64).reshape(-1, 2 * n)
        if not len(steps):
            return {}

        def shares(block):
            valid, chosen = block[:, :n].sum(0), block[:, n:].sum(0)
            return valid, chosen

        valid, chosen = shares(steps)
        out = {"slm/pool_noise_share": 1 - valid[0] / valid.sum(),
               "slm/selected_noise_share": 1 - chosen[0] / chosen.sum(),
               "slm/selected_share": chosen.sum() / valid.sum(),
               "slm/noise_kept": chosen[1:].sum() / max(valid[1:].sum(), 1),
               "slm/clean_kept": chosen[0] / max(valid[0], 1)}  # fmt: skip
        for i, kind in enumerate(INSERTED_KINDS, start=1):
            out[f"slm/pool_share/{kind}"] = valid[i] / valid.sum()
            out[f"slm/selected_share/{kind}"] = chosen[i] / chosen.sum()
        for q, block in enumerate(np.array_split(steps, 4), start=1):
            if len(block):
                _, c = shares(block)
                out[f"slm/selected_noise_share_q{q}"] = 1 - c[0] / c.sum()
        return {k: float(v) for k, v in out.items()}


def _noise_counting_trainer(counter: NoiseCounter):
    from ..trainer_ext.slm_trainer import SLMTrainer

    class NoiseCountingSLMTrainer(SLMTrainer):
        """SLMTrainer that counts, per noise kind, the trainable and the selected tokens of every step."""

        def _select(self, inputs, scores, valid):
            selected, total = super()._select(inputs, scores, valid)
            counter.add(inputs["noise_kind"], valid, selected)
            return selected, total

    return NoiseCountingSLMTrainer


@dataclass
class NoiseTrackedSLMArmConfig(SLMArmConfig):
    noise_column: str = field(
        default="noise_spans",
        metadata={"help": "Pool column of [start, end, kind] noise character spans (add_text_noise)."},
    )


@register_arm("slm_noise_tracked", NoiseTrackedSLMArmConfig,
              help="The slm arm on a pool with noise spans: also counts the noise tokens it selects.")
def slm_noise_tracked(study, config: NoiseTrackedSLMArmConfig, seed: int):
    """The built-in ``slm`` arm (same rows, reference and trainer) plus a ``noise_kind`` column on its rows and a
    trainer that counts trainable and selected tokens per noise kind (``extra_metrics``: :meth:`NoiseCounter.metrics`);
    ``info`` gets the reference's mean loss on clean and on noise tokens."""
    from ..trainer_ext.slm_trainer import SLMCollator

    if config.noise_column not in study.pool.column_names:
        raise ValueError(f"arm {config.name}: the pool has no {config.noise_column!r} column")
    setup = slm(study, config, seed)
    rows = setup.train_dataset

    def build():
        ids, kinds = document_noise_labels(study.tokenizer, study.pool["text"], study.pool[config.noise_column])
        labelled = rows.add_column("noise_kind", noise_rows(rows, ids, kinds, study.config.seq_length))
        kind = np.array(labelled["noise_kind"]).ravel()
        ref = np.array(labelled["ref_loss"], dtype=np.float64).ravel()
        ok = ~np.isnan(ref)
        ref_means = {f"ref_loss_{name}": float(ref[ok & (kind == i)].mean()) if (ok & (kind == i)).any() else None
                     for i, name in enumerate(NOISE_KINDS)}  # fmt: skip
        ref_means["ref_loss_noise"] = float(ref[ok & (kind > 0)].mean())
        return labelled, ref_means

    labelled, ref_means = study.cached(f"noise_rows/{config.name}", build)
    counter = NoiseCounter()
    setup.train_dataset = labelled
    setup.trainer_class = _noise_counting_trainer(counter)
    setup.data_collator = SLMCollator(pad_token_id=study.tokenizer.pad_token_id or 0,
                                      pad_columns=("ref_loss", "noise_kind"))  # fmt: skip
    setup.callbacks = [*setup.callbacks, counter]
    setup.extra_metrics = lambda study, model: counter.metrics()
    setup.info = {**setup.info, **ref_means}
    return setup


class SaveModelAt(TrainerCallback):
    """Saves the model (safetensors) at the given optimizer steps under ``<output_dir>/dynamics/step-<n>``."""

    def __init__(self, steps: Sequence[int]):
        self.steps = set(steps)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step in self.steps and state.is_world_process_zero:
            path = Path(args.output_dir) / "dynamics" / f"step-{state.global_step}"
            tmp = path.with_name(path.name + ".tmp")
            model.save_pretrained(tmp)
            if path.exists():
                import shutil

                shutil.rmtree(path)
            tmp.rename(path)


@dataclass
class CLMDynamicsArmConfig(ArmConfig):
    dynamics_checkpoints: int = field(default=5, metadata={"help": "Evenly spaced models saved for the dynamics."})
    dynamics_seeds: list[int] = field(default_factory=lambda: [0], metadata={"help": "Seeds whose models are saved."})


def dynamics_steps(max_steps: int, checkpoints: int) -> list[int]:
    """``checkpoints`` evenly spaced optimizer steps ending at ``max_steps``."""
    return sorted({max(1, round(max_steps * (i + 1) / checkpoints)) for i in range(checkpoints)})


@register_arm("clm_dynamics", CLMDynamicsArmConfig,
              help="The baseline arm (plain Trainer) that also saves evenly spaced models for token-loss dynamics.")
def clm_dynamics(study, config: CLMDynamicsArmConfig, seed: int):
    setup = baseline(study, config, seed)
    if seed in config.dynamics_seeds:
        setup.callbacks = [*setup.callbacks, SaveModelAt(dynamics_steps(study.config.max_steps, config.dynamics_checkpoints))]
    return setup


# ---------------------------------------------------------------------------------------------- replication
@dataclass
class SlmReplicationOptions:
    domain: str = field(default="math", metadata={"help": "World domain of the pool, the reference and the held-out set."})
    noise_share: float = field(default=0.25, metadata={"help": "Share of noise characters inserted in the pool."})
    noise_seed: int = field(default=0, metadata={"help": "Seed of the document split and of the noise."})
    max_chars: int = field(default=2000, metadata={"help": "Clean characters per document (pool, reference, base)."})
    chunk_chars: int = field(
        default=450,
        metadata={"help": "Reference, pool and dynamics documents are cut at line boundaries into pieces of at most "
                  "this many clean characters, so that a piece and its noise fit one packed row."},
    )
    base_documents: int = field(default=3000, metadata={"help": "General world documents of the base's pretraining."})
    base_steps: int = field(default=150, metadata={"help": "Optimizer steps of the base's pretraining from scratch."})
    base_learning_rate: float = field(default=2e-3, metadata={"help": "Peak learning rate of the base."})
    reference_documents: int = field(default=100, metadata={"help": "Clean domain documents of the reference."})
    reference_steps: int = field(default=50, metadata={"help": "Optimizer steps of the reference (from the base)."})
    reference_learning_rate: float = field(default=5e-4, metadata={"help": "Peak learning rate of the reference."})
    pool_documents: int = field(default=90, metadata={"help": "Domain documents of the noisy pool."})
    token_select_ratio: float = field(default=0.6, metadata={"help": "SLM's share of trained tokens (paper: 0.6)."})
    cross_tokenizer_reference: str | None = field(
        default="{model}", metadata={"help": "A reference with another tokenizer (empty: no such arm)."}
    )
    dynamics_checkpoints: int = field(default=5, metadata={"help": "CLM checkpoints of the token-loss dynamics."})
    dynamics_documents: int = field(default=24, metadata={"help": "Held-out noisy documents of the dynamics."})


PAPER_DYNAMICS = {"H->H": 0.11, "L->H": 0.12, "H->L": 0.26, "L->L": 0.51}


def split_lines(text: str, max_chars: int) -> list[str]:
    """``text`` cut at line boundaries into pieces of at most ``max_chars`` characters (a longer line is cut
    inside); blank pieces are dropped. Short pieces fit one packed row even with their noise, so that the rows
    (which keep only a document's first ``seq_length`` tokens) see the whole text."""
    return [p for p in greedy_pieces(text.splitlines(keepends=True), max_chars) if p.strip()]


def _words(texts: Sequence[str]) -> list[list[str]]:
    return [w for w in (re.findall(r"\S+", t) for t in texts) if len(w) >= 8]


def _noisy(texts: Sequence[str], share: float, seed: int, donors) -> tuple[list[str], list]:
    out, spans = [], []
    for i, text in enumerate(texts):
        noisy, s = add_text_noise(text, share, seed * 1_000_003 + i, donors)
        out.append(noisy)
        spans.append(s)
    return out, spans


def build_data(world_dir: Path, out: Path, o: SlmReplicationOptions) -> dict[str, Any]:
    """The base, reference, pool and dynamics documents (saved datasets under ``out``), split by a seeded shuffle:
    domain documents go to the reference, the pool or the base (never two of them); the dynamics documents are
    held-out domain documents with noise."""
    from datasets import Dataset, load_from_disk

    world = load_from_disk(str(world_dir / "pretrain"))
    train, heldout = world["train"], world["heldout"]
    rng = np.random.default_rng(o.noise_seed)
    domain = [i for i, d in enumerate(train["domain"]) if d == o.domain]
    other = [i for i, d in enumerate(train["domain"]) if d != o.domain]
    if len(domain) < o.reference_documents + o.pool_documents + 10:
        raise ValueError(f"domain {o.domain!r} has {len(domain)} documents: too few for the reference and the pool")
    domain = rng.permutation(domain).tolist()
    ref_ids = domain[: o.reference_documents]
    pool_ids = domain[o.reference_documents : o.reference_documents + o.pool_documents]
    rest = domain[o.reference_documents + o.pool_documents :]
    share_domain = len(domain) / len(train)
    n_domain = round(o.base_documents * share_domain)
    base_ids = sorted(rng.permutation(other)[: o.base_documents - n_domain].tolist() + rest[:n_domain])

    def clip(ids, chunk: bool = False):
        texts, domains = [], []
        for i in ids:
            text = train[i]["text"][: o.max_chars]
            pieces = split_lines(text, o.chunk_chars) if chunk else [text]
            texts += pieces
            domains += [train[i]["domain"]] * len(pieces)
        return texts, domains

    donors = _words(train.select(rng.permutation(other)[:500].tolist())["text"])
    paths = {}
    texts, domains = clip(base_ids)
    paths["base"] = _save(Dataset.from_dict({"text": texts, "domain": domains}), out / "base")
    texts, domains = clip(ref_ids, chunk=True)
    paths["reference"] = _save(Dataset.from_dict({"text": texts, "domain": domains}), out / "reference")
    texts, domains = clip(pool_ids, chunk=True)
    noisy, spans = _noisy(texts, o.noise_share, o.noise_seed, donors)
    paths["pool"] = _save(Dataset.from_dict({"text": noisy, "domain": domains, "noise_spans": spans}), out / "pool")
    held = [t[: o.max_chars] for t, d in zip(heldout["text"], heldout["domain"]) if d == o.domain]
    held = [p for i in rng.permutation(len(held))[: o.dynamics_documents] for p in split_lines(held[i], o.chunk_chars)]
    noisy_held, held_spans = _noisy(held, o.noise_share, o.noise_seed + 1, donors)
    paths["dynamics"] = _save(Dataset.from_dict({"text": noisy_held, "noise_spans": held_spans}), out / "dynamics")
    chars = sum(len(t) for t in noisy)
    noise_chars = sum(e - s for doc in spans for s, e, _ in doc)
    return {"paths": paths, "pool_noise_char_share": noise_chars / chars, "pool_chars": chars,
            "base_documents": len(base_ids), "reference_documents": len(ref_ids), "pool_documents": len(pool_ids),
            "pool_pieces": len(noisy), "dynamics_pieces": len(noisy_held)}  # fmt: skip


def _save(dataset, path: Path) -> str:
    tmp = path.with_name(path.name + ".tmp")
    dataset.save_to_disk(str(tmp))
    if path.exists():
        import shutil

        shutil.rmtree(path)
    tmp.rename(path)
    return str(path)


def _trained_model(ctx: ReplicationContext, name: str, **overrides) -> dict[str, Any]:
    """Train one model with a one-arm, one-seed study (``save_models``) and return its folder and metrics."""
    config = ctx.study_config(name, arms=["baseline"], save_models=True, tasks=[], **overrides)
    start = time.perf_counter()
    results = ctx.run_study(config)
    run = results["arms"]["baseline"]["runs"][0]
    model = Path(config.output_dir) / "runs" / "baseline" / f"seed{run['seed']}" / "model"
    return {"model": str(model), "metrics": run["metrics"], "train_seconds": run["train_seconds"],
            "update_tokens": run["update_tokens"], "wall_seconds": time.perf_counter() - start}  # fmt: skip


def token_dynamics(ctx: ReplicationContext, compare_dir: Path, clm_arm: str, seed: int, data: dict, o) -> dict:
    """Token-loss dynamics of the CLM run ``seed`` on the held-out noisy rows, by clean / noise token."""
    from datasets import load_from_disk

    from ..loading import load_tokenizer
    from ..packing import pack_documents
    from ..slm.token_dynamics import CLASSES, dynamics_shares, plot_token_dynamics, token_loss_dynamics

    run_dir = compare_dir / "runs" / clm_arm / f"seed{seed}" / "dynamics"
    steps = sorted(int(p.name.split("-")[1]) for p in run_dir.glob("step-*") if p.is_dir())
    if len(steps) < 2:
        raise ValueError(f"token dynamics: fewer than 2 saved models under {run_dir}")
    tokenizer = load_tokenizer(ctx.study["tokenizer_name_or_path"])
    docs = load_from_disk(data["paths"]["dynamics"])
    ids, kinds = document_noise_labels(tokenizer, docs["text"], docs["noise_spans"])
    seq = ctx.study.get("seq_length", 256)
    packed = pack_documents(ids, seq, overflow="discard", columns={"noise_kind": kinds})
    from datasets import Dataset

    rows = Dataset.from_dict({k: packed[k] for k in ("input_ids", "labels", "position_ids") if k in packed})
    result = token_loss_dynamics([run_dir / f"step-{s}" for s in steps], rows, batch_size=8,
                                 pad_token_id=tokenizer.pad_token_id or 0, device="cpu")  # fmt: skip
    # the trainable tokens in row order: labels != -100 and not a document's first position
    kind_flat = []
    for r in range(len(rows)):
        labels = packed["labels"][r] if "labels" in packed else packed["input_ids"][r]
        for t in range(1, len(packed["input_ids"][r])):
            if labels[t] != -100 and packed["position_ids"][r][t] != 0:
                kind_flat.append(packed["noise_kind"][r][t])
    kind_flat = np.array(kind_flat)
    classes = result["classes"]
    split = {}
    if len(kind_flat) == len(classes):
        split = {"clean": dynamics_shares(classes[kind_flat == 0]), "noise": dynamics_shares(classes[kind_flat > 0])}
        split["noise_share_by_class"] = {c: float((kind_flat[classes == i] > 0).mean()) if (classes == i).any() else 0.0
                                         for i, c in enumerate(CLASSES)}  # fmt: skip
    else:
        logger.warning(f"token dynamics: {len(kind_flat)} labels for {len(classes)} tokens; no clean/noise split")
    png = ctx.output_dir / "token_dynamics.png"
    plot_token_dynamics(result, png, [f"step {s}" for s in steps])
    return {"steps": steps, "tokens": int(len(classes)), "shares": result["shares"], **split,
            "png": png.read_bytes().hex()}  # fmt: skip


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


@register_replication("slm", SlmReplicationOptions)
def replicate_slm(ctx: ReplicationContext) -> Section:
    """RHO-1 SLM (arXiv 2404.07965, sections 2.2-3) as continual pretraining of a small base on a noisy domain pool;
    see the module docstring for the design and what is scaled down."""
    o: SlmReplicationOptions = ctx.options
    data = ctx.step("data", lambda: build_data(Path(ctx.world_dir), ctx.output_dir / "data", o))
    base = ctx.step("base_model", lambda: _trained_model(
        ctx, "base", dataset_name_or_path=data["paths"]["base"], from_scratch=True, model_name_or_path=None,
        max_steps=o.base_steps, learning_rate=o.base_learning_rate, seeds=[0],
        heldout_name_or_path=f"{ctx.world_dir}/pretrain", heldout_split="heldout"))  # fmt: skip
    reference = ctx.step("reference_model", lambda: _trained_model(
        ctx, "reference", dataset_name_or_path=data["paths"]["reference"], from_scratch=False,
        model_name_or_path=base["model"], max_steps=o.reference_steps, learning_rate=o.reference_learning_rate,
        seeds=[0]))  # fmt: skip
    arms: list[dict] = [
        {"type": "clm_dynamics", "name": "clm", "dynamics_checkpoints": o.dynamics_checkpoints},
        {"type": "slm_noise_tracked", "name": "slm_reference", "token_select_ratio": o.token_select_ratio,
         "reference_model_name_or_path": reference["model"]},
    ]  # fmt: skip
    if o.cross_tokenizer_reference:
        arms.append({"type": "slm_noise_tracked", "name": "slm_smollm2", "token_select_ratio": o.token_select_ratio,
                     "reference_model_name_or_path": o.cross_tokenizer_reference})  # fmt: skip
    config = ctx.study_config("compare", dataset_name_or_path=data["paths"]["pool"], from_scratch=False,
                              model_name_or_path=base["model"], arms=arms, baseline="clm")  # fmt: skip
    start = time.perf_counter()
    results = ctx.run_study(config)
    compare_seconds = time.perf_counter() - start
    seed0 = config.seeds[0]
    dynamics = ctx.step("token_dynamics", lambda: token_dynamics(ctx, Path(config.output_dir), "clm", seed0, data, o))
    figure = ctx.figure("slm_token_dynamics", bytes.fromhex(dynamics["png"]))

    rows = ctx.compare_rows(results, metric="heldout_bpb", paper="SLM below CLM (RHO-1 Table 1: +16.4% avg. math "
                            "few-shot accuracy, 1B)")  # fmt: skip
    tasks = sorted({m for arm in results["arms"].values() for m in arm["metrics"] if m.startswith("task/")})
    for metric in tasks:
        rows += ctx.compare_rows(results, metric=metric, paper="SLM better than CLM on the domain's tasks (Table 1)")
    arm_results = results["arms"]
    for name in arm_results:
        if name == "clm":
            continue
        m = arm_results[name]["metrics"]
        sel, pool = m.get("slm/selected_noise_share"), m.get("slm/pool_noise_share")
        if sel and pool:
            rows.append(Row(
                measure="noise share of selected tokens (pool share)", arm=name,
                paper="below the pool's (SLM trains on useful tokens, not noisy ones; 2.1-2.2)",
                ours=f"{_pct(sel['mean'])} ({_pct(pool['mean'])})",
                interval=f"sd {_pct(sel['sd'])} over {len(arm_results[name]['seeds'])} seeds",
                verdict="below the pool" if sel["mean"] < pool["mean"] else "not below the pool",
            ))  # fmt: skip
    shares = dynamics["shares"]
    rows.append(Row(
        measure="CLM token dynamics H->H / L->H / H->L / L->L", arm="clm",
        paper=" / ".join(f"{PAPER_DYNAMICS[c]:.0%}" for c in PAPER_DYNAMICS),
        ours=" / ".join(_pct(shares[c]) for c in PAPER_DYNAMICS), interval=f"seed {seed0}, {dynamics['tokens']} tokens",
        verdict="descriptive",
    ))  # fmt: skip

    setting = (
        f"Continual pretraining in the world's **{o.domain}** domain. Base: Llama "
        f"{ctx.study.get('model_config', {}).get('num_hidden_layers', '?')}x{ctx.study.get('model_config', {}).get('hidden_size', '?')}"
        f" (8k world BPE) pretrained from scratch for {o.base_steps} steps ({base['update_tokens']:,} tokens) on "
        f"{data['base_documents']} general world documents. Reference: the base + {o.reference_steps} steps "
        f"({reference['update_tokens']:,} tokens) on {data['reference_documents']} clean {o.domain} documents. Pool: "
        f"{data['pool_documents']} other {o.domain} documents (cut into {data['pool_pieces']} pieces of at most "
        f"{o.chunk_chars} characters) with {_pct(data['pool_noise_char_share'])} noise "
        f"characters inserted (boilerplate, repeated lines, shuffled spans, markup; seeded). Arms at "
        f"{config.update_tokens:,} update tokens, seeds {config.seeds}, from the base: CLM (plain Trainer), SLM "
        f"{o.token_select_ratio:.0%} with the reference's precomputed losses, SLM {o.token_select_ratio:.0%} with "
        f"SmolLM2-135M-Instruct as a cross-tokenizer reference. Held-out: {o.domain} documents of the world's "
        "held-out split (clean, never trained on)."
    )
    body = [_arm_table(results), "", _noise_table(arm_results), "", _dynamics_table(dynamics), "",
            f"![token dynamics]({figure})", "", _reference_table(base, reference, arm_results)]  # fmt: skip
    checks = "\n" + _checks(results, arm_results)
    base_train = arm_results["clm"]["cost"]["train_seconds_per_seed"]
    cost_lines = [f"- base: {base['train_seconds']:.0f} s training ({base['update_tokens']:,} tokens); reference: "
                  f"{reference['train_seconds']:.0f} s ({reference['update_tokens']:,} tokens)",
                  f"- compare study (every arm and seed, evaluation included): {compare_seconds:.0f} s in this process "
                  "(0 when reused)"]  # fmt: skip
    for name, arm in arm_results.items():
        c = arm["cost"]
        cost_lines.append(
            f"- {name}: {c['train_seconds_per_seed']:.0f} s training per seed, selection {c['selection_seconds']:.0f} s "
            f"({c['selection_tokens']:,} reference tokens), ratio to CLM training {c['ratio_to_baseline_training']:.2f}x"
        )
    cost_lines.append(f"- CLM training per seed: {base_train:.0f} s")
    return Section(setting=setting, rows=rows, body="\n".join(body), checks=checks, cost="\n" + "\n".join(cost_lines) + "\n\n")


def _arm_table(results: dict) -> str:
    lines = ["| arm | held-out clean bpb (mean ± sd) | Δ vs CLM [95% interval] | verdict | smallest detectable |",
             "|---|---|---|---|---|"]  # fmt: skip
    for name, arm in results["arms"].items():
        m = arm["metrics"].get("heldout_bpb")
        comp = arm["vs_baseline"].get("heldout_bpb")
        if comp:
            ci = comp.get("ci")
            diff = f"{comp['difference']:+.4f}" + (f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "")
            mde = comp.get("detectable_effect")
            lines.append(f"| {name} | {m['mean']:.4f} ± {m['sd']:.4f} | {diff} | {comp['verdict']} | "
                         f"{'-' if mde is None else f'{mde:.4f}'} |")  # fmt: skip
        else:
            lines.append(f"| {name} | {m['mean']:.4f} ± {m['sd']:.4f} | (baseline) | | |")
    return "\n".join(lines)


def _noise_table(arms: dict) -> str:
    lines = ["| arm | noise in trained-on tokens | noise in selected | noise kept | clean kept | "
             + " | ".join(f"{k} pool / selected" for k in INSERTED_KINDS) + " | selected noise by quarter |",
             "|---|---|---|---|---|" + "---|" * len(INSERTED_KINDS) + "---|"]  # fmt: skip
    for name, arm in arms.items():
        m = {k: v["mean"] for k, v in arm["metrics"].items()}
        if "slm/selected_noise_share" not in m:
            continue
        kinds = " | ".join(f"{_pct(m.get(f'slm/pool_share/{k}'))} / {_pct(m.get(f'slm/selected_share/{k}'))}"
                           for k in INSERTED_KINDS)  # fmt: skip
        quarters = " ".join(_pct(m.get(f"slm/selected_noise_share_q{q}")) for q in range(1, 5))
        lines.append(f"| {name} | {_pct(m['slm/pool_noise_share'])} | {_pct(m['slm/selected_noise_share'])} | "
                     f"{_pct(m['slm/noise_kept'])} | {_pct(m['slm/clean_kept'])} | {kinds} | {quarters} |")  # fmt: skip
    return "Noise among the tokens (means over seeds; RHO-1 selects 60% of all tokens, so a selector blind to noise "\
        "keeps 60% of the noise and of the clean tokens):\n\n" + "\n".join(lines)


def _dynamics_table(d: dict) -> str:
    from ..slm.token_dynamics import CLASSES

    head = "| class | all tokens | paper (1B) |" + (" clean tokens | noise tokens | noise share of the class |"
                                                   if "clean" in d else "")  # fmt: skip
    lines = [f"Token-loss dynamics of the CLM run (seed 0, models at steps {d['steps']}, {d['tokens']} trainable "
             "tokens of held-out noisy rows; paper 2.1 rule: delta = slope x n, threshold 0.2):", "", head,
             "|---|---|---|" + ("---|---|---|" if "clean" in d else "")]  # fmt: skip
    for c in CLASSES:
        line = f"| {c} | {_pct(d['shares'][c])} | {PAPER_DYNAMICS[c]:.0%} |"
        if "clean" in d:
            line += f" {_pct(d['clean'][c])} | {_pct(d['noise'][c])} | {_pct(d['noise_share_by_class'][c])} |"
        lines.append(line)
    return "\n".join(lines)


def _reference_table(base: dict, reference: dict, arms: dict) -> str:
    lines = ["| model | mean loss on clean pool tokens | mean loss on noise pool tokens |", "|---|---|---|"]
    for name, arm in arms.items():
        info = arm["runs"][0].get("info", {}) if arm.get("runs") else {}
        if "ref_loss_noise" in info:
            lines.append(f"| reference of {name} | {info['ref_loss_clean']:.3f} | {info['ref_loss_noise']:.3f} |")
    return (f"Base held-out clean bpb: {base['metrics'].get('heldout_bpb', float('nan')):.4f}; "
            f"reference held-out clean bpb: {reference['metrics'].get('heldout_bpb', float('nan')):.4f}.\n\n"
            + "\n".join(lines))  # fmt: skip


def _checks(results: dict, arms: dict) -> str:
    out = []
    for name, arm in arms.items():
        comp = arm["vs_baseline"].get("heldout_bpb")
        if not comp:
            continue
        m = {k: v["mean"] for k, v in arm["metrics"].items()}
        verdict = comp.get("verdict")
        info = arm["runs"][0].get("info", {})
        ref = (f"reference loss {info.get('ref_loss_clean', float('nan')):.2f} nats on clean vs "
               f"{info.get('ref_loss_noise', float('nan')):.2f} on noise tokens")  # fmt: skip
        sel = (f"selected noise {_pct(m.get('slm/selected_noise_share'))} vs pool {_pct(m.get('slm/pool_noise_share'))},"
               f" selected share {_pct(m.get('slm/selected_share'))}")  # fmt: skip
        if verdict == "better":
            out.append(f"- {name}: in the paper's direction; {sel}; {ref}.")
        elif verdict == "worse":
            out.append(f"- {name}: against the paper. Checked: {sel} (the selection's share is exact, so the loss "
                       f"is the mean over the selected tokens only); {ref}; every arm starts from the same base "
                       "weights (init checksum) and trains the same update tokens.")  # fmt: skip
        else:
            mde = comp.get("detectable_effect")
            needed = None
            if comp.get("sd") and comp["difference"]:
                from ..compare.stats import seeds_needed

                needed = seeds_needed(comp["sd"], abs(comp["difference"]))
            budget = (f"; about {needed} seeds at this budget would detect the observed difference"
                      if needed else "")  # fmt: skip
            out.append(f"- {name}: undetermined (difference {comp['difference']:+.4f} bpb); smallest detectable "
                       f"difference {'-' if mde is None else f'{mde:.4f}'} bpb with {comp['n']} seeds{budget}. "
                       f"{sel}; {ref}.")  # fmt: skip
    return "\n".join(out)


__all__ = [
    "NOISE_KINDS",
    "CLMDynamicsArmConfig",
    "NoiseCounter",
    "NoiseTrackedSLMArmConfig",
    "SlmReplicationOptions",
    "add_text_noise",
    "document_noise_labels",
    "dynamics_steps",
    "noise_rows",
    "replicate_slm",
    "token_noise_kinds",
]
