"""The ``hf-select`` console script.

Each subcommand lives in its own module that defines ``CONFIG_CLASSES`` (dataclasses, parsed with
``HfArgumentParser`` from the command line or from one ``.yaml`` / ``.json`` file) and ``run(*configs)``.
Modules are imported only when their subcommand runs, so ``hf-select --help`` stays fast.

Errors a user can fix (bad arguments or files: ``ValueError`` and its subclasses, among them
:class:`hf_select.errors.InputError`, ``TaskError`` and ``UnsupportedModelError``; ``OSError`` and its
subclasses) print one line, ``hf-select <command>: error: <message>``, and exit with code 2; ``--debug``
(anywhere on the command line) shows the traceback instead. Option values are checked before any work
(:mod:`hf_select.validation`). Anything else is a bug: it keeps its traceback, whose last line (an exception
note) says so, and the process exits with code 1. Output folders are checked and locked before the
command runs (:mod:`hf_select.output_dir`); SIGINT and SIGTERM stop it cleanly with exit code 130 / 143
(:mod:`hf_select.interrupt`).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

# (words of the subcommand) -> (module, one-line help)
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("demo",): ("hf_select.demo.command", "Run the main job end to end on the embedded demo world."),
    ("build-demo",): (
        "hf_select.commands.build_demo",
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
    ("compare",): (
        "hf_select.commands.compare",
        "Compare data-selection arms at equal update tokens (paired seeds, intervals, cost).",
    ),
    ("replicate",): (
        "hf_select.commands.replicate",
        "Replicate one paper's direction in its own setting, scaled down (docs/results.md).",
    ),
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


# errors a user can fix: one line and exit code 2. ValueError covers hf_select.errors.InputError (and its
# KeyError / IndexError / TypeError flavours), TaskError and UnsupportedModelError; OSError covers missing,
# unreadable or unwritable files and folders.
USER_ERRORS = (ValueError, OSError)


def _yaml_loader():
    """A ``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"{key!r} is given twice (lines {seen[key]} and {line})", key_node.start_mark
                    )
                seen[key] = line
            return super().construct_mapping(node, deep=deep)

    return Loader


def _read_config_file(path: str) -> tuple[dict, dict[str, int]]:
    """The option: value mapping of a YAML / JSON config file and the line of each top-level key.

    A key given twice is an error (naming both lines), as is a file that is not a mapping.
    """
    import json
    import re
    from pathlib import Path

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = file.read_text(encoding="utf-8")
    lines: dict[str, int] = {}
    if file.suffix == ".json":

        def no_duplicates(pairs):
            keys = [k for k, _ in pairs]
            twice = sorted({k for k in keys if keys.count(k) > 1})
            if twice:
                raise ValueError(f"config file {path}: {', '.join(map(repr, twice))} given twice")
            return dict(pairs)

        try:
            data = json.loads(text, object_pairs_hook=no_duplicates)
        except json.JSONDecodeError as exc:
            raise ValueError(f"config file {path} is not valid JSON: {exc}") from None
        if isinstance(data, dict):
            for key in data:
                found = re.search(rf'"{re.escape(str(key))}"\s*:', text)
                if found:
                    lines[key] = text.count("\n", 0, found.start()) + 1
    else:
        import yaml

        loader = _yaml_loader()
        try:
            data = yaml.load(text, Loader=loader)  # a SafeLoader subclass: no arbitrary objects
            root = yaml.compose(text, Loader=loader)
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            line = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
            problem = getattr(exc, "problem", None) or exc
            raise ValueError(f"config file {path} is not valid YAML{line}: {problem}") from None
        if isinstance(root, yaml.MappingNode):
            for key_node, _ in root.value:
                lines[str(key_node.value)] = key_node.start_mark.line + 1
    if not isinstance(data, dict):
        raise ValueError(
            f"config file {path} must hold a mapping of option: value, got {type(data).__name__}"
        )
    return data, lines


def _aliases_to_field_names(data: dict, config_classes) -> dict:
    """Config-file keys spelt as a field's ``--alias`` (e.g. ``dataset_name``) renamed to the field's name."""
    import dataclasses

    renames = {}
    for cls in config_classes:
        for f in dataclasses.fields(cls):
            aliases = f.metadata.get("aliases") or []
            for alias in [aliases] if isinstance(aliases, str) else aliases:
                renames[alias.lstrip("-")] = f.name
    out = {}
    for key, value in data.items():
        name = renames.get(key, key)
        if name in out:
            raise ValueError(f"{key!r} and {name!r} are the same option; give it once")
        out[name] = value
    return out


def _is_config_file(arg: str) -> bool:
    return not arg.startswith("-") and arg.endswith((".yaml", ".yml", ".json"))


def _config_file_among_options(config_classes, args: list[str]) -> int | None:
    """Index of the one config file given together with options (``--plan config.yaml``), or None: a
    ``.yaml``/``.json`` argument that is not the value of an option (a boolean flag takes no value)."""
    import dataclasses

    flags = {
        f"--{f.name}" for cls in config_classes for f in dataclasses.fields(cls) if f.type in (bool, "bool")
    }
    found = [
        i
        for i, arg in enumerate(args)
        if _is_config_file(arg) and (i == 0 or not args[i - 1].startswith("-") or args[i - 1] in flags)
    ]
    return found[0] if len(found) == 1 and len(args) > 1 else None


