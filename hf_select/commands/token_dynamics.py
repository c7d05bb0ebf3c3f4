"""``hf-select token-dynamics``: classify token-loss dynamics over checkpoints (RHO-1, arXiv 2404.07965, 2.1)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..loading import DataArguments, load_tokenizer


@dataclass
class TokenDynamicsArguments(DataArguments):
    """Options of ``hf-select token-dynamics`` (the dataset: raw text or packed rows)."""

    checkpoints: str = field(
        default=None, metadata={"help": "Comma-separated checkpoint folders or Hub ids, in training order."}
    )
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer for raw text (default: the last checkpoint's)."}
    )
    seq_length: int = field(default=1024, metadata={"help": "Tokens per packed row (raw text)."})
    overflow: str = field(
        default="split",
        metadata={"help": "Documents longer than a row: 'split' (default, further rows) or 'truncate'."},
    )
    max_rows: int = field(default=256, metadata={"help": "Rows analysed (the first ones)."})
    batch_size: int = field(default=8, metadata={"help": "Rows per forward pass."})
    threshold: float = field(
        default=0.2, metadata={"help": "|slope * n| above which a token's loss changes."}
    )
    output_dir: str = field(
        default="token_dynamics", metadata={"help": "Where shares.json, table.md, plot go."}
    )


CONFIG_CLASSES = (TokenDynamicsArguments,)


def run(args: TokenDynamicsArguments) -> int:
    from ..slm.jobs import training_rows
    from ..slm.token_dynamics import plot_token_dynamics, shares_table, token_loss_dynamics

    if not args.checkpoints or not args.dataset_name_or_path:
        raise ValueError("--checkpoints and --dataset_name_or_path are required")
    checkpoints = [c for c in args.checkpoints.split(",") if c]
    tokenizer = load_tokenizer(args.tokenizer_name_or_path or checkpoints[-1])
    rows = training_rows(
        args.load_dataset(),
        tokenizer,
        args.text_column,
        args.seq_length,
        overflow=args.overflow,
    )
    rows = rows.select(range(min(args.max_rows, len(rows))))
    result = token_loss_dynamics(
        checkpoints, rows, args.batch_size, tokenizer.pad_token_id or 0, threshold=args.threshold
    )
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "shares.json").write_text(
        json.dumps({"shares": result["shares"], "checkpoints": checkpoints}, indent=2)
    )
    table = shares_table(result["shares"])
    (out / "table.md").write_text(table + "\n")
    plot_token_dynamics(result, out / "token_dynamics.png")
    print(table)
    return 0
