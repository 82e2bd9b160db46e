"""matmul and linear: forward against numpy (float64), gradients by finite
differences, broadcasting, 1-D cases, layouts, errors, determinism."""
import numpy as np
import pytest

import appealnet as an
from appealnet.nn import functional as F
from gradcheck import check_op, torch_or_skip


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def backward_with(out, cotangent):
    out.backward(an.tensor(np.asarray(cotangent, dtype=np.float32)))


# ------------------------------------------------------------------ matmul
MATMUL_SHAPES = [
    ((3, 4), (4, 5)),              # plain 2-D
    ((2, 1, 3, 4), (5, 4, 6)),     # broadcast batch dims on both sides
    ((4,), (4,)),                  # dot product -> 0-D
    ((4,), (4, 3)),                # vector @ matrix
    ((3, 4), (4,)),                # matrix @ vector
    ((4,), (2, 4, 3)),             # vector @ batched matrix
    ((2, 3, 4), (4,)),             # batched matrix @ vector
    ((2, 3, 4), (4, 5)),           # batched @ shared matrix (one folded GEMM)
    ((4, 5), (3, 5, 2)),           # shared matrix @ batched
    ((1, 3, 4), (2, 1, 4, 2)),     # leading broadcast of a size-1 dim
]


@pytest.mark.parametrize("sa,sb", MATMUL_SHAPES)
def test_matmul_forward_and_grad(sa, sb):
    rng = np.random.default_rng(0)
    check_op(lambda a, b: F.matmul(a, b), np.matmul, [rng.standard_normal(sa), rng.standard_normal(sb)])


def test_matmul_operator_and_large_against_numpy():
    rng = np.random.default_rng(1)
    a, b = rand(rng, 3, 70, 130), rand(rng, 130, 90)
    out = an.tensor(a) @ an.tensor(b)
    np.testing.assert_allclose(out.numpy(), a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)


