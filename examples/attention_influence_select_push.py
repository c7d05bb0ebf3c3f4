"""AttentionInfluence (arXiv 2505.07293): detect retrieval heads, score documents, keep the top fraction per
domain, and publish the scored dataset in the Hub layout (FineWeb-Edu style) to a local folder or the Hub.

    python examples/attention_influence_select_push.py \\
        --model_name_or_path HuggingFaceTB/SmolLM2-360M \\
        --dataset_name_or_path HuggingFaceTB/smollm-corpus --dataset_config fineweb-edu-dedup --split train \\
        --max_samples 10000 --local_dir scored_hub/

With ``--heads_file heads.json`` (from ``hf-select detect-heads``) the detection step is skipped. With
``--repo_id me/scores`` instead of ``--local_dir`` the same files go to the Hub in one commit (token from
``HF_TOKEN``). Read the result back with ``load_dataset(local_dir, "int_score_ge_8")``.
See docs/attention_influence.md for the method, its defaults and its traps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import HfArgumentParser


@dataclass
class ScriptArguments:
    model_name_or_path: str = field(
        metadata={"help": "Selector: a small pretrained base model (Hub id or folder)."}
    )
    dataset_name_or_path: str = field(metadata={"help": "Documents to score (Hub id, folder or data file)."})
    dataset_config: str | None = field(default=None, metadata={"help": "Dataset configuration name."})
    split: str = field(default="train", metadata={"help": "Split to score."})
    text_column: str = field(default="text", metadata={"help": "Column holding the documents."})
    domain_column: str | None = field(
        default="domain",
        metadata={"help": "Select per value of this column (scores compare only within one)."},
    )
    max_samples: int | None = field(default=None, metadata={"help": "Score only the first N documents."})
    heads_file: str | None = field(default=None, metadata={"help": "Retrieval heads from detect-heads."})
    num_proxy_samples: int = field(default=800, metadata={"help": "Proxy-task samples for head detection."})
    context_tokens: int = field(default=4096, metadata={"help": "Length of a proxy sample (paper: 4096)."})
    key_length: int = field(default=32, metadata={"help": "Characters per proxy key (paper: 32)."})
    top_heads: float = field(default=0.05, metadata={"help": "Share of heads masked (paper: 5 percent)."})
    max_length: int = field(default=2048, metadata={"help": "Tokens per scored chunk."})
    batch_size: int = field(default=8, metadata={"help": "Chunks per forward pass."})
    fraction: float = field(
        default=0.2, metadata={"help": "Share of each domain selected (paper: 20 percent)."}
    )
    thresholds: list[int] = field(
        default_factory=lambda: [8], metadata={"help": "int_score thresholds published as configs."}
    )
    int_score_bins: int = field(
        default=10, metadata={"help": "int_score = quantile bin 0..bins-1 of the score."}
    )
    local_dir: str | None = field(default=None, metadata={"help": "Write the Hub layout to this folder."})
    repo_id: str | None = field(default=None, metadata={"help": "Or push it to this Hub dataset repo."})


def main(args: ScriptArguments) -> str:
    import re

    import hf_select
    from hf_select.loading import load_any_dataset, load_causal_lm, load_tokenizer
    from hf_select.selection import top_fraction_rows

    model = load_causal_lm(args.model_name_or_path)
    tokenizer = load_tokenizer(args.model_name_or_path)
    docs = load_any_dataset(args.dataset_name_or_path, args.split, args.dataset_config)
    if args.max_samples is not None:
        docs = docs.select(range(min(args.max_samples, len(docs))))

    if args.heads_file:
        heads = hf_select.RetrievalHeads.load(args.heads_file)
    else:  # the proxy task's values are sentences of the corpus itself
        sentences = [s for text in docs[args.text_column] for s in re.split(r"(?<=[.!?])\s+|\n+", text)]
        heads = hf_select.detect_retrieval_heads(
            model, tokenizer, values=sentences, num_samples=args.num_proxy_samples,
            context_tokens=args.context_tokens, key_length=args.key_length, top_fraction=args.top_heads,
        )  # fmt: skip
    print(f"masking {len(heads.selected)} heads: {heads.selected}")

    scorer = hf_select.AttentionInfluence(
        model, tokenizer, heads.selected, max_length=args.max_length, batch_size=args.batch_size,
        text_column=args.text_column,
    )  # fmt: skip
    scored = docs.map(scorer, batched=True, batch_size=256, new_fingerprint=scorer.fingerprint(docs))

    by = args.domain_column if args.domain_column in scored.column_names else None
    chosen = set(top_fraction_rows(scored, "ai_score", args.fraction, by=by).tolist())
    scored = scored.add_column("ai_selected", [i in chosen for i in range(len(scored))])
    print(f"selected {len(chosen)} of {len(scored)} documents (top {args.fraction:.0%} per {by or 'corpus'})")

    return hf_select.push_scored_dataset(
        scored, args.repo_id, local_dir=args.local_dir, score_column="ai_score", thresholds=args.thresholds,
        int_score_bins=args.int_score_bins, method="attention_influence", model_id=args.model_name_or_path,
        heads=heads.selected, params={"fraction": args.fraction, "max_length": args.max_length},
    )  # fmt: skip


if __name__ == "__main__":
    (script_args,) = HfArgumentParser(ScriptArguments).parse_args_into_dataclasses()
    print(main(script_args))
