"""appealnet.metrics: hand-computed cases for every metric of Sec. VI, ties,
the ±inf thresholds, curves against brute force, and bad input."""
import itertools

import numpy as np
import pytest

from appealnet import metrics as M

# ---------------------------------------------------------------- fixtures
# Eight inputs, all of class 0.  Listed here by decreasing score; the tests
# shuffle them so that the code's own sorting is exercised.
#   score         .95 .90 .80 .70 .60 .50 .40 .20
#   edge right     T   T   T   F   T   F   F   T     -> edge acc 5/8
#   cloud right    T   T   T   T   T   T   T   F     -> cloud acc 7/8, gap 2/8
# With the k highest-scored inputs at the edge, correct answers =
# 7 + cumsum(edge - cloud) = 7 + [0, 0, 0, 0, -1, -1, -2, -3, -2][k]
#   k:        0    1    2    3    4    5    6    7    8
#   delta:  +inf  .95  .90  .80  .70  .60  .50  .40  .20
#   correct:  7    7    7    7    6    6    5    4    5
#   AccI = (correct - 5) / 2:
#             1    1    1    1   .5   .5    0  -.5    0
SORTED_SCORES = np.array([.95, .90, .80, .70, .60, .50, .40, .20])
SORTED_EDGE_RIGHT = np.array([1, 1, 1, 0, 1, 0, 0, 1], dtype=bool)
SORTED_CLOUD_RIGHT = np.array([1, 1, 1, 1, 1, 1, 1, 0], dtype=bool)
PERMUTATION = np.array([5, 2, 7, 0, 3, 6, 1, 4])


def example():
    """(scores, edge_pred, cloud_pred, target) of the table above, shuffled."""
    target = np.zeros(8, dtype=np.int64)
    edge_pred = np.where(SORTED_EDGE_RIGHT, 0, 3)
    cloud_pred = np.where(SORTED_CLOUD_RIGHT, 0, 4)
    return (SORTED_SCORES[PERMUTATION], edge_pred[PERMUTATION], cloud_pred[PERMUTATION],
            target[PERMUTATION])


def random_system(seed, n=60, ties=False):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 4, n)
    edge_pred = np.where(rng.random(n) < 0.7, target, (target + 1) % 4)
    cloud_pred = np.where(rng.random(n) < 0.9, target, (target + 2) % 4)
    scores = rng.random(n)
    if ties:
        scores = np.round(scores * 5) / 5
    return scores, edge_pred, cloud_pred, target


# ------------------------------------------------------- confidence scores
PROBS = np.array([[0.7, 0.2, 0.1],
                  [0.5, 0.5, 0.0]])


def test_msp_margin_entropy_by_hand():
    np.testing.assert_allclose(M.msp(PROBS), [0.7, 0.5])
    # margin: .7 - .2 = .5 ; .5 - .5 = 0 (tied top two)
    np.testing.assert_allclose(M.score_margin(PROBS), [0.5, 0.0], atol=1e-15)
    # sum p log p, with 0 log 0 = 0 in the second row
    np.testing.assert_allclose(M.neg_entropy(PROBS),
                               [0.7 * np.log(0.7) + 0.2 * np.log(0.2) + 0.1 * np.log(0.1),
                                np.log(0.5)])


def test_softmax_is_stable_and_matches_the_formula():
    logits = np.array([[1.0, 2.0, 3.0], [1000.0, 1000.0, -1000.0]])
    out = M.softmax(logits)
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(out[0], e / e.sum())
    np.testing.assert_allclose(out[1], [0.5, 0.5, 0.0])
    assert out.dtype == np.float64
    np.testing.assert_allclose(M.softmax(logits.T, axis=0), out.T)


def test_scores_reject_logits_and_bad_shapes():
    with pytest.raises(ValueError, match="look like logits"):
        M.msp(np.array([[2.0, -1.0, 0.5]]))
    with pytest.raises(ValueError, match="2-D"):
        M.neg_entropy(np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="at least 2 classes"):
        M.score_margin(np.ones((3, 1)))
    with pytest.raises(ValueError, match="1 non-finite"):
        M.msp(np.array([[np.nan, 1.0]]))


