"""Loading models, tokenizers and datasets from a Hub id or a local path, with safe defaults.

Weights load with safetensors only; ``trust_remote_code`` stays off unless asked for; Hub tokens come from
the environment / the huggingface_hub login and are never logged.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers.utils import logging

from .errors import InputError, InputTypeError
from .validation import validate_config

logger = logging.get_logger(__name__)


@dataclass
class ModelArguments:
    """Which model to load, shared by every hf-select command."""

    model_name_or_path: str = field(
        default=None, metadata={"help": "Hub model id or local folder of a causal LM."}
    )
    revision: str | None = field(
        default=None, metadata={"help": "Hub revision (branch, tag or commit) to load."}
    )
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer id or folder (default: the model's)."}
    )
    dtype: str = field(
        default="auto",
        metadata={"help": "Weight dtype: auto, float32, bfloat16 or float16 (auto: as saved)."},
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={"help": "Attention kernel: sdpa, eager, flash_attention_2 (default: transformers')."},
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Run modelling code from the Hub repository (off unless you trust it)."},
    )
    gguf_file: str | None = field(
        default=None,
        metadata={
            "help": "Name of a GGUF file inside --model_name_or_path (needs the gguf package); the weights "
            "are dequantised to float32 and the model saves as safetensors."
        },
    )


@dataclass
class DatasetSourceArguments:
    """Which dataset a command reads, spelt the same in every command (as TRL's ``ScriptArguments``).

    Commands subclass it (:class:`DataArguments` adds ``text_column``) and may override a field's default or
    help. The older per-command spellings stay accepted as aliases (``--dataset_name``, ``--dataset``,
    ``--scored_dataset``, ``--dataset_split``), on the command line and as keys of a YAML/JSON config file.
    """

    dataset_name_or_path: str = field(
        default=None,
        metadata={
            "help": "Dataset: Hub id, save_to_disk folder, Hub-layout folder or a .jsonl/.json/.parquet/.csv file.",
            "aliases": ["--dataset_name"],
        },
    )
    dataset_config: str | None = field(
        default=None, metadata={"help": "Dataset configuration name (Hub datasets with several)."}
    )
    split: str = field(default="train", metadata={"help": "Split to read.", "aliases": ["--dataset_split"]})

    def __post_init__(self):
        validate_config(self)  # the value rules of every field, subclasses' included (hf_select.validation)

    def load_dataset(self):
        """:func:`load_any_dataset` of these arguments."""
        if not self.dataset_name_or_path:
            raise ValueError("--dataset_name_or_path is required")
        return load_any_dataset(self.dataset_name_or_path, self.split, self.dataset_config)


@dataclass
class DataArguments(DatasetSourceArguments):
    """:class:`DatasetSourceArguments` plus the column holding the text."""

    text_column: str = field(default="text", metadata={"help": "Column holding the text."})

    def load_dataset(self):
        """:func:`load_any_dataset` of these arguments; a ``text_column`` it has must hold strings
        (:func:`check_text_column`)."""
        dataset = super().load_dataset()
        check_text_column(dataset, self.text_column, self.dataset_name_or_path)
        return dataset


def _dtype(name: str):
    if name == "auto":
        return "auto"
    try:
        return getattr(torch, name)
    except AttributeError:
        raise ValueError(f"unknown dtype {name!r}; use auto, float32, bfloat16 or float16") from None


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")


def _check_local_source(name_or_path: str, what: str, needs: tuple[str, ...], option: str) -> None:
    """A clear error for a local folder that does not exist or lacks the files of ``what``, before
    transformers turns it into a Hub lookup or an unrelated message ("need sentencepiece", ...)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not any((path / name).exists() for name in needs):
            raise ValueError(
                f"{name_or_path} holds no {what} (none of {', '.join(needs)}); pass the right folder with "
                f"{option}"
            )
    elif _looks_local(name_or_path):
        raise FileNotFoundError(f"no such {what} folder: {name_or_path} (given with {option})")


def load_tokenizer(
    name_or_path: str,
    revision: str | None = None,
    trust_remote_code: bool = False,
    pad: bool = True,
    gguf_file: str | None = None,
):
    """Load a tokenizer; with ``pad`` a tokenizer without a pad token reuses EOS (logged) or fails clearly.

    ``gguf_file`` names a GGUF file inside ``name_or_path`` whose tokenizer metadata is converted.
    """
    from transformers import AutoTokenizer

    _check_local_source(
        name_or_path,
        "tokenizer",
        (*TOKENIZER_FILES, *([gguf_file] if gguf_file else [])),
        "--tokenizer_name_or_path",
    )
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(
        name_or_path, revision=revision, trust_remote_code=trust_remote_code, **kwargs
    )
    if pad and tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(
                f"tokenizer {name_or_path!r} has neither a pad token nor an EOS token to pad with"
            )
        logger.warning(
            f"tokenizer {name_or_path!r} has no pad token; padding with EOS ({tokenizer.eos_token!r})"
        )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(
    name_or_path: str,
    revision: str | None = None,
    dtype: str = "auto",
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    device: str | torch.device | None = None,
    gguf_file: str | None = None,
):
    """Load a causal LM in eval mode, optionally moved to ``device``.

    Weights load from safetensors only, or from the GGUF file ``gguf_file`` inside ``name_or_path`` (dequantised
    to float32 by transformers, then rebuilt as a plain model by :func:`dequantized_copy`, so that it trains and
    saves like any other).
    """
    from transformers import AutoModelForCausalLM

    _check_local_source(
        name_or_path, "model", ("config.json", *([gguf_file] if gguf_file else [])), "--model_name_or_path"
    )
    if not gguf_file:
        _check_safetensors_folder(name_or_path)
    kwargs = {"revision": revision, "dtype": _dtype(dtype), "trust_remote_code": trust_remote_code}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    else:
        kwargs["use_safetensors"] = True
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    from safetensors import SafetensorError

    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    except SafetensorError as exc:
        raise InputError(
            f"the safetensors weights of {name_or_path} cannot be read (a truncated or corrupt file?): {exc}"
        ) from None
    if gguf_file:
        model = dequantized_copy(model)
    if device is not None:
        model.to(device)
    return model.eval()


def _check_safetensors_folder(name_or_path: str) -> None:
    """A local model folder must hold safetensors weights (hf-select never unpickles ``.bin`` files), each one
    complete: its header's tensors must fit in the file (a copy cut short is named before transformers fails
    deep inside)."""
    import json
    import struct

    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        return
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        pickled = sorted(p.name for p in path.glob("*.bin") if p.name != "training_args.bin")
        if pickled:
            raise InputError(
                f"{name_or_path} holds only PyTorch pickle weights ({', '.join(pickled)}); hf-select loads "
                "safetensors only. Convert once with: AutoModelForCausalLM.from_pretrained(folder)"
                ".save_pretrained(folder, safe_serialization=True)"
            )
        return
    for file in weights:
        size = file.stat().st_size
        try:
            with file.open("rb") as handle:
                (header_size,) = struct.unpack("<Q", handle.read(8))
                if 8 + header_size > size:
                    raise ValueError("the header runs past the end of the file")
                header = json.loads(handle.read(header_size))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        except (struct.error, ValueError, KeyError, TypeError, IndexError) as exc:
            raise InputError(f"{file} is not a readable safetensors file ({exc}); download it again") from None
        if 8 + header_size + end > size:
            raise InputError(
                f"{file} is truncated: its header lists {8 + header_size + end} bytes, the file has {size}; "
                "download or copy it again"
            )


def check_vocabulary(model, tokenizer, name: str = "the model") -> None:
    """Refuse a tokenizer whose token ids reach past the model's embedding matrix (an IndexError deep in the
    embedding otherwise). A larger embedding than the tokenizer (padding rows) is fine."""
    embeddings = model.get_input_embeddings()
    rows = getattr(embeddings, "num_embeddings", None)
    if rows is None:
        return
    size = len(tokenizer)
    if size > rows:
        raise InputError(
            f"the tokenizer of {name} has {size} tokens but the model's embedding has only {rows} rows; "
            "pass the tokenizer the model was trained with (--tokenizer_name_or_path)"
        )


def dequantized_copy(model):
    """A plain model of the same class with ``model``'s weights and no ``quantization_config``.

    transformers loads a GGUF checkpoint as float32 weights but keeps the GGUF quantization config on the model,
    which then refuses ``save_pretrained`` (and peft/Trainer treat it as quantised). The copy is built from the
    config without that entry and has identical weights, hence identical logits.
    """
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    state = model.state_dict()
    dtype = next(iter(state.values())).dtype
    clean = type(model)._from_config(config, dtype=dtype)
    missing, unexpected = clean.load_state_dict(state, strict=False)
    tied = set(getattr(clean, "_tied_weights_keys", None) or [])
    if unexpected or set(missing) - tied:
        raise ValueError(
            f"cannot rebuild {type(model).__name__} without its quantization config: missing {missing}, "
            f"unexpected {unexpected}"
        )
    clean.tie_weights()
    clean.generation_config = model.generation_config
    return clean.eval()


def load_model_and_tokenizer(args: ModelArguments, device=None):
    """Model and tokenizer described by :class:`ModelArguments`."""
    if not args.model_name_or_path:
        raise ValueError("--model_name_or_path is required")
    model = load_causal_lm(
        args.model_name_or_path,
        args.revision,
        args.dtype,
        args.attn_implementation,
        args.trust_remote_code,
        device,
        gguf_file=args.gguf_file,
    )
    tokenizer = load_tokenizer(
        args.tokenizer_name_or_path or args.model_name_or_path,
        None if args.tokenizer_name_or_path else args.revision,
        args.trust_remote_code,
        gguf_file=None if args.tokenizer_name_or_path else args.gguf_file,
    )
    check_vocabulary(model, tokenizer, args.model_name_or_path)
    return model, tokenizer


OUTPUT_MANIFEST = "hf_select_output.json"
_SAVED_MARKERS = ("dataset_info.json", "dataset_dict.json")


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / m).exists() for m in _SAVED_MARKERS)


