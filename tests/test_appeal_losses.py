"""AppealNet's losses (Eq. (6), (9), (10)) against a float64 NumPy
transcription of the equations and by finite differences."""
import numpy as np
import pytest

import appealnet as an
from appealnet import losses
from gradcheck import torch_or_skip


def reference_loss(logits, q_logit, target, big_loss, beta):
    """Eq. (9) (or (10) when big_loss is None) written out in float64."""
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    small = -log_p[np.arange(len(target)), target]
    q = 1.0 / (1.0 + np.exp(-q_logit))
    per = q * small - beta * np.log(q)
    if big_loss is not None:
        per = per + (1.0 - q) * big_loss
    return per


def numeric_grads(f, arrays, eps=1e-6):
    out = []
    for a in arrays:
        g = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            old = a[i]
            a[i] = old + eps
            hi = f()
            a[i] = old - eps
            lo = f()
            a[i] = old
            g[i] = (hi - lo) / (2 * eps)
        out.append(g)
    return out


@pytest.mark.parametrize("white_box", [True, False])
@pytest.mark.parametrize("beta", [0.0, 0.3, 2.0])
def test_matches_equation_and_finite_differences(white_box, beta):
    rng = np.random.default_rng(0)
    n, c = 6, 4
    logits = rng.standard_normal((n, c)).astype(np.float32).astype(np.float64)
    q_logit = rng.standard_normal(n).astype(np.float32).astype(np.float64) * 2
    target = rng.integers(0, c, n)
    big = rng.uniform(0.01, 3.0, n) if white_box else None
    tl, tq = an.tensor(logits, requires_grad=True), an.tensor(q_logit, requires_grad=True)
    loss = losses.appeal_loss(tl, tq, target, big_loss=big, beta=beta)
    expected = reference_loss(logits, q_logit, target, big, beta).mean()
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-5)
    loss.backward()
    g_logits, g_q = numeric_grads(
        lambda: reference_loss(logits, q_logit, target, big, beta).mean(), [logits, q_logit])
    np.testing.assert_allclose(tl.grad.numpy(), g_logits, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(tq.grad.numpy(), g_q, rtol=1e-3, atol=1e-5)


def test_reductions_and_column_q():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((5, 3))
    q_logit = rng.standard_normal((5, 1))
    target = np.array([0, 1, 2, 1, 0])
    big = rng.uniform(0, 1, 5)
    per = losses.appeal_loss(an.tensor(logits), an.tensor(q_logit), target, big, 0.5, "none").numpy()
    ref = reference_loss(logits, q_logit[:, 0], target, big, 0.5)
    np.testing.assert_allclose(per, ref, rtol=1e-5)
    total = losses.appeal_loss(an.tensor(logits), an.tensor(q_logit), target, big, 0.5, "sum").item()
    np.testing.assert_allclose(total, ref.sum(), rtol=1e-5)


def test_stable_when_q_saturates():
    # q within float32 rounding of 1 and of 0: values and gradients stay finite and exact
    logits = an.tensor(np.array([[2.0, -1.0], [0.5, 0.1]]), requires_grad=True)
    q_logit = an.tensor(np.array([40.0, -40.0]), requires_grad=True)
    big = np.array([0.7, 0.2])
    loss = losses.appeal_loss(logits, q_logit, np.array([0, 1]), big, beta=0.5, reduction="none")
    loss.sum().backward()
    values = loss.numpy() if not loss.requires_grad else loss.detach().numpy()
    assert np.all(np.isfinite(values)) and np.all(np.isfinite(q_logit.grad.numpy()))
    # q -> 0 for the second sample: loss -> big_loss + beta * 40 (−log q ≈ 40)
    np.testing.assert_allclose(values[1], 0.2 + 0.5 * 40.0, rtol=1e-5)
    # d/ds of [q l1 + (1-q) l0 - beta log q] at s = -40: ≈ -beta (the log-sigmoid slope)
    np.testing.assert_allclose(q_logit.grad.numpy()[1], -0.5, rtol=1e-5)


def test_no_gradient_flows_into_big_losses():
    big = an.tensor([0.5, 0.5], requires_grad=True)
    loss = losses.appeal_loss(an.tensor(np.zeros((2, 3)), requires_grad=True),
                              an.tensor(np.zeros(2), requires_grad=True), [0, 1], big, 1.0)
    loss.backward()
    assert big.grad is None


def test_against_torch():
    torch = torch_or_skip()
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((8, 5))
    q_logit = rng.standard_normal(8) * 3
    target = rng.integers(0, 5, 8)
    big = rng.uniform(0, 2, 8)
    tl, tq = an.tensor(logits, requires_grad=True), an.tensor(q_logit, requires_grad=True)
    losses.appeal_loss(tl, tq, target, big, 0.7).backward()
    pl = torch.tensor(logits, requires_grad=True)
    pq = torch.tensor(q_logit, requires_grad=True)
    q = torch.sigmoid(pq)
    ce = torch.nn.functional.cross_entropy(pl, torch.tensor(target), reduction="none")
    ref = (q * ce + (1 - q) * torch.tensor(big) - 0.7 * torch.nn.functional.logsigmoid(pq)).mean()
    ref.backward()
    np.testing.assert_allclose(tl.grad.numpy(), pl.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(tq.grad.numpy(), pq.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_bad_input():
    logits, q = an.zeros(3, 2), an.zeros(3)
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        losses.appeal_loss(logits, q, [0, 1, 0], beta=-1)
    with pytest.raises(ValueError, match=r"q_logit must have shape \[3\]"):
        losses.appeal_loss(logits, an.zeros(4), [0, 1, 0])
    with pytest.raises(ValueError, match=r"big_loss must have shape \[3\]"):
        losses.appeal_loss(logits, q, [0, 1, 0], big_loss=np.zeros(2))
    with pytest.raises(ValueError, match="non-finite"):
        losses.appeal_loss(logits, q, [0, 1, 0], big_loss=np.array([0, np.nan, 1]))
    with pytest.raises(IndexError, match="out of range"):
        losses.appeal_loss(logits, q, [0, 5, 0])


def test_target_skipping_rate_eq6():
    # c1 = 10, c0 = 110, budget 30: b_hat = (110 - 30) / 100 = 0.8
    assert losses.target_skipping_rate(10, 110, 30) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="must exceed the edge cost"):
        losses.target_skipping_rate(10, 10, 10)
    with pytest.raises(ValueError, match="strictly between"):
        losses.target_skipping_rate(10, 110, 200)


def test_beta_controller_dual_ascent():
    ctl = losses.BetaController(target_rate=0.8, beta=1.0, step_size=0.5)
    # mean log q = log 0.5 < log 0.8: constraint violated, beta grows by 0.5*(log .8 - log .5)
    assert ctl.update(np.log(0.5), 0.4) == pytest.approx(1.0 + 0.5 * (np.log(0.8) - np.log(0.5)))
    # strongly satisfied: beta shrinks, never below 0
    for _ in range(20):
        ctl.update(np.log(0.999), 1.0)
    assert ctl.beta == 0.0
    state = ctl.state_dict()
    other = losses.BetaController(0.5)
    other.load_state_dict(state)
    assert other.beta == ctl.beta and len(other.history) == 21
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        losses.BetaController(1.5)


def test_appealnet_testing_gradcheck_on_the_loss_and_a_two_head_model():
    """The user-facing gradcheck helper, on our own loss and on a TwoHead."""
    from appealnet import models, testing
    rng = np.random.default_rng(5)
    target = np.array([0, 2, 1])
    big = np.array([0.4, 1.2, 0.1])
    assert testing.gradcheck(lambda l, q: losses.appeal_loss(l, q, target, big, beta=0.3),
                             [rng.standard_normal((3, 4)), rng.standard_normal(3)])
    an.manual_seed(0)
    two = models.TwoHead("resnet8", num_classes=3)
    two.eval()  # batch statistics would couple the samples; eval keeps the check local
    features = rng.standard_normal((2, two.num_features))
    assert testing.gradcheck(lambda f: (two.approximator(f), two.predictor(f, two.approximator(f))),
                             [features], atol=2e-3)


def test_label_smoothing_applies_to_the_small_models_loss():
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((4, 3))
    q_logit = rng.standard_normal(4)
    target = np.array([0, 1, 2, 0])
    eps = 0.2
    got = losses.appeal_loss(an.tensor(logits), an.tensor(q_logit), target, beta=0.1,
                             reduction="none", label_smoothing=eps).numpy()
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    smoothed = -(1 - eps) * log_p[np.arange(4), target] - eps * log_p.mean(axis=1)
    q = 1 / (1 + np.exp(-q_logit))
    np.testing.assert_allclose(got, q * smoothed - 0.1 * np.log(q), rtol=1e-5)