def parse_configs(config_classes, args: list[str], prog: str, epilog: str | None = None):
    """Parse ``args`` (or one YAML/JSON file) into instances of ``config_classes``.

    A config file may come with options given on the command line (``config.yaml --seed 3``): they override
    the file's values. A config file that cannot be read names itself (and the line of a YAML error); an
    option the command does not know is an error naming it; a key given twice, or a value of the wrong type
    for its field, names the file and line. Every parsed config then passes
    :func:`hf_select.validation.validate_config` (the ranges of its values), before the command does any work.
    ``epilog`` ends the ``--help`` text.
    """
    import argparse

    from transformers import HfArgumentParser

    from hf_select.validation import check_config_file_values, validate_config

    class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
        pass  # defaults shown, the epilog kept as written

    def read_checked(path: str) -> dict:
        raw, lines = _read_config_file(path)
        renamed = _aliases_to_field_names(raw, config_classes)
        lines = {renamed_key: lines.get(key) for key, renamed_key in zip(raw, renamed) if lines.get(key)}
        return check_config_file_values(renamed, config_classes, path, lines)

    kwargs = {"epilog": epilog, "formatter_class": Formatter} if epilog else {}
    parser = HfArgumentParser(config_classes, prog=prog, **kwargs)
    file = _config_file_among_options(config_classes, args)
    if len(args) == 1 and _is_config_file(args[0]):
        data = read_checked(args[0])
        try:
            configs = parser.parse_dict(data)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"config file {args[0]}: {exc}") from None
    elif file is not None:
        import dataclasses

        data = read_checked(args[file])
        known = {f.name for cls in config_classes for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"config file {args[file]}: unknown option(s) {unknown}")
        parser.set_defaults(**data)  # the file's values, overridden by the options given
        configs = parser.parse_args_into_dataclasses(args=args[:file] + args[file + 1 :])
    else:
        configs = parser.parse_args_into_dataclasses(args=args)
    for config in configs:
        validate_config(config)
    return configs


def main(argv: list[str] | None = None) -> int:
    """Run ``hf-select`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code (see module docs)."""
    from hf_select.interrupt import Interrupted

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    found = _match(argv)
    if found is None:
        groups = {w[0] for w in available_commands() if len(w) > 1}
        if argv[0] in groups:
            subs = [" ".join(w) for w in available_commands() if w[0] == argv[0]]
            print(f"hf-select {argv[0]}: error: choose one of: {', '.join(subs)}", file=sys.stderr)
        else:
            print(
                f"hf-select: error: unknown command {argv[0]!r}; 'hf-select --help' lists the commands",
                file=sys.stderr,
            )
        return 2
    words, rest = found
    prog = f"hf-select {' '.join(words)}"
    try:
        module = importlib.import_module(COMMANDS[words][0])
        # argparse prints its own one-line error and exits with code 2 (SystemExit)
        configs = parse_configs(module.CONFIG_CLASSES, rest, prog=prog, epilog=getattr(module, "HELP_EPILOG", None))
        from hf_select.threads import set_torch_threads

        set_torch_threads()  # this process's share of the cores (torchrun / accelerate local world size)
        result = _run_guarded(module, configs, prog)
    except Interrupted as exc:  # SIGINT or SIGTERM while the command ran
        if debug:
            raise
        print(f"{prog}: {exc}", file=sys.stderr)
        return exc.exit_code
    except USER_ERRORS as exc:
        if debug:
            raise
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        # not the user's fault: the traceback stays (exit code 1), and its last line says so
        if not debug and hasattr(exc, "add_note"):
            exc.add_note(
                f"{prog}: internal error: this is a bug in hf-select, not in your input; please report it with "
                "the traceback above"
            )
        raise
    finally:
        shutdown_distributed()
    return int(result) if isinstance(result, int) else 0


def _run_guarded(module, configs, prog: str):
    """``module.run(*configs)`` with its output folders checked and locked (:mod:`hf_select.output_dir`) and
    SIGTERM / SIGINT turned into a clean stop (:mod:`hf_select.interrupt`)."""
    from hf_select.interrupt import exit_on_signals
    from hf_select.output_dir import guard_output_dirs

    with exit_on_signals(), guard_output_dirs(configs, description=prog):
        return module.run(*configs)


def _one_line(exc: BaseException) -> str:
    """The message of a user error on one line; an OS error without its own words gets the path it concerns."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    return " ".join(str(exc).split()) or type(exc).__name__


def shutdown_distributed() -> None:
    """Destroy the default process group (if a command created one, e.g. a Trainer under torchrun).

    A process that exits with a live gloo process group tears its worker threads and pending work down
    during interpreter finalization, and a rank then dies now and then with "terminate called without an
    active exception" (pytorch/pytorch#190489) after all its work is done. Destroying the group while the
    interpreter is alive avoids that; torch is only looked at when something already imported it.
    """
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
