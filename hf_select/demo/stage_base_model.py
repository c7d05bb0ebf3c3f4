"""Demo stage 2: train the tiny Llama-style base model whose retrieval heads the later stages use.

Retrieval (induction / lookup) heads do not emerge in a ~2M-parameter model from a few million tokens of ordinary
text, nor from ordinary text mixed with lookup documents (the first recipe of this stage: 1500 steps, 2.3M tokens,
90% lookup rows -- proxy sample accuracy 0.00, and a sentence repeated in context was copied at 0.21 token
accuracy). The curriculum that made them emerge on 2 CPU cores (:mod:`hf_select.dataset_scripts.retrieval_mix`):

1. copy phases: rows of ``span + filler + span`` pieces cut from the corpus token stream, the loss on the filler
   and on the repeat only, the copy distance growing phase by phase (16, 48, 80 tokens). Short distances make the
   induction circuit form quickly (its formation time grows with the distance to search); the later phases
   stretch it. A pure random-token curriculum at distances <= 10 copied random tokens but not natural text.
2. lookup phases: multi-query lookup documents in the proxy-task format (90% of the rows; the rest copy rows at
   the longest distance) whose answers alone carry the loss: first with keys queried repeatedly, then a final
   phase with every key queried once (copying an earlier answer line is then impossible, as in the proxy task)
   while the learning rate decays to zero. Values of at most 8 tokens put more lookups in each row.

Measured while building this recipe (4 x 128 model, 2 threads, teacher-forced proxy at 256 tokens, 6-character
keys, values <= 8 tokens, ~7.5 pairs, chance 0.13; "first token" = the key lookup, the later answer tokens can
be copied once the value's start is found):

- the layout of the proxy task decides whether the first answer token can be copied at all (see
  :mod:`hf_select.dataset_scripts.proxy_task`): 240 lookup steps after the same copy phases gave first-token
  accuracy 0.13 with ``answer: <value>`` and 0.75 with the value on its own line.
- the share of lookup rows decides how fast the lookup forms: with half lookup / half copy rows the answers'
  first tokens are ~3% of the labelled tokens of a batch; from the same checkpoint (first token 0.11), 160 more
  steps reached first token 0.19 / sample 0.07 at a 0.5 share and 0.77 / 0.50 at a 0.9 share.
- short training values (<= 8 tokens, more queries per row) beat <= 12: 160 steps from the same checkpoint, first
  token 0.58 vs 0.26.
- the lookup appears abruptly (first token 0.2 -> 0.75 within 80 steps) after a stretch of no progress whose
  length varied between runs of the same recipe; the copy phases must go far enough first (600 copy steps
  then 420 lookup steps, the old layout: token accuracy 0.22).

The full default (750 copy + 480 + 80 lookup steps, 4.4M tokens, ~11 min on 2 cores) measured in two fresh-clone
runs (identical, the stage is deterministic on CPU): proxy sample accuracy 0.63, first token 0.91, all answer
tokens 0.87, chance 0.13.

The proxy evaluation uses shorter keys and values than the paper (32 characters, ~30 tokens) so that three
demonstrations and several pairs fit in the 256-token context the model is trained on; both are recorded in the
result, which the retrieval-heads stage reads.
"""

from __future__ import annotations

import base64
import html
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from transformers.utils import logging

from .context import DemoContext

TITLE = "Tiny base model (Llama-style, trained here)"
logger = logging.get_logger("hf_select.demo")
INFO_FILE = "hf_select_base_model.json"


@dataclass
class BaseModelSettings:
    """Size, curriculum and budget of the base model (full: 1.9M parameters, ~11 min on 2 cores)."""

    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 4
    num_attention_heads: int = 4  # 4 heads of 32 dims: faster than 8 x 16 on CPU, no worse at retrieval
    num_key_value_heads: int = 4
    # phase 1 -- copy curriculum: span + filler + span rows, one Trainer run per copy distance
    copy_steps: int = 750
    copy_batch_size: int = 32
    copy_seq_length: int = 96
    copy_span: tuple[int, int] = (4, 12)
    copy_distances: tuple[int, ...] = (16, 48, 80)
    copy_learning_rate: float = 3e-3
    # phase 2 -- lookups: answer-labelled multi-query documents mixed with copy rows at the longest distance;
    # first with every key queried as often as fits (copying an earlier answer line is allowed: it trains the
    # copying of values into answer lines), then a final phase with every key queried once (only the lookup
    # answers) while the learning rate decays linearly to zero
    lookup_repeated_steps: int = 480
    lookup_steps: int = 80
    lookup_batch_size: int = 16
    seq_length: int = 256  # rows of the lookup phase = the proxy context
    lookup_share: float = 0.9
    lookup_learning_rate: float = 2e-3
    train_key_lengths: tuple[int, ...] = (4, 5, 6, 8)
    train_max_value_tokens: int = 8  # short values: more lookups per row (12: first-token lookup far slower)
    stream_documents: int = 4000  # corpus documents whose tokens feed the copy rows
    # the proxy evaluation (and the retrieval-heads stage, which reads these from the result)
    proxy_samples: int = 100
    proxy_context_tokens: int = 256
    proxy_key_length: int = 6  # paper: 32 (needs a context far longer than this model is trained on)
    max_value_tokens: int = 8  # paper: ~30; short values leave room for ~8 pairs + 3 demos in 256 tokens


