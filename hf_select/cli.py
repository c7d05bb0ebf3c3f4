"""The ``hf-select`` console script.

Each subcommand lives in its own module that defines ``CONFIG_CLASSES`` (dataclasses, parsed with
``HfArgumentParser`` from the command line or from one ``.yaml`` / ``.json`` file) and ``run(*configs)``.
Modules are imported only when their subcommand runs, so ``hf-select --help`` stays fast.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

# (words of the subcommand) -> (module, one-line help)
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("demo",): ("hf_select.demo.command", "Run the main job end to end on the embedded demo world."),
    ("build-demo",): (
        "hf_select.dataset_scripts.command",
        "Build the demo world (corpus, eval tasks, fine-tuning pool).",
    ),
    ("detect-heads",): (
        "hf_select.commands.detect_heads",
        "Detect retrieval heads of a causal LM (AttentionInfluence).",
    ),
    ("score", "attention-influence"): (
        "hf_select.commands.score_attention_influence",
        "Score a dataset with AttentionInfluence.",
    ),
    ("score", "data-whisperer"): (
        "hf_select.commands.score_data_whisperer",
        "Score fine-tuning examples with Data Whisperer.",
    ),
    ("select",): ("hf_select.commands.select", "Select the top fraction of a scored dataset, per domain."),
    ("train", "slm"): ("hf_select.commands.train_slm", "Train with RHO-1 Selective Language Modeling."),
    ("train", "meco"): (
        "hf_select.commands.train_meco",
        "Train with MeCo metadata conditioning then cooldown.",
    ),
    ("train", "opus"): ("hf_select.commands.train_opus", "Train with OPUS dynamic batch selection."),
    ("reference-losses",): (
        "hf_select.commands.reference_losses",
        "Precompute RHO-1 reference losses for a dataset.",
    ),
    ("token-dynamics",): (
        "hf_select.commands.token_dynamics",
        "Classify token-loss dynamics across checkpoints.",
    ),
    ("finetune",): ("hf_select.commands.finetune", "Fine-tune on a selected subset (full or LoRA)."),
    ("eval",): ("hf_select.commands.eval", "Evaluate a model on harness tasks."),
    ("push",): ("hf_select.commands.push", "Push a scored dataset or a trained model to the Hub."),
}


def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def available_commands() -> dict[tuple[str, ...], tuple[str, str]]:
    """The subcommands whose module is installed."""
    return {words: spec for words, spec in COMMANDS.items() if _available(spec[0])}


def _usage() -> str:
    lines = ["usage: hf-select <command> [options]  (or: hf-select <command> config.yaml)", "", "commands:"]
    commands = available_commands()
    width = max((len(" ".join(w)) for w in commands), default=10) + 2
    for words, (_, help_text) in commands.items():
        lines.append(f"  {' '.join(words):<{width}}{help_text}")
    lines += ["", "Run 'hf-select <command> --help' for the options of a command."]
    return "\n".join(lines)


def _match(argv: list[str]) -> tuple[tuple[str, ...], list[str]] | None:
    commands = available_commands()
    for size in (2, 1):
        words = tuple(argv[:size])
        if words in commands:
            return words, argv[size:]
    return None


def parse_configs(config_classes, args: list[str], prog: str):
    """Parse ``args`` (or one YAML/JSON file) into instances of ``config_classes``."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(config_classes, prog=prog)
    if len(args) == 1 and args[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(args[0])
    if len(args) == 1 and args[0].endswith(".json"):
        return parser.parse_json_file(args[0])
    return parser.parse_args_into_dataclasses(args=args)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    found = _match(argv)
    if found is None:
        groups = {w[0] for w in available_commands() if len(w) > 1}
        if argv[0] in groups:
            subs = [" ".join(w) for w in available_commands() if w[0] == argv[0]]
            print(f"hf-select {argv[0]}: choose one of: {', '.join(subs)}", file=sys.stderr)
        else:
            print(f"hf-select: unknown command {argv[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    words, rest = found
    module = importlib.import_module(COMMANDS[words][0])
    configs = parse_configs(module.CONFIG_CLASSES, rest, prog=f"hf-select {' '.join(words)}")
    from hf_select.threads import set_torch_threads

    set_torch_threads()  # this process's share of the cores (torchrun / accelerate local world size)
    result = module.run(*configs)
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
