"""Checks of option values, shared by every config dataclass of hf-select.

One rule per parameter name (:data:`RULES`): ``fraction`` means a share in ``(0, 1]`` and ``batch_size`` a
count ``>= 1`` in every command, whichever dataclass declares the field. :func:`validate_config` applies the
rules to one dataclass instance; the ``hf-select`` command runs it on every parsed config before any work, the
config dataclasses of the Python API run it in ``__post_init__``. Rules live here rather than in each field's
``metadata`` because ``HfArgumentParser`` hands a field's whole metadata to ``argparse``, which refuses keys
it does not know.

A field that is ``None`` is never range-checked (``None`` means "unset": all documents, the default layer,
no limit). For size limits, ``0`` is an error rather than "all" (leave the option unset for all).

:func:`check_config_file_values` checks the values of a YAML/JSON config file against the field types (a
number where a number is expected, ``true``/``false`` for a switch, not the text ``'no'``) and names the file
and line. A number written as text (``learning_rate: 1e-4``, which YAML 1.1 reads as a string) is converted,
as on the command line.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .errors import InputError


@dataclass(frozen=True)
class Range:
    """Allowed numbers: ``low <= x <= high`` (``<`` with ``low_open`` / ``high_open``), plus ``also``."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    also: tuple = ()
    hint: str = ""

    def admits(self, value) -> bool:
        if value in self.also:
            return True
        if not self.low <= value <= self.high or math.isnan(value):
            return False
        return not (self.low_open and value == self.low) and not (self.high_open and value == self.high)

    def describe(self) -> str:
        if self.high == math.inf and self.low_open and self.high_open and self.low == 0:
            text = "a finite number > 0"
        elif self.high == math.inf:
            text = f"{'>' if self.low_open else '>='} {_num(self.low)}"
        elif self.low == -math.inf:
            text = f"{'<' if self.high_open else '<='} {_num(self.high)}"
        else:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            text = f"in {left}{_num(self.low)}, {_num(self.high)}{right}"
        if self.also:
            text += " or " + " or ".join(_num(a) for a in self.also)
        return text


def _num(x) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)


SHARE = Range(0, 1, low_open=True)  # a share of the data: (0, 1]
WEIGHT = Range(0, 1)  # a weight or probability: [0, 1]
COUNT = Range(1)  # a size: >= 1
NON_NEGATIVE = Range(0)
POSITIVE = Range(0, low_open=True)
LIMIT = Range(1, hint="; leave it unset for all")  # a "first N" limit: None means all, 0 is refused
FINITE_POSITIVE = Range(0, math.inf, low_open=True, high_open=True)

RULES: dict[str, Range] = {
    # shares and weights
    "fraction": SHARE,
    "select_fraction": SHARE,
    "top_fraction": SHARE,
    "heldout_fraction": Range(0, 1, low_open=True, high_open=True),
    "proxy_pool_size": POSITIVE,
    "combine_weight": WEIGHT,
    "min_accuracy": WEIGHT,
    "threshold": NON_NEGATIVE,
    "lora_dropout": Range(0, 1, high_open=True),
    "redundancy_weight": NON_NEGATIVE,
    # sizes
    "batch_size": COUNT,
    "map_batch_size": COUNT,
    "part_size": COUNT,
    "max_length": COUNT,
    "seq_length": COUNT,
    "key_length": COUNT,
    "num_samples": COUNT,
    "context_tokens": COUNT,
    "n_demos": COUNT,
    "n_queries": COUNT,
    "rounds": COUNT,
    "max_answer_tokens": COUNT,
    "batch_prompts": COUNT,
    "max_chars_per_field": Range(1, hint="; leave it unset for no clipping"),
    "max_prompt_tokens": COUNT,
    "max_rows": COUNT,
    "max_eval_items": COUNT,
    "vocab_size": COUNT,
    "lora_r": COUNT,
    "lora_alpha": POSITIVE,
    "reference_chunk_size": COUNT,
    "int_score_bins": Range(2),
    "max_retries": NON_NEGATIVE,
    "answer_budget_slack": NON_NEGATIVE,
    "answer_budget_factor": POSITIVE,
    "short_answer_words": NON_NEGATIVE,
    "min_tokens": COUNT,
    "num_fewshot": NON_NEGATIVE,
    "max_generate": NON_NEGATIVE,
    "repeats": NON_NEGATIVE,
    "attn_layer": Range(0, hint="; leave it unset for the default layer"),
    "workers": Range(1, also=(-1,)),
    # "first N" limits
    "max_samples": LIMIT,
    "max_examples": LIMIT,
    "max_documents": LIMIT,
    "max_heldout": LIMIT,
    "limit": LIMIT,
    # optimisation
    "learning_rate": FINITE_POSITIVE,
    "weight_decay": Range(0, math.inf, high_open=True),
    "adam_beta1": Range(0, 1, high_open=True),
    "adam_beta2": Range(0, 1, high_open=True),
    "adam_epsilon": FINITE_POSITIVE,
    "max_grad_norm": Range(0, math.inf, high_open=True),
    "warmup_steps": NON_NEGATIVE,
    # compare studies
    "train_tokenizer_vocab_size": COUNT,
    "documents_per_domain": COUNT,
    "max_chars": COUNT,
    "heldout_documents_per_domain": NON_NEGATIVE,
    "proxy_documents_per_domain": NON_NEGATIVE,
    "task_limit": LIMIT,
    "eval_batch_size": COUNT,
    "alpha": Range(0, 1, low_open=True, high_open=True),
    "power": Range(0, 1, low_open=True, high_open=True),
    "plan_steps": COUNT,
    "plan_points": COUNT,
    "plan_effect": POSITIVE,
}