def settings_for(ctx: DemoContext) -> BaseModelSettings:
    if ctx.quick:  # ~1 min on 2 idle cores: a pipeline check, too short for the heads to emerge
        return BaseModelSettings(
            hidden_size=64, intermediate_size=192, num_hidden_layers=2, copy_steps=90, copy_batch_size=16,
            copy_distances=(16, 48), lookup_repeated_steps=15, lookup_steps=15, lookup_batch_size=8, stream_documents=500, proxy_samples=30,
        )  # fmt: skip
    return BaseModelSettings()


def _sentences(dataset, limit: int) -> list[str]:
    from ..dataset_scripts.demo_world import sample_sentences

    out = sample_sentences(dataset, limit=limit, domain="prose")
    if len(out) < 50:  # a world without enough prose: take sentences of any domain
        out += [s for d in ("literature", "math", "code") for s in sample_sentences(dataset, limit, d)]
    return out


def _token_stream(ctx: DemoContext, tokenizer, settings: BaseModelSettings) -> list[int]:
    from .students import load_pretrain_split, tokenize_documents

    train = load_pretrain_split(ctx, "train")
    sample = train.shuffle(seed=ctx.seed).select(range(min(len(train), settings.stream_documents)))
    return [t for ids in tokenize_documents(sample, tokenizer)["input_ids"] for t in ids[1:-1]]


@dataclass
class Phase:
    """One curriculum phase: one HF ``Trainer`` run over ``rows`` (``input_ids, labels, position_ids``)."""

    name: str
    rows: Any
    steps: int
    batch_size: int
    learning_rate: float
    lr_scheduler_type: str = "constant_with_warmup"


def training_phases(ctx: DemoContext, tokenizer, settings: BaseModelSettings) -> list[Phase]:
    """The curriculum: one copy phase per distance, then the lookup phases (keys queried repeatedly, then once
    while the learning rate decays to zero)."""
    from datasets import Dataset

    from ..dataset_scripts.proxy_task import clean_values
    from ..dataset_scripts.retrieval_mix import copy_rows
    from .students import load_pretrain_split

    stream = _token_stream(ctx, tokenizer, settings)
    phases = []
    steps = settings.copy_steps // len(settings.copy_distances)
    for i, distance in enumerate(settings.copy_distances):
        rows = copy_rows(
            stream, steps * settings.copy_batch_size, settings.copy_seq_length, distance, settings.copy_span,
            seed=ctx.seed + i,
        )  # fmt: skip
        phases.append(
            Phase(f"copy-d{distance}", Dataset.from_list(rows), steps, settings.copy_batch_size,
                  settings.copy_learning_rate)
        )  # fmt: skip
    values = clean_values(
        _sentences(load_pretrain_split(ctx, "train"), 40000),
        tokenizer,
        max_value_tokens=settings.train_max_value_tokens,
    )
    lookups = (
        ("lookup-repeated", settings.lookup_repeated_steps, None, "constant_with_warmup"),
        ("lookup", settings.lookup_steps, 1, "linear"),
    )
    for i, (name, steps, rounds, schedule) in enumerate(lookups):
        if steps:
            rows = _lookup_rows(tokenizer, settings, stream, values, steps, rounds, seed=ctx.seed + 100 + i)
            phases.append(
                Phase(name, rows, steps, settings.lookup_batch_size, settings.lookup_learning_rate, schedule)
            )
    return phases


def _lookup_rows(tokenizer, settings: BaseModelSettings, stream, values, steps: int, rounds, seed: int):
    """``lookup_share`` answer-labelled lookup rows (keys queried ``rounds`` times, ``None``: as often as fit),
    the rest copy rows at the longest distance; shuffled."""
    from datasets import Dataset

    from ..dataset_scripts.retrieval_mix import answer_labelled_row, copy_rows, kv_lookup_documents

    n_rows = steps * settings.lookup_batch_size
    n_lookup = round(settings.lookup_share * n_rows)
    docs = kv_lookup_documents(
        values, tokenizer, n_lookup, settings.seq_length - 4, key_lengths=settings.train_key_lengths,
        seed=seed, queries=64, rounds=rounds,
    )  # fmt: skip
    rows = [answer_labelled_row(doc, tokenizer, settings.seq_length) for doc in docs]
    rows += copy_rows(
        stream, n_rows - n_lookup, settings.seq_length, max(settings.copy_distances), settings.copy_span,
        seed=seed,
    )  # fmt: skip
    return Dataset.from_list(rows).shuffle(seed=seed)