# ------------------------------------------------- rates, accuracy, cost
def test_rates_and_system_accuracy_by_hand():
    scores, edge_pred, cloud_pred, target = example()
    # delta .6: the five scores >= .6 are answered at the edge (k = 5)
    assert M.skipping_rate(scores, 0.6) == 5 / 8
    assert M.appealing_rate(scores, 0.6) == 3 / 8
    assert M.system_accuracy(scores, 0.6, edge_pred, cloud_pred, target) == 6 / 8
    # between two scores (.65) the decision is the same as at .70 (k = 4)
    assert M.skipping_rate(scores, 0.65) == 4 / 8
    assert M.system_accuracy(scores, 0.65, edge_pred, cloud_pred, target) == 6 / 8
    # delta .4 (k = 7): 4 correct
    assert M.system_accuracy(scores, 0.4, edge_pred, cloud_pred, target) == 4 / 8


def test_infinite_thresholds_appeal_everything_or_nothing():
    scores, edge_pred, cloud_pred, target = example()
    # +inf: nothing at the edge, so the system is the cloud (7/8)
    assert M.skipping_rate(scores, np.inf) == 0.0
    assert M.appealing_rate(scores, np.inf) == 1.0
    assert M.system_accuracy(scores, np.inf, edge_pred, cloud_pred, target) == 7 / 8
    # -inf: everything at the edge, so the system is the edge (5/8)
    assert M.skipping_rate(scores, -np.inf) == 1.0
    assert M.system_accuracy(scores, -np.inf, edge_pred, cloud_pred, target) == 5 / 8


def test_accuracy_improvement_by_hand_and_undefined_gap():
    # (0.75 - 0.625) / (0.875 - 0.625) = 0.125 / 0.25
    assert M.accuracy_improvement(0.75, 0.625, 0.875) == pytest.approx(0.5)
    # a system better than the cloud has AccI > 1
    assert M.accuracy_improvement(0.9, 0.6, 0.8) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="AccI is undefined.*0.8.*not above.*0.8"):
        M.accuracy_improvement(0.8, 0.8, 0.8)
    with pytest.raises(ValueError, match="AccI is undefined"):
        M.accuracy_improvement(0.8, 0.9, 0.7)
    with pytest.raises(ValueError, match=r"edge_acc must lie in \[0, 1\]"):
        M.accuracy_improvement(0.8, 1.2, 0.7)


def test_overall_cost_is_eq15():
    # SR .625: .625 * 10 + .375 * 110 = 6.25 + 41.25
    assert M.overall_cost(0.625, c1=10.0, c0=110.0) == pytest.approx(47.5)
    assert M.overall_cost(1.0, 10.0, 110.0) == 10.0       # everything at the edge
    assert M.overall_cost(0.0, 10.0, 110.0) == 110.0      # everything appealed
    with pytest.raises(ValueError, match=r"skipping_rate must lie in \[0, 1\]"):
        M.overall_cost(1.2, 10.0, 110.0)
    with pytest.raises(ValueError, match="c1 must be a finite non-negative cost"):
        M.overall_cost(0.5, -1.0, 110.0)


def test_relative_saving_reproduces_the_paper_tables():
    # Table I, GTSRB at 50% AccI: SM cost 122.23, AppealNet 100.80 -> 17.53%
    assert M.relative_saving(122.23, 100.80) == pytest.approx(0.1753, abs=5e-5)
    # Table II, EfficientNet at 50% AccI: AR 13.78 (SM) vs 7.65 -> 44.48%
    assert M.relative_saving(13.78, 7.65) == pytest.approx(0.4448, abs=5e-5)
    assert M.relative_saving(10.0, 12.0) == pytest.approx(-0.2)   # the method costs more
    with pytest.raises(ValueError, match="baseline cost of 0.0"):
        M.relative_saving(0.0, 1.0)


# ---------------------------------------------------------- threshold search
@pytest.mark.parametrize("acci, delta, k, correct, acci_found", [
    (1.0, 0.80, 3, 7, 1.0),    # the largest k with AccI 1 is k = 3
    (0.75, 0.80, 3, 7, 1.0),   # k = 4, 5 only reach .5
    (0.5, 0.60, 5, 6, 0.5),    # exactly on the target counts as reached
    (0.01, 0.60, 5, 6, 0.5),   # k = 6 and k = 8 give AccI 0, not > 0
])
def test_threshold_for_acci_by_hand(acci, delta, k, correct, acci_found):
    point = M.threshold_for_acci(*example(), acci, c1=10.0, c0=110.0)
    assert point.delta == delta
    assert point.skipping_rate == k / 8
    assert point.appealing_rate == (8 - k) / 8
    assert point.accuracy == correct / 8
    assert point.acci == pytest.approx(acci_found)
    assert point.reached and point.acci_target == acci
    assert point.protocol == "test-tuned"
    assert point.cost == pytest.approx(k / 8 * 10.0 + (8 - k) / 8 * 110.0)


