"""``hf-select demo``: the main job on the embedded demo world."""

from __future__ import annotations

from dataclasses import dataclass, field

from .context import DemoContext
from .runner import STAGES, run_demo


@dataclass
class DemoArguments:
    output_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where the report, students and scored data go (default: demo_output, or demo_output-quick "
            "with --quick, so that a smoke run never replaces the full run's results)."
        },
    )
    cache_dir: str = field(
        default=".hf_select_cache",
        metadata={"help": "Where the demo world, tokenizer and base model are cached."},
    )
    quick: bool = field(
        default=False, metadata={"help": "A small, fast variant of every stage (smoke test)."}
    )
    seed: int = field(default=0, metadata={"help": "Random seed of every stage."})
    stages: str = field(
        default="", metadata={"help": "Comma-separated subset of stages to run (default: all)."}
    )
    force: str = field(default="", metadata={"help": "Comma-separated stages to re-run even if finished."})


CONFIG_CLASSES = (DemoArguments,)


def run(args: DemoArguments) -> int:
    output_dir = args.output_dir or ("demo_output-quick" if args.quick else "demo_output")
    ctx = DemoContext(output_dir, args.cache_dir, quick=args.quick, seed=args.seed)
    stages = tuple(s for s in args.stages.split(",") if s) or STAGES
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; known: {', '.join(STAGES)}")
    outcomes = run_demo(ctx, stages, force=tuple(s for s in args.force.split(",") if s))
    for outcome in outcomes:
        print(f"{outcome.status:>8}  {outcome.name}  ({outcome.seconds:.1f}s)")
    return 1 if any(o.status == "failed" for o in outcomes) else 0
