"""Losses of AppealNet (paper Section IV, Algorithm 1).

Notation: f1 is the edge (small) model's approximator head, q(z=1|x) the
predictor head's probability that the edge answer is kept, f0 the cloud
(big) model, l(.) the per-sample cross-entropy.

* ``appeal_loss(..., big_loss=l(f0(x), y))`` — white-box, Eq. (9) with
  Algorithm 1 lines 3-4:
      mean_i [ q_i l(f1(x_i), y_i) + (1 - q_i) l(f0(x_i), y_i) - beta log q_i ]
* ``appeal_loss(..., big_loss=None)`` — black-box, Eq. (10): the cloud is an
  oracle, l(f0(x), y) = 0:
      mean_i [ q_i l(f1(x_i), y_i) - beta log q_i ]

Numerics: q comes from the predictor's logit s through log q = log_sigmoid(s)
and 1 - q = sigmoid(-s), never as 1 - sigmoid(s), so the value and its
gradient stay exact when q is within float32 rounding of 0 or 1.  No
gradient flows into the big model's losses (they are data).

``target_skipping_rate(c1, c0, budget)`` is Eq. (6); ``BetaController``
adapts beta by dual ascent on the Lagrange multiplier of Eq. (7)-(8).
"""
import math
import numbers

import numpy as np

from . import _C
from ._tensor import Tensor
from .nn import functional as F

__all__ = ["cross_entropy", "appeal_loss", "target_skipping_rate", "BetaController"]

cross_entropy = F.cross_entropy


def _per_sample(values, n, name):
    """Big-model losses as a detached float32 tensor of shape [n]."""
    if isinstance(values, Tensor):
        values = values.detach().numpy()
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (n,):
        raise ValueError(f"appeal_loss: {name} must have shape [{n}] (one loss per sample), "
                         f"got {list(values.shape)}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"appeal_loss: {name} holds {int(np.sum(~np.isfinite(values)))} "
                         f"non-finite value(s)")
    return _C.tensor(values)


def appeal_loss(logits, q_logit, target, big_loss=None, beta=1.0, reduction="mean",
                label_smoothing=0.0):
    """AppealNet's training loss (Eq. (9) white-box, Eq. (10) black-box).

    logits: [N, C] approximator logits of the edge model; q_logit: [N] (or
    [N, 1]) predictor logits, q = sigmoid(q_logit); target: N integer labels;
    big_loss: N per-sample cross-entropies of the big model (white-box) or
    None (black-box); beta >= 0 weighs -log q, the cost term;
    label_smoothing applies to the small model's cross-entropy l(f1(x), y).
    """
    if not isinstance(beta, numbers.Real) or not math.isfinite(beta) or beta < 0:
        raise ValueError(f"appeal_loss: beta must be a finite number >= 0, got {beta!r}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"appeal_loss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if logits.ndim != 2:
        raise ValueError(f"appeal_loss: logits must be [N, C], got {list(logits.shape)}")
    n = logits.shape[0]
    if q_logit.ndim == 2 and q_logit.shape[1] == 1:
        q_logit = q_logit.reshape(-1)
    if tuple(q_logit.shape) != (n,):
        raise ValueError(f"appeal_loss: q_logit must have shape [{n}] to match logits "
                         f"{list(logits.shape)}, got {list(q_logit.shape)}")
    small_loss = F.cross_entropy(logits, target, reduction="none", label_smoothing=label_smoothing)
    q = F.sigmoid(q_logit)
    per_sample = q * small_loss
    if big_loss is not None:
        per_sample = per_sample + F.sigmoid(-q_logit) * _per_sample(big_loss, n, "big_loss")
    if beta:
        per_sample = per_sample - F.logsigmoid(q_logit) * float(beta)
    if reduction == "none":
        return per_sample
    return per_sample.sum() if reduction == "sum" else per_sample.mean()


def target_skipping_rate(c1, c0, budget):
    """Eq. (6): the fraction b_hat = (c0 - b) / (c0 - c1) of inputs that must
    stay at the edge for the expected cost to meet the budget b, where c1 is
    the edge cost (small model + predictor) and c0 the cost of an appealed
    input (edge predictor + cloud model + link)."""
    c1, c0, budget = float(c1), float(c0), float(budget)
    if not (math.isfinite(c1) and math.isfinite(c0) and math.isfinite(budget)):
        raise ValueError("target_skipping_rate: costs and budget must be finite numbers")
    if c0 <= c1:
        raise ValueError(f"target_skipping_rate: the cloud cost c0 ({c0:g}) must exceed the edge "
                         f"cost c1 ({c1:g})")
    if not c1 < budget < c0:
        raise ValueError(f"target_skipping_rate: the budget ({budget:g}) must lie strictly between "
                         f"c1 ({c1:g}) and c0 ({c0:g})")
    return (c0 - budget) / (c0 - c1)


class BetaController:
    """Dual ascent on beta, the Lagrange multiplier of the cost constraint.

    The constraint of Eq. (8) is log(b_hat) - E[log q] <= 0.  After each
    epoch (or step) the multiplier moves along the constraint's violation:

        beta <- max(0, beta + step_size * (log b_hat - mean log q))

    so beta grows while the edge keeps too few inputs and shrinks (down to 0)
    once the constraint holds with slack.  ``update`` also accepts the
    measured skipping rate (fraction with q >= delta) for logging and, with
    ``signal="skipping_rate"``, uses log b_hat - log SR as the violation,
    which targets the decision actually taken at inference.
    """

    def __init__(self, target_rate, beta=1.0, step_size=1.0, signal="log_q", max_beta=1e3):
        if not 0.0 < target_rate < 1.0:
            raise ValueError(f"BetaController: target skipping rate must be in (0, 1), got {target_rate}")
        if beta < 0 or step_size <= 0:
            raise ValueError("BetaController: beta must be >= 0 and step_size > 0")
        if signal not in ("log_q", "skipping_rate"):
            raise ValueError(f"BetaController: signal must be 'log_q' or 'skipping_rate', got {signal!r}")
        self.target_rate = float(target_rate)
        self.beta = float(beta)
        self.step_size = float(step_size)
        self.signal = signal
        self.max_beta = float(max_beta)
        self.history = []

    def update(self, mean_log_q, skipping_rate):
        """One dual-ascent step; returns the new beta."""
        if self.signal == "log_q":
            violation = math.log(self.target_rate) - float(mean_log_q)
        else:
            violation = math.log(self.target_rate) - math.log(max(float(skipping_rate), 1e-12))
        self.beta = min(self.max_beta, max(0.0, self.beta + self.step_size * violation))
        self.history.append({"beta": self.beta, "mean_log_q": float(mean_log_q),
                             "skipping_rate": float(skipping_rate), "violation": violation})
        return self.beta

    def state_dict(self):
        return {"target_rate": self.target_rate, "beta": self.beta, "step_size": self.step_size,
                "signal": self.signal, "max_beta": self.max_beta, "history": list(self.history)}

    def load_state_dict(self, state):
        for key in ("target_rate", "beta", "step_size", "signal", "max_beta"):
            setattr(self, key, state[key])
        self.history = list(state.get("history", []))
