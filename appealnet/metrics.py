"""Evaluation metrics of an edge/cloud system (AppealNet paper, Sec. VI).

Everything here is plain numpy in float64 and knows nothing about training.

Conventions
-----------
* A *score* is the edge model's confidence that it may answer on its own: the
  predictor output q(1|x) for AppealNet, or a confidence score of the softmax
  (``msp``, ``score_margin``, ``neg_entropy``) for the baselines.  Higher
  means "answer at the edge".
* An input is answered at the edge when ``score >= delta`` (Eq. 11) and
  *appealed* to the cloud otherwise (Eq. 12).  Hence ``delta = -inf`` appeals
  nothing and ``delta = +inf`` appeals everything; scores themselves must be
  finite so that these two thresholds keep that meaning.
* Ties: inputs with equal scores always go the same way, because a threshold
  cannot split them.  Threshold searches and curves therefore only visit the
  skipping rates that a real threshold can produce.
* Predictions and targets are 1-D arrays of class indices; ``edge_correct``
  is a 1-D bool (or 0/1) array.

Bad input (NaN scores, mismatched lengths, probabilities that are really
logits, an undefined AccI, ...) raises ValueError naming the problem.
"""
import dataclasses
from typing import NamedTuple, Optional

import numpy as np

__all__ = [
    "softmax", "msp", "score_margin", "neg_entropy",
    "skipping_rate", "appealing_rate", "system_accuracy", "accuracy_improvement",
    "overall_cost", "relative_saving",
    "OperatingPoint", "threshold_for_acci", "tune_and_report",
    "Curve", "accuracy_vs_skipping_curve", "oracle_curve",
    "RiskCoverage", "risk_coverage_curve", "aurc", "error_detection_auroc",
]

# Relative slack when comparing an AccI with its target: AccI is a ratio of
# integer counts, so only float rounding of the target needs absorbing.
_ACCI_SLACK = 1e-9


# --------------------------------------------------------------- validation
def _as_1d(values, name):
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    return arr


def _scores(values, name="scores"):
    """A finite float64 1-D score array (the ±inf thresholds need finite scores)."""
    arr = _as_1d(values, name)
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    n_nan = int(np.isnan(arr).sum())
    if n_nan:
        raise ValueError(f"{name} contains {n_nan} NaN value(s) out of {arr.size}")
    n_inf = int(np.isinf(arr).sum())
    if n_inf:
        raise ValueError(f"{name} contains {n_inf} infinite value(s) out of {arr.size}; "
                         f"scores must be finite (±inf are reserved as thresholds)")
    return arr


def _labels(values, name):
    arr = _as_1d(values, name)
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            return arr.astype(np.int64)
        raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype} "
                         f"(take the argmax of probabilities first)")
    return arr.astype(np.int64)


def _correct(values, name="edge_correct"):
    arr = _as_1d(values, name)
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype.kind in "iuf" and np.all((arr == 0) | (arr == 1)):
        return arr.astype(bool)
    raise ValueError(f"{name} must be a boolean (or 0/1) array")


