"""appealnet.testing: gradcheck passes right gradients and catches wrong
ones; assert_results passes and fails with readable messages."""
import json

import numpy as np
import pytest

import appealnet as an
import appealnet.nn.functional as F
from appealnet import metrics, nn
from appealnet.testing import assert_results, gradcheck


# --------------------------------------------------------------- gradcheck
def square_with_backward(slope):
    """Forward a * a; backward (slope * a) instead of 2a.  The detach trick:
    the detached part carries the value, the (a - a.detach()) part (zero in
    value) carries a gradient of our choosing."""
    def fn(a):
        return (a * a).detach() + (a - a.detach()) * (slope * a).detach()
    return fn


def test_gradcheck_passes_correct_compositions():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    w = rng.standard_normal((4, 2))
    assert gradcheck(lambda a, b: (a @ b).tanh(), [x, w]) is True
    assert gradcheck(lambda a: (a.exp() / a.exp().sum(dim=1, keepdim=True)).log(), [x])
    assert gradcheck(square_with_backward(2.0), [x])        # the right slope
    # class indices are passed through unchanged, not differentiated
    assert gradcheck(lambda a, y: F.cross_entropy(a, y), [x, np.array([0, 3, 1])])


def test_gradcheck_with_tensor_inputs_and_several_outputs():
    an.manual_seed(0)
    layer = nn.Linear(4, 3)
    x = an.tensor(np.random.default_rng(1).standard_normal((2, 4)), requires_grad=True)
    scale = an.tensor(np.array([2.0, -1.0, 0.5]))      # a constant: no requires_grad
    assert gradcheck(lambda a, s: (layer(a) * s, layer(a).sigmoid().sum()), [x, scale])
    # an output that does not depend on the inputs has a zero Jacobian
    assert gradcheck(lambda a: (a * 3.0, an.ones(2)), [np.ones(3)])


def test_gradcheck_catches_a_wrong_gradient_and_names_the_worst_element():
    # Jacobian of a*a is diag(2a); the wrong backward gives diag(3).  Every
    # diagonal element is off (2a != 3 for these a); the worst is where
    # |3 - 2a| is largest: a = -2 at [0, 1], numerical -4.
    x = np.array([[0.5, -2.0], [1.0, 0.25]])
    with pytest.raises(AssertionError,
                       match=r"4 of 16 Jacobian elements out of tolerance; worst is "
                             r"d output\[0\]\[0, 1\] / d input\[0\]\[0, 1\]: "
                             r"analytical 3, numerical -4"):
        gradcheck(lambda a: square_with_backward(0.0)(a) + (a - a.detach()) * 3.0, [x])


def test_gradcheck_catches_a_five_percent_error():
    x = np.random.default_rng(2).uniform(0.5, 1.5, (2, 3))
    with pytest.raises(AssertionError, match="6 of 36 Jacobian elements"):
        gradcheck(square_with_backward(2.1), [x])


def test_gradcheck_names_the_input_position():
    # only the second input's gradient is wrong
    x = np.ones(2)
    y = np.array([1.5, 2.5])
    with pytest.raises(AssertionError, match=r"/ d input\[1\]\[1\]"):
        gradcheck(lambda a, b: a * 2.0 + square_with_backward(1.0)(b), [x, y])


def test_gradcheck_rejects_bad_calls():
    with pytest.raises(ValueError, match="no differentiable input"):
        gradcheck(lambda y: y, [np.array([1, 2])])
    with pytest.raises(TypeError, match="output 0 is ndarray"):
        gradcheck(lambda a: np.asarray(a), [np.ones(2)])
    with pytest.raises(ValueError, match="eps must be positive"):
        gradcheck(lambda a: a, [np.ones(2)], eps=0.0)