def new_model(tokenizer, settings: BaseModelSettings):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=settings.hidden_size,
        intermediate_size=settings.intermediate_size,
        num_hidden_layers=settings.num_hidden_layers,
        num_attention_heads=settings.num_attention_heads,
        num_key_value_heads=settings.num_key_value_heads,
        max_position_embeddings=max(1024, settings.seq_length),
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def proxy_values(ctx: DemoContext, tokenizer, max_value_tokens: int) -> list[str]:
    """Proxy-task values the base model never trained on: held-out prose sentences of at most
    ``max_value_tokens`` tokens (a few train sentences added when the held-out split is tiny)."""
    from ..dataset_scripts.proxy_task import clean_values
    from .students import load_pretrain_split

    values = clean_values(
        _sentences(load_pretrain_split(ctx, "heldout"), 5000), tokenizer, max_value_tokens=max_value_tokens
    )
    if len(values) < 40:
        train = load_pretrain_split(ctx, "train")
        more = _sentences(train.select(range(min(200, len(train)))), 2000)
        values += clean_values(more, tokenizer, max_value_tokens=max_value_tokens)
    return values


def proxy_evaluation(ctx: DemoContext, model, tokenizer, settings: BaseModelSettings) -> dict[str, float]:
    """Proxy-task accuracy on held-out values and chance (copying a uniformly random value of the context)."""
    from ..dataset_scripts.proxy_task import build_proxy_samples
    from ..proxy_accuracy import proxy_task_accuracy

    values = proxy_values(ctx, tokenizer, settings.max_value_tokens)
    samples = build_proxy_samples(
        values, tokenizer, num_samples=settings.proxy_samples, context_tokens=settings.proxy_context_tokens,
        key_length=settings.proxy_key_length, seed=ctx.seed + 7919,
    )  # fmt: skip
    model.eval()
    accuracy = proxy_task_accuracy(model, tokenizer, samples)
    chance = sum(1 / s["num_pairs"] for s in samples) / len(samples)
    return {
        **accuracy,
        "chance_sample_accuracy": chance,
        "mean_pairs": sum(s["num_pairs"] for s in samples) / len(samples),
        "samples": len(samples),
        "context_tokens": settings.proxy_context_tokens,
        "key_length": settings.proxy_key_length,
    }


