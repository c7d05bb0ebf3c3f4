import json

from hf_select.cli import main
from hf_select.testing import TINY_CORPUS, tiny_model, tiny_tokenizer


def test_train_opus_command_end_to_end(tmp_path):
    model_dir = tmp_path / "model"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    sentences = [s.strip() for s in TINY_CORPUS.split(".") if s.strip()]
    with open(tmp_path / "corpus.jsonl", "w") as f:
        for i in range(24):
            f.write(json.dumps({"text": sentences[i % len(sentences)] * 3, "domain": "ab"[i % 2]}) + "\n")
    rec = {"query": "The quick brown fox", "choices": ["jumps", "sleeps"], "gold": 0}
    (tmp_path / "task.train.jsonl").write_text(json.dumps(rec) + "\n")
    (tmp_path / "task.yaml").write_text(
        "name: t\ntype: multiple_choice\nsplit: test\ndata_files:\n  train: task.train.jsonl\n"
    )
    out = tmp_path / "out"
    code = main(
        [
            "train",
            "opus",
            "--model_name_or_path",
            str(model_dir),
            "--dataset",
            str(tmp_path / "corpus.jsonl"),
            "--proxy_tasks",
            str(tmp_path / "task.yaml"),
            "--proxy_pool_size",
            "3",
            "--max_length",
            "32",
            "--output_dir",
            str(out),
            "--max_steps",
            "2",
            "--per_device_train_batch_size",
            "2",
            "--score_window",
            "16",
            "--sketch_dim",
            "256",
            "--use_cpu",
            "--report_to",
            "none",
            "--save_strategy",
            "no",
            "--disable_tqdm",
            "true",
        ]
    )
    assert code == 0 and (out / "model.safetensors").exists()
