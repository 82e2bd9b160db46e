"""Elementwise math and activations: forward vs float64 numpy, backward by
finite differences, values and gradients vs float64 torch (kinks included),
stability, NaN, non-contiguous and empty inputs, thread-count determinism."""
import numpy as np
import pytest

import appealnet as an
from appealnet import _C
from appealnet.nn import functional as F
from gradcheck import check_op, torch_or_skip


def _sigmoid(x):
    return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))


def _log_sigmoid(x):
    return np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x)))


def _away_from(points, margin):
    """Sampler of values in [-5, 8] at least `margin` away from every kink."""
    def sample(rng, shape):
        x = rng.uniform(-5, 8, size=shape)
        for _ in range(100):
            bad = np.zeros(shape, dtype=bool)
            for p in points:
                bad |= np.abs(x - p) < margin
            if not bad.any():
                return x
            x[bad] = rng.uniform(-5, 8, size=int(bad.sum()))
        raise AssertionError("could not sample away from kinks")
    return sample


def _uniform(lo, hi):
    return lambda rng, shape: rng.uniform(lo, hi, size=shape)


# name: (appealnet fn, float64 numpy reference, torch fn name/lambda, sampler)
OPS = {
    "exp": (lambda x: x.exp(), np.exp, lambda t, x: t.exp(x), _uniform(-3, 3)),
    "log": (lambda x: x.log(), np.log, lambda t, x: t.log(x), _uniform(0.3, 4)),
    "sqrt": (lambda x: x.sqrt(), np.sqrt, lambda t, x: t.sqrt(x), _uniform(0.3, 4)),
    "abs": (lambda x: abs(x), np.abs, lambda t, x: t.abs(x), _away_from([0], 0.05)),
    "pow3": (lambda x: x ** 3, lambda x: x ** 3, lambda t, x: x ** 3, _uniform(-2, 2)),
    "pow_half": (lambda x: x ** 0.5, np.sqrt, lambda t, x: x ** 0.5, _uniform(0.3, 4)),
    "pow_neg": (lambda x: x ** -1.5, lambda x: x ** -1.5, lambda t, x: x ** -1.5, _uniform(0.5, 3)),
    "clamp": (lambda x: x.clamp(-0.5, 0.7), lambda x: np.clip(x, -0.5, 0.7),
              lambda t, x: t.clamp(x, -0.5, 0.7), _away_from([-0.5, 0.7], 0.05)),
    "clamp_min": (lambda x: x.clamp(min=0.25), lambda x: np.maximum(x, 0.25),
                  lambda t, x: t.clamp(x, min=0.25), _away_from([0.25], 0.05)),
    "clamp_max": (lambda x: x.clamp(max=0.25), lambda x: np.minimum(x, 0.25),
                  lambda t, x: t.clamp(x, max=0.25), _away_from([0.25], 0.05)),
    "relu": (F.relu, lambda x: np.maximum(x, 0), lambda t, x: t.relu(x), _away_from([0], 0.05)),
    "relu6": (F.relu6, lambda x: np.clip(x, 0, 6), lambda t, x: t.nn.functional.relu6(x),
              _away_from([0, 6], 0.05)),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.1), lambda x: np.where(x > 0, x, 0.1 * x),
                   lambda t, x: t.nn.functional.leaky_relu(x, 0.1), _away_from([0], 0.05)),
    "sigmoid": (F.sigmoid, _sigmoid, lambda t, x: t.sigmoid(x), _uniform(-6, 6)),
    "tanh": (F.tanh, np.tanh, lambda t, x: t.tanh(x), _uniform(-3, 3)),
    "silu": (F.silu, lambda x: x * _sigmoid(x), lambda t, x: t.nn.functional.silu(x), _uniform(-6, 6)),
    "hardswish": (F.hardswish, lambda x: x * np.clip(x + 3, 0, 6) / 6,
                  lambda t, x: t.nn.functional.hardswish(x), _away_from([-3, 3], 0.05)),
    "hardsigmoid": (F.hardsigmoid, lambda x: np.clip(x + 3, 0, 6) / 6,
                    lambda t, x: t.nn.functional.hardsigmoid(x), _away_from([-3, 3], 0.05)),
    "log_sigmoid": (F.logsigmoid, _log_sigmoid, lambda t, x: t.nn.functional.logsigmoid(x),
                    _uniform(-8, 8)),
}

NAMES = sorted(OPS)


@pytest.fixture(autouse=True)
def _restore_threads():
    n = an.get_num_threads()
    yield
    an.set_num_threads(n)


