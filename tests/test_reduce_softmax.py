"""sum / mean over dims and softmax / log_softmax: forward vs float64 numpy,
backward by finite differences, vs float64 torch, edge cases (empty, 0-d,
NaN, huge logits), non-contiguous inputs, errors and thread determinism."""
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


# ----------------------------------------------------------------- reductions

REDUCE_CASES = [
    ((3, 4, 5), None, False),
    ((3, 4, 5), 1, False),
    ((3, 4, 5), -1, True),
    ((3, 4, 5), (0, 2), False),
    ((3, 4, 5), (2, 0), True),
    ((3, 4, 5), (-3, -2, -1), False),
    ((2, 3, 2, 2), (0, 2, 3), True),   # batch-norm style: everything but channels
    ((2, 3, 2, 2), (1,), False),
    ((6,), 0, False),
]


@pytest.mark.parametrize("op", ["sum", "mean"])
@pytest.mark.parametrize("shape,dim,keepdim", REDUCE_CASES)
def test_reduction_forward_and_finite_differences(op, shape, dim, keepdim):
    x = np.random.default_rng(len(shape) + (0 if dim is None else int(np.abs(dim).sum()))).standard_normal(shape)
    np_op = getattr(np, op)

    def fn(t):
        return getattr(t, op)(dim=dim, keepdim=keepdim)

    def ref(a):
        return np.asarray(np_op(a, axis=dim, keepdims=keepdim))
    out = check_op(fn, ref, [x])
    assert out.shape == ref(x).shape


