import pytest

from hf_select.text_metrics import exact_match, last_number, normalize_number, rouge_l_f1


@pytest.mark.parametrize(
    "text, expected",
    [("1,000", "1000"), ("$1,000.50", "1000.5"), ("42.", "42"), ("-3.0", "-3"), ("12%", "12"), ("abc", None)],
)
def test_normalize_number(text, expected):
    assert normalize_number(text) == expected


def test_exact_match_numbers_and_text():
    assert exact_match("1,000", "1000") == 1.0
    assert exact_match("The answer is 72", "72") == 1.0
    assert exact_match("71", "72") == 0.0
    assert exact_match("The Cat!", "cat") == 1.0
    assert last_number("so 3 apples and 5 pears") == "5"


def test_rouge_l_known_values():
    # LCS("the cat sat on the mat", "the cat is on the mat") = 5 of 6 words each side.
    assert rouge_l_f1("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    # LCS = "police killed the gunman"? pred: police killed the gunman; ref: police kill the gunman -> 3/4
    assert rouge_l_f1("police killed the gunman", "police kill the gunman") == pytest.approx(0.75)
    assert rouge_l_f1("police killed the gunman", "police kill the gunman", stem=True) == pytest.approx(1.0)
    assert rouge_l_f1("", "") == 1.0 and rouge_l_f1("a", "") == 0.0