@pytest.mark.parametrize("name", NAMES)
def test_forward_and_finite_differences(name):
    fn, ref, _, sample = OPS[name]
    rng = np.random.default_rng(NAMES.index(name))
    check_op(fn, ref, [sample(rng, (3, 5))])


@pytest.mark.parametrize("name", NAMES)
def test_matches_torch_on_mobilenet_activation_shape(name):
    torch = torch_or_skip()
    torch.set_num_threads(1)
    fn, _, torch_fn, sample = OPS[name]
    rng = np.random.default_rng(100 + NAMES.index(name))
    x = sample(rng, (8, 32, 16, 16)).astype(np.float32)
    cot = rng.standard_normal(x.shape).astype(np.float32)
    t = an.tensor(x, requires_grad=True)
    out = fn(t)
    out.backward(an.tensor(cot))
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tout = torch_fn(torch, tx)
    tout.backward(torch.tensor(cot, dtype=torch.float64))
    np.testing.assert_allclose(out.detach().numpy(), tout.detach().numpy(), rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(t.grad.numpy(), tx.grad.numpy(), rtol=2e-5, atol=2e-6)


# Values exactly at kinks and edges: gradients must follow PyTorch's choice.
KINKS = {
    "relu": (F.relu, lambda t, x: t.relu(x), [-1.0, 0.0, 1.0]),
    "relu6": (F.relu6, lambda t, x: t.nn.functional.relu6(x), [-1.0, 0.0, 3.0, 6.0, 7.0]),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.2), lambda t, x: t.nn.functional.leaky_relu(x, 0.2),
                   [-1.0, 0.0, 1.0]),
    "hardswish": (F.hardswish, lambda t, x: t.nn.functional.hardswish(x),
                  [-4.0, -3.0, -1.0, 0.0, 3.0, 4.0]),
    "hardsigmoid": (F.hardsigmoid, lambda t, x: t.nn.functional.hardsigmoid(x),
                    [-4.0, -3.0, 0.0, 3.0, 4.0]),
    "clamp": (lambda x: x.clamp(-1.0, 2.0), lambda t, x: t.clamp(x, -1.0, 2.0),
              [-2.0, -1.0, 0.0, 2.0, 3.0]),
    "abs": (abs, lambda t, x: t.abs(x), [-2.0, 0.0, 2.0]),
    "sqrt": (lambda x: x.sqrt(), lambda t, x: t.sqrt(x), [0.0, 4.0]),
    "log": (lambda x: x.log(), lambda t, x: t.log(x), [0.0, 1.0]),
    "pow0": (lambda x: x ** 0, lambda t, x: x ** 0, [0.0, 2.0]),
    "pow2": (lambda x: x ** 2, lambda t, x: x ** 2, [0.0, -3.0]),
}


@pytest.mark.parametrize("name", sorted(KINKS))
def test_kink_values_and_gradients_match_torch(name):
    torch = torch_or_skip()
    fn, torch_fn, points = KINKS[name]
    x = np.array(points, dtype=np.float32)
    t = an.tensor(x, requires_grad=True)
    fn(t).sum().backward()
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    torch_fn(torch, tx).sum().backward()
    np.testing.assert_allclose(fn(an.tensor(x)).numpy(), torch_fn(torch, tx).detach().numpy(),
                               rtol=1e-6)
    np.testing.assert_allclose(t.grad.numpy(), tx.grad.numpy(), rtol=1e-6)


def test_documented_kink_gradients():
    # independent of torch: the conventions the brief fixes
    cases = [
        (F.relu, [0.0], [0.0]),
        (F.relu6, [0.0, 6.0, 5.9], [0.0, 0.0, 1.0]),
        (F.hardswish, [-3.5, 3.5, 0.0, 1.5, -3.0, 3.0], [0.0, 1.0, 0.5, 1.0, 0.0, 1.0]),
        (F.hardsigmoid, [-3.0, 3.0, 0.0], [0.0, 0.0, 1 / 6]),
        (lambda x: x.clamp(0.0, 1.0), [0.0, 1.0, 1.5], [1.0, 1.0, 0.0]),
        (abs, [0.0, -2.0], [0.0, -1.0]),
        (lambda x: x.sqrt(), [0.0], [np.inf]),
        (lambda x: x.log(), [0.0], [np.inf]),
    ]
    for fn, xs, expected in cases:
        t = an.tensor(xs, requires_grad=True)
        fn(t).sum().backward()
        np.testing.assert_allclose(t.grad.numpy(), expected, rtol=1e-6)
    assert an.tensor([0.0]).sqrt().numpy()[0] == 0.0
    assert an.tensor([0.0]).log().numpy()[0] == -np.inf


