"""The SLM replication's own pieces: the text-noise builder, per-token noise labels and their packing, the noise
counter and the counting trainer (against independent counts), the dynamics checkpoints."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from hf_select.packing import pack_dataset, pack_documents
from hf_select.replicate.slm import (
    INSERTED_KINDS,
    NOISE_KINDS,
    NoiseCounter,
    add_text_noise,
    document_noise_labels,
    dynamics_steps,
    noise_rows,
    token_noise_kinds,
)
from hf_select.testing import TINY_WORDS, tiny_model, tiny_tokenizer

DOC = "\n".join(f"line {i} of the document about sets and maps" for i in range(12)) + "\nlast line"
DONORS = [list(TINY_WORDS[i::3]) for i in range(3)]


def _without(text: str, spans) -> str:
    keep = np.ones(len(text), dtype=bool)
    for start, end, _ in spans:
        keep[start:end] = False
    return "".join(c for c, k in zip(text, keep) if k)


@pytest.mark.parametrize("share", [0.1, 0.25, 0.5])
def test_noise_leaves_the_clean_text_and_reaches_the_share(share):
    noisy, spans = add_text_noise(DOC, share, seed=3, donors=DONORS)
    assert _without(noisy, spans) == DOC  # the clean characters, in order, untouched
    # unbiased on average: over many seeds the noise characters are share / (1 - share) of the clean ones
    noise = [sum(e - s for s, e, _ in add_text_noise(DOC, share, seed, DONORS)[1]) for seed in range(400)]
    assert np.mean(noise) == pytest.approx(share / (1 - share) * len(DOC), rel=0.05)
    assert all(0 <= s < e <= len(noisy) for s, e, _ in spans)
    assert all(1 <= k < len(NOISE_KINDS) for *_, k in spans)
    starts = [s for s, _, _ in spans]
    assert starts == sorted(starts) and all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


def test_noise_is_deterministic_and_seeded():
    assert add_text_noise(DOC, 0.25, 1, DONORS) == add_text_noise(DOC, 0.25, 1, DONORS)
    assert add_text_noise(DOC, 0.25, 1, DONORS) != add_text_noise(DOC, 0.25, 2, DONORS)
    assert add_text_noise(DOC, 0.0, 1, DONORS) == (DOC, [])


def test_each_kind_looks_like_its_name():
    lines = set(DOC.split("\n"))
    for kind in INSERTED_KINDS:
        noisy, spans = add_text_noise(DOC, 0.3, 5, DONORS, kinds=[kind])
        assert {NOISE_KINDS[k] for *_, k in spans} == {kind}
        for start, end, _ in spans:
            piece = noisy[start:end].strip("\n")
            if kind == "repeated_lines":  # copies of a line of the document
                assert set(piece.split("\n")) <= lines
            elif kind == "shuffled_span":
                assert set(piece.split()) <= {w for d in DONORS for w in d}
            elif kind == "markup":
                assert "<" in piece or "&nbsp;" in piece or "@context" in piece


def test_noise_rejects_bad_arguments():
    with pytest.raises(ValueError, match="share"):
        add_text_noise(DOC, 1.0, 0, DONORS)
    with pytest.raises(ValueError, match="kinds"):
        add_text_noise(DOC, 0.2, 0, DONORS, kinds=["spam"])
    with pytest.raises(ValueError, match="donors"):
        add_text_noise(DOC, 0.2, 0, [[], ["word"]])


def test_token_kind_is_the_majority_of_its_characters():
    spans = [[2, 5, 1], [8, 10, 4]]
    # chars: 0-1 clean, 2-4 kind 1, 5-7 clean, 8-9 kind 4
    offsets = [(0, 0), (0, 3), (1, 5), (4, 8), (7, 9), (8, 10), (9, 12)]
    assert token_noise_kinds(offsets, spans, 12) == [0, 0, 1, 0, 0, 4, 0]
    # (0,3): 2 clean vs 1 kind-1 chars; (1,5): 1 vs 3; (4,8): 1 noise vs 3 clean; (7,9): a 1-1 tie goes to clean


def test_document_labels_follow_the_tokenizer():
    tok = tiny_tokenizer()
    texts = ["the cat sat on the mat", "a dog"]
    spans = [[[4, 11, 2]], []]  # "cat sat"
    ids, kinds = document_noise_labels(tok, texts, spans)
    assert ids[0][0] == tok.bos_token_id and ids[0][-1] == tok.eos_token_id
    enc = tok(texts[0], add_special_tokens=False, return_offsets_mapping=True)
    expected = [0] + [1 if (s >= 4 and e <= 11) else 0 for s, e in enc.offset_mapping] + [0]
    assert [int(k > 0) for k in kinds[0]] == expected
    assert sum(kinds[0]) > 0 and kinds[1] == [0] * len(ids[1])


def _kind_of(token: int) -> int:
    return 3 if token % 7 == 0 else 0


def _docs(n=30, seed=0):
    rng = random.Random(seed)
    ids = [[1] + [rng.randrange(3, 50) for _ in range(rng.randint(5, 40))] + [2] for _ in range(n)]
    return ids, [[_kind_of(t) for t in d] for d in ids]


def test_noise_rows_follow_both_packings():
    """Each token's kind is a function of its id here, so every packed label can be checked independently."""
    from datasets import Dataset

    ids, kinds = _docs(1500)  # more than one pack_dataset map batch (packing restarts every 1000 documents)
    by_dataset = pack_dataset(Dataset.from_dict({"input_ids": ids}), 16, keep_in_memory=True)
    by_dataset = by_dataset.filter(lambda x: len(x) == 16, input_columns="input_ids", keep_in_memory=True)
    labels = noise_rows(by_dataset, ids, kinds, 16)
    assert [[_kind_of(t) for t in r] for r in by_dataset["input_ids"]] == labels
    packed = pack_documents(ids, 16, overflow="discard")
    rows = Dataset.from_dict({"input_ids": [r for r in packed["input_ids"] if len(r) == 16]})
    assert noise_rows(rows, ids, kinds, 16) == [[_kind_of(t) for t in r] for r in rows["input_ids"]]
    with pytest.raises(ValueError, match="do not reproduce"):
        noise_rows(rows.select(list(reversed(range(len(rows))))), ids, kinds, 16)


