"""Conformance table of the shared core, peft style: every decoder family x every core mechanism.

Rows: every family :mod:`hf_select.model_adapter` claims (its table and the Llama-layout fallback) plus the
edge families of issue 15 (logit scaling, gpt-oss, linear-attention and Mamba hybrids, Llama4-text, Gemma3n).
Columns: adapter, masking vs an independent attention-kernel reference, AttentionInfluence score, packed ==
per-document loss, one SLM step, detection argmax. Each cell is exact (tolerance ``TOL``, float32) or raises the
expected clear error (``EXPECTED_ERRORS``). A new transformers release that breaks a family fails here.
"""

import copy
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hf_select.attention_influence import AttentionInfluence
from hf_select.attention_influence.head_masking import mask_heads
from hf_select.attention_influence.retrieval_heads import record_attention_argmax
from hf_select.conformance import probe_model
from hf_select.model_adapter import UnsupportedModelError, get_model_adapter
from hf_select.testing import tiny_tokenizer
from hf_select.token_loss import final_hidden_states, per_token_loss

sys.path.insert(0, str(Path(__file__).parent))
from conformance_models import CONFORMANCE_FAMILIES, build_family, uniform_attention_reference

TOL = 2e-5  # float32; losses of a few nats, 2-layer models
FAMILIES = tuple(CONFORMANCE_FAMILIES)
HEADS = [(0, 1), (1, 2)]
_ADAPTER = "adapter"
_PACKED = "packed"
# family -> {column: substring of the expected UnsupportedModelError}; columns absent here must be exact
_NO_ATTENTION = "have no attention module"
_NOT_PACKABLE = "packed rows are not exact"
EXPECTED_ERRORS: dict[str, dict[str, str]] = {
    "qwen3_next": {
        _ADAPTER: _NO_ATTENTION,
        "masking": _NO_ATTENTION,
        "ai": _NO_ATTENTION,
        _PACKED: _NOT_PACKABLE,
        "slm": _NOT_PACKABLE,
        "detection": _NO_ATTENTION,
    },
    "falcon_h1": {_PACKED: _NOT_PACKABLE, "slm": _NOT_PACKABLE},
    "llama4_text": {c: "chunked-attention" for c in (_ADAPTER, "masking", "ai", "detection")},
    "gemma3n_text": {c: "v_norm" for c in (_ADAPTER, "masking", "ai", "detection")},
}


def _expect(family: str, column: str):
    message = EXPECTED_ERRORS.get(family, {}).get(column)
    if message is None:
        return None
    return pytest.raises(UnsupportedModelError, match=family if column != _ADAPTER else message)


def _ids(*lengths, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 300, (n,), generator=gen) for n in lengths]


def _hand_losses(model, doc):
    """Float32 CE of one document from ``model(...).logits`` (the model's own head and scaling)."""
    with torch.no_grad():
        logits = model(input_ids=doc[None], use_cache=False).logits[0].float()
    return F.cross_entropy(logits[:-1], doc[1:], reduction="none")


def _hand_batch_losses(model, ids, mask):
    """``_hand_losses`` of right-padded documents in one forward (``[docs, length - 1]``)."""
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
    return F.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")


