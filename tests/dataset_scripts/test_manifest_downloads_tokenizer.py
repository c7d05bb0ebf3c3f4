import hashlib
import json
import zipfile

import pytest

from hf_select.dataset_scripts import downloads
from hf_select.dataset_scripts.manifest import file_hashes, write_manifest
from hf_select.dataset_scripts.tokenizer import train_bpe_tokenizer


def test_manifest_hashes_every_output(tmp_path):
    (tmp_path / "pretrain").mkdir()
    (tmp_path / "pretrain/data.arrow").write_bytes(b"abc")
    (tmp_path / ".hidden").write_text("x")
    path = write_manifest(tmp_path, {"pretrain": {"sources": {"foldoc": {"license": "GFDL-1.1+"}}}})
    manifest = json.loads(path.read_text())
    assert manifest["files"] == {"pretrain/data.arrow": hashlib.sha256(b"abc").hexdigest()}
    assert manifest["pretrain"]["sources"]["foldoc"]["license"] == "GFDL-1.1+"
    assert "manifest.json" not in file_hashes(tmp_path)


def test_apt_unavailable_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(downloads, "apt_available", lambda: False)
    with pytest.raises(downloads.DownloadError, match="dict-foldoc.*apt-get"):
        downloads.apt_package("dict-foldoc", tmp_path)


def test_cached_package_needs_no_apt(tmp_path, monkeypatch):
    monkeypatch.setattr(downloads, "apt_available", lambda: False)
    (tmp_path / "deb/dict-foldoc").mkdir(parents=True)
    (tmp_path / "deb/dict-foldoc/.done").write_text("x.deb")
    assert downloads.apt_package("dict-foldoc", tmp_path) == tmp_path / "deb/dict-foldoc"


def test_wheel_in_cache_is_unzipped_without_pip(tmp_path, monkeypatch):
    monkeypatch.setattr(downloads, "_run", lambda *a, **k: pytest.fail("pip must not run"))
    (tmp_path / "wheels").mkdir()
    with zipfile.ZipFile(tmp_path / "wheels/toy_pkg-1.0-py3-none-any.whl", "w") as z:
        z.writestr("toy_pkg/__init__.py", "'''Doc.'''\n")
    root = downloads.pypi_wheel("toy-pkg==1.0", tmp_path)
    assert (root / "toy_pkg/__init__.py").read_text() == "'''Doc.'''\n"
    assert downloads.pypi_wheel("toy-pkg==1.0", tmp_path) == root
    with pytest.raises(ValueError, match="pin the version"):
        downloads.pypi_wheel("toy-pkg", tmp_path)


def test_bpe_tokenizer_specials_and_round_trip():
    texts = [
        "def f(x):\n    return x + 1\n",
        "The integral of x squared.",
        "Question: why?\nAnswer: because.",
    ] * 20
    tok = train_bpe_tokenizer(texts, vocab_size=300)
    assert [tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id] == [0, 1, 2, 3]
    ids = tok("def f(x): return 1").input_ids
    assert ids[0] == 1 and tok.decode(ids, skip_special_tokens=True) == "def f(x): return 1"
    assert len(tok) <= 300
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe_tokenizer(texts, vocab_size=100)