@pytest.mark.parametrize("fn", [F.sigmoid, F.logsigmoid, F.silu,
                                lambda x: F.binary_cross_entropy_with_logits(
                                    x, an.tensor(np.array([0, 1, 0, 1, 1, 0], np.float32)),
                                    reduction="none")])
def test_stable_for_large_magnitudes(fn):
    torch = torch_or_skip()
    x = np.array([-100.0, -100.0, -50.0, 50.0, 100.0, 100.0], dtype=np.float32)
    t = an.tensor(x, requires_grad=True)
    out = fn(t)
    out.sum().backward()
    assert np.all(np.isfinite(out.detach().numpy()))
    assert np.all(np.isfinite(t.grad.numpy()))
    tf = torch.nn.functional
    target = torch.tensor([0, 1, 0, 1, 1, 0], dtype=torch.float64)
    torch_fns = {F.sigmoid: torch.sigmoid, F.logsigmoid: tf.logsigmoid, F.silu: tf.silu}
    tfn = torch_fns.get(fn, lambda v: tf.binary_cross_entropy_with_logits(v, target, reduction="none"))
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tout = tfn(tx)
    tout.sum().backward()
    # torch's BCE forms x - t x + softplus(-x) and sigmoid(x) - t round tails
    # like 2e-22 to 0 where ours keep them, hence the tiny atol
    np.testing.assert_allclose(out.detach().numpy(), tout.detach().numpy(), rtol=1e-6, atol=1e-20)
    np.testing.assert_allclose(t.grad.numpy(), tx.grad.numpy(), rtol=1e-6, atol=1e-20)


@pytest.mark.parametrize("name", NAMES)
def test_nan_propagates(name):
    fn, ref, _, _ = OPS[name]
    x = an.tensor([np.nan, 0.5, 1.5])
    out = fn(x).numpy()
    assert np.isnan(out[0]), name
    np.testing.assert_allclose(out[1:], ref(np.array([0.5, 1.5])), rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_non_contiguous_input_matches_contiguous(name):
    fn, _, _, sample = OPS[name]
    rng = np.random.default_rng(7)
    base = sample(rng, (6, 10)).astype(np.float32)
    views = [base.T, base[:, ::3], base[::2, 1:7]]
    for view in views:
        got = fn(an.from_numpy(view))
        want = fn(an.tensor(np.ascontiguousarray(view)))
        assert got.shape == view.shape
        np.testing.assert_array_equal(got.detach().numpy(), want.detach().numpy())
    # gradient flows back to a strided leaf with the leaf's shape
    leaf = an.from_numpy(np.ascontiguousarray(base)).requires_grad_()
    sliced = leaf[:, ::3]
    fn(sliced).sum().backward()
    assert leaf.grad.shape == base.shape
    assert np.all(leaf.grad.numpy()[:, 1::3] == 0)


@pytest.mark.parametrize("name", NAMES)
def test_empty_input(name):
    fn = OPS[name][0]
    x = an.zeros(0, 4, requires_grad=True)
    out = fn(x)
    assert out.shape == (0, 4)
    out.sum().backward()
    assert x.grad.shape == (0, 4)


@pytest.mark.parametrize("name", ["sigmoid", "silu", "hardswish", "log_sigmoid", "pow_half", "tanh"])
def test_identical_for_one_and_two_threads(name):
    fn, _, _, sample = OPS[name]
    x = sample(np.random.default_rng(3), (8, 32, 16, 16)).astype(np.float32)
    cot = an.tensor(np.random.default_rng(4).standard_normal(x.shape))
    results = []
    for threads in (1, 2):
        an.set_num_threads(threads)
        t = an.tensor(x, requires_grad=True)
        out = fn(t)
        out.backward(cot)
        results.append((out.detach().numpy().copy(), t.grad.numpy().copy()))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_zero_dim_input():
    x = an.tensor(2.0, requires_grad=True)
    y = x.exp()
    assert y.shape == ()
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), np.exp(2.0), rtol=1e-6)


def test_grad_fn_names_and_no_record_without_grad():
    x = an.tensor([1.0, -2.0], requires_grad=True)
    assert F.relu(x).grad_fn is not None and "Relu" in str(F.relu(x).grad_fn)
    assert "Sigmoid" in str(F.sigmoid(x).grad_fn)
    assert "Clamp" in str(x.clamp(0, 1).grad_fn)
    assert F.relu(an.tensor([1.0])).grad_fn is None
    with an.no_grad():
        assert F.silu(x).grad_fn is None