def test_threshold_for_acci_without_costs_has_no_cost():
    assert M.threshold_for_acci(*example(), 0.5).cost is None
    with pytest.raises(ValueError, match="pass both c1 and c0"):
        M.threshold_for_acci(*example(), 0.5, c1=1.0)


def test_threshold_never_splits_tied_scores():
    # scores .9 .5 .5 .1; edge right T T F T; cloud always right (edge 3, cloud 4)
    #   delta +inf: 4 correct (AccI 1); .9: 4 (1); .5: k = 3 -> 3 (0); .1: 3 (0)
    # Splitting the tie (the right .5 at the edge, the wrong one appealed)
    # would give SR .5 with AccI 1, but no threshold can do that.
    target = np.zeros(4, dtype=np.int64)
    for order in ([0, 1, 2, 3], [0, 2, 1, 3]):        # the tie in both storage orders
        scores = np.array([0.9, 0.5, 0.5, 0.1])[order]
        edge_pred = np.array([0, 0, 1, 0])[order]
        point = M.threshold_for_acci(scores, edge_pred, target, target, 0.5)
        assert (point.delta, point.skipping_rate, point.acci) == (0.9, 0.25, 1.0)
        curve = M.accuracy_vs_skipping_curve(scores, edge_pred, target, target)
        np.testing.assert_array_equal(curve.skipping_rate, [0, 0.25, 0.75, 1.0])
        np.testing.assert_array_equal(curve.accuracy, [1.0, 1.0, 0.75, 0.75])


def test_skipping_rate_falls_as_the_target_rises():
    scores, edge_pred, cloud_pred, target = random_system(3, n=200, ties=True)
    rates = [M.threshold_for_acci(scores, edge_pred, cloud_pred, target, a).skipping_rate
             for a in (0.2, 0.5, 0.75, 0.9, 0.95, 1.0)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))


def test_threshold_matches_a_brute_force_search():
    for seed in range(5):
        scores, edge_pred, cloud_pred, target = random_system(seed, ties=seed % 2 == 1)
        edge_acc = np.mean(edge_pred == target)
        cloud_acc = np.mean(cloud_pred == target)
        for acci in (0.5, 0.9):
            best = None
            for delta in np.r_[np.inf, np.unique(scores), -np.inf]:
                acc = M.system_accuracy(scores, delta, edge_pred, cloud_pred, target)
                sr = M.skipping_rate(scores, delta)
                if M.accuracy_improvement(acc, edge_acc, cloud_acc) >= acci - 1e-12:
                    if best is None or sr > best[1]:
                        best = (delta, sr)
            point = M.threshold_for_acci(scores, edge_pred, cloud_pred, target, acci)
            assert (point.delta, point.skipping_rate) == best


def test_threshold_search_rejects_bad_input():
    scores, edge_pred, cloud_pred, target = example()
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"AccI target must lie in \(0, 1\]"):
            M.threshold_for_acci(scores, edge_pred, cloud_pred, target, bad)
    nan_scores = scores.copy()
    nan_scores[[1, 4]] = np.nan
    with pytest.raises(ValueError, match="scores contains 2 NaN value"):
        M.threshold_for_acci(nan_scores, edge_pred, cloud_pred, target, 0.5)
    with pytest.raises(ValueError, match="edge_pred=7"):
        M.threshold_for_acci(scores, edge_pred[:7], cloud_pred, target, 0.5)
    with pytest.raises(ValueError, match="different lengths: scores=8, edge_pred=8, "
                                         "cloud_pred=8, target=6"):
        M.threshold_for_acci(scores, edge_pred, cloud_pred, target[:6], 0.5)
    # the cloud is no better than the edge: AccI undefined, no division by zero
    with pytest.raises(ValueError, match="AccI is undefined"):
        M.threshold_for_acci(scores, edge_pred, edge_pred, target, 0.5)