def write_output_manifest(folder: str | Path, datasets: list[str], default: str) -> None:
    """Record the saved datasets of a command's output folder and which one a later command reads by default
    (e.g. ``hf-select select --mix``: ``selected`` and ``mix``, default ``mix``), for :func:`load_any_dataset`."""
    import json

    if default not in datasets:
        raise ValueError(f"default {default!r} is not one of {datasets}")
    Path(folder, OUTPUT_MANIFEST).write_text(json.dumps({"datasets": datasets, "default": default}))


def _looks_local(name_or_path: str) -> bool:
    """A path rather than a Hub id: absolute, ``./`` ``../`` ``~``, a trailing slash, a data-file suffix, more
    than one ``/`` (Hub ids are ``name`` or ``org/name``), or a first component that exists here."""
    if name_or_path.startswith(("/", ".", "~")) or name_or_path.endswith(("/", "\\")):
        return True
    if Path(name_or_path).suffix in (".jsonl", ".json", ".parquet", ".csv", ".arrow", ".txt"):
        return True
    parts = name_or_path.split("/")
    return len(parts) > 2 or (len(parts) == 2 and Path(parts[0]).is_dir())


def load_any_dataset(name_or_path: str, split: str | None = "train", config_name: str | None = None):
    """A ``Dataset`` from a Hub id, a ``save_to_disk`` folder, a Hub-layout folder or a json/jsonl/parquet/csv file.

    A folder that holds saved datasets in subfolders (the output of ``hf-select select`` or ``score
    attention-influence``) is refused with their names -- reading it as a folder of data files would
    concatenate them all -- unless it has an ``hf_select_output.json`` manifest naming a default
    (:func:`write_output_manifest`; ``select --mix`` makes the mix the default). A local-looking path that
    does not exist is a ``FileNotFoundError`` ("no such folder or file"), not a Hub error.
    """
    import json

    from datasets import DatasetDict, load_dataset, load_from_disk

    if not name_or_path or not str(name_or_path).strip():
        raise ValueError("no dataset given: pass a Hub id, a folder or a data file")
    name_or_path = str(name_or_path)
    path = Path(name_or_path).expanduser()
    if _is_saved_dataset(path):
        try:
            data = load_from_disk(str(path))
        except IndexError:  # datasets cannot read back a 0-row save_to_disk
            raise ValueError(f"{name_or_path} holds no rows (an empty saved dataset)") from None
    elif path.is_dir():
        manifest = path / OUTPUT_MANIFEST
        if manifest.exists():
            default = json.loads(manifest.read_text())["default"]
            logger.warning(f"{name_or_path}: reading its default dataset {default!r} ({manifest.name})")
            return load_any_dataset(str(path / default), split, config_name)
        saved = sorted(p.name for p in path.iterdir() if _is_saved_dataset(p))
        if saved:
            choices = ", ".join(str(path / name) for name in saved)
            raise ValueError(
                f"{name_or_path} holds {'several saved datasets' if len(saved) > 1 else 'a saved dataset'} "
                f"({', '.join(saved)}) rather than being one; pass one of: {choices}"
            )
        data = _read_files(name_or_path, lambda: load_dataset(str(path), config_name))
    elif path.is_file():
        kind = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(path.suffix)
        if kind is None:
            raise ValueError(f"cannot read {path}: expected .jsonl, .json, .parquet or .csv")
        with path.open("rb") as handle:
            head = handle.read(1 << 16)
        if not head.strip() and path.stat().st_size <= len(head):  # the datasets library stops with StopIteration
            raise InputError(f"{name_or_path} is empty: no rows to read")
        data = _read_files(name_or_path, lambda: load_dataset(kind, data_files=str(path)))
    elif _looks_local(name_or_path):
        raise FileNotFoundError(f"no such folder or file: {name_or_path}")
    else:
        data = load_dataset(name_or_path, config_name)
    if isinstance(data, DatasetDict):
        if split is None:
            return data
        if split not in data:
            raise ValueError(f"{name_or_path} has no split {split!r}; it has {sorted(data)}")
        return data[split]
    if split not in (None, "train"):
        raise InputError(
            f"{name_or_path} is one dataset without splits, so it has no split {split!r}; leave --split at "
            "its default (train)"
        )
    return data


