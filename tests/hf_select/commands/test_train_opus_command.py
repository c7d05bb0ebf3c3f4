"""``hf-select train opus`` selects by the proxy: on a corpus whose half "a" is the proxy task's text and whose
half "b" is unrelated, the rows it trains on are mostly "a", far above their share of the candidates (what a
random selection would give)."""

import json
import random

from hf_select.cli import main
from hf_select.testing import TINY_WORDS, tiny_model, tiny_tokenizer

TASK = "the quick brown fox jumps over the lazy dog"


def test_train_opus_command_selects_the_half_the_proxy_favours(tmp_path, monkeypatch):
    from hf_select.trainer_ext import opus_trainer

    model_dir = tmp_path / "model"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    rng = random.Random(0)
    other = [w for w in TINY_WORDS if w not in TASK.split()]
    with open(tmp_path / "corpus.jsonl", "w") as f:
        for i in range(48):
            if i % 2 == 0:  # "a": the task's sentence, a few times over
                text = " ".join([TASK] * rng.randint(2, 3))
            else:  # "b": words the task never uses
                text = " ".join(rng.choice(other) for _ in range(rng.randint(16, 28)))
            f.write(json.dumps({"text": text, "domain": "ab"[i % 2]}) + "\n")
    rec = {"query": "the quick brown fox jumps over the", "choices": ["lazy dog", "cat"], "gold": 0}
    (tmp_path / "task.train.jsonl").write_text(json.dumps(rec) + "\n")
    (tmp_path / "task.yaml").write_text(
        "name: t\ntype: multiple_choice\nsplit: test\ndata_files:\n  train: task.train.jsonl\n"
    )
    trainers = []
    train = opus_trainer.OPUSTrainer.train
    monkeypatch.setattr(
        opus_trainer.OPUSTrainer, "train", lambda self, *a, **k: trainers.append(self) or train(self, *a, **k)
    )
    out = tmp_path / "out"
    argv = ["train", "opus", "--model_name_or_path", str(model_dir), "--dataset", str(tmp_path / "corpus.jsonl")]
    argv += ["--proxy_tasks", str(tmp_path / "task.yaml"), "--proxy_pool_size", "4", "--max_length", "32"]
    argv += ["--output_dir", str(out), "--max_steps", "4", "--per_device_train_batch_size", "2"]
    argv += ["--select_ratio", "0.25", "--selection", "topk", "--score_window", "16", "--sketch_dim", "256"]
    argv += ["--use_cpu", "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true", "--seed", "0"]
    assert main(argv) == 0 and (out / "model.safetensors").exists()
    shares = opus_trainer.selected_domain_shares(trainers[0].opus_history)
    selected = sum(len(r["selected"]) for r in trainers[0].opus_history)
    assert selected == 4 * 2
    assert 0.3 <= shares["a"]["candidates"] <= 0.7  # candidates: about half each, as a random draw gives
    assert shares["a"]["selected"] >= shares["a"]["candidates"] + 0.3
