import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from hf_select.attention_influence.retrieval_heads import (
    RetrievalHeads,
    detect_retrieval_heads,
    record_attention_argmax,
)
from hf_select.figures import is_drawn
from hf_select.testing import tiny_model, tiny_tokenizer

VOCAB = 64


def _word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{f"w{i:02d}": i for i in range(4, VOCAB)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def _copy_head_model(layer=1, head=1, scale=40.0):
    """GPT-2 (no RoPE) whose head (layer, head) attends from a token with id a to the key with id a + 1: at
    row t - 1 of a value w10 w11 ... it looks at the context position holding the answer token t."""
    config = GPT2Config(vocab_size=VOCAB, n_embd=128, n_layer=2, n_head=2, n_positions=128)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        model.transformer.wte.weight.zero_()
        model.transformer.wte.weight[:, :VOCAB] = torch.eye(VOCAB)
        model.transformer.wpe.weight.zero_()
        for block in model.transformer.h[:layer]:  # keep the residual stream one-hot below the copy head
            block.attn.c_proj.weight.zero_()
            block.attn.c_proj.bias.zero_()
            block.mlp.c_proj.weight.zero_()
            block.mlp.c_proj.bias.zero_()
        attn = model.transformer.h[layer].attn.c_attn
        e, d = 128, 64
        attn.weight[:, d * head : d * (head + 1)] = 0
        attn.weight[:, e + d * head : e + d * (head + 1)] = 0
        attn.bias.zero_()
        for a in range(VOCAB):
            attn.weight[a, d * head + a] = scale  # query of token a
            if a >= 1:
                attn.weight[a, e + d * head + a - 1] = 1.0  # key of token a matches query of a - 1
            attn.weight[a, 2 * e + d * head + a] = 1.0  # value: the token's one-hot
        # read-out: only the copy head writes to the residual, so the model predicts the copied token
        block = model.transformer.h[layer]
        block.mlp.c_proj.weight.zero_()
        block.mlp.c_proj.bias.zero_()
        block.attn.c_proj.weight.zero_()
        block.attn.c_proj.bias.zero_()
        block.attn.c_proj.weight[d * head : d * head + VOCAB, :VOCAB] = 10 * torch.eye(VOCAB)
    return model


def _copy_sample(seed):
    import random

    rng = random.Random(seed)
    filler = [f"w{i}" for i in range(30, 62, 2)]  # even ids: no id is another's successor
    value = " ".join(f"w{i}" for i in range(10, 10 + rng.randint(4, 8)))
    before = " ".join(rng.choice(filler) for _ in range(rng.randint(3, 8)))
    after = " ".join(rng.choice(filler) for _ in range(rng.randint(3, 8)))
    prompt = f"{before} {value} {after} w09"
    assert len(_word_tokenizer()(prompt).input_ids) == len(prompt.split())
    start = len(before) + 1
    return {"prompt": prompt, "answer": " " + value, "value_span": [start, start + len(value)]}


def test_detection_ranks_the_planted_copy_head_first():
    model = _copy_head_model(layer=1, head=1)
    heads = detect_retrieval_heads(
        model,
        _word_tokenizer(),
        proxy=[_copy_sample(s) for s in range(6)],
        top_fraction=0.25,
        show_progress=False,
    )
    assert heads.ranking()[0][:2] == (1, 1)
    assert heads.selected == [(1, 1)]
    assert heads.scores[1, 1] == 1.0 and heads.scores.view(-1).sort().values[-2] < 0.5
    assert heads.num_samples == 6 and heads.num_dropped == 0
    assert model.config._attn_implementation == "sdpa"


def test_scores_equal_hand_computation_from_full_attention():
    """Independent check (row t - 1 reads answer token t): copy score per head from the full eager attention
    matrices of two samples, averaged."""
    model = _copy_head_model()
    model.set_attn_implementation("eager")
    tok = _word_tokenizer()
    samples = [_copy_sample(3), _copy_sample(4)]
    expected = torch.zeros(2, 2)
    for sample in samples:
        prompt_ids = tok(sample["prompt"]).input_ids
        ids = tok(sample["prompt"] + sample["answer"]).input_ids
        start = len(prompt_ids)
        words = sample["prompt"].split()
        value_words = set(sample["answer"].split())
        with torch.no_grad():
            attentions = model(input_ids=torch.tensor([ids]), output_attentions=True).attentions
        for layer in range(2):
            for head in range(2):
                hits = 0
                for t in range(start, len(ids)):
                    p = int(attentions[layer][0, head, t - 1, :t].argmax())
                    hits += p < start and words[p] in value_words and ids[p] == ids[t]
                expected[layer, head] += hits / (len(ids) - start) / len(samples)
    heads = detect_retrieval_heads(model, tok, samples, drop_failed=False, show_progress=False)
    torch.testing.assert_close(heads.scores, expected)
    assert expected[1, 1] > 0.7


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt_neox", "phi3"])
def test_argmax_rows_equal_full_attention_argmax(family):
    """GQA- and RoPE-aware: the recorded argmax equals the argmax of the eager attention weights."""
    model = tiny_model(family, attn_implementation="eager")
    ids = torch.randint(4, 300, (1, 15))
    rows = torch.tensor([3, 9, 14])
    with torch.no_grad():
        full = model(input_ids=ids, output_attentions=True).attentions
        with record_attention_argmax(model) as recorder:
            recorder.rows = rows
            model(input_ids=ids)
    for layer, weights in enumerate(full):
        torch.testing.assert_close(recorder.argmax[layer][0], weights[0][:, rows].argmax(-1))
    assert model.config._attn_implementation == "eager"


@pytest.mark.parametrize("method", ["teacher_forced", "generation"])
def test_failed_samples_are_dropped(method):
    model = _copy_head_model()
    failed = dict(_copy_sample(2), answer=" w40 w42 w44")  # not in the context: the model cannot answer
    samples = [_copy_sample(1), failed]
    heads = detect_retrieval_heads(model, _word_tokenizer(), samples, method=method, show_progress=False)
    assert heads.method == method and heads.num_samples == 1 and heads.num_dropped == 1
    assert heads.scores[1, 1] == 1.0 and heads.ranking()[0][:2] == (1, 1)
    kept = detect_retrieval_heads(model, _word_tokenizer(), samples, method=method, drop_failed=False)
    assert kept.num_samples == 2 and kept.num_dropped == 0
    if method == "teacher_forced":  # the gold answer is nowhere in the context: nothing to copy
        assert kept.scores[1, 1] == 0.5


def test_save_load_heatmap(tmp_path):
    heads = RetrievalHeads.from_scores(torch.rand(3, 4), 0.2, model_name="m")
    # save / load / heatmap round trip
    path = heads.save(tmp_path / "heads.json")
    loaded = RetrievalHeads.load(path)
    assert loaded.selected == heads.selected and torch.equal(loaded.scores, heads.scores)
    heads.plot_heatmap(tmp_path / "heads.png")
    assert is_drawn(tmp_path / "heads.png")


def test_from_scores_selects_top_fraction_and_errors():
    scores = torch.tensor([[0.1, 0.9, 0.0, 0.3], [0.5, 0.2, 0.8, 0.0]])
    assert RetrievalHeads.from_scores(scores, 0.25).selected == [(0, 1), (1, 2)]
    with pytest.raises(ValueError, match="top_fraction"):
        RetrievalHeads.from_scores(scores, 0)
    with pytest.raises(ValueError, match="method"):
        detect_retrieval_heads(tiny_model(), tiny_tokenizer(), [{}], method="beam")
    with pytest.raises(ValueError, match="non-empty"):
        detect_retrieval_heads(
            tiny_model(), tiny_tokenizer(), [{"prompt": "", "answer": "x", "value_span": [0, 1]}]
        )
    with pytest.raises(ValueError, match="values"):
        detect_retrieval_heads(tiny_model(), tiny_tokenizer())
