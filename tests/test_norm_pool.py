"""batch_norm, max/avg/adaptive pooling and dropout: float64 numpy references
and finite differences, torch on network shapes, running statistics,
ceil_mode / padding rules, layouts, empty inputs, NaN, errors, determinism."""
import numpy as np
import pytest

import appealnet as an
from appealnet import _C
from appealnet.nn import functional as F
from gradcheck import check_op, torch_or_skip


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def backward_with(out, cotangent):
    out.backward(an.tensor(np.asarray(cotangent, dtype=np.float32)))


def same_for_1_and_2_threads(compute):
    """compute() -> tuple of arrays; asserts bit-identical results."""
    prev = an.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            an.set_num_threads(threads)
            results.append(compute())
    finally:
        an.set_num_threads(prev)
    for p, q in zip(*results):
        np.testing.assert_array_equal(p, q)


# ================================================================ batch norm
def channel_axes(x):
    return (0,) + tuple(range(2, x.ndim))


def per_channel(v, x):
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


def bn_train_ref(x, w=None, b=None, eps=1e-5):
    axes = channel_axes(x)
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    if w is not None:
        y = y * per_channel(w, x)
    if b is not None:
        y = y + per_channel(b, x)
    return y


def bn_eval_ref(rm, rv, eps=1e-5):
    def ref(x, w, b):
        return (x - per_channel(rm, x)) / np.sqrt(per_channel(rv, x) + eps) * per_channel(w, x) + per_channel(b, x)
    return ref


@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 3, 2), (3, 2, 4)])
def test_batch_norm_train_forward_and_grad(shape):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(shape) * 2 + 1, rng.standard_normal(shape[1]), rng.standard_normal(shape[1])]
    check_op(lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), bn_train_ref, arrays,
             grad_rtol=2e-3, grad_atol=2e-4)


def test_batch_norm_train_without_affine_grad():
    rng = np.random.default_rng(1)
    check_op(lambda x: F.batch_norm(x, None, None, None, None, training=True), bn_train_ref,
             [rng.standard_normal((4, 3, 2, 2))], grad_rtol=2e-3, grad_atol=2e-4)


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2, 3)])
def test_batch_norm_eval_forward_and_grad(shape):
    rng = np.random.default_rng(2)
    rm = rng.standard_normal(shape[1]).astype(np.float32).astype(np.float64)
    rv = (rng.random(shape[1]) + 0.5).astype(np.float32).astype(np.float64)
    arrays = [rng.standard_normal(shape), rng.standard_normal(shape[1]), rng.standard_normal(shape[1])]
    check_op(lambda x, w, b: F.batch_norm(x, an.tensor(rm), an.tensor(rv), w, b, training=False),
             bn_eval_ref(rm, rv), arrays)


