"""The harness split (tasks / scoring / results): one metric table, metric functions shared with ``evaluate``."""

import math
import sys

import pytest

from hf_select.eval import TASK_TYPES, harness, results, scoring
from hf_select.eval.metric_modules import load_metric


def test_metric_table_covers_every_task_type():
    assert set(results.TASK_METRICS) == set(TASK_TYPES)


@pytest.mark.parametrize(
    ("module", "function"),
    [("acc_norm", "multiple_choice_metrics"), ("accuracy", "accuracy"), ("bits_per_byte", "bits_per_byte")],
)
def test_evaluate_modules_call_the_harness_metric_functions(module, function):
    metric = load_metric(module)
    loaded = sys.modules[type(metric).__module__]
    assert getattr(loaded, function) is getattr(results, function)


def test_metric_functions_by_hand():
    assert results.multiple_choice_metrics([-2.0, -3.0], ["ab", "abcdefgh"], gold=1) == {
        "acc": 0.0,
        "acc_norm": 1.0,
    }
    # ties: the first maximum wins, as np.argmax
    assert results.multiple_choice_metrics([-1.0, -1.0], ["a", "b"], gold=1)["acc"] == 0.0
    assert results.bits_per_byte([math.log(2) * 8, math.log(2) * 4], [4, 2]) == pytest.approx(2.0)
    assert results.accuracy([0, 1, 2, 1], [0, 1, 1, 0]) == 0.5
    mean, stderr = results.mean_and_stderr([0.0, 1.0])
    assert (mean, stderr) == (0.5, pytest.approx(0.5))  # std(ddof=1) = 0.7071 / sqrt(2)


def test_metric_functions_reject_bad_input():
    with pytest.raises(ValueError, match="3 log-likelihoods for 2 choices"):
        results.multiple_choice_metrics([-1.0, -2.0, -3.0], ["a", "b"], gold=0)
    with pytest.raises(ValueError, match="at least one byte"):
        results.bits_per_byte([1.0], [0])
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        results.accuracy([0, 1], [0])


def test_public_names_stay_importable_from_the_harness():
    for name in harness.__all__:
        assert hasattr(harness, name), name
    assert harness.build_rows is scoring.build_rows and harness.write_results is results.write_results