def _padded_batch(docs):
    length = max(len(d) for d in docs)
    ids = torch.zeros(len(docs), length, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, doc in enumerate(docs):
        ids[row, : len(doc)], mask[row, : len(doc)] = doc, 1
    return ids, mask


def _packed_row(docs):
    return torch.cat(docs)[None], torch.cat([torch.arange(len(d)) for d in docs])[None]


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter(family):
    model = build_family(family)
    expected = _expect(family, _ADAPTER)
    if expected is not None:
        with expected as error:
            get_model_adapter(model)
        assert EXPECTED_ERRORS[family][_ADAPTER] in str(error.value)
        return
    adapter = get_model_adapter(model)
    assert adapter.num_layers == 2 and adapter.num_heads == 4
    assert adapter.num_heads % adapter.num_kv_heads == 0
    width = adapter.output_projections[0].weight.shape
    assert adapter.num_heads * adapter.head_dim in width  # nn.Linear [out, in] or GPT-2 Conv1D [in, out]
    assert probe_model(model).head_error is None
    assert len(adapter.sliding_windows) == 2


@pytest.mark.parametrize("family", FAMILIES)
def test_masking_equals_uniform_attention_kernel(family):
    """mask_heads == uniform weights over exactly the keys the layer's own mask allows (window, padding,
    packed documents), computed inside the attention kernel."""
    model = build_family(family, initializer_range=0.2)
    expected = _expect(family, "masking")
    ids, mask = _padded_batch(_ids(20, 14))
    if expected is not None:
        with expected, mask_heads(model, HEADS):
            pass
        return
    with mask_heads(model, HEADS):
        got = per_token_loss(model, ids, mask)
    with uniform_attention_reference(model, HEADS):
        want = per_token_loss(model, ids, mask)
    torch.testing.assert_close(got.losses, want.losses, atol=TOL, rtol=TOL)
    if family in EXPECTED_ERRORS and _PACKED in EXPECTED_ERRORS[family]:
        return
    row, positions = _packed_row(_ids(12, 20, seed=1))
    with mask_heads(model, HEADS):
        got = per_token_loss(model, row, position_ids=positions)
    with uniform_attention_reference(model, HEADS):
        want = per_token_loss(model, row, position_ids=positions)
    torch.testing.assert_close(got.losses, want.losses, atol=TOL, rtol=TOL)


@pytest.mark.parametrize("family", FAMILIES)
def test_attention_influence_score(family):
    """(L_ref - L_base) / L_base with both losses from the model's own logits (reference: the kernel)."""
    model = build_family(family, initializer_range=0.2)
    docs = _ids(20, 9, seed=2)
    expected = _expect(family, "ai")
    if expected is not None:
        with expected:
            AttentionInfluence(model, tiny_tokenizer(), HEADS)
        return
    scores = AttentionInfluence(model, tiny_tokenizer(), HEADS, batch_size=2, min_tokens=1).score_token_ids(
        [d.tolist() for d in docs]
    )
    for i, doc in enumerate(docs):
        base = _hand_losses(model, doc).double().mean()
        with uniform_attention_reference(model, HEADS):
            ref = _hand_losses(model, doc).double().mean()
        assert math.isclose(scores["ai_loss_base"][i], float(base), rel_tol=TOL, abs_tol=TOL)
        assert math.isclose(scores["ai_loss_ref"][i], float(ref), rel_tol=TOL, abs_tol=TOL)
        assert math.isclose(scores["ai_score"][i], float((ref - base) / base), rel_tol=1e-4, abs_tol=TOL)


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_equals_per_document_loss(family):
    """per_token_loss of a packed 2-document row (and of a padded batch) == each document alone through
    ``model(...).logits`` (logit scaling, soft-capping, sliding windows, explicit masks included)."""
    model = build_family(family, initializer_range=0.2)
    docs = _ids(12, 20, seed=3)
    ids, mask = _padded_batch(docs)
    padded = per_token_loss(model, ids, mask).losses
    for row, doc in enumerate(docs):
        torch.testing.assert_close(padded[row, 1 : len(doc)], _hand_losses(model, doc), atol=TOL, rtol=TOL)
    row, positions = _packed_row(docs)
    expected = _expect(family, _PACKED)
    if expected is not None:
        with expected:
            per_token_loss(model, row, position_ids=positions)
        return
    packed = per_token_loss(model, row, position_ids=positions).losses[0]
    torch.testing.assert_close(packed[1:12], _hand_losses(model, docs[0]), atol=TOL, rtol=TOL)
    torch.testing.assert_close(packed[13:], _hand_losses(model, docs[1]), atol=TOL, rtol=TOL)


@pytest.fixture(scope="module")
def slm_trainer(tmp_path_factory):
    """One SLMTrainer for the whole column: its selection and loss (``get_batch_samples`` +
    ``compute_loss``) read the student and reference given per family, so one Trainer set-up serves all."""
    from datasets import Dataset

    from hf_select.trainer_ext import SLMConfig, SLMTrainer

    args = SLMConfig(
        output_dir=str(tmp_path_factory.mktemp("slm")),
        use_cpu=True,
        report_to="none",
        token_select_ratio=0.6,
        select_scope="sequence",
    )
    model = build_family("llama")
    return SLMTrainer(
        model=copy.deepcopy(model),
        args=args,
        ref_model=model,
        train_dataset=Dataset.from_dict({"input_ids": [[1, 2]]}),
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_one_slm_step(family, slm_trainer):
    """SLMTrainer's loss on a packed batch == mean student CE over the top ceil(0.6 n) tokens by excess loss,
    both losses computed document by document from the models' own logits."""
    from hf_select.packing import pack_documents
    from hf_select.trainer_ext import SLMCollator

    student = copy.deepcopy(build_family(family, initializer_range=0.2)).train()
    reference = build_family(family, seed=1, initializer_range=0.2)
    docs = _ids(7, 9, 10, 6, seed=4)
    rows = pack_documents([d.tolist() for d in docs], max_length=16)
    rows.pop("num_documents")
    trainer = slm_trainer
    trainer.model, trainer.ref_model = student, reference
    batch = SLMCollator()([{k: v[i] for k, v in rows.items()} for i in range(len(rows["input_ids"]))])
    expected = _expect(family, "slm")
    if expected is not None:
        with expected:
            batches, _ = trainer.get_batch_samples(iter([batch]), 1, trainer.args.device)
            trainer.compute_loss(student, batches[0])
        return
    batches, _ = trainer.get_batch_samples(iter([batch]), 1, trainer.args.device)
    loss = trainer.compute_loss(student, batches[0])
    student.eval()
    spans = []  # (row, start, stop) of every packed document
    for r, positions in enumerate(rows["position_ids"]):
        starts = [i for i, p in enumerate(positions) if p == 0] + [len(positions)]
        spans += [(r, a, b) for a, b in zip(starts, starts[1:])]
    ids, mask = _padded_batch([torch.tensor(rows["input_ids"][r][a:b]) for r, a, b in spans])
    ce, ref = _hand_batch_losses(student, ids, mask), _hand_batch_losses(reference, ids, mask)
    chosen = []
    for r in range(len(rows["input_ids"])):
        cells = []
        for doc, (row, a, b) in enumerate(spans):
            if row == r:
                cells += [
                    (float(ce[doc, t] - ref[doc, t]), a + t, float(ce[doc, t])) for t in range(b - a - 1)
                ]
        k = math.ceil(0.6 * len(cells) - 1e-6)
        chosen += [c[2] for c in sorted(cells, key=lambda c: (-c[0], c[1]))[:k]]
    assert math.isclose(float(loss.detach()), sum(chosen) / len(chosen), rel_tol=1e-4, abs_tol=TOL)


@pytest.mark.parametrize("family", FAMILIES)
def test_detection_argmax(family):
    """record_attention_argmax == argmax of the eager attention probabilities at the chosen query rows."""
    model = build_family(family, initializer_range=0.2)
    ids = _ids(20, seed=5)[0][None]
    rows = torch.arange(6, 19)
    expected = _expect(family, "detection")
    if expected is not None:
        with expected, record_attention_argmax(model):
            pass
        return
    eager = build_family(family, initializer_range=0.2, attn_implementation="eager")
    with torch.no_grad():
        attentions = eager(input_ids=ids, output_attentions=True, use_cache=False).attentions
    with record_attention_argmax(model) as recorder:
        recorder.rows = rows
        final_hidden_states(model, input_ids=ids)
    for layer, probabilities in enumerate(attentions):
        torch.testing.assert_close(
            recorder.argmax[layer][0], probabilities[0][:, rows].argmax(-1), rtol=0, atol=0
        )