def test_noise_counter_metrics_by_hand():
    import torch

    counter = NoiseCounter()
    kinds = torch.tensor([[0, 0, 1, 4, 0, 2]])
    valid = torch.tensor([[False, True, True, True, True, True]])
    selected = torch.tensor([[False, True, False, True, True, False]])
    counter.add(kinds, valid, selected)
    counter.on_step_end(None, None, None)
    m = counter.metrics()
    # valid: clean 2 (pos 1, 4), noise 3 (pos 2, 3, 5); selected: clean 2, noise 1 (pos 3, markup)
    assert m["slm/pool_noise_share"] == pytest.approx(3 / 5)
    assert m["slm/selected_noise_share"] == pytest.approx(1 / 3)
    assert m["slm/noise_kept"] == pytest.approx(1 / 3) and m["slm/clean_kept"] == pytest.approx(1.0)
    assert m["slm/selected_share/markup"] == pytest.approx(1 / 3)
    assert m["slm/pool_share/boilerplate"] == pytest.approx(1 / 5)
    restored = NoiseCounter(**json.loads(json.dumps(counter.state()["args"])))  # checkpoint round trip
    assert restored.metrics() == m


def test_dynamics_steps():
    assert dynamics_steps(40, 5) == [8, 16, 24, 32, 40]
    assert dynamics_steps(3, 5) == [1, 2, 3]