def test_matmul_against_torch_with_broadcast_grads():
    torch = torch_or_skip()
    torch.set_num_threads(1)
    rng = np.random.default_rng(2)
    a, b = rand(rng, 2, 1, 3, 4), rand(rng, 5, 4, 6)
    g = rand(rng, 2, 5, 3, 6)
    ta, tb = an.tensor(a, requires_grad=True), an.tensor(b, requires_grad=True)
    backward_with(F.matmul(ta, tb), g)
    xa = torch.tensor(a, dtype=torch.float64, requires_grad=True)
    xb = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    (xa @ xb).backward(torch.tensor(g, dtype=torch.float64))
    np.testing.assert_allclose(ta.grad.numpy(), xa.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tb.grad.numpy(), xb.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_matmul_non_contiguous_inputs_match_contiguous():
    rng = np.random.default_rng(3)
    base_a = rand(rng, 2, 5, 6)
    base_b = rand(rng, 7, 5)
    a_t = base_a.transpose(0, 2, 1)            # [2, 6, 5], transposed matrices
    b_t = base_b.T                             # [5, 7], transposed
    b_sliced = rand(rng, 10, 14)[::2, ::2]     # [5, 7], no unit stride
    a_neg = base_a[:, ::-1, :].transpose(0, 2, 1)  # negative strides
    for a, b in [(a_t, b_t), (a_t, b_sliced), (a_neg, b_t)]:
        expected = F.matmul(an.tensor(np.ascontiguousarray(a)), an.tensor(np.ascontiguousarray(b))).numpy()
        got = F.matmul(an.from_numpy(a), an.from_numpy(b)).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(got, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-5)


def test_matmul_grads_through_transposed_layouts():
    """A strided operand is read in place (GEMM transpose flags), also in backward."""
    rng = np.random.default_rng(4)
    a, b = rand(rng, 4, 5), rand(rng, 5, 3)
    b_view = an.from_numpy(np.ascontiguousarray(b.T).T)   # [5, 3] stored transposed
    a_view = an.from_numpy(np.ascontiguousarray(a.T).T)   # [4, 5] stored transposed
    g = rand(rng, 4, 3)
    ta = an.tensor(a, requires_grad=True)
    backward_with(F.matmul(ta, b_view), g)
    np.testing.assert_allclose(ta.grad.numpy(), g.astype(np.float64) @ b.T, rtol=1e-5, atol=1e-5)
    tb = an.tensor(b, requires_grad=True)
    out = F.matmul(a_view, tb)
    np.testing.assert_allclose(out.detach().numpy(), a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)
    backward_with(out, g)
    np.testing.assert_allclose(tb.grad.numpy(), a.T.astype(np.float64) @ g, rtol=1e-5, atol=1e-5)


def test_matmul_empty():
    out = F.matmul(an.zeros((0, 3)), an.zeros((3, 4)))
    assert out.shape == (0, 4)
    out = F.matmul(an.tensor(np.ones((2, 0), np.float32)), an.tensor(np.ones((0, 3), np.float32)))
    np.testing.assert_array_equal(out.numpy(), np.zeros((2, 3), np.float32))
    a = an.tensor(np.ones((2, 0), np.float32), requires_grad=True)
    b = an.tensor(np.ones((0, 3), np.float32), requires_grad=True)
    backward_with(F.matmul(a, b), np.ones((2, 3)))
    assert a.grad.shape == (2, 0) and b.grad.shape == (0, 3)
    assert F.matmul(an.zeros((0, 2, 3)), an.zeros((3, 4))).shape == (0, 2, 4)


def test_matmul_nan_propagates():
    a = np.ones((2, 3), np.float32)
    a[0, 1] = np.nan
    out = F.matmul(an.tensor(a), an.tensor(np.ones((3, 2), np.float32))).numpy()
    assert np.isnan(out[0]).all() and np.isfinite(out[1]).all()


def test_matmul_errors():
    with pytest.raises(ValueError, match=r"matmul: shapes \[2, 3\] and \[4, 5\] cannot be multiplied"):
        F.matmul(an.zeros((2, 3)), an.zeros((4, 5)))
    with pytest.raises(ValueError, match=r"matmul: shapes \[3\] and \[4\] cannot be multiplied"):
        F.matmul(an.zeros(3), an.zeros(4))
    with pytest.raises(ValueError, match=r"matmul: batch dimensions of \[2, 3, 4\] and \[5, 4, 6\] cannot be broadcast"):
        F.matmul(an.zeros((2, 3, 4)), an.zeros((5, 4, 6)))
    with pytest.raises(ValueError, match=r"matmul: both arguments need at least 1 dimension"):
        F.matmul(an.tensor(1.0), an.zeros(3))


# A row-major B whose panels the GEMM packs one by one (all of M in one A
# block): in pairs from one pass over B's rows for 3-9 row tiles and short K
# blocks, with the next panel prefetched for 10+ tiles and rows 2 KB apart;
# a last panel narrower than 16, several K blocks.  With M over several A
# blocks (the last case) the full panels are packed row by row across the
# block.  The same product with B transposed in memory (its panels packed by
# the transposing path) gives the same bits, and both agree with float64.
@pytest.mark.parametrize("m,k,n", [(16, 144, 1024), (40, 144, 1040), (24, 96, 1032), (16, 64, 48),
                                   (64, 576, 1024), (60, 200, 2056), (128, 1152, 520),
                                   (700, 800, 520)])
def test_matmul_row_major_b_panel_paths(m, k, n):
    rng = np.random.default_rng(m * 7 + k)
    a, b = rand(rng, m, k), rand(rng, k, n)
    b_transposed = np.ascontiguousarray(b.T)
    prev = an.get_num_threads()
    try:
        for threads in (1, 2):
            an.set_num_threads(threads)
            out = (an.tensor(a) @ an.tensor(b)).numpy()
            via_transposed = (an.tensor(a) @ an.tensor(b_transposed).T).numpy()
            np.testing.assert_array_equal(out, via_transposed)
            np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)
    finally:
        an.set_num_threads(prev)


