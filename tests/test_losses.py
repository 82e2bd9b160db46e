"""cross_entropy, binary_cross_entropy_with_logits and mse_loss: forward vs
float64 numpy, backward by finite differences, values and gradients vs
float64 torch (label smoothing, ignore_index, [N, C, d] logits, weight and
pos_weight), stability, bad input, empty batches, thread determinism."""
import numpy as np
import pytest

import appealnet as an
from appealnet import _C
from appealnet.nn import functional as F
from gradcheck import check_op, torch_or_skip


@pytest.fixture(autouse=True)
def _restore_threads():
    n = an.get_num_threads()
    yield
    an.set_num_threads(n)


def _np(t):
    return t.detach().numpy()


# -------------------------------------------------------------- references

def ce_ref(logits, labels, reduction="mean", smoothing=0.0, ignore_index=-100):
    """PyTorch's definition, in float64: logits [N, C, d...], labels [N, d...]."""
    C = logits.shape[1]
    m = logits.max(axis=1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
    flat = np.moveaxis(logp, 1, -1).reshape(-1, C)
    lab = np.asarray(labels).reshape(-1)
    keep = lab != ignore_index
    picked = flat[np.arange(lab.size), np.where(keep, lab, 0)]
    loss = ((1 - smoothing) * -picked + smoothing * -flat.sum(axis=1) / C) * keep
    if reduction == "none":
        return loss.reshape((logits.shape[0],) + logits.shape[2:])
    if reduction == "sum":
        return np.asarray(loss.sum())
    return np.asarray(loss.sum() / keep.sum())


def bce_ref(x, t, w=None, pw=None, reduction="mean"):
    w = 1.0 if w is None else w
    pw = 1.0 if pw is None else pw
    log_sig = np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x)))
    log_one_minus = np.minimum(-x, 0) - np.log1p(np.exp(-np.abs(x)))
    loss = -w * (pw * t * log_sig + (1 - t) * log_one_minus)
    loss = np.broadcast_to(loss, x.shape)
    return {"none": loss, "sum": np.asarray(loss.sum()), "mean": np.asarray(loss.mean())}[reduction]


def mse_ref(x, t, reduction="mean"):
    loss = np.broadcast_to((x - t) ** 2, x.shape)
    return {"none": loss, "sum": np.asarray(loss.sum()), "mean": np.asarray(loss.mean())}[reduction]


REDUCTIONS = ["none", "mean", "sum"]


# ---------------------------------------------------------------- cross entropy

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing,ignore", [(0.0, -100), (0.2, -100), (0.1, 2)])
@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 2, 2)])
def test_cross_entropy_finite_differences(reduction, smoothing, ignore, shape):
    rng = np.random.default_rng(shape[0] * 10 + int(smoothing * 10))
    x = rng.standard_normal(shape) * 2
    labels = rng.integers(0, shape[1], size=(shape[0],) + shape[2:])
    labels.flat[1] = 2  # so that ignore_index=2 ignores at least one position
    check_op(lambda t: F.cross_entropy(t, labels, reduction, smoothing, ignore),
             lambda a: ce_ref(a, labels, reduction, smoothing, ignore), [x])