@pytest.mark.usefixtures("one_thread")
def test_counting_trainer_counts_what_slm_selects(tmp_path):
    """A reference that finds noise tokens very hard (ref_loss 50) makes their excess loss the lowest: with 25% noise
    and a 60% selection none is selected; the counted pool share equals the rows' own count."""
    from datasets import Dataset

    from hf_select.replicate.slm import _noise_counting_trainer
    from hf_select.trainer_ext import SLMConfig
    from hf_select.trainer_ext.slm_trainer import SLMCollator

    tok = tiny_tokenizer()
    rng = np.random.default_rng(0)
    rows, seq, n_rows = [], 24, 8
    for _ in range(n_rows):
        ids = rng.integers(3, len(tok), seq).tolist()
        kinds = (rng.random(seq) < 0.25).astype(int) * rng.integers(1, 5, seq)
        rows.append({"input_ids": ids, "position_ids": list(range(seq)), "noise_kind": kinds.tolist(),
                     "ref_loss": [50.0 if k else 0.0 for k in kinds]})  # fmt: skip
    data = Dataset.from_list(rows)
    counter = NoiseCounter()
    args = SLMConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=2, use_cpu=True,
                     report_to="none", save_strategy="no", token_select_ratio=0.6, select_scope="global",
                     remove_unused_columns=False, disable_tqdm=True)  # fmt: skip
    trainer = _noise_counting_trainer(counter)(
        model=tiny_model("llama", vocab_size=len(tok)), args=args, train_dataset=data, processing_class=tok,
        data_collator=SLMCollator(pad_token_id=0, pad_columns=("ref_loss", "noise_kind")), callbacks=[counter],
    )  # fmt: skip
    trainer.train()
    m = counter.metrics()
    kinds = np.array(data["noise_kind"])[:, 1:]  # the first token of a row predicts nothing
    assert len(counter.steps) == 2
    assert m["slm/pool_noise_share"] == pytest.approx((kinds > 0).mean())
    assert m["slm/selected_noise_share"] == 0.0
    per_step = 4 * (seq - 1)  # trainable tokens of a step's 4 rows
    selected = np.array(counter.steps)[:, len(NOISE_KINDS) :].sum(1)
    assert selected.tolist() == [math.ceil(0.6 * per_step)] * 2


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_arms_in_a_tiny_study(tmp_path):
    """slm_noise_tracked and clm_dynamics inside a compare study: equal update tokens, the noise counts of every
    step, the reference's losses by kind, and the CLM's evenly spaced models."""
    from hf_select.compare import StudyConfig, run_study

    tok = tiny_tokenizer()
    tok_dir, reference = tmp_path / "tokenizer", tmp_path / "reference"
    tok.save_pretrained(tok_dir)
    tiny_model("llama", seed=5, vocab_size=len(tok)).save_pretrained(reference)
    tok.save_pretrained(reference)
    rng = random.Random(0)
    rows = []
    for i in range(60):
        text = "\n".join(" ".join(rng.choice(TINY_WORDS) for _ in range(3)) for _ in range(2))  # fits a row
        noisy, spans = add_text_noise(text, 0.25, i, DONORS, kinds=["repeated_lines", "shuffled_span"])
        rows.append({"text": noisy, "domain": "alpha", "noise_spans": spans})
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = StudyConfig(
        output_dir=str(tmp_path / "study"), dataset_name_or_path=str(pool), tokenizer_name_or_path=str(tok_dir),
        model_config={"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                      "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128},
        heldout_documents_per_domain=4, seq_length=64, batch_size=4, max_steps=4, logging_steps=1, save_steps=2,
        seeds=[0], learning_rate=1e-2, warmup_steps=0, baseline="clm",
        arms=[{"type": "clm_dynamics", "name": "clm", "dynamics_checkpoints": 2},
              {"type": "slm_noise_tracked", "name": "slm", "reference_model_name_or_path": str(reference)}],
    )  # fmt: skip
    results = run_study(config)
    seen = {name: arm["runs"][0]["tokens_seen"] for name, arm in results["arms"].items()}
    assert seen == dict.fromkeys(seen, 4 * 4 * 64)
    metrics = results["arms"]["slm"]["runs"][0]["metrics"]
    assert metrics["slm/selected_share"] == pytest.approx(0.6, abs=0.01)
    assert 0.1 < metrics["slm/pool_noise_share"] < 0.5
    assert metrics["slm/pool_share/boilerplate"] == 0 and metrics["slm/pool_share/markup"] == 0
    assert "ref_loss_noise" in results["arms"]["slm"]["runs"][0]["info"]
    saved = sorted(p.name for p in (tmp_path / "study" / "runs" / "clm" / "seed0" / "dynamics").iterdir())
    assert saved == ["step-2", "step-4"]


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_the_yaml_builds_every_study(profile):
    """benchmarks/replications/slm.yaml: options and the three studies (base, reference, compare) are valid in both
    profiles, and the compare arms are the registered ones."""
    from pathlib import Path

    import yaml

    from hf_select.compare import StudyConfig
    from hf_select.replicate import ReplicationConfig

    root = Path(__file__).resolve().parents[3]
    spec = yaml.safe_load((root / "benchmarks" / "replications" / "slm.yaml").read_text())
    config = ReplicationConfig(**spec, profile=profile)
    study, options = config.resolved()
    o = config.options_object(options)
    assert o.token_select_ratio == 0.6 and len(study["seeds"]) >= 3
    StudyConfig(**{**study, "from_scratch": True, "dataset_name_or_path": "base"})
    arms = [{"type": "clm_dynamics", "name": "clm"},
            {"type": "slm_noise_tracked", "name": "slm", "reference_model_name_or_path": "reference"}]  # fmt: skip
    compare = StudyConfig(**{**study, "from_scratch": False, "model_name_or_path": "base", "arms": arms,
                             "baseline": "clm"})  # fmt: skip
    assert [c.name for _, c in compare.arm_configs()] == ["clm", "slm"]