# Wide products run over several column blocks of B (the B block is capped
# at 3x L2: 2600 columns take 3 blocks with 512 KiB of L2, 2 with 1 MiB).
# Column blocks only group the same tiles: the product equals, bit for bit,
# the same product taken in narrow column slices, each one block.
@pytest.mark.parametrize("m,k,n", [(300, 700, 2600), (13, 2048, 3001)])
def test_matmul_wide_b_column_blocks_match_slices(m, k, n):
    rng = np.random.default_rng(n)
    a, b = rand(rng, m, k), rand(rng, k, n)
    prev = an.get_num_threads()
    try:
        for threads in (1, 2):
            an.set_num_threads(threads)
            out = (an.tensor(a) @ an.tensor(b)).numpy()
            slices = [(an.tensor(a) @ an.tensor(np.ascontiguousarray(b[:, j:j + 400]))).numpy()
                      for j in range(0, n, 400)]
            np.testing.assert_array_equal(out, np.concatenate(slices, axis=1))
            np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-3)
    finally:
        an.set_num_threads(prev)


def test_matmul_thread_count_does_not_change_results():
    rng = np.random.default_rng(5)
    a, b = an.tensor(rand(rng, 4, 96, 200), requires_grad=True), an.tensor(rand(rng, 4, 200, 150), requires_grad=True)
    g = rand(rng, 4, 96, 150)
    results = []
    prev = an.get_num_threads()
    try:
        for threads in (1, 2):
            an.set_num_threads(threads)
            a.grad = None
            b.grad = None
            out = F.matmul(a, b)
            backward_with(out, g)
            results.append((out.detach().numpy(), a.grad.numpy(), b.grad.numpy()))
    finally:
        an.set_num_threads(prev)
    for x, y in zip(*results):
        np.testing.assert_array_equal(x, y)


def test_matmul_with_a_larger_than_l2_same_on_one_and_two_threads():
    # A of 8 MB, more than any L2 seen: two threads split M and share B's
    # packed panels, though splitting N would give the busier thread fewer
    # tiles (37 row tiles of 14 by 16 panels), because splitting N packs
    # all of A on both; the sums, and so the bits, are those of one thread
    rng = np.random.default_rng(11)
    a = rand(rng, 512, 4096)
    b = rand(rng, 4096, 512)
    prev = an.get_num_threads()
    try:
        outs = []
        for threads in (1, 2):
            an.set_num_threads(threads)
            outs.append(F.matmul(an.tensor(a), an.tensor(b)).numpy())
    finally:
        an.set_num_threads(prev)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_allclose(outs[1], a.astype(np.float64) @ b, rtol=1e-4, atol=1e-3)


# ------------------------------------------------------------------ linear
def linear_ref(x, w, b=None):
    y = x @ w.T
    return y if b is None else y + b


@pytest.mark.parametrize("x_shape", [(5, 3), (2, 4, 3), (3,)])
def test_linear_forward_and_grad(x_shape):
    rng = np.random.default_rng(6)
    arrays = [rng.standard_normal(x_shape), rng.standard_normal((4, 3)), rng.standard_normal(4)]
    check_op(lambda x, w, b: F.linear(x, w, b), linear_ref, arrays)


def test_linear_without_bias_grad():
    rng = np.random.default_rng(7)
    check_op(lambda x, w: F.linear(x, w), linear_ref, [rng.standard_normal((6, 5)), rng.standard_normal((2, 5))])