def test_bad_scores_and_labels_are_named():
    with pytest.raises(ValueError, match="1 infinite value"):
        M.skipping_rate(np.array([0.5, np.inf]), 0.5)
    with pytest.raises(ValueError, match="delta is NaN"):
        M.skipping_rate(np.array([0.5]), np.nan)
    with pytest.raises(ValueError, match="scores must be a 1-D array"):
        M.appealing_rate(np.ones((2, 2)), 0.5)
    with pytest.raises(ValueError, match="scores is empty"):
        M.skipping_rate(np.array([]), 0.5)
    with pytest.raises(ValueError, match="edge_pred must be a 1-D array"):
        M.system_accuracy(np.ones(2), 0.5, np.ones((2, 3)), np.ones(2), np.ones(2))
    with pytest.raises(ValueError, match="edge_pred must hold integer class indices"):
        M.system_accuracy(np.ones(2), 0.5, np.array([0.2, 0.7]), np.ones(2), np.ones(2))


# ------------------------------------------------------------- protocols
def test_tune_and_report_val_tuned_can_miss_the_target():
    # validation: scores .9 .8 .7 .6, edge right T T T F, cloud always right
    #   (edge 3, cloud 4): AccI 1 up to k = 3, so delta = .7
    # test: scores .95 .75 .65 .5, edge right T F T F, cloud always right
    #   (edge 2, cloud 4).  delta .7 keeps .95 (right) and .75 (wrong) at the
    #   edge: 1 + 2 appealed = 3 correct, AccI (3 - 2) / 2 = .5 < 1 -> missed.
    #   Tuned on test instead: delta .95 (k = 1), 4 correct, AccI 1.
    zeros = np.zeros(4, dtype=np.int64)
    val_edge = np.array([0, 0, 0, 1])
    test_edge = np.array([0, 1, 0, 1])
    report = M.tune_and_report(np.array([.9, .8, .7, .6]), val_edge, zeros, zeros,
                               np.array([.95, .75, .65, .5]), test_edge, zeros, zeros, 1.0,
                               c1=1.0, c0=21.0)
    honest, paper = report["val-tuned"], report["test-tuned"]
    assert honest.protocol == "val-tuned" and paper.protocol == "test-tuned"
    assert (honest.delta, honest.skipping_rate, honest.accuracy) == (0.7, 0.5, 0.75)
    assert honest.acci == pytest.approx(0.5) and not honest.reached
    assert honest.cost == pytest.approx(0.5 * 1.0 + 0.5 * 21.0)
    assert (paper.delta, paper.skipping_rate, paper.accuracy, paper.acci) == (0.95, 0.25, 1.0, 1.0)
    assert paper.reached
    assert paper.cost == pytest.approx(0.25 * 1.0 + 0.75 * 21.0)


def test_tune_and_report_on_identical_splits_agrees():
    data = random_system(7, ties=True)
    report = M.tune_and_report(*data, *data, 0.9)
    assert report["val-tuned"].as_dict() == {**report["test-tuned"].as_dict(),
                                             "protocol": "val-tuned"}


def test_operating_point_as_row_has_the_results_keys():
    point = M.threshold_for_acci(*example(), 0.5, c1=10.0, c0=110.0)
    row = point.as_row("appealnet", relative_saving=0.25)
    assert set(row) == {"method", "acci_target", "protocol", "delta", "skipping_rate",
                        "appealing_rate", "accuracy", "acci", "cost", "relative_saving"}
    assert row["method"] == "appealnet" and row["relative_saving"] == 0.25
    assert row["cost"] == point.cost


# ------------------------------------------------------------------ curves
def test_accuracy_vs_skipping_curve_by_hand():
    curve = M.accuracy_vs_skipping_curve(*example())
    np.testing.assert_array_equal(curve.skipping_rate, np.arange(9) / 8)
    np.testing.assert_array_equal(curve.accuracy, np.array([7, 7, 7, 7, 6, 6, 5, 4, 5]) / 8)
    np.testing.assert_array_equal(curve.thresholds, np.r_[np.inf, SORTED_SCORES])