def train_phases(model, tokenizer, phases: list[Phase], output_dir, seed: int) -> tuple[list, int, int]:
    """Train ``model`` through the phases, one ``LabelledLossTrainer`` run each (AdamW, beta2 0.95, warmup then
    the phase's schedule). The curriculum leaves 15-75% of the positions unlabelled, so the LM head applied at
    labelled positions only saves a good part of each step.

    Returns the loss curve over the global step count, the number of tokens seen and of labelled tokens.
    """
    from transformers import TrainingArguments

    from ..packing import PackedCollator
    from ..trainer_ext.labelled_loss_trainer import LabelledLossTrainer

    losses, offset, tokens, labelled = [], 0, 0, 0
    for phase in phases:
        logger.warning(f"[demo] base model phase {phase.name}: {phase.steps} steps x {phase.batch_size} rows")
        args = TrainingArguments(
            output_dir=str(output_dir / phase.name),
            per_device_train_batch_size=phase.batch_size,
            max_steps=phase.steps,
            learning_rate=phase.learning_rate,
            warmup_steps=max(1, phase.steps // 20) if phase.lr_scheduler_type.startswith("constant") else 0,
            lr_scheduler_type=phase.lr_scheduler_type,
            weight_decay=0.01,
            adam_beta2=0.95,
            logging_steps=max(1, phase.steps // 10),
            save_strategy="no",
            report_to="none",
            seed=seed,
            use_cpu=True,
            dataloader_num_workers=0,
            remove_unused_columns=False,
        )
        trainer = LabelledLossTrainer(
            model=model,
            args=args,
            train_dataset=phase.rows,
            data_collator=PackedCollator(pad_token_id=tokenizer.pad_token_id),
        )
        trainer.train()
        losses += [(offset + h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h]
        offset += phase.steps
        seen = phase.rows.select(range(min(len(phase.rows), phase.steps * phase.batch_size)))
        tokens += sum(len(r) for r in seen["input_ids"])
        labelled += sum(sum(1 for x in r if x != -100) for r in seen["labels"])
    return losses, tokens, labelled


def run(ctx: DemoContext) -> dict[str, Any]:
    from .students import load_tokenizer

    info_path = ctx.base_model_dir / INFO_FILE
    if info_path.exists():
        logger.warning(f"[demo] reusing base model {ctx.base_model_dir}")
        return json.loads(info_path.read_text())
    settings = settings_for(ctx)
    tokenizer = load_tokenizer(ctx)
    phases = training_phases(ctx, tokenizer, settings)
    model = new_model(tokenizer, settings)
    out = ctx.stage_dir("base_model")
    start = time.perf_counter()
    losses, tokens, labelled = train_phases(model, tokenizer, phases, out / "trainer", ctx.seed)
    seconds = time.perf_counter() - start
    proxy = proxy_evaluation(ctx, model, tokenizer, settings)
    info = {
        "path": str(ctx.base_model_dir),
        "parameters": sum(p.numel() for p in model.parameters()),
        "settings": asdict(settings),
        "phases": [
            {
                "name": p.name,
                "steps": p.steps,
                "batch_size": p.batch_size,
                "rows": len(p.rows),
                "learning_rate": p.learning_rate,
                "schedule": p.lr_scheduler_type,
            }
            for p in phases
        ],  # fmt: skip
        "training_rows": sum(min(len(p.rows), p.steps * p.batch_size) for p in phases),
        "training_tokens": tokens,
        "trained_label_tokens": labelled,
        "train_seconds": round(seconds, 1),
        "tokens_per_second": round(tokens / max(seconds, 1e-9)),
        "final_loss": losses[-1][1] if losses else None,
        "loss_curve": losses,
        "proxy": proxy,
        # read by the retrieval-heads stage: detect the heads at the context / key length the model handles
        "proxy_context_tokens": settings.proxy_context_tokens,
        "proxy_key_length": settings.proxy_key_length,
        "proxy_max_value_tokens": settings.max_value_tokens,
    }
    model.save_pretrained(ctx.base_model_dir)
    tokenizer.save_pretrained(ctx.base_model_dir)
    _plot_losses(losses, out / "loss_curve.png")
    info_path.write_text(json.dumps(info, indent=2))
    logger.warning(
        f"[demo] base model: {info['parameters'] / 1e6:.2f}M params, {tokens / 1e6:.2f}M tokens, "
        f"{seconds:.0f}s, loss {info['final_loss']}, proxy sample accuracy {proxy['sample_accuracy']:.2f} "
        f"(token {proxy['token_accuracy']:.2f}; chance {proxy['chance_sample_accuracy']:.3f})"
    )
    return info


def _plot_losses(losses, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    if losses:
        ax.plot(*zip(*losses))
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("base model")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def report_html(ctx: DemoContext, result: dict[str, Any]) -> str:
    proxy = result["proxy"]
    plot = ctx.stage_dir("base_model") / "loss_curve.png"
    if not plot.exists():
        _plot_losses(result.get("loss_curve", []), plot)
    image = base64.b64encode(plot.read_bytes()).decode()
    s = result["settings"]
    phases = [(p["name"], p["steps"], p["batch_size"]) for p in result.get("phases", [])]
    return (
        f"<p>{result['parameters'] / 1e6:.2f}M parameters ({s['num_hidden_layers']} layers x "
        f"{s['num_attention_heads']} heads, hidden {s['hidden_size']}), {result['training_tokens'] / 1e6:.2f}M "
        f"training tokens in {result['train_seconds']}s ({result['tokens_per_second']} tokens/s), final loss "
        f"{result['final_loss']:.3f}. Saved at <code>{html.escape(result['path'])}</code>.</p>"
        f"<p><b>Proxy retrieval task</b> ({proxy['samples']} samples, {proxy['context_tokens']} tokens, "
        f"{proxy['key_length']}-character keys, ~{proxy['mean_pairs']:.1f} pairs): sample accuracy "
        f"<b>{proxy['sample_accuracy']:.3f}</b>, first answer token (the key lookup) "
        f"{proxy.get('first_token_accuracy', float('nan')):.3f}, all answer tokens {proxy['token_accuracy']:.3f}; "
        f"chance (copying a random value of the context) {proxy['chance_sample_accuracy']:.3f}.</p>"
        f"<p>Curriculum: {html.escape(', '.join(f'{p[0]} ({p[1]} steps x {p[2]})' for p in phases))}.</p>"
        f"<img src='data:image/png;base64,{image}' alt='base model loss curve'>"
    )
