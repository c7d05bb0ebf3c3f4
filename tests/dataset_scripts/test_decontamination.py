import pytest

from hf_select.dataset_scripts.decontamination import NgramIndex, ngrams, words


def test_words_and_ngrams():
    assert words("Hello, World! x_1") == ["hello", "world", "x_1"]
    assert list(ngrams(["a", "b", "c"], 2)) == [("a", "b"), ("b", "c")]
    assert list(ngrams(["a"], 2)) == [("a",)]


def test_thirteen_gram_overlap_is_detected_case_and_punctuation_blind():
    question = (
        "Janet's ducks lay sixteen eggs per day and she eats three for breakfast every morning with toast"
    )
    index = NgramIndex([question], n=13)
    doc = (
        "Intro text. JANET'S ducks lay sixteen eggs per day, and she eats three for breakfast every morning!"
    )
    assert index.contains(doc)
    # 12 of the 13 words only: no overlap
    assert not index.contains("ducks lay sixteen eggs per day and she eats three for breakfast")


def test_short_items_match_as_a_whole_and_tiny_ones_are_ignored():
    index = NgramIndex(["the quick brown fox jumps over the dog", "4 * 8 ="], n=13, min_words=8)
    assert index.contains("Yesterday the quick brown fox jumps over the dog again.")
    assert not index.contains("the quick brown fox jumps over a dog")
    assert not index.contains("4 * 8 = 32")
    assert len(index) == 1


def test_bad_n():
    with pytest.raises(ValueError):
        NgramIndex([], n=0)
