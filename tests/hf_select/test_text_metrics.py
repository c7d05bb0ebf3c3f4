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
    # strings without word tokens (empty, CJK) score 0, as rouge_score does
    assert rouge_l_f1("", "") == 0.0 and rouge_l_f1("a", "") == 0.0 and rouge_l_f1("日本語", "日本語") == 0.0


@pytest.mark.parametrize(
    "prediction, reference, lcs, n_pred, n_ref",
    [
        # Porter stems: running -> run, ponies -> poni, caresses -> caress, generalization -> gener
        ("running ponies", "the pony runs", 1, 2, 3),  # pony -> poni, so only "run" matches in order
        ("caresses generalization", "caress generalizations", 2, 2, 2),
        ("he was happily running", "happily runs", 2, 4, 2),
    ],
)
def test_rouge_l_porter_stemmer_hand_computed(prediction, reference, lcs, n_pred, n_ref):
    p, r = lcs / n_pred, lcs / n_ref
    assert rouge_l_f1(prediction, reference, stem=True) == pytest.approx(2 * p * r / (p + r))


@pytest.mark.parametrize(
    "text, expected",
    [("the share is .75", "0.75"), ("-.5 degrees", "-0.5"), ("costs $1,200.50.", "1200.5"), ("0.75 of it", "0.75"),
     ("from 3 to 4.", "4"), ("no number", None)],
)  # fmt: skip
def test_last_number_reads_a_leading_decimal_point(text, expected):
    assert last_number(text) == expected
    if expected is not None:
        assert exact_match(text, expected) == 1.0