def test_curve_points_are_eq13_at_their_thresholds_and_monotone():
    scores, edge_pred, cloud_pred, target = random_system(11, ties=True)
    curve = M.accuracy_vs_skipping_curve(scores, edge_pred, cloud_pred, target)
    assert np.all(np.diff(curve.skipping_rate) > 0)
    assert np.all(np.diff(curve.thresholds) < 0)
    assert curve.skipping_rate[0] == 0 and curve.skipping_rate[-1] == 1
    assert curve.accuracy[0] == np.mean(cloud_pred == target)
    assert curve.accuracy[-1] == np.mean(edge_pred == target)
    for delta, sr, acc in zip(curve.thresholds, curve.skipping_rate, curve.accuracy):
        assert M.skipping_rate(scores, delta) == sr
        assert M.system_accuracy(scores, delta, edge_pred, cloud_pred, target) == acc


def test_oracle_curve_by_hand():
    # gain edge - cloud in the example: +1 once (.20), 0 four times, -1 three times
    # oracle keeps +1 first, then the zeros, then appeals nothing more:
    # correct = 7 + [0, 1, 1, 1, 1, 1, 0, -1, -2]
    curve = M.oracle_curve(*example()[1:])
    np.testing.assert_array_equal(curve.skipping_rate, np.arange(9) / 8)
    np.testing.assert_array_equal(curve.accuracy, np.array([7, 8, 8, 8, 8, 8, 7, 6, 5]) / 8)
    assert curve.thresholds is None


def test_oracle_dominates_every_score():
    for seed in range(4):
        scores, edge_pred, cloud_pred, target = random_system(seed, ties=seed % 2 == 0)
        n = len(target)
        oracle = M.oracle_curve(edge_pred, cloud_pred, target)
        # concave: the best inputs are kept at the edge first
        assert np.all(np.diff(oracle.accuracy, 2) <= 1e-12)
        rng = np.random.default_rng(seed)
        logits = rng.standard_normal((n, 4))
        candidates = [scores, M.msp(M.softmax(logits)), M.score_margin(M.softmax(logits)),
                      (edge_pred == target) + 0.0]       # a score that knows the edge's errors
        for candidate in candidates:
            curve = M.accuracy_vs_skipping_curve(candidate, edge_pred, cloud_pred, target)
            k = np.round(curve.skipping_rate * n).astype(int)
            assert np.all(curve.accuracy <= oracle.accuracy[k] + 1e-12)


def test_oracle_curve_with_a_black_box_cloud_appeals_edge_errors_first():
    # cloud = oracle (always right): the edge's 3 errors are appealed first,
    # so accuracy stays 1 up to SR = 5/8, then falls by 1/8 per step.
    _, edge_pred, _, target = example()
    curve = M.oracle_curve(edge_pred, target, target)
    np.testing.assert_array_equal(curve.accuracy, np.array([8, 8, 8, 8, 8, 8, 7, 6, 5]) / 8)


# ----------------------------------------------------- risk-coverage, AUROC
def test_risk_coverage_curve_by_hand():
    # sorted: .95 T, .90 T, .80 T, .70 F, .60 T, .50 F, .40 F, .20 T
    # errors among the top k: 0 0 0 1 1 2 3 3
    scores, edge_pred, _, target = example()
    rc = M.risk_coverage_curve(scores, edge_pred == target)
    np.testing.assert_array_equal(rc.coverage, np.arange(1, 9) / 8)
    np.testing.assert_allclose(rc.risk, np.array([0, 0, 0, 1, 1, 2, 3, 3]) / np.arange(1, 9))
    np.testing.assert_array_equal(rc.thresholds, SORTED_SCORES)
    # AURC = mean of that risk = (1/4 + 1/5 + 2/6 + 3/7 + 3/8) / 8
    assert M.aurc(scores, edge_pred == target) == pytest.approx(
        (1 / 4 + 1 / 5 + 2 / 6 + 3 / 7 + 3 / 8) / 8)