def _same_length(**arrays):
    lengths = {name: len(arr) for name, arr in arrays.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise ValueError(f"arrays have different lengths: {listed}")


def _delta(delta):
    delta = float(delta)
    if np.isnan(delta):
        raise ValueError("delta is NaN")
    return delta


def _fraction(value, name):
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
    return value


def _require_gap(edge_acc, cloud_acc):
    if cloud_acc <= edge_acc:
        raise ValueError(f"AccI is undefined: the cloud accuracy ({cloud_acc:.6g}) is not above "
                         f"the edge accuracy ({edge_acc:.6g}), so there is no gap to close")


def _probabilities(probs):
    """(N, C) float64 probabilities; rejects logits and non-finite values."""
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"probs must be a 2-D (N, C) array, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"probs is empty (shape {arr.shape})")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"probs contains {int((~np.isfinite(arr)).sum())} non-finite value(s)")
    # float32 softmax rows sum to 1 within ~1e-6; 1e-3 only catches logits.
    if arr.min() < 0.0 or np.abs(arr.sum(axis=1) - 1.0).max() > 1e-3:
        raise ValueError("probs rows must be non-negative and sum to 1 "
                         "(these look like logits: apply metrics.softmax first)")
    return arr


# ------------------------------------------------------ confidence scores
def softmax(logits, axis=-1):
    """Numerically stable softmax in float64 (the max is subtracted first)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - np.max(z, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def msp(probs):
    """Maximum softmax probability per row (baseline 1 of Sec. VI-A)."""
    return _probabilities(probs).max(axis=1)


def score_margin(probs):
    """Top-1 minus top-2 probability per row (baseline 2, "SM")."""
    p = _probabilities(probs)
    if p.shape[1] < 2:
        raise ValueError("score_margin needs at least 2 classes")
    top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def neg_entropy(probs):
    """sum_j p_j log p_j per row, i.e. minus the entropy (baseline 3); 0 log 0 = 0."""
    p = _probabilities(probs)
    plogp = np.where(p > 0.0, p * np.log(np.where(p > 0.0, p, 1.0)), 0.0)
    return plogp.sum(axis=1)


# ------------------------------------------------- rates, accuracy, cost
def skipping_rate(scores, delta):
    """Eq. (11): fraction of inputs answered at the edge, i.e. score >= delta."""
    return float(np.mean(_scores(scores) >= _delta(delta)))


def appealing_rate(scores, delta):
    """Eq. (12): fraction of inputs appealed to the cloud (score < delta) = 1 - SR."""
    return float(np.mean(_scores(scores) < _delta(delta)))


def system_accuracy(scores, delta, edge_pred, cloud_pred, target):
    """Eq. (13): accuracy when the edge answers where score >= delta, the cloud elsewhere."""
    scores = _scores(scores)
    edge_pred = _labels(edge_pred, "edge_pred")
    cloud_pred = _labels(cloud_pred, "cloud_pred")
    target = _labels(target, "target")
    _same_length(scores=scores, edge_pred=edge_pred, cloud_pred=cloud_pred, target=target)
    answer = np.where(scores >= _delta(delta), edge_pred, cloud_pred)
    return float(np.mean(answer == target))


def accuracy_improvement(system_acc, edge_acc, cloud_acc):
    """Eq. (14): AccI = (sys - edge) / (cloud - edge).

    0 means no better than the edge alone, 1 means as good as the cloud
    alone (it can exceed 1 when the system beats the cloud).  Undefined, and
    a ValueError, when the cloud is not more accurate than the edge.
    """
    system_acc = _fraction(system_acc, "system_acc")
    edge_acc = _fraction(edge_acc, "edge_acc")
    cloud_acc = _fraction(cloud_acc, "cloud_acc")
    _require_gap(edge_acc, cloud_acc)
    return (system_acc - edge_acc) / (cloud_acc - edge_acc)


def overall_cost(skipping_rate, c1, c0):
    """Eq. (15): Cost_overall = SR * c1 + (1 - SR) * c0, per input on average.

    Following Sec. IV-A, ``c1 = cost(f1, q)`` is what an input answered at
    the edge costs (edge network including the predictor head) and
    ``c0 = cost(f0, q)`` is the *accumulated* cost of an appealed input: the
    edge pass with the predictor, which is paid before the decision, plus the
    cloud network and the communication.  So to model "edge then cloud" from
    per-network costs, pass ``c0 = c1 + cloud_cost``.
    """
    sr = _fraction(skipping_rate, "skipping_rate")
    for name, value in (("c1", c1), ("c0", c0)):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite non-negative cost, got {value}")
    return sr * float(c1) + (1.0 - sr) * float(c0)


def relative_saving(cost_baseline, cost_method):
    """(baseline - method) / baseline, as in Tables I and II.

    White-box setting (Table I): pass the overall costs of Eq. (15).
    Black-box setting (Table II): pass the appealing rates (the cloud cost
    is unknown, so fewer appeals is the saving).  Negative when the method
    costs more than the baseline.
    """
    cost_baseline, cost_method = float(cost_baseline), float(cost_method)
    if not (np.isfinite(cost_baseline) and np.isfinite(cost_method)):
        raise ValueError(f"costs must be finite, got baseline={cost_baseline}, "
                         f"method={cost_method}")
    if cost_baseline <= 0:
        raise ValueError(f"relative saving is undefined for a baseline cost of {cost_baseline} "
                         f"(it must be positive)")
    return (cost_baseline - cost_method) / cost_baseline


# -------------------------------------------------------- threshold sweep
def _decision_inputs(scores, edge_pred, cloud_pred, target):
    scores = _scores(scores)
    edge_pred = _labels(edge_pred, "edge_pred")
    cloud_pred = _labels(cloud_pred, "cloud_pred")
    target = _labels(target, "target")
    _same_length(scores=scores, edge_pred=edge_pred, cloud_pred=cloud_pred, target=target)
    return scores, edge_pred == target, cloud_pred == target


def _sweep(scores, edge_correct, cloud_correct):
    """Every threshold that changes the decision, from appeal-all to appeal-none.

    Returns (deltas, n_edge, n_correct): deltas[0] = +inf (nothing at the
    edge), then each distinct score in decreasing order; n_edge[i] inputs
    have score >= deltas[i] and the system gets n_correct[i] right.
    """
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    # answering input i at the edge instead of the cloud changes the count of
    # correct answers by edge_correct - cloud_correct
    gain = edge_correct[order].astype(np.int64) - cloud_correct[order].astype(np.int64)
    cumulative_gain = np.concatenate([[0], np.cumsum(gain)])
    group_ends = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True]) + 1
    deltas = np.r_[np.inf, ranked[group_ends - 1]]
    n_edge = np.r_[0, group_ends]
    n_correct = int(cloud_correct.sum()) + cumulative_gain[n_edge]
    return deltas, n_edge, n_correct


@dataclasses.dataclass(frozen=True)
class OperatingPoint:
    """One threshold and what the system does with it on the reported split.

    ``protocol`` says where delta was tuned: "test-tuned" (on the very data
    reported, the paper's protocol) or "val-tuned" (on a held-out
    validation split, then applied to the reported test split).
    ``reached`` says whether ``acci >= acci_target`` on the reported split.
    ``cost`` is Eq. (15) when the per-input costs were given, else None.
    """
    delta: float
    skipping_rate: float
    appealing_rate: float
    accuracy: float
    acci: float
    acci_target: float
    reached: bool
    protocol: str
    cost: Optional[float] = None

    def as_dict(self):
        return dataclasses.asdict(self)

    def as_row(self, method, relative_saving=None):
        """A row in the results.json format read by appealnet.testing.assert_results."""
        return {"method": method, "acci_target": self.acci_target, "protocol": self.protocol,
                "delta": self.delta, "skipping_rate": self.skipping_rate,
                "appealing_rate": self.appealing_rate, "accuracy": self.accuracy,
                "acci": self.acci, "cost": self.cost, "relative_saving": relative_saving}


def _acci_target(acci):
    acci = float(acci)
    if not 0.0 < acci <= 1.0:
        raise ValueError(f"AccI target must lie in (0, 1], got {acci}")
    return acci


def _reaches(n_correct, n_edge_correct, n_cloud_correct, target):
    gap = n_cloud_correct - n_edge_correct
    return (n_correct - n_edge_correct) >= target * gap * (1.0 - _ACCI_SLACK)


def _costs_given(c1, c0):
    if (c1 is None) != (c0 is None):
        raise ValueError("pass both c1 and c0 (or neither) to get the overall cost")
    return c1 is not None


def _baseline_correct(edge_correct, reference_correct):
    """Correct answers of the model whose accuracy is AccI's zero point: the
    method's own edge model by default (Eq. 14), or a common reference."""
    return int((edge_correct if reference_correct is None else reference_correct).sum())


def _operating_point(delta, scores, edge_correct, cloud_correct, acci_target, protocol, c1, c0,
                     reference_correct=None):
    """Evaluates a fixed delta on one split."""
    n = len(scores)
    at_edge = scores >= delta
    n_correct = int(np.sum(np.where(at_edge, edge_correct, cloud_correct)))
    n_edge_correct, n_cloud_correct = _baseline_correct(edge_correct, reference_correct), int(cloud_correct.sum())
    _require_gap(n_edge_correct / n, n_cloud_correct / n)
    # from the integer counts, so AccI = 1 exactly when the system matches the cloud
    acci = (n_correct - n_edge_correct) / (n_cloud_correct - n_edge_correct)
    sr = float(at_edge.mean())
    return OperatingPoint(
        delta=float(delta), skipping_rate=sr, appealing_rate=float((~at_edge).mean()),
        accuracy=n_correct / n, acci=acci, acci_target=acci_target,
        reached=bool(_reaches(n_correct, n_edge_correct, n_cloud_correct, acci_target)),
        protocol=protocol, cost=overall_cost(sr, c1, c0) if _costs_given(c1, c0) else None)


def _tune(scores, edge_correct, cloud_correct, acci_target, reference_correct=None):
    """The cheapest delta reaching the target on this split (see threshold_for_acci)."""
    n_edge_correct, n_cloud_correct = _baseline_correct(edge_correct, reference_correct), int(cloud_correct.sum())
    _require_gap(n_edge_correct / len(scores), n_cloud_correct / len(scores))
    deltas, n_edge, n_correct = _sweep(scores, edge_correct, cloud_correct)
    reached = _reaches(n_correct, n_edge_correct, n_cloud_correct, acci_target)
    # delta = +inf appeals everything, so the system accuracy equals the
    # cloud's and AccI = 1 >= any target in (0, 1]: some delta always reaches.
    # n_edge never decreases along the sweep, so the last one reached skips most.
    return float(deltas[np.flatnonzero(reached)[-1]])


def _reference(reference_pred, target, n):
    if reference_pred is None:
        return None
    reference_pred = _labels(reference_pred, "reference_pred")
    _same_length(reference_pred=reference_pred, target=np.empty(n))
    return reference_pred == target


def threshold_for_acci(scores, edge_pred, cloud_pred, target, acci, *, c1=None, c0=None,
                       reference_pred=None):
    """The delta that reaches AccI >= ``acci`` with the highest skipping rate.

    Candidates are +inf (appeal everything), every distinct score value and
    -inf (appeal nothing).  A threshold cannot split equal scores, so tied
    inputs are always answered at the same place.  -inf answers everything at
    the edge, so its AccI is 0 and it never meets a target in (0, 1] (nor
    does the lowest score, which decides the same on this data).

    Because delta = +inf makes the system exactly as accurate as the cloud
    (AccI = 1), every target in (0, 1] is reachable on the tuning data and the
    returned point has ``reached=True``; a target can be missed only when the
    delta is applied to another split (see tune_and_report).

    ``reference_pred``: predictions of the model whose accuracy is AccI's
    zero point, when it is not the method's own edge model.  Comparing
    methods whose edge models differ (a jointly retrained approximator vs the
    plain small model) at the same *system accuracy* needs one common
    reference, e.g. the plain small model for every method.

    Returns an OperatingPoint with protocol "test-tuned" (tuned on the very
    arrays it reports), with the Eq. (15) cost when c1 and c0 are given.
    """
    acci = _acci_target(acci)
    scores, edge_correct, cloud_correct = _decision_inputs(scores, edge_pred, cloud_pred, target)
    reference = _reference(reference_pred, _labels(target, "target"), len(scores))
    _costs_given(c1, c0)
    delta = _tune(scores, edge_correct, cloud_correct, acci, reference)
    return _operating_point(delta, scores, edge_correct, cloud_correct, acci, "test-tuned",
                            c1, c0, reference)


def tune_and_report(val_scores, val_edge_pred, val_cloud_pred, val_target,
                    test_scores, test_edge_pred, test_cloud_pred, test_target, acci,
                    *, c1=None, c0=None, val_reference_pred=None, test_reference_pred=None):
    """Operating points on the test split under both tuning protocols.

    Returns ``{"val-tuned": OperatingPoint, "test-tuned": OperatingPoint}``:

    * "val-tuned" (honest): delta is chosen on the validation split by
      threshold_for_acci and then applied unchanged to the test split; its
      test AccI may fall short of the target (``reached=False``).
    * "test-tuned" (the paper's protocol, Sec. VI-C: "threshold delta tuned
      to match the target system accuracy"): delta is chosen on the test
      split itself, which is optimistic.

    ``val_reference_pred``/``test_reference_pred``: AccI's common zero point
    per split (see threshold_for_acci).
    """
    acci = _acci_target(acci)
    val = _decision_inputs(val_scores, val_edge_pred, val_cloud_pred, val_target)
    test = _decision_inputs(test_scores, test_edge_pred, test_cloud_pred, test_target)
    val_ref = _reference(val_reference_pred, _labels(val_target, "val_target"), len(val[0]))
    test_ref = _reference(test_reference_pred, _labels(test_target, "test_target"), len(test[0]))
    _costs_given(c1, c0)
    val_delta = _tune(*val, acci, val_ref)
    return {
        "val-tuned": _operating_point(val_delta, *test, acci, "val-tuned", c1, c0, test_ref),
        "test-tuned": _operating_point(_tune(*test, acci, test_ref), *test, acci, "test-tuned",
                                       c1, c0, test_ref),
    }


# ------------------------------------------------------------------ curves
class Curve(NamedTuple):
    """System accuracy against skipping rate, in increasing skipping rate.

    ``thresholds[i]`` produces point i (+inf first); None for the oracle,
    which is not a threshold on any score.
    """
    skipping_rate: np.ndarray
    accuracy: np.ndarray
    thresholds: Optional[np.ndarray]


def accuracy_vs_skipping_curve(scores, edge_pred, cloud_pred, target):
    """Fig. 5: (SR, Eq. 13 accuracy) for every threshold, from +inf (SR = 0,
    the cloud's accuracy) down to the lowest score (SR = 1, the edge's).

    Tied scores make one point (they cannot be split); -inf is left out since
    it gives the same point as the lowest score.
    """
    scores, edge_correct, cloud_correct = _decision_inputs(scores, edge_pred, cloud_pred, target)
    deltas, n_edge, n_correct = _sweep(scores, edge_correct, cloud_correct)
    n = len(scores)
    return Curve(n_edge / n, n_correct / n, deltas)


def oracle_curve(edge_pred, cloud_pred, target):
    """The upper bound of Fig. 5: at each SR = k/N, k = 0..N, the best
    accuracy any appeal policy can reach.

    The oracle keeps at the edge first the inputs only the edge gets right,
    then those where edge and cloud agree in correctness, and appeals first
    the inputs the edge gets wrong but the cloud gets right.  With a
    black-box (always correct) cloud this is "appeal the edge's errors first".
    """
    edge_pred = _labels(edge_pred, "edge_pred")
    cloud_pred = _labels(cloud_pred, "cloud_pred")
    target = _labels(target, "target")
    _same_length(edge_pred=edge_pred, cloud_pred=cloud_pred, target=target)
    gain = (edge_pred == target).astype(np.int64) - (cloud_pred == target).astype(np.int64)
    best_first = np.sort(gain)[::-1]
    n = len(target)
    n_correct = int((cloud_pred == target).sum()) + np.concatenate([[0], np.cumsum(best_first)])
    return Curve(np.arange(n + 1) / n, n_correct / n, None)


class RiskCoverage(NamedTuple):
    """Selective risk (error rate among the inputs kept at the edge) against
    coverage (the skipping rate), one point per distinct score threshold, in
    increasing coverage."""
    coverage: np.ndarray
    risk: np.ndarray
    thresholds: np.ndarray


def _selective_inputs(scores, edge_correct):
    scores = _scores(scores)
    edge_correct = _correct(edge_correct)
    _same_length(scores=scores, edge_correct=edge_correct)
    return scores, edge_correct


def risk_coverage_curve(scores, edge_correct):
    """Risk-coverage points: keeping the inputs with score >= threshold."""
    scores, edge_correct = _selective_inputs(scores, edge_correct)
    # the sweep with a "cloud" that is always wrong counts edge-correct inputs
    deltas, n_kept, n_right = _sweep(scores, edge_correct, np.zeros_like(edge_correct))
    deltas, n_kept, n_right = deltas[1:], n_kept[1:], n_right[1:]   # drop coverage 0
    return RiskCoverage(n_kept / len(scores), (n_kept - n_right) / n_kept, deltas)


def aurc(scores, edge_correct):
    """Area under the risk-coverage curve: the mean over k = 1..N of the
    selective risk of the k highest-scored inputs (Geifman et al., 2019).

    Where k falls inside a group of tied scores, the risk is its expectation
    over a random order of the tied inputs (errors of the group counted in
    proportion), so the value does not depend on how ties are stored.
    """
    scores, edge_correct = _selective_inputs(scores, edge_correct)
    n = len(scores)
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    wrong = (~edge_correct[order]).astype(np.float64)
    group_id = np.r_[0, np.cumsum(ranked[1:] != ranked[:-1])]
    group_size = np.bincount(group_id)
    group_errors = np.bincount(group_id, weights=wrong)
    kept_before = np.r_[0, np.cumsum(group_size)[:-1]]
    errors_before = np.r_[0.0, np.cumsum(group_errors)[:-1]]
    k = np.arange(1, n + 1)
    group = group_id
    expected_errors = (errors_before[group]
                       + (k - kept_before[group]) * group_errors[group] / group_size[group])
    return float(np.mean(expected_errors / k))


def error_detection_auroc(scores, edge_correct):
    """AUROC of telling edge-correct inputs (positives, expected to score
    high) from edge-wrong ones: P(score_pos > score_neg) + P(equal) / 2,
    computed from average ranks (Mann-Whitney U), so ties count one half.

    When the edge is right on every input, or wrong on every input, there is
    nothing to separate and AUROC is undefined: that raises ValueError
    (rather than returning NaN that would silently enter an average).
    """
    scores, edge_correct = _selective_inputs(scores, edge_correct)
    n_pos = int(edge_correct.sum())
    n_neg = len(scores) - n_pos
    if n_pos == 0 or n_neg == 0:
        which = "wrong" if n_pos == 0 else "correct"
        raise ValueError(f"error-detection AUROC is undefined: the edge model is {which} on all "
                         f"{len(scores)} inputs, so there are no "
                         f"{'positives' if n_pos == 0 else 'negatives'}")
    order = np.argsort(scores, kind="stable")
    ranked = scores[order]
    group_id = np.r_[0, np.cumsum(ranked[1:] != ranked[:-1])]
    group_size = np.bincount(group_id)
    group_last = np.cumsum(group_size)                    # 1-based rank of each group's end
    average_rank = group_last - (group_size - 1) / 2.0
    ranks = np.empty(len(scores))
    ranks[order] = average_rank[group_id]
    u = ranks[edge_correct].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))
