import pytest
from datasets import Dataset

from hf_select.loading import ModelArguments, load_any_dataset, load_model_and_tokenizer, require_columns
from hf_select.testing import tiny_model, tiny_tokenizer


def test_roundtrip_local_folder_with_safetensors(tmp_path):
    model = tiny_model("qwen2")
    model.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded, tok = load_model_and_tokenizer(ModelArguments(model_name_or_path=str(tmp_path)))
    assert not loaded.training and tok.pad_token == "<pad>"
    assert type(loaded).__name__ == "Qwen2ForCausalLM"


def test_missing_model_argument():
    with pytest.raises(ValueError, match="model_name_or_path"):
        load_model_and_tokenizer(ModelArguments())


def test_datasets_from_disk_and_files(tmp_path):
    ds = Dataset.from_dict({"text": ["a", "b"]})
    ds.save_to_disk(tmp_path / "disk")
    ds.to_json(tmp_path / "d.jsonl")
    assert load_any_dataset(str(tmp_path / "disk"))["text"] == ["a", "b"]
    assert load_any_dataset(str(tmp_path / "d.jsonl"))["text"] == ["a", "b"]
    with pytest.raises(ValueError, match=r"missing column\(s\) \['domain'\]"):
        require_columns(ds, ["text", "domain"])


def test_a_folder_of_several_saved_datasets_is_refused_and_named(tmp_path):
    from datasets import Dataset

    Dataset.from_dict({"text": ["a"]}).save_to_disk(str(tmp_path / "out" / "selected"))
    Dataset.from_dict({"text": ["a", "b", "c"]}).save_to_disk(str(tmp_path / "out" / "mix"))
    with pytest.raises(ValueError, match=r"holds several saved datasets \(mix, selected\)"):
        load_any_dataset(str(tmp_path / "out"))


def test_an_output_manifest_names_the_default_dataset(tmp_path):
    from datasets import Dataset

    from hf_select.loading import write_output_manifest

    Dataset.from_dict({"text": ["a"]}).save_to_disk(str(tmp_path / "selected"))
    Dataset.from_dict({"text": ["a", "b", "c"]}).save_to_disk(str(tmp_path / "mix"))
    write_output_manifest(tmp_path, ["selected", "mix"], "mix")
    assert load_any_dataset(str(tmp_path))["text"] == ["a", "b", "c"]


@pytest.mark.parametrize(
    "path", ["./nope", "missing_dir/", "/tmp/definitely/not/here", "docs.jsonl", "a/b/c"]
)
def test_a_missing_local_path_says_no_such_folder(path):
    with pytest.raises(FileNotFoundError, match="no such folder or file"):
        load_any_dataset(path)