@pytest.mark.parametrize("shape", [(16, 32), (8, 16, 8, 8)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_against_torch_with_running_stats(shape, training):
    torch = torch_or_skip()
    torch.set_num_threads(1)
    rng = np.random.default_rng(3)
    c = shape[1]
    x = rand(rng, *shape) * 3 + 0.5
    w, b = rand(rng, c), rand(rng, c)
    rm, rv = rand(rng, c), (rng.random(c) + 0.5).astype(np.float32)
    g = rand(rng, *shape)
    tx, tw, tb = (an.tensor(v, requires_grad=True) for v in (x, w, b))
    arm, arv = an.tensor(rm), an.tensor(rv)
    out = F.batch_norm(tx, arm, arv, tw, tb, training=training, momentum=0.2, eps=1e-3)
    backward_with(out, g)
    ts = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (x, w, b)]
    trm, trv = torch.tensor(rm, dtype=torch.float64), torch.tensor(rv, dtype=torch.float64)
    expected = torch.nn.functional.batch_norm(ts[0], trm, trv, ts[1], ts[2], training=training, momentum=0.2, eps=1e-3)
    expected.backward(torch.tensor(g, dtype=torch.float64))
    np.testing.assert_allclose(out.detach().numpy(), expected.detach().numpy(), rtol=1e-4, atol=1e-4)
    for mine, theirs in zip((tx, tw, tb), ts):
        ref = theirs.grad.numpy()
        np.testing.assert_allclose(mine.grad.numpy(), ref, rtol=1e-4, atol=1e-5 * max(1, np.abs(ref).max()))
    # running stats: updated in place in training (unbiased var), untouched in eval
    np.testing.assert_allclose(arm.numpy(), trm.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(arv.numpy(), trv.numpy(), rtol=1e-5, atol=1e-6)
    if not training:
        np.testing.assert_array_equal(arm.numpy(), rm)
        np.testing.assert_array_equal(arv.numpy(), rv)


def test_batch_norm_running_stats_formula():
    x = np.array([[1.0, 10.0], [3.0, 20.0], [5.0, 60.0]], np.float32)
    rm, rv = an.tensor([0.0, 1.0]), an.tensor([1.0, 2.0])
    F.batch_norm(an.tensor(x), rm, rv, None, None, training=True, momentum=0.1)
    mean = x.astype(np.float64).mean(0)
    var_unbiased = x.astype(np.float64).var(0, ddof=1)
    np.testing.assert_allclose(rm.numpy(), 0.9 * np.array([0.0, 1.0]) + 0.1 * mean, rtol=1e-6)
    np.testing.assert_allclose(rv.numpy(), 0.9 * np.array([1.0, 2.0]) + 0.1 * var_unbiased, rtol=1e-6)


def test_batch_norm_non_contiguous_input_and_running_stats():
    rng = np.random.default_rng(4)
    x_nhwc = rand(rng, 3, 4, 5, 6)
    x = x_nhwc.transpose(0, 3, 1, 2)                   # [3, 6, 4, 5] view
    stats = np.stack([np.zeros(6, np.float32), np.ones(6, np.float32)], axis=1)  # columns are strided
    rm, rv = an.from_numpy(stats[:, 0]), an.from_numpy(stats[:, 1])
    got = F.batch_norm(an.from_numpy(x), rm, rv, None, None, training=True).numpy()
    rm2, rv2 = an.zeros(6), an.ones(6)
    expected = F.batch_norm(an.tensor(np.ascontiguousarray(x)), rm2, rv2, None, None, training=True).numpy()
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(stats[:, 0], rm2.numpy())   # written through the strided view
    np.testing.assert_array_equal(stats[:, 1], rv2.numpy())


def test_batch_norm_empty_and_nan():
    out = F.batch_norm(an.zeros((0, 3, 2, 2)), an.zeros(3), an.ones(3), None, None, training=False)
    assert out.shape == (0, 3, 2, 2)
    rm = an.zeros(3)
    out = F.batch_norm(an.zeros((0, 3)), rm, an.ones(3), None, None, training=True)
    assert out.shape == (0, 3)
    np.testing.assert_array_equal(rm.numpy(), np.zeros(3))
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    x[2, 1] = np.nan
    out = F.batch_norm(an.tensor(x), None, None, None, None, training=True).numpy()
    assert np.isnan(out[:, 1]).all() and np.isfinite(out[:, [0, 2]]).all()


def test_batch_norm_errors():
    with pytest.raises(ValueError, match=r"batch_norm: expected more than 1 value per channel when training, got input of shape \[1, 4\]"):
        F.batch_norm(an.zeros((1, 4)), None, None, training=True)
    with pytest.raises(ValueError, match=r"batch_norm: running_mean and running_var are required in eval mode"):
        F.batch_norm(an.zeros((2, 4)), None, None, an.ones(4), an.zeros(4), training=False)
    with pytest.raises(ValueError, match=r"batch_norm: expected weight of shape \[4\] \(the channels of input \[2, 4, 3, 3\]\), got \[3\]"):
        F.batch_norm(an.zeros((2, 4, 3, 3)), None, None, an.ones(3), None, training=True)
    with pytest.raises(ValueError, match=r"batch_norm: expected running_var of shape \[4\]"):
        F.batch_norm(an.zeros((2, 4)), an.zeros(4), an.ones(5), training=False)
    with pytest.raises(ValueError, match=r"batch_norm: expected input of shape \[N, C, \.\.\.\] \(at least 2-D\), got \[4\]"):
        F.batch_norm(an.zeros(4), an.zeros(4), an.ones(4), training=False)
    with pytest.raises(ValueError, match=r"batch_norm: running_mean and running_var must be given together"):
        F.batch_norm(an.zeros((2, 4)), an.zeros(4), None, training=True)


def test_batch_norm_thread_count_does_not_change_results():
    rng = np.random.default_rng(5)
    x = an.tensor(rand(rng, 16, 64, 16, 16), requires_grad=True)
    w = an.tensor(rand(rng, 64), requires_grad=True)
    b = an.tensor(rand(rng, 64), requires_grad=True)
    g = rand(rng, 16, 64, 16, 16)

    def compute():
        for t in (x, w, b):
            t.grad = None
        rm, rv = an.zeros(64), an.ones(64)
        out = F.batch_norm(x, rm, rv, w, b, training=True)
        backward_with(out, g)
        return out.detach().numpy(), x.grad.numpy(), w.grad.numpy(), b.grad.numpy(), rm.numpy(), rv.numpy()

    same_for_1_and_2_threads(compute)


# =================================================================== pooling
def pooled_size(n, k, p, s, d, ceil_mode):
    """PyTorch's output size rule, written out for the reference."""
    eff = d * (k - 1) + 1
    if ceil_mode:
        out = -(-(n + 2 * p - eff) // s) + 1
        if (out - 1) * s >= n + p:
            out -= 1
    else:
        out = (n + 2 * p - eff) // s + 1
    return out


def max_pool_ref(k, s, p, d=(1, 1), ceil_mode=False):
    def ref(x):
        n, c, h, w = x.shape
        oh = pooled_size(h, k[0], p[0], s[0], d[0], ceil_mode)
        ow = pooled_size(w, k[1], p[1], s[1], d[1], ceil_mode)
        y = np.full((n, c, oh, ow), -np.inf)
        for i in range(oh):
            for j in range(ow):
                for a in range(k[0]):
                    for b in range(k[1]):
                        r, q = i * s[0] - p[0] + a * d[0], j * s[1] - p[1] + b * d[1]
                        if 0 <= r < h and 0 <= q < w:
                            y[:, :, i, j] = np.maximum(y[:, :, i, j], x[:, :, r, q])
        return y
    return ref


def avg_pool_ref(k, s, p, ceil_mode=False, count_include_pad=True):
    def ref(x):
        n, c, h, w = x.shape
        oh = pooled_size(h, k[0], p[0], s[0], 1, ceil_mode)
        ow = pooled_size(w, k[1], p[1], s[1], 1, ceil_mode)
        y = np.zeros((n, c, oh, ow))
        for i in range(oh):
            for j in range(ow):
                h0, w0 = i * s[0] - p[0], j * s[1] - p[1]
                h1, w1 = min(h0 + k[0], h + p[0]), min(w0 + k[1], w + p[1])
                size_with_pad = (h1 - h0) * (w1 - w0)
                h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, h), min(w1, w)
                window = x[:, :, h0:h1, w0:w1]
                divisor = size_with_pad if count_include_pad else (h1 - h0) * (w1 - w0)
                y[:, :, i, j] = window.sum(axis=(2, 3)) / divisor
        return y
    return ref


def adaptive_ref(oh, ow):
    def ref(x):
        n, c, h, w = x.shape
        y = np.zeros((n, c, oh, ow))
        for i in range(oh):
            h0, h1 = (i * h) // oh, -(-((i + 1) * h) // oh)
            for j in range(ow):
                w0, w1 = (j * w) // ow, -(-((j + 1) * w) // ow)
                y[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
        return y
    return ref


MAX_CASES = [  # kernel, stride, padding, dilation, ceil_mode, input hw
    ((2, 2), (2, 2), (0, 0), (1, 1), False, (6, 6)),
    ((3, 3), (2, 2), (1, 1), (1, 1), False, (7, 5)),
    ((3, 3), (2, 2), (0, 0), (1, 1), True, (6, 6)),
    ((2, 2), (2, 2), (1, 1), (1, 1), True, (5, 5)),      # last window would start in the padding
    ((3, 2), (1, 2), (1, 0), (2, 1), False, (7, 6)),
]


@pytest.mark.parametrize("k,s,p,d,ceil_mode,hw", MAX_CASES)
def test_max_pool_forward_and_grad(k, s, p, d, ceil_mode, hw):
    rng = np.random.default_rng(6)
    x = rng.permutation(2 * 2 * hw[0] * hw[1]).reshape((2, 2) + hw) * 0.01  # distinct values: no ties
    check_op(lambda t: F.max_pool2d(t, k, s, p, d, ceil_mode), max_pool_ref(k, s, p, d, ceil_mode), [x])


AVG_CASES = [  # kernel, stride, padding, ceil_mode, count_include_pad, input hw
    ((2, 2), (2, 2), (0, 0), False, True, (6, 6)),
    ((3, 3), (2, 2), (1, 1), False, True, (7, 5)),
    ((3, 3), (2, 2), (1, 1), False, False, (7, 5)),
    ((3, 3), (2, 2), (1, 1), True, True, (6, 6)),
    ((3, 3), (2, 2), (1, 1), True, False, (6, 6)),
    ((2, 2), (2, 2), (1, 1), True, True, (5, 5)),
    ((3, 2), (1, 2), (1, 0), False, False, (4, 5)),
]


@pytest.mark.parametrize("k,s,p,ceil_mode,cip,hw", AVG_CASES)
def test_avg_pool_forward_and_grad(k, s, p, ceil_mode, cip, hw):
    rng = np.random.default_rng(7)
    check_op(lambda t: F.avg_pool2d(t, k, s, p, ceil_mode, cip), avg_pool_ref(k, s, p, ceil_mode, cip),
             [rng.standard_normal((2, 2) + hw)])


@pytest.mark.parametrize("hw,out", [((7, 5), (3, 2)), ((5, 7), (4, 3)), ((6, 6), (1, 1)), ((3, 4), (5, 6)), ((9, 9), (9, 9))])
def test_adaptive_avg_pool_forward_and_grad(hw, out):
    rng = np.random.default_rng(8)
    check_op(lambda t: F.adaptive_avg_pool2d(t, out), adaptive_ref(*out), [rng.standard_normal((2, 3) + hw)])


POOL_TORCH_CASES = [
    ("resnet stem maxpool", "max", (2, 16, 32, 32), dict(kernel_size=3, stride=2, padding=1)),
    ("maxpool ceil odd", "max", (2, 8, 13, 11), dict(kernel_size=3, stride=2, ceil_mode=True)),
    ("maxpool ceil pad", "max", (1, 4, 5, 5), dict(kernel_size=2, stride=2, padding=1, ceil_mode=True)),
    ("maxpool dilation", "max", (1, 4, 12, 12), dict(kernel_size=3, stride=1, padding=1, dilation=2)),
    ("avgpool ceil no-pad-count", "avg", (2, 8, 13, 11), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    ("avgpool ceil pad-count", "avg", (2, 8, 13, 11), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=True)),
    ("densenet transition", "avg", (2, 16, 16, 16), dict(kernel_size=2, stride=2)),
    ("adaptive global", "adaptive", (2, 64, 7, 7), dict(output_size=(1, 1))),
    ("adaptive odd", "adaptive", (2, 8, 13, 10), dict(output_size=(5, 3))),
]


@pytest.mark.parametrize("case", POOL_TORCH_CASES, ids=[c[0] for c in POOL_TORCH_CASES])
def test_pool_against_torch(case):
    torch = torch_or_skip()
    torch.set_num_threads(1)
    _, kind, shape, kwargs = case
    rng = np.random.default_rng(9)
    x = rand(rng, *shape)
    fns = {"max": (F.max_pool2d, torch.nn.functional.max_pool2d),
           "avg": (F.avg_pool2d, torch.nn.functional.avg_pool2d),
           "adaptive": (F.adaptive_avg_pool2d, torch.nn.functional.adaptive_avg_pool2d)}
    mine_fn, torch_fn = fns[kind]
    tx = an.tensor(x, requires_grad=True)
    out = mine_fn(tx, **kwargs)
    g = rand(rng, *out.shape)
    backward_with(out, g)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    expected = torch_fn(xt, **kwargs)
    expected.backward(torch.tensor(g, dtype=torch.float64))
    assert out.shape == tuple(expected.shape)
    np.testing.assert_allclose(out.detach().numpy(), expected.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tx.grad.numpy(), xt.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_pool_unbatched_input_and_non_contiguous():
    rng = np.random.default_rng(10)
    x = rand(rng, 2, 7, 6, 3).transpose(0, 3, 1, 2)        # [2, 3, 7, 6] view of NHWC
    xc = np.ascontiguousarray(x)
    for fn in (lambda t: F.max_pool2d(t, 3, 2, 1), lambda t: F.avg_pool2d(t, 3, 2, 1, True, False),
               lambda t: F.adaptive_avg_pool2d(t, (3, 2))):
        np.testing.assert_array_equal(fn(an.from_numpy(x)).numpy(), fn(an.tensor(xc)).numpy())
        unbatched = fn(an.tensor(xc[0])).numpy()
        np.testing.assert_array_equal(unbatched, fn(an.tensor(xc)).numpy()[0])


def test_pool_empty_batch():
    x = an.tensor(np.zeros((0, 3, 6, 6), np.float32), requires_grad=True)
    out = F.max_pool2d(x, 2)
    assert out.shape == (0, 3, 3, 3)
    backward_with(out, np.zeros((0, 3, 3, 3)))
    assert x.grad.shape == (0, 3, 6, 6)
    assert F.avg_pool2d(an.zeros((0, 3, 6, 6)), 3, 1, 1).shape == (0, 3, 6, 6)
    assert F.adaptive_avg_pool2d(an.zeros((0, 3, 6, 6)), (2, 2)).shape == (0, 3, 2, 2)


def test_pool_nan_propagates():
    x = np.arange(32, dtype=np.float32).reshape(1, 2, 4, 4)
    x[0, 0, 0, 1] = np.nan
    for out in (F.max_pool2d(an.tensor(x), 2).numpy(), F.avg_pool2d(an.tensor(x), 2).numpy(),
                F.adaptive_avg_pool2d(an.tensor(x), (2, 2)).numpy()):
        expected = np.zeros(out.shape, bool)
        expected[0, 0, 0, 0] = True
        np.testing.assert_array_equal(np.isnan(out), expected)


def test_pool_errors():
    with pytest.raises(ValueError, match=r"max_pool2d: pad should be at most half of kernel size, but got padding=\(2, 2\) and kernel_size=\(3, 3\)"):
        F.max_pool2d(an.zeros((1, 1, 8, 8)), 3, 1, 2)
    with pytest.raises(ValueError, match=r"avg_pool2d: pad should be at most half of kernel size, but got padding=\(0, 2\) and kernel_size=\(2, 3\)"):
        F.avg_pool2d(an.zeros((1, 1, 8, 8)), (2, 3), 1, (0, 2))
    with pytest.raises(ValueError, match=r"max_pool2d: output size is too small: input \[1, 1, 2, 2\] with kernel_size \(3, 3\) gives output \(0, 0\)"):
        F.max_pool2d(an.zeros((1, 1, 2, 2)), 3)
    with pytest.raises(ValueError, match=r"avg_pool2d: expected input of shape \[N, C, H, W\] or \[C, H, W\], got \[4, 4\]"):
        F.avg_pool2d(an.zeros((4, 4)), 2)
    with pytest.raises(ValueError, match=r"max_pool2d: kernel_size must be greater than zero, got \(0, 2\)"):
        F.max_pool2d(an.zeros((1, 1, 4, 4)), (0, 2), 1)
    with pytest.raises(ValueError, match=r"max_pool2d: stride must be greater than zero"):
        F.max_pool2d(an.zeros((1, 1, 4, 4)), 2, 0)
    with pytest.raises(ValueError, match=r"adaptive_avg_pool2d: output_size must be >= 0, got \(-1, 2\)"):
        F.adaptive_avg_pool2d(an.zeros((1, 1, 4, 4)), (-1, 2))
    with pytest.raises(ValueError, match=r"adaptive_avg_pool2d: expected input of shape \[N, C, H, W\] or \[C, H, W\], got \[4\]"):
        F.adaptive_avg_pool2d(an.zeros(4), 1)


def test_pool_thread_count_does_not_change_results():
    rng = np.random.default_rng(11)
    x = an.tensor(rand(rng, 8, 32, 32, 32), requires_grad=True)
    g_cache = {}

    def compute():
        results = []
        for name, fn in (("max", lambda t: F.max_pool2d(t, 3, 2, 1, ceil_mode=True)),
                         ("avg", lambda t: F.avg_pool2d(t, 3, 2, 1, count_include_pad=False)),
                         ("adaptive", lambda t: F.adaptive_avg_pool2d(t, (5, 7)))):
            x.grad = None
            out = fn(x)
            g = g_cache.setdefault(name, rand(rng, *out.shape))
            backward_with(out, g)
            results += [out.detach().numpy(), x.grad.numpy()]
        return results

    same_for_1_and_2_threads(compute)


# =================================================================== dropout
def test_dropout_statistics():
    an.manual_seed(123)
    p = 0.3
    x = an.ones(200_000)
    y = F.dropout(x, p, training=True).numpy()
    dropped = np.mean(y == 0)
    assert abs(dropped - p) < 0.01
    assert abs(y.mean() - 1.0) < 0.01
    np.testing.assert_allclose(y[y != 0], 1 / (1 - p), rtol=1e-6)


def test_dropout_same_seed_same_mask_and_fresh_draws_differ():
    x = an.tensor(np.arange(1, 1001, dtype=np.float32))
    an.manual_seed(7)
    a = F.dropout(x, 0.5).numpy()
    b = F.dropout(x, 0.5).numpy()
    an.manual_seed(7)
    c = F.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(a, c)
    assert not np.array_equal(a == 0, b == 0)


def test_dropout_grad_is_masked_and_scaled():
    rng = np.random.default_rng(12)
    x = an.tensor(rand(rng, 50, 40), requires_grad=True)
    an.manual_seed(3)
    y = F.dropout(x, 0.25, training=True)
    g = rand(rng, 50, 40)
    backward_with(y, g)
    kept = y.detach().numpy() != 0
    np.testing.assert_allclose(x.grad.numpy(), np.where(kept, g / 0.75, 0.0), rtol=1e-6)


def test_dropout_eval_zero_and_one():
    rng = np.random.default_rng(13)
    xv = rand(rng, 4, 5)
    x = an.tensor(xv)
    np.testing.assert_array_equal(F.dropout(x, 0.5, training=False).numpy(), xv)
    np.testing.assert_array_equal(F.dropout(x, 0.0, training=True).numpy(), xv)
    np.testing.assert_array_equal(F.dropout(x, 1.0, training=True).numpy(), np.zeros((4, 5)))
    xv[0, 0] = np.nan
    out = F.dropout(an.tensor(xv), 1.0, training=True).numpy()
    assert np.isnan(out[0, 0]) and (out.reshape(-1)[1:] == 0).all()
    assert F.dropout(an.zeros((0, 3)), 0.5).shape == (0, 3)


def test_dropout_non_contiguous_input():
    rng = np.random.default_rng(14)
    xv = rand(rng, 30, 20).T
    an.manual_seed(11)
    got = F.dropout(an.from_numpy(xv), 0.4).numpy()
    an.manual_seed(11)
    expected = F.dropout(an.tensor(np.ascontiguousarray(xv)), 0.4).numpy()
    np.testing.assert_array_equal(got, expected)


def test_dropout_errors():
    with pytest.raises(ValueError, match=r"dropout: probability has to be between 0 and 1, but got 1.5"):
        _C.dropout(an.ones(3), 1.5, True)
    with pytest.raises(ValueError, match=r"dropout: probability has to be between 0 and 1, but got -0.1"):
        _C.dropout(an.ones(3), -0.1, True)
    with pytest.raises(TypeError, match=r"dropout"):
        _C.dropout(np.ones(3, np.float32), 0.5, True)


def test_dropout_thread_count_does_not_change_results():
    x = an.ones((64, 4096))

    def compute():
        an.manual_seed(99)
        return (F.dropout(x, 0.5).numpy(),)

    same_for_1_and_2_threads(compute)