def _read_files(name: str, read):
    """``read()``, with the datasets library's failure on a malformed data file (a JSON line that does not
    parse, a column whose type changes between rows) as one message naming the file."""
    from datasets.exceptions import DatasetGenerationError

    try:
        return read()
    except DatasetGenerationError as exc:
        cause = exc.__cause__ or exc
        raise InputError(f"cannot read {name}: {' '.join(str(cause).split())[:300]}") from None


def check_text_column(dataset, column: str, what: str = "the dataset") -> None:
    """Refuse a text column that holds anything but strings (numbers, lists), or a missing value, with
    the column's type or the first row that is missing (the tokenizer fails on them with a ``TypeError``
    otherwise). A column the dataset lacks is left to the caller (some accept token ids instead)."""
    from datasets import Value

    if column not in dataset.column_names:
        return
    feature = dataset.features[column]
    if not (isinstance(feature, Value) and feature.dtype in ("string", "large_string")):
        kind = feature.dtype if isinstance(feature, Value) else type(feature).__name__.lower()
        raise InputTypeError(
            f"column {column!r} of {what} must hold text, but it holds {kind} values"
        )
    values = dataset.with_format("arrow")[column]
    if values.null_count:
        import pyarrow.compute as pc

        row = pc.index(pc.is_null(values), True).as_py()
        raise InputTypeError(
            f"column {column!r} of {what} has no text in row {row} (null); drop or fill the missing rows"
        )


def require_columns(dataset, columns, what: str = "dataset") -> None:
    """Raise a clear error naming the columns that ``dataset`` lacks."""
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise ValueError(f"{what} is missing column(s) {missing}; it has {dataset.column_names}")