@pytest.mark.parametrize("op", ["sum", "mean"])
def test_reduction_matches_torch_on_activation_shape(op):
    torch = torch_or_skip()
    torch.set_num_threads(1)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 32, 16, 16)).astype(np.float32)
    for dims, keepdim in [((0, 2, 3), True), ((-1, -2), False), ((), False), ((1,), False)]:
        t = an.tensor(x, requires_grad=True)
        out = getattr(t, op)(dim=dims or None, keepdim=keepdim)
        cot = rng.standard_normal(out.shape).astype(np.float32)
        out.backward(an.tensor(cot))
        tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        tout = getattr(torch, op)(tx, dim=dims, keepdim=keepdim) if dims else getattr(torch, op)(tx)
        tout.backward(torch.tensor(cot, dtype=torch.float64))
        assert out.shape == tuple(tout.shape)
        np.testing.assert_allclose(_np(out), tout.detach().numpy(), rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(t.grad.numpy(), tx.grad.numpy(), rtol=1e-6, atol=1e-9)


def test_sum_accumulates_in_double():
    # 2**24 + many small terms: a float32 running sum would stall at 2**24
    x = np.full(1 << 20, 1.0, dtype=np.float32)
    x[0] = 2.0 ** 24
    got = an.tensor(x).sum().item()
    assert got == np.float32(2.0 ** 24 + (1 << 20) - 1)
    m = an.tensor(np.full((3, 100003), 0.1, np.float32)).mean(dim=1).numpy()
    np.testing.assert_allclose(m, np.float32(0.1), rtol=1e-7)


def test_reduction_empty_and_zero_dim():
    e = an.zeros(0, 3)
    assert e.sum().item() == 0.0
    assert np.isnan(e.mean().item())
    np.testing.assert_array_equal(e.sum(dim=0).numpy(), [0.0, 0.0, 0.0])
    assert np.all(np.isnan(e.mean(dim=0).numpy()))
    assert e.sum(dim=1).shape == (0,)
    assert e.sum(dim=1, keepdim=True).shape == (0, 1)
    x = an.zeros(0, 3, requires_grad=True)
    x.sum().backward()
    assert x.grad.shape == (0, 3)
    s = an.tensor(3.0, requires_grad=True)
    out = s.mean()
    assert out.shape == () and out.item() == 3.0
    out.backward()
    assert s.grad.item() == 1.0
    assert an.tensor(3.0).sum(dim=0).item() == 3.0
    assert an.tensor(3.0).sum(dim=-1, keepdim=True).shape == ()


def test_reduction_nan_propagates():
    x = an.tensor([[1.0, np.nan], [2.0, 3.0]])
    np.testing.assert_array_equal(np.isnan(x.sum(dim=1).numpy()), [True, False])
    assert np.isnan(x.mean().item())


def test_reduction_non_contiguous_input():
    base = np.random.default_rng(2).standard_normal((6, 8, 5)).astype(np.float32)
    for view in [base.transpose(2, 0, 1), base[:, ::2, 1:4], base[::-1]]:
        for dims in [(), (0,), (1, 2), (-1, 0)]:
            got = _C.sum(an.from_numpy(view), dims, False)
            want = _C.sum(an.tensor(np.ascontiguousarray(view)), dims, False)
            np.testing.assert_array_equal(got.numpy(), want.numpy())
            np.testing.assert_allclose(got.numpy(), view.astype(np.float64).sum(axis=dims or None),
                                       rtol=1e-5, atol=1e-5)


def test_reduction_errors():
    x = an.zeros(2, 3)
    with pytest.raises(ValueError, match=r"sum: dim 1 appears multiple times in the list of dims"):
        x.sum(dim=(1, -1))
    with pytest.raises(ValueError, match=r"mean: dim 0 appears multiple times"):
        x.mean(dim=(0, 0))
    with pytest.raises(IndexError, match=r"sum: dimension out of range \(expected to be in range of \[-2, 1\], but got 2\)"):
        x.sum(dim=2)
    with pytest.raises(IndexError, match=r"mean: dimension out of range"):
        x.mean(dim=-3)
    with pytest.raises(TypeError, match=r"sum: input must be an appealnet Tensor"):
        _C.sum(np.zeros(3, np.float32), (), False)
    with pytest.raises(TypeError):
        _C.sum(x, (0.5,), False)


@pytest.mark.parametrize("op", ["sum", "mean"])
def test_reduction_identical_for_one_and_two_threads(op):
    x = np.random.default_rng(5).standard_normal((8, 32, 64, 64)).astype(np.float32)
    results = []
    for threads in (1, 2):
        an.set_num_threads(threads)
        t = an.tensor(x)
        results.append([getattr(t, op)(dim=d).numpy().copy() for d in [None, (0, 2, 3), (1,), (3,)]])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_reduction_gradient_identical_for_one_and_two_threads():
    x = np.random.default_rng(6).standard_normal((8, 32, 16, 16)).astype(np.float32)
    grads = []
    for threads in (1, 2):
        an.set_num_threads(threads)
        t = an.tensor(x, requires_grad=True)
        (t.mean(dim=(0, 2, 3)) * an.tensor(np.arange(32, dtype=np.float32))).sum().backward()
        grads.append(t.grad.numpy().copy())
    np.testing.assert_array_equal(grads[0], grads[1])


# -------------------------------------------------------------------- softmax

def _softmax_ref(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax_ref(x, axis):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


SOFTMAXES = {"softmax": (F.softmax, _softmax_ref, "softmax"),
             "log_softmax": (F.log_softmax, _log_softmax_ref, "log_softmax")}


@pytest.mark.parametrize("name", sorted(SOFTMAXES))
@pytest.mark.parametrize("shape,dim", [((4, 5), 1), ((4, 5), 0), ((2, 3, 4), 1), ((2, 3, 4), -1),
                                       ((2, 3, 4), -3), ((7,), 0)])
def test_softmax_forward_and_finite_differences(name, shape, dim):
    fn, ref, _ = SOFTMAXES[name]
    x = np.random.default_rng(sum(shape) + abs(dim)).standard_normal(shape) * 2
    check_op(lambda t: fn(t, dim), lambda a: ref(a, dim), [x])


@pytest.mark.parametrize("name", sorted(SOFTMAXES))
@pytest.mark.parametrize("shape,dim", [((128, 10), -1), ((128, 100), 1), ((8, 32, 16, 16), 1)])
def test_softmax_matches_torch(name, shape, dim):
    torch = torch_or_skip()
    torch.set_num_threads(1)
    fn, _, tname = SOFTMAXES[name]
    rng = np.random.default_rng(9)
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    cot = rng.standard_normal(shape).astype(np.float32)
    t = an.tensor(x, requires_grad=True)
    out = fn(t, dim)
    out.backward(an.tensor(cot))
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tout = getattr(torch, tname)(tx, dim)
    tout.backward(torch.tensor(cot, dtype=torch.float64))
    np.testing.assert_allclose(_np(out), tout.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(t.grad.numpy(), tx.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_softmax_is_stable_for_huge_logits():
    x = an.tensor([[1000.0, 1001.0, 999.0], [-1000.0, -1000.0, -1e30]])
    p = F.softmax(x, 1).numpy()
    lp = F.log_softmax(x, 1).numpy()
    assert np.all(np.isfinite(p)) and np.all(np.isfinite(lp))
    np.testing.assert_allclose(p, _softmax_ref(np.array(x.numpy(), np.float64), 1), rtol=1e-6,
                               atol=1e-30)
    np.testing.assert_allclose(lp[0], _log_softmax_ref(np.array([1000.0, 1001.0, 999.0]), 0),
                               rtol=1e-6)
    np.testing.assert_allclose(lp[1, :2], np.log(0.5), rtol=1e-6)


def test_softmax_nan_row_and_inf():
    x = an.tensor([[1.0, np.nan, 2.0], [1.0, 2.0, 3.0], [0.0, -np.inf, 0.0]])
    p = F.softmax(x, 1).numpy()
    assert np.all(np.isnan(p[0]))
    np.testing.assert_allclose(p[1], _softmax_ref(np.array([1.0, 2.0, 3.0]), 0), rtol=1e-6)
    np.testing.assert_allclose(p[2], [0.5, 0.0, 0.5], rtol=1e-6)
    assert F.log_softmax(x, 1).numpy()[2, 1] == -np.inf


def test_softmax_empty_and_scalar():
    for fn in (F.softmax, F.log_softmax):
        x = an.zeros(0, 4, requires_grad=True)
        out = fn(x, 1)
        assert out.shape == (0, 4)
        out.sum().backward()
        assert x.grad.shape == (0, 4)
        assert fn(an.zeros(3, 0), 1).shape == (3, 0)
    assert F.softmax(an.tensor(3.0), 0).item() == 1.0
    assert F.log_softmax(an.tensor(3.0), -1).item() == 0.0


def test_softmax_non_contiguous_input():
    base = np.random.default_rng(3).standard_normal((6, 10, 4)).astype(np.float32)
    for view in [base.transpose(1, 2, 0), base[:, ::3], base[::-1, 2:8]]:
        for dim in (0, 1, -1):
            for fn in (F.softmax, F.log_softmax):
                got = fn(an.from_numpy(view), dim).numpy()
                want = fn(an.tensor(np.ascontiguousarray(view)), dim).numpy()
                np.testing.assert_array_equal(got, want)


def test_softmax_errors():
    x = an.zeros(2, 3)
    with pytest.raises(IndexError, match=r"softmax: dimension out of range \(expected to be in range of \[-2, 1\], but got 2\)"):
        F.softmax(x, 2)
    with pytest.raises(IndexError, match=r"log_softmax: dimension out of range .* but got -3"):
        F.log_softmax(x, -3)
    with pytest.raises(TypeError, match=r"softmax: input must be an appealnet Tensor"):
        _C.softmax([1.0, 2.0], 0)


@pytest.mark.parametrize("name", sorted(SOFTMAXES))
def test_softmax_identical_for_one_and_two_threads(name):
    fn = SOFTMAXES[name][0]
    x = np.random.default_rng(8).standard_normal((8, 32, 16, 16)).astype(np.float32)
    cot = an.tensor(np.random.default_rng(9).standard_normal(x.shape))
    results = []
    for threads in (1, 2):
        an.set_num_threads(threads)
        t = an.tensor(x, requires_grad=True)
        out = fn(t, 1)
        out.backward(cot)
        results.append((_np(out).copy(), t.grad.numpy().copy()))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