def _fail(name: str, message: str, where: str = "") -> InputError:
    return InputError(f"{where}--{name} {message}")


def check_value(name: str, value: Any, where: str = "") -> None:
    """Raise an :class:`~hf_select.errors.InputError` naming ``--name`` when ``value`` breaks its rule."""
    if value is None:
        return
    if name == "device":
        check_device(value, where)
        return
    rule = RULES.get(name)
    if rule is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(name, f"must be a number {rule.describe()}, got {value!r}", where)
    if not rule.admits(value):
        raise _fail(name, f"must be {rule.describe()}, got {_num(value)}{rule.hint}", where)


def validate_config(config) -> None:
    """Check every field of the dataclass instance ``config`` that has a rule (see :data:`RULES`)."""
    for f in dataclasses.fields(config):
        if f.init:
            check_value(f.name, getattr(config, f.name, None))


def check_device(device, where: str = "") -> None:
    """Refuse a device string torch does not know, or one this machine does not have (``cuda`` without a GPU,
    ``cuda:3`` with two)."""
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise _fail("device", f"{device!r} is not a device torch knows (cpu, cuda, cuda:0, mps ...)", where) from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise _fail("device", f"{device}: no CUDA GPU is visible on this machine (use --device cpu)", where)
        if parsed.index is not None and parsed.index >= count:
            raise _fail("device", f"{device}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}", where)
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise _fail("device", f"{device}: MPS is not available on this machine", where)


# ----------------------------------------------------------------------------------------------------------
# Config files: types
# ----------------------------------------------------------------------------------------------------------

def _strip_optional(tp):
    """(inner type, None allowed) of ``X | None`` / ``Optional[X]``; other unions come back unchanged."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(value, tp, choices):
    """``value`` converted to the field type ``tp`` (as the command line would read it), or raise
    ``ValueError`` with what was expected."""
    if tp is bool:
        # a quoted "no" is a non-empty string, which Python reads as true: refused rather than guessed
        if isinstance(value, bool):
            return value
        raise ValueError("expected true or false (unquoted)")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ValueError("expected a whole number")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())  # YAML 1.1 reads 1e-4 (no dot) as a string
            except ValueError:
                pass
        raise ValueError("expected a number")
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # e.g. a revision or a config name YAML read as a number
        elif not isinstance(value, str):
            raise ValueError("expected text (quote it)")
        if choices and value not in choices:
            raise ValueError(f"expected one of {', '.join(map(str, choices))}")
        return value
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ValueError(f"expected one of {', '.join(map(str, typing.get_args(tp)))}")
        return value
    if isinstance(tp, type) and issubclass(tp, Enum):
        allowed = [m.value for m in tp]
        if value not in allowed and value not in list(tp):
            raise ValueError(f"expected one of {', '.join(map(str, allowed))}")
        return value
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        items = value if isinstance(value, list) else [value]
        # a mapping in a list is a structured entry its dataclass parses itself (compare's arms)
        return [
            _coerce(v, inner, None) if inner in (bool, int, float, str) and not isinstance(v, dict) else v
            for v in items
        ]
    return value  # dicts, unions of several types: passed on as they are


def check_config_file_values(data: dict, config_classes, file: str, lines: dict[str, int]) -> dict:
    """The values of a config file converted to the types of their fields, or an error naming the file, the line
    and the option (``fraction: abc``, ``fraction: null``, ``mix: maybe``); the range rules run as well."""
    fields = {}
    for cls in config_classes:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.init:
                fields.setdefault(f.name, (f, hints[f.name]))
    out = {}
    for key, value in data.items():
        where = f"config file {file}" + (f", line {lines[key]}" if key in lines else "") + ": "
        if key not in fields:
            out[key] = value
            continue
        f, tp = fields[key]
        inner, optional = _strip_optional(tp)
        if value is None:
            if not (optional or f.default is None):
                raise InputError(f"{where}{key} is null; give it a value (or leave the key out for the default)")
            out[key] = value
            continue
        try:
            out[key] = _coerce(value, inner, f.metadata.get("choices"))
        except ValueError as exc:
            raise InputError(f"{where}{key}: {exc}, got {value!r}") from None
        check_value(key, out[key], where)
    return out