def test_exp_gradient_from_saved_output_and_graph_freed_after_backward():
    # exp saves its (detached) output; the input's grad is exp(x) * cot
    x = an.tensor([0.5, 1.0], requires_grad=True)
    y = x.exp()
    y.backward(an.tensor([2.0, 3.0]))
    np.testing.assert_allclose(x.grad.numpy(), np.exp([0.5, 1.0]) * [2, 3], rtol=1e-6)
    with pytest.raises(RuntimeError, match="second time"):
        y.backward(an.tensor([1.0, 1.0]))


@pytest.mark.parametrize("call", [
    lambda: _C.relu(np.ones(3, np.float32)),
    lambda: _C.exp([1.0]),
    lambda: _C.pow_scalar(None, 2.0),
    lambda: _C.clamp("x", 0.0, 1.0),
    lambda: _C.leaky_relu(3, 0.1),
])
def test_non_tensor_input_raises_type_error(call):
    with pytest.raises(TypeError, match=r"(relu|exp|pow|clamp|leaky_relu): input must be an appealnet Tensor"):
        call()


def test_scalar_arguments_must_be_numbers():
    x = an.tensor([1.0])
    with pytest.raises(TypeError):
        _C.pow_scalar(x, "two")
    with pytest.raises(TypeError):
        _C.clamp(x, 0.0)


# ------------------------------------------------------------ add_relu
class TestAddRelu:
    """relu(a + b) in one op (the residual join of ResNet and ShuffleNet v1)."""

    def test_bit_identical_to_relu_of_add(self):
        rng = np.random.default_rng(3)
        a = rng.standard_normal((3, 5, 7, 9)).astype(np.float32)
        b = rng.standard_normal((3, 5, 7, 9)).astype(np.float32)
        a.flat[:4] = [np.nan, 0.0, -0.0, 1.0]
        b.flat[:4] = [1.0, -0.0, 0.0, -1.0]  # sums NaN, 0, 0, 0
        got = F.add_relu(an.tensor(a), an.tensor(b)).numpy()
        expected = F.relu(an.tensor(a) + an.tensor(b)).numpy()
        np.testing.assert_array_equal(got, expected)
        assert np.isnan(got.flat[0]) and not np.signbit(got.flat[1:4]).any()

    def test_gradients_by_finite_differences(self):
        rng = np.random.default_rng(4)
        a, b = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 3, 4, 4))
        b += np.where(np.abs(a + b) < 0.05, 0.2, 0.0)  # away from the kink
        check_op(F.add_relu, lambda x, y: np.maximum(x + y, 0), [a, b])

    def test_gradients_against_torch(self):
        torch = torch_or_skip()
        rng = np.random.default_rng(5)
        a = rng.standard_normal((4, 8, 6, 6)).astype(np.float32)
        b = rng.standard_normal((4, 8, 6, 6)).astype(np.float32)
        g = rng.standard_normal((4, 8, 6, 6)).astype(np.float32)
        ta, tb = an.tensor(a, requires_grad=True), an.tensor(b, requires_grad=True)
        out = F.add_relu(ta, tb)
        out.backward(an.tensor(g))
        qa, qb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
        torch.relu(qa + qb).backward(torch.tensor(g))
        np.testing.assert_array_equal(out.detach().numpy(), torch.relu(qa + qb).detach().numpy())
        np.testing.assert_array_equal(ta.grad.numpy(), qa.grad.numpy())
        np.testing.assert_array_equal(tb.grad.numpy(), qb.grad.numpy())
        assert "AddRelu" in str(out.grad_fn)

    def test_one_input_without_grad_and_non_contiguous_input(self):
        rng = np.random.default_rng(6)
        a = an.tensor(rng.standard_normal((5, 4)).astype(np.float32), requires_grad=True)
        base = rng.standard_normal((4, 5)).astype(np.float32)
        b = an.tensor(base).transpose(0, 1)  # a strided view
        out = F.add_relu(a, b)
        np.testing.assert_array_equal(out.detach().numpy(),
                                      np.maximum(a.detach().numpy() + base.T, 0))
        out.sum().backward()
        np.testing.assert_array_equal(a.grad.numpy(), (a.detach().numpy() + base.T > 0).astype(np.float32))

    def test_broadcasting_falls_back_to_add_then_relu(self):
        rng = np.random.default_rng(7)
        a = rng.standard_normal((2, 3, 4)) + 0.3
        b = rng.standard_normal((3, 1))
        check_op(F.add_relu, lambda x, y: np.maximum(x + y, 0), [a, b])

    def test_bad_input(self):
        with pytest.raises(TypeError, match="add_relu"):
            F.add_relu(an.zeros((2, 2)), None)
        with pytest.raises(ValueError, match="add_relu|broadcast"):
            F.add_relu(an.zeros((2, 3)), an.zeros((2, 4)))