# ---------------------------------------------------------- assert_results
def write_results(path):
    """A results.json as an evaluation run would write it: AppealNet and the
    score-margin baseline at two AccI targets, both protocols."""
    rng = np.random.default_rng(0)
    n = 400
    target = rng.integers(0, 10, n)
    edge_right = rng.random(n) < 0.7
    edge_pred = np.where(edge_right, target, (target + 1) % 10)
    cloud_pred = np.where(rng.random(n) < 0.95, target, (target + 2) % 10)
    sharp = edge_right + 0.8 * rng.random(n)           # separates errors well
    blunt = edge_right + 3.0 * rng.random(n)           # separates them poorly
    half = n // 2
    rows = []
    for acci in (0.5, 0.9):
        for method, scores in (("appealnet", sharp), ("score_margin", blunt)):
            report = metrics.tune_and_report(
                scores[:half], edge_pred[:half], cloud_pred[:half], target[:half],
                scores[half:], edge_pred[half:], cloud_pred[half:], target[half:], acci,
                c1=10.0, c0=110.0)
            for protocol, point in report.items():
                rows.append((method, protocol, point))
    by_key = {(m, p, r.acci_target): r for m, p, r in rows}
    out = []
    for method, protocol, point in rows:
        baseline = by_key[("score_margin", protocol, point.acci_target)]
        saving = (metrics.relative_saving(baseline.cost, point.cost)
                  if method == "appealnet" else None)
        out.append(point.as_row(method, relative_saving=saving))
    path.write_text(json.dumps({"rows": out}))
    return out


def test_assert_results_passes_and_returns_the_rows(tmp_path):
    path = tmp_path / "results.json"
    rows = write_results(path)
    mine = [r for r in rows if r["method"] == "appealnet" and r["acci_target"] == 0.9]
    lowest_saving = min(r["relative_saving"] for r in mine)
    lowest_accuracy = min(r["accuracy"] for r in mine)
    assert lowest_saving > 0.2               # the sharp score really saves cost
    found = assert_results(path, min_saving=lowest_saving, min_accuracy=lowest_accuracy)
    assert found == mine
    assert [r["protocol"] for r in assert_results(path, protocol="val-tuned")] == ["val-tuned"]


def test_assert_results_fails_with_expected_and_found(tmp_path):
    path = tmp_path / "results.json"
    rows = write_results(path)
    row = next(r for r in rows if r["method"] == "appealnet" and r["acci_target"] == 0.5
               and r["protocol"] == "test-tuned")
    with pytest.raises(AssertionError) as excinfo:
        assert_results(path, min_saving=0.99, min_accuracy=0.0, acci=0.5, protocol="test-tuned")
    message = str(excinfo.value)
    assert "method 'appealnet' at AccI target 0.5 misses pinned values" in message
    assert "[protocol test-tuned]" in message
    assert (f"relative_saving  expected >= 0.99       found {row['relative_saving']:.6g}"
            in message)
    assert message.splitlines()[2].endswith("FAIL")
    assert message.splitlines()[3].endswith("ok")      # accuracy >= 0 holds


def test_assert_results_baseline_has_no_saving(tmp_path):
    path = tmp_path / "results.json"
    write_results(path)
    with pytest.raises(AssertionError, match=r"found None\s+FAIL"):
        assert_results(path, min_saving=0.0, method="score_margin")


def test_assert_results_lists_what_is_there(tmp_path):
    path = tmp_path / "results.json"
    write_results(path)
    with pytest.raises(AssertionError, match=r"no results for method 'appealnett'; "
                                             r"available methods: \['appealnet', 'score_margin'\]"):
        assert_results(path, method="appealnett")
    with pytest.raises(AssertionError, match=r"no results at AccI target 0.75; "
                                             r"available targets: \[0.5, 0.9\]"):
        assert_results(path, acci=0.75)
    with pytest.raises(ValueError, match="protocol must be one of"):
        assert_results(path, protocol="tuned")


def test_assert_results_rejects_malformed_files(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        assert_results(path)
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="top-level object with a 'rows' list"):
        assert_results(path)
    path.write_text(json.dumps({"rows": [{"method": "appealnet", "acci_target": 0.9}]}))
    with pytest.raises(ValueError, match=r"row 0 lacks the key\(s\) \['protocol', 'delta'"):
        assert_results(path)
