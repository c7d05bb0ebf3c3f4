"""The Data Whisperer scorer's parameters: one dataclass, the single source for the scorer, the CLI and the
fingerprint (Wang et al., 2025, arXiv 2505.12212)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..validation import validate_config

DEFAULT_INSTRUCTION = (
    "Here are some questions with their answers. Answer the questions at the end in the same style, "
    "one answer per line, each after its label."
)


@dataclass
class DataWhispererConfig:
    """Every parameter of Data Whisperer scoring (arXiv 2505.12212); the single source for the scorer, the CLI
    (``hf-select score data-whisperer`` parses it with ``HfArgumentParser``) and the cache fingerprint."""

    n_demos: int = field(default=5, metadata={"help": "Demonstrations per prompt (paper: 5)."})
    n_queries: int = field(default=3, metadata={"help": "Queries answered per prompt (paper: 3-5)."})
    attn_layer: int | None = field(
        default=None,
        metadata={"help": "Decoder layer whose attention weighs the demonstrations (default: ~40%% depth, "
                  "round(0.4 * num_layers), the paper's 13 of 32)."},
    )  # fmt: skip
    metric: str = field(
        default="auto",
        metadata={
            "help": "auto (GSM8K final number / exact match / ROUGE-L), exact_match, rouge_l or gsm8k."
        },
    )
    rounds: int = field(
        default=1, metadata={"help": "Passes over the pool; an example's scores are averaged."}
    )
    seed: int = field(default=0, metadata={"help": "Shuffling seed (round r uses seed + r)."})
    question_column: str = field(default="question", metadata={"help": "Column holding the question."})
    answer_column: str = field(default="answer", metadata={"help": "Column holding the gold answer."})
    max_answer_tokens: int = field(
        default=256,
        metadata={"help": "Most new tokens for one query's answer (a cap on the gold-based budget)."},
    )
    answer_budget_factor: float = field(
        default=1.5, metadata={"help": "New-token budget per query = factor x gold answer tokens + slack."}
    )
    answer_budget_slack: int = field(
        default=8, metadata={"help": "Extra new tokens per query (labels, slack)."}
    )
    max_retries: int = field(default=3, metadata={"help": "Re-draws of an unparseable group per round."})
    instruction: str = field(default=DEFAULT_INSTRUCTION, metadata={"help": "First line of the prompt."})
    use_chat_template: bool | None = field(
        default=None,
        metadata={"help": "Wrap the prompt in the tokenizer's chat template (default: when it has one)."},
    )
    short_answer_words: int = field(
        default=3,
        metadata={"help": "metric=auto grades gold answers of at most this many words by exact match."},
    )
    rouge_stemmer: bool = field(
        default=True, metadata={"help": "Porter stemming in ROUGE-L (the official code uses it)."}
    )
    max_chars_per_field: int | None = field(
        default=600, metadata={"help": "Clip every question and answer to this many characters."}
    )
    max_prompt_tokens: int | None = field(
        default=None,
        metadata={"help": "Longest prompt; longer ones get every field clipped further (default: the model's "
                  "context minus the prompt's answer budget)."},
    )  # fmt: skip
    query_mode: str = field(
        default="joint",
        metadata={
            "help": "joint: one generation answers every query (paper); separate: one prompt per query."
        },
    )
    batch_prompts: int = field(
        default=8, metadata={"help": "Prompts (of several groups) generated in one left-padded batch."}
    )
    force_answer_format: bool = field(
        default=True,
        metadata={"help": "Greedy decoding keeps the model's every content token but enforces the answer format: "
                  "no empty answer, one answer per line (per paragraph when a gold answer spans lines), the next "
                  "'Answer j:' label after each, EOS after the last (small instruct models otherwise break the "
                  "format in many groups). Only for the built-in generation, not a custom generate_fn."},
    )  # fmt: skip

    def __post_init__(self):
        validate_config(self)  # ranges of the numeric fields (hf_select.validation.RULES)
        if self.query_mode not in ("joint", "separate"):
            raise ValueError(f"query_mode must be 'joint' or 'separate', got {self.query_mode!r}")
        if isinstance(self.metric, str) and self.metric not in ("auto", "exact_match", "rouge_l", "gsm8k"):
            raise ValueError(
                f"unknown metric {self.metric!r}; use auto, exact_match, rouge_l, gsm8k or a callable"
            )


# ----------------------------------------------------------------------------------------------------------
# Prompt and spans
# ----------------------------------------------------------------------------------------------------------