def test_linear_against_torch_classifier_shape():
    torch = torch_or_skip()
    torch.set_num_threads(1)
    rng = np.random.default_rng(8)
    x, w, b = rand(rng, 32, 1280), rand(rng, 10, 1280) * 0.05, rand(rng, 10)
    g = rand(rng, 32, 10)
    tx, tw, tb = (an.tensor(v, requires_grad=True) for v in (x, w, b))
    out = F.linear(tx, tw, tb)
    backward_with(out, g)
    xs = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (x, w, b)]
    ref = torch.nn.functional.linear(*xs)
    ref.backward(torch.tensor(g, dtype=torch.float64))
    np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), rtol=1e-4, atol=1e-4)
    for mine, theirs in zip((tx, tw, tb), xs):
        np.testing.assert_allclose(mine.grad.numpy(), theirs.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_linear_non_contiguous_input_and_weight():
    rng = np.random.default_rng(9)
    x_base, w_base = rand(rng, 3, 8), rand(rng, 3, 4)
    x = x_base.T                                # [8, 3] strided
    w = w_base.T                                # [4, 3] transposed weight
    b = rand(rng, 4)
    got = F.linear(an.from_numpy(x), an.from_numpy(w), an.tensor(b)).numpy()
    expected = F.linear(an.tensor(np.ascontiguousarray(x)), an.tensor(np.ascontiguousarray(w)), an.tensor(b)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got, x.astype(np.float64) @ w.T + b, rtol=1e-5, atol=1e-5)
    # gradient through the transposed weight layout
    tw = an.tensor(np.ascontiguousarray(w), requires_grad=True)
    tx = an.from_numpy(x)
    g = rand(rng, 8, 4)
    backward_with(F.linear(tx, tw), g)
    np.testing.assert_allclose(tw.grad.numpy(), g.T.astype(np.float64) @ x, rtol=1e-5, atol=1e-5)


def test_linear_empty_batch_and_zero_features():
    w = an.tensor(np.ones((4, 3), np.float32), requires_grad=True)
    b = an.tensor(np.arange(4, dtype=np.float32), requires_grad=True)
    x = an.tensor(np.zeros((0, 3), np.float32), requires_grad=True)
    out = F.linear(x, w, b)
    assert out.shape == (0, 4)
    backward_with(out, np.zeros((0, 4)))
    np.testing.assert_array_equal(w.grad.numpy(), np.zeros((4, 3)))
    np.testing.assert_array_equal(b.grad.numpy(), np.zeros(4))
    out = F.linear(an.zeros((2, 0)), an.zeros((4, 0)), an.tensor(np.arange(4, dtype=np.float32)))
    np.testing.assert_array_equal(out.numpy(), np.tile(np.arange(4, dtype=np.float32), (2, 1)))


def test_linear_nan_propagates():
    x = np.ones((2, 3), np.float32)
    x[1, 2] = np.nan
    out = F.linear(an.tensor(x), an.tensor(np.ones((2, 3), np.float32))).numpy()
    assert np.isfinite(out[0]).all() and np.isnan(out[1]).all()


def test_linear_errors():
    with pytest.raises(ValueError, match=r"linear: input \[5, 3\] and weight \[4, 2\] cannot be multiplied"):
        F.linear(an.zeros((5, 3)), an.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"linear: expected weight of shape \[out_features, in_features\], got \[4\]"):
        F.linear(an.zeros((5, 4)), an.zeros(4))
    with pytest.raises(ValueError, match=r"linear: expected bias of shape \[4\] for weight \[4, 3\], got \[3\]"):
        F.linear(an.zeros((5, 3)), an.zeros((4, 3)), an.zeros(3))
    with pytest.raises(TypeError, match=r"linear: .*bias"):
        F.linear(an.zeros((5, 3)), an.zeros((4, 3)), "bias")


def test_linear_thread_count_does_not_change_results():
    rng = np.random.default_rng(10)
    x = an.tensor(rand(rng, 256, 300), requires_grad=True)
    w = an.tensor(rand(rng, 200, 300), requires_grad=True)
    b = an.tensor(rand(rng, 200), requires_grad=True)
    g = rand(rng, 256, 200)
    results = []
    prev = an.get_num_threads()
    try:
        for threads in (1, 2):
            an.set_num_threads(threads)
            for t in (x, w, b):
                t.grad = None
            out = F.linear(x, w, b)
            backward_with(out, g)
            results.append((out.detach().numpy(), x.grad.numpy(), w.grad.numpy(), b.grad.numpy()))
    finally:
        an.set_num_threads(prev)
    for p, q in zip(*results):
        np.testing.assert_array_equal(p, q)