@pytest.mark.parametrize("N,C", [(128, 10), (128, 100)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_matches_torch(N, C, reduction):
    torch = torch_or_skip()
    torch.set_num_threads(1)
    rng = np.random.default_rng(C)
    x = (rng.standard_normal((N, C)) * 3).astype(np.float32)
    labels = rng.integers(0, C, size=N)
    labels[::7] = -100
    for smoothing in (0.0, 0.1):
        t = an.tensor(x, requires_grad=True)
        out = F.cross_entropy(t, labels, reduction=reduction, label_smoothing=smoothing)
        cot = rng.standard_normal(out.shape).astype(np.float32)
        out.backward(an.tensor(cot))
        tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        tout = torch.nn.functional.cross_entropy(tx, torch.tensor(labels), reduction=reduction,
                                                 label_smoothing=smoothing)
        tout.backward(torch.tensor(cot, dtype=torch.float64))
        assert out.shape == tuple(tout.shape)
        np.testing.assert_allclose(_np(out), tout.detach().numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(t.grad.numpy(), tx.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_cross_entropy_spatial_matches_torch():
    torch = torch_or_skip()
    rng = np.random.default_rng(11)
    x = rng.standard_normal((4, 5, 6, 7)).astype(np.float32)
    labels = rng.integers(0, 5, size=(4, 6, 7))
    labels[0, :2] = 3
    for reduction in REDUCTIONS:
        t = an.tensor(x, requires_grad=True)
        out = F.cross_entropy(t, labels, reduction=reduction, label_smoothing=0.15, ignore_index=3)
        out.sum().backward()
        tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        tout = torch.nn.functional.cross_entropy(tx, torch.tensor(labels), reduction=reduction,
                                                 label_smoothing=0.15, ignore_index=3)
        tout.sum().backward()
        assert out.shape == tuple(tout.shape)
        np.testing.assert_allclose(_np(out), tout.detach().numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(t.grad.numpy(), tx.grad.numpy(), rtol=1e-5, atol=1e-7)
    # labels may also be given flat (N*d1*d2 of them)
    flat = F.cross_entropy(an.tensor(x), labels.reshape(-1), reduction="none")
    np.testing.assert_array_equal(flat.numpy(),
                                  F.cross_entropy(an.tensor(x), labels, reduction="none").numpy())


def test_cross_entropy_stable_at_confident_logits():
    torch = torch_or_skip()
    x = np.array([[50.0, -50.0, 0.0], [-50.0, 50.0, 0.0], [50.0, 50.0, -50.0]], np.float32)
    labels = np.array([0, 0, 2])
    t = an.tensor(x, requires_grad=True)
    out = F.cross_entropy(t, labels, reduction="none", label_smoothing=0.05)
    out.sum().backward()
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tout = torch.nn.functional.cross_entropy(tx, torch.tensor(labels), reduction="none",
                                             label_smoothing=0.05)
    tout.sum().backward()
    assert np.all(np.isfinite(_np(out))) and np.all(np.isfinite(t.grad.numpy()))
    np.testing.assert_allclose(_np(out), tout.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(t.grad.numpy(), tx.grad.numpy(), rtol=1e-6, atol=1e-12)


def test_cross_entropy_label_array_likes():
    x = an.tensor(np.random.default_rng(0).standard_normal((3, 4)))
    want = F.cross_entropy(x, np.array([0, 3, 1])).item()
    for labels in ([0, 3, 1], (0, 3, 1), np.array([0, 3, 1], np.int32), np.array([0, 3, 1], np.uint8),
                   np.array([[0], [3], [1]])):
        assert F.cross_entropy(x, labels).item() == want


@pytest.mark.parametrize("label,position", [(12, 3), (-1, 0), (10, 4)])
def test_cross_entropy_label_out_of_range(label, position):
    labels = np.array([1, 2, 3, 4, 5, 6])
    labels[position] = label
    with pytest.raises(IndexError, match=rf"^cross_entropy: label {label} at position {position} "
                                         r"is out of range for 10 classes$"):
        F.cross_entropy(an.zeros(6, 10), labels)


def test_cross_entropy_bad_inputs():
    x = an.zeros(4, 10)
    with pytest.raises(ValueError, match=r"cross_entropy: got 5 labels but logits of shape \[4, 10\] need 4"):
        F.cross_entropy(x, [1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match=r"cross_entropy: got 3 labels but logits of shape \[2, 3, 4\] need 8"):
        F.cross_entropy(an.zeros(2, 3, 4), [0, 1, 2])
    with pytest.raises(TypeError, match=r"cross_entropy: labels must hold integers"):
        F.cross_entropy(x, np.array([1.0, 2.0, 3.0, 4.0]))
    with pytest.raises(TypeError, match=r"cross_entropy: labels must hold integers"):
        F.cross_entropy(x, [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(TypeError, match=r"cross_entropy: labels must hold integer class indices"):
        F.cross_entropy(x, an.tensor([1.0, 2.0, 3.0, 4.0]))
    with pytest.raises(ValueError, match=r"cross_entropy: expected logits of shape \[N, C\] or "
                                         r"\[N, C, d1, \.\.\.\], got \[10\]"):
        F.cross_entropy(an.zeros(10), [1])
    with pytest.raises(ValueError, match=r"got \[\]"):
        F.cross_entropy(an.tensor(1.0), [0])
    with pytest.raises(ValueError, match=r"reduction must be one of"):
        F.cross_entropy(x, [1, 2, 3, 4], reduction="avg")
    with pytest.raises(ValueError, match=r"cross_entropy: reduction must be 'none', 'mean' or 'sum', got 'avg'"):
        _C.cross_entropy(x, [1, 2, 3, 4], "avg", 0.0, -100)
    with pytest.raises(ValueError, match=r"cross_entropy: label_smoothing must be in \[0, 1\], got 1.5"):
        _C.cross_entropy(x, [1, 2, 3, 4], "mean", 1.5, -100)
    with pytest.raises(TypeError, match=r"cross_entropy: logits must be an appealnet Tensor"):
        _C.cross_entropy(np.zeros((4, 10), np.float32), [1, 2, 3, 4], "mean", 0.0, -100)


def test_cross_entropy_empty_batch_and_all_ignored():
    empty = an.zeros(0, 10, requires_grad=True)
    assert np.isnan(F.cross_entropy(empty, np.zeros(0, np.int64)).item())
    assert F.cross_entropy(empty, np.zeros(0, np.int32), reduction="sum").item() == 0.0
    none = F.cross_entropy(empty, np.zeros(0, np.int64), reduction="none")
    assert none.shape == (0,)
    F.cross_entropy(empty, np.zeros(0, np.int64), reduction="sum").backward()
    assert empty.grad.shape == (0, 10)
    x = an.tensor(np.ones((2, 3)), requires_grad=True)
    assert np.isnan(F.cross_entropy(x, [-100, -100]).item())
    F.cross_entropy(x, [-100, 1], reduction="sum").backward()
    np.testing.assert_array_equal(x.grad.numpy()[0], [0, 0, 0])


def test_cross_entropy_nan_logit_propagates_to_its_sample():
    x = an.tensor([[0.0, np.nan, 1.0], [0.0, 1.0, 2.0]])
    out = F.cross_entropy(x, [0, 2], reduction="none").numpy()
    assert np.isnan(out[0]) and np.isfinite(out[1])
    assert np.isnan(F.cross_entropy(x, [0, 2]).item())


def test_cross_entropy_non_contiguous_logits():
    base = np.random.default_rng(4).standard_normal((10, 6)).astype(np.float32)
    labels = np.arange(6) % 10
    view = base.T  # [6, 10], strided
    got = F.cross_entropy(an.from_numpy(view), labels, reduction="none", label_smoothing=0.1)
    want = F.cross_entropy(an.tensor(np.ascontiguousarray(view)), labels, reduction="none",
                           label_smoothing=0.1)
    np.testing.assert_array_equal(got.numpy(), want.numpy())


# ---------------------------------------------------------------------- BCE

@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_finite_differences_all_arguments(reduction):
    rng = np.random.default_rng(21)
    x = rng.standard_normal((4, 3)) * 2
    t = rng.uniform(0, 1, size=(4, 3))
    w = rng.uniform(0.5, 2, size=(4, 1))    # broadcast over the last dim
    pw = rng.uniform(0.5, 3, size=(3,))     # one per class
    check_op(lambda a, b, c, d: F.binary_cross_entropy_with_logits(a, b, c, reduction, d),
             lambda a, b, c, d: bce_ref(a, b, c, d, reduction), [x, t, w, pw])
    check_op(lambda a, b: F.binary_cross_entropy_with_logits(a, b, reduction=reduction),
             lambda a, b: bce_ref(a, b, reduction=reduction), [x, t])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("with_weights", [False, True])
def test_bce_matches_torch(reduction, with_weights):
    torch = torch_or_skip()
    torch.set_num_threads(1)
    rng = np.random.default_rng(22)
    x = (rng.standard_normal((128, 10)) * 4).astype(np.float32)
    t = (rng.uniform(size=(128, 10)) > 0.5).astype(np.float32)
    w = rng.uniform(0.5, 2, size=(128, 1)).astype(np.float32) if with_weights else None
    pw = rng.uniform(0.5, 3, size=(10,)).astype(np.float32) if with_weights else None
    # torch refuses weight / pos_weight that require grad (finite differences cover ours)
    tens = {k: (an.tensor(v, requires_grad=k in "xt") if v is not None else None)
            for k, v in dict(x=x, t=t, w=w, pw=pw).items()}
    out = F.binary_cross_entropy_with_logits(tens["x"], tens["t"], tens["w"], reduction, tens["pw"])
    cot = rng.standard_normal(out.shape).astype(np.float32)
    out.backward(an.tensor(cot))
    tt = {k: (torch.tensor(v, dtype=torch.float64, requires_grad=k in "xt") if v is not None else None)
          for k, v in dict(x=x, t=t, w=w, pw=pw).items()}
    tout = torch.nn.functional.binary_cross_entropy_with_logits(
        tt["x"], tt["t"], weight=tt["w"], pos_weight=tt["pw"], reduction=reduction)
    tout.backward(torch.tensor(cot, dtype=torch.float64))
    np.testing.assert_allclose(_np(out), tout.detach().numpy(), rtol=1e-5, atol=1e-6)
    for k in tens:
        if k in "xt":
            np.testing.assert_allclose(tens[k].grad.numpy(), tt[k].grad.numpy(), rtol=1e-5,
                                       atol=1e-6, err_msg=k)


def test_bce_stable_at_extreme_logits():
    x = np.array([-100.0, -50.0, 50.0, 100.0, -100.0, 100.0], np.float32)
    t = np.array([0.0, 0.0, 1.0, 1.0, 1.0, 0.0], np.float32)
    xt = an.tensor(x, requires_grad=True)
    pw = an.tensor([2.0], requires_grad=True)
    out = F.binary_cross_entropy_with_logits(xt, an.tensor(t), reduction="none", pos_weight=pw)
    out.sum().backward()
    vals = out.detach().numpy()
    assert np.all(np.isfinite(vals)) and np.all(np.isfinite(xt.grad.numpy()))
    assert np.all(np.isfinite(pw.grad.numpy()))
    np.testing.assert_allclose(vals, bce_ref(x.astype(np.float64), t, pw=2.0, reduction="none"),
                               rtol=1e-6, atol=1e-30)
    # confidently right -> ~0 loss and ~0 grad; confidently wrong -> |x| loss, grad +-1 (x pos_weight)
    np.testing.assert_allclose(vals[4:], [200.0, 100.0], rtol=1e-6)
    np.testing.assert_allclose(xt.grad.numpy()[4:], [-2.0, 1.0], rtol=1e-6)


def test_bce_bad_shapes():
    x = an.zeros(4, 1)
    with pytest.raises(ValueError, match=r"binary_cross_entropy_with_logits: target of shape \[4\] does "
                                         r"not match logits of shape \[4, 1\]"):
        F.binary_cross_entropy_with_logits(x, an.zeros(4))
    with pytest.raises(ValueError, match=r"target of shape \[3, 1\] does not match logits of shape \[4, 1\]"):
        F.binary_cross_entropy_with_logits(x, an.zeros(3, 1))
    with pytest.raises(ValueError, match=r"weight of shape \[2\] does not match logits of shape \[4, 1\]"):
        F.binary_cross_entropy_with_logits(x, an.zeros(4, 1), weight=an.zeros(2))
    with pytest.raises(ValueError, match=r"pos_weight of shape \[1, 4, 1\] does not match logits"):
        F.binary_cross_entropy_with_logits(x, an.zeros(4, 1), pos_weight=an.zeros(1, 4, 1))
    with pytest.raises(TypeError, match=r"binary_cross_entropy_with_logits: weight must be an appealnet Tensor"):
        _C.binary_cross_entropy_with_logits(x, an.zeros(4, 1), [1.0], None, "mean")
    with pytest.raises(ValueError, match=r"reduction must be 'none', 'mean' or 'sum', got 'max'"):
        _C.binary_cross_entropy_with_logits(x, an.zeros(4, 1), None, None, "max")


def test_bce_empty_and_nan():
    e = an.zeros(0, 3, requires_grad=True)
    assert np.isnan(F.binary_cross_entropy_with_logits(e, an.zeros(0, 3)).item())
    s = F.binary_cross_entropy_with_logits(e, an.zeros(0, 3), reduction="sum")
    assert s.item() == 0.0
    s.backward()
    assert e.grad.shape == (0, 3)
    out = F.binary_cross_entropy_with_logits(an.tensor([np.nan, 1.0]), an.tensor([1.0, 0.0]),
                                             reduction="none").numpy()
    assert np.isnan(out[0]) and np.isfinite(out[1])


# ---------------------------------------------------------------------- MSE

@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_finite_differences(reduction):
    rng = np.random.default_rng(31)
    x, t = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    check_op(lambda a, b: F.mse_loss(a, b, reduction), lambda a, b: mse_ref(a, b, reduction), [x, t])
    row = rng.standard_normal((4,))   # target broadcast over rows
    check_op(lambda a, b: F.mse_loss(a, b, reduction), lambda a, b: mse_ref(a, b, reduction), [x, row])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_matches_torch(reduction):
    torch = torch_or_skip()
    rng = np.random.default_rng(32)
    x = rng.standard_normal((128, 100)).astype(np.float32)
    t = rng.standard_normal((128, 100)).astype(np.float32)
    a, b = an.tensor(x, requires_grad=True), an.tensor(t, requires_grad=True)
    out = F.mse_loss(a, b, reduction)
    cot = rng.standard_normal(out.shape).astype(np.float32)
    out.backward(an.tensor(cot))
    ta = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tb = torch.tensor(t, dtype=torch.float64, requires_grad=True)
    tout = torch.nn.functional.mse_loss(ta, tb, reduction=reduction)
    tout.backward(torch.tensor(cot, dtype=torch.float64))
    np.testing.assert_allclose(_np(out), tout.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.grad.numpy(), ta.grad.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(b.grad.numpy(), tb.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_mse_bad_shapes_empty_and_nan():
    with pytest.raises(ValueError, match=r"mse_loss: target of shape \[4, 1\] does not match input of "
                                         r"shape \[4\]"):
        F.mse_loss(an.zeros(4), an.zeros(4, 1))
    with pytest.raises(ValueError, match=r"mse_loss: target of shape \[4\] does not match input of "
                                         r"shape \[4, 1\]"):
        F.mse_loss(an.zeros(4, 1), an.zeros(4))
    with pytest.raises(TypeError, match=r"mse_loss: input must be an appealnet Tensor"):
        _C.mse_loss(np.zeros(3, np.float32), an.zeros(3), "mean")
    assert np.isnan(F.mse_loss(an.zeros(0), an.zeros(0)).item())
    assert F.mse_loss(an.zeros(0, 2), an.zeros(0, 2), "sum").item() == 0.0
    assert F.mse_loss(an.zeros(0, 2), an.zeros(0, 2), "none").shape == (0, 2)
    assert np.isnan(F.mse_loss(an.tensor([1.0, np.nan]), an.tensor([0.0, 0.0])).item())
    # scalar target broadcasts
    assert F.mse_loss(an.tensor([1.0, 3.0]), 1.0).item() == 2.0


def test_losses_non_contiguous_inputs():
    rng = np.random.default_rng(33)
    x = rng.standard_normal((5, 8)).astype(np.float32)
    t = rng.uniform(size=(8, 5)).astype(np.float32)
    for fn in (F.mse_loss, F.binary_cross_entropy_with_logits):
        got = fn(an.from_numpy(x.T), an.from_numpy(t[:, ::-1]), reduction="none")
        want = fn(an.tensor(np.ascontiguousarray(x.T)), an.tensor(np.ascontiguousarray(t[:, ::-1])),
                  reduction="none")
        np.testing.assert_array_equal(got.numpy(), want.numpy())


# ----------------------------------------------------------- determinism

def test_losses_identical_for_one_and_two_threads():
    rng = np.random.default_rng(40)
    logits = rng.standard_normal((4096, 100)).astype(np.float32)
    labels = rng.integers(0, 100, size=4096)
    target = rng.uniform(size=logits.shape).astype(np.float32)
    results = []
    for threads in (1, 2):
        an.set_num_threads(threads)
        row = []
        for fn in (lambda x: F.cross_entropy(x, labels, label_smoothing=0.1),
                   lambda x: F.binary_cross_entropy_with_logits(x, an.tensor(target)),
                   lambda x: F.mse_loss(x, an.tensor(target), "sum")):
            x = an.tensor(logits, requires_grad=True)
            loss = fn(x)
            loss.backward()
            row.append((loss.item(), x.grad.numpy().copy()))
        results.append(row)
    for (v1, g1), (v2, g2) in zip(*results):
        assert v1 == v2
        np.testing.assert_array_equal(g1, g2)