def direct_aurc(scores, correct):
    """The textbook loop: sort by score, average the risk of each prefix."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    total, errors = 0.0, 0
    for k, i in enumerate(order, start=1):
        errors += not correct[i]
        total += errors / k
    return total / len(scores)


def test_aurc_matches_a_direct_loop():
    rng = np.random.default_rng(5)
    for _ in range(5):
        scores = rng.random(40)                      # no ties
        correct = rng.random(40) < 0.7
        assert M.aurc(scores, correct) == pytest.approx(direct_aurc(scores, correct), rel=1e-12)


def test_aurc_with_ties_is_the_mean_over_tie_orders():
    # .8 .8 .8 .5 .5 .2: every ordering of the tied groups, averaged
    scores = np.array([0.5, 0.8, 0.2, 0.8, 0.5, 0.8])
    correct = np.array([True, False, True, True, False, True])
    values = []
    for order in itertools.permutations(range(6)):
        if all(scores[a] >= scores[b] for a, b in zip(order, order[1:])):
            permuted = -np.arange(6.0)               # strictly decreasing: this order
            values.append(direct_aurc(permuted, correct[list(order)]))
    assert len(values) == 3 * 2 * 1 * 2 * 1 * 1
    assert M.aurc(scores, correct) == pytest.approx(np.mean(values), rel=1e-12)
    rc = M.risk_coverage_curve(scores, correct)
    # tied groups make one point each: 3 kept (1 error), 5 (2 errors), 6 (2 errors)
    np.testing.assert_allclose(rc.coverage, [3 / 6, 5 / 6, 1.0])
    np.testing.assert_allclose(rc.risk, [1 / 3, 2 / 5, 2 / 6])


def test_error_detection_auroc_by_hand():
    # positives (edge right): .9, .8, .1 ; negatives: .8, .3
    # pairs: .9>.8, .9>.3, .8=.8 (1/2), .8>.3, .1<.8, .1<.3 -> 3.5 / 6
    scores = np.array([0.9, 0.8, 0.8, 0.3, 0.1])
    correct = np.array([True, True, False, False, True])
    assert M.error_detection_auroc(scores, correct) == pytest.approx(3.5 / 6)
    assert M.error_detection_auroc(correct + 0.0, correct) == 1.0      # perfect separation
    assert M.error_detection_auroc(-(correct + 0.0), correct) == 0.0   # inverted


def test_error_detection_auroc_matches_pairwise_count():
    rng = np.random.default_rng(9)
    for _ in range(5):
        scores = np.round(rng.random(50) * 8) / 8               # many ties
        correct = rng.random(50) < 0.6
        pos, neg = scores[correct], scores[~correct]
        wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
        expected = wins / (len(pos) * len(neg))
        assert M.error_detection_auroc(scores, correct) == pytest.approx(expected, rel=1e-12)


def test_error_detection_auroc_degenerate_cases_raise():
    with pytest.raises(ValueError, match="correct on all 3 inputs, so there are no negatives"):
        M.error_detection_auroc(np.array([0.1, 0.2, 0.3]), np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="wrong on all 2 inputs, so there are no positives"):
        M.error_detection_auroc(np.array([0.1, 0.2]), np.zeros(2, dtype=bool))
    with pytest.raises(ValueError, match="edge_correct must be a boolean"):
        M.aurc(np.array([0.1, 0.2]), np.array([0, 2]))
    with pytest.raises(ValueError, match="scores=3, edge_correct=2"):
        M.risk_coverage_curve(np.array([0.1, 0.2, 0.3]), np.array([True, False]))


def test_common_reference_moves_accis_zero_point():
    # target all 0; the method's edge gets 3/4 right, the reference model 2/4, the cloud 4/4.
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    target = np.zeros(4, dtype=int)
    edge = np.array([0, 0, 0, 1])
    reference = np.array([0, 0, 1, 1])
    cloud = np.zeros(4, dtype=int)
    # Own zero point (3/4): AccI 0.5 needs >= 3.5/4 correct -> appeal the 0.1 input: delta 0.7, SR 3/4
    own = M.threshold_for_acci(scores, edge, cloud, target, 0.5)
    assert own.delta == 0.7 and own.skipping_rate == 0.75
    # Common zero point (2/4): keeping everything at the edge already gives (3-2)/(4-2) = 0.5
    common = M.threshold_for_acci(scores, edge, cloud, target, 0.5, reference_pred=reference)
    assert common.delta == 0.1 and common.skipping_rate == 1.0 and common.acci == 0.5
    both = M.tune_and_report(scores, edge, cloud, target, scores, edge, cloud, target, 0.5,
                                   val_reference_pred=reference, test_reference_pred=reference)
    assert both["val-tuned"].delta == 0.1 and both["test-tuned"].acci == 0.5
    with pytest.raises(ValueError, match="reference_pred"):
        M.threshold_for_acci(scores, edge, cloud, target, 0.5, reference_pred=reference[:3])
