"""Shape ops: reshape/view/flatten, transpose/permute, select/slice and
indexing, index_select, concat/split/chunk, channel_shuffle, pad.

Forward against numpy, gradients by finite differences (gradcheck.check_op)
and against torch in float64; views must really share memory."""
import numpy as np
import pytest

import appealnet as an
from appealnet import _C
import appealnet.nn.functional as F
from gradcheck import check_op, torch_or_skip

RNG = np.random.default_rng(1234)


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def leaf(array):
    return an.tensor(np.asarray(array, dtype=np.float32), requires_grad=True)


def backward_with(out, cotangent):
    out.backward(an.tensor(np.asarray(cotangent, dtype=np.float32)))


def torch_leaf(torch, array):
    return torch.tensor(np.asarray(array, dtype=np.float32).astype(np.float64), requires_grad=True)


@pytest.fixture
def threads():
    """Restores the thread count after a test that changes it."""
    before = an.get_num_threads()
    yield
    an.set_num_threads(before)


def same_for_thread_counts(fn):
    """fn() -> list of numpy arrays; compared bit for bit with 1 and 2 threads."""
    an.set_num_threads(1)
    one = [np.array(a, copy=True) for a in fn()]
    an.set_num_threads(2)
    two = [np.array(a, copy=True) for a in fn()]
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
    return one


# ------------------------------------------------------------ reshape / view
def test_reshape_matches_numpy_and_infers_minus_one():
    a = randn(3, 4, 5)
    x = an.tensor(a)
    for shape in [(12, 5), (-1, 10), (3, -1), (60,), (5, 2, 2, 3), (1, 60, 1)]:
        np.testing.assert_array_equal(x.reshape(*shape).numpy(), a.reshape(shape))
    assert x.reshape(-1, 20).shape == (3, 20)
    assert an.tensor(np.float32(2.5)).reshape(1, 1).shape == (1, 1)
    assert an.tensor(np.ones((1, 1), np.float32)).reshape(()).shape == ()


def test_reshape_of_contiguous_is_a_view_sharing_memory():
    base = np.arange(12, dtype=np.float32)
    x = an.from_numpy(base)
    y = x.reshape(3, 4)
    z = x.view(2, 6)
    assert y._storage_ptr() == x._storage_ptr() == z._storage_ptr()
    base[5] = 100.0
    assert y.numpy()[1, 1] == 100.0 and z.numpy()[0, 5] == 100.0
    y.numpy()[2, 3] = -7.0  # writes through the view reach the base
    assert base[11] == -7.0


def test_reshape_of_strided_input_copies_only_when_needed():
    a = randn(4, 6)
    x = an.tensor(a)
    t = x.transpose(0, 1)  # [6, 4], not contiguous
    r = t.reshape(24)
    np.testing.assert_array_equal(r.numpy(), a.T.reshape(24))
    assert r._storage_ptr() != x._storage_ptr()
    # splitting a dim of a transposed tensor needs no copy
    s = t.reshape(2, 3, 4)
    assert s._storage_ptr() == x._storage_ptr()
    np.testing.assert_array_equal(s.numpy(), a.T.reshape(2, 3, 4))
    # rows of a slice stay contiguous: merging within a row is a view too
    b = randn(5, 2, 3)
    sl = an.tensor(b)[1:4]
    v = sl.view(3, 6)
    assert v._storage_ptr() == sl._storage_ptr()
    np.testing.assert_array_equal(v.numpy(), b[1:4].reshape(3, 6))
    # a strided numpy array shared without copy
    big = randn(6, 8)
    strided = an.from_numpy(big[::2, 1::3])
    np.testing.assert_array_equal(strided.reshape(-1).numpy(), big[::2, 1::3].reshape(-1))


def test_view_refuses_when_a_copy_is_needed():
    x = an.tensor(randn(3, 4)).transpose(0, 1)
    with pytest.raises(RuntimeError, match=r"view: size is not compatible with input tensor's size and "
                                           r"stride.*use \.reshape\(\.\.\.\) instead"):
        x.view(12)
    with pytest.raises(RuntimeError, match=r"view: size is not compatible"):
        an.tensor(randn(2, 3, 4)).transpose(0, 1).view(3, 8)


def test_reshape_errors():
    x = an.tensor(randn(3, 4))
    with pytest.raises(ValueError, match=r"reshape: shape \[2, 5\] is invalid for input of size 12"):
        x.reshape(2, 5)
    with pytest.raises(ValueError, match=r"reshape: shape \[-1, 5\] is invalid for input of size 12"):
        x.reshape(-1, 5)
    with pytest.raises(ValueError, match=r"view: shape \[13\] is invalid for input of size 12"):
        x.view(13)
    with pytest.raises(ValueError, match=r"reshape: only one dimension can be inferred"):
        x.reshape(-1, -1)
    with pytest.raises(ValueError, match=r"reshape: invalid shape dimension -3"):
        x.reshape(-3, -4)
    with pytest.raises(ValueError, match=r"ambiguous"):
        an.zeros(0, 3).reshape(-1, 0)
    with pytest.raises(TypeError, match=r"reshape: shape entries must be ints"):
        _C.reshape(x, (3.0, 4))


def test_reshape_empty_and_nan():
    e = an.zeros(0, 4)
    assert e.reshape(4, 0, 3).shape == (4, 0, 3)
    assert e.reshape(-1, 2).shape == (0, 2)
    a = np.array([[np.nan, 1.0], [np.inf, -np.inf]], np.float32)
    np.testing.assert_array_equal(an.tensor(a).transpose(0, 1).reshape(4).numpy(), a.T.reshape(4))


def test_reshape_and_view_gradients():
    check_op(lambda x: x.reshape(6, -1), lambda x: x.reshape(6, -1), [randn(2, 3, 4)])
    check_op(lambda x: x.view(4, 6), lambda x: x.reshape(4, 6), [randn(2, 3, 4)])
    # through a copy (non-contiguous input)
    check_op(lambda x: x.transpose(0, 2).reshape(-1), lambda x: x.transpose(2, 1, 0).reshape(-1),
             [randn(2, 3, 4)])
    x = leaf(randn(2, 3))
    y = x.reshape(6)
    assert y.grad_fn == "ReshapeBackward"


def test_reshape_backward_does_not_modify_the_callers_gradient():
    x = leaf(randn(2, 3))
    y = x.reshape(6)
    z = an.cat([y, x.reshape(6)], 0)  # two paths into x, accumulated
    cot = np.arange(12, dtype=np.float32)
    g = an.tensor(cot)
    z.backward(g)
    np.testing.assert_array_equal(g.numpy(), np.arange(12, dtype=np.float32))
    np.testing.assert_array_equal(x.grad.numpy(), (cot[:6] + cot[6:]).reshape(2, 3))

    # the seed gradient itself is reshaped: it must stay untouched
    w = leaf(randn(2, 3))
    seed = an.tensor(np.ones(6, np.float32))
    (w.reshape(6)).backward(seed)
    np.testing.assert_array_equal(seed.numpy(), np.ones(6, np.float32))


def test_flatten():
    a = randn(2, 3, 4, 5)
    x = an.tensor(a)
    np.testing.assert_array_equal(x.flatten().numpy(), a.reshape(-1))
    np.testing.assert_array_equal(F.flatten(x, 1).numpy(), a.reshape(2, -1))
    np.testing.assert_array_equal(x.flatten(1, 2).numpy(), a.reshape(2, 12, 5))
    np.testing.assert_array_equal(x.flatten(-2, -1).numpy(), a.reshape(2, 3, 20))
    assert an.tensor(np.float32(3.0)).flatten().shape == (1,)
    check_op(lambda t: t.flatten(1), lambda t: t.reshape(2, -1), [randn(2, 3, 2)])
    with pytest.raises(ValueError, match=r"flatten: start_dim \(2\) cannot come after end_dim \(1\)"):
        x.flatten(2, 1)
    with pytest.raises(IndexError, match=r"flatten: dimension out of range"):
        x.flatten(0, 4)
    # strided input
    np.testing.assert_array_equal(x.transpose(1, 3).flatten(1).numpy(),
                                  a.transpose(0, 3, 2, 1).reshape(2, -1))


# --------------------------------------------------------- transpose / permute
def test_transpose_and_permute_are_views_matching_numpy():
    base = randn(2, 3, 4)
    x = an.from_numpy(base)
    t = x.transpose(0, 2)
    p = x.permute(1, 2, 0)
    np.testing.assert_array_equal(t.numpy(), base.transpose(2, 1, 0))
    np.testing.assert_array_equal(p.numpy(), base.transpose(1, 2, 0))
    np.testing.assert_array_equal(x.permute(-1, 0, 1).numpy(), base.transpose(2, 0, 1))
    assert t._storage_ptr() == x._storage_ptr() == p._storage_ptr()
    base[1, 2, 3] = 42.0
    assert t.numpy()[3, 2, 1] == 42.0 and p.numpy()[2, 3, 1] == 42.0
    m = an.tensor(randn(3, 5))
    np.testing.assert_array_equal(m.T.numpy(), m.numpy().T)
    np.testing.assert_array_equal(m.t().numpy(), m.numpy().T)
    assert an.tensor(np.float32(1.0)).permute().shape == ()


def test_transpose_and_permute_gradients():
    check_op(lambda x: x.transpose(0, 2), lambda x: x.transpose(2, 1, 0), [randn(2, 3, 4)])
    check_op(lambda x: x.permute(2, 0, 1, 3), lambda x: x.transpose(2, 0, 1, 3), [randn(2, 3, 2, 2)])
    # a transpose of a transpose (non-contiguous input to the second)
    check_op(lambda x: x.transpose(0, 1).permute(2, 1, 0), lambda x: x.transpose(1, 0, 2).transpose(2, 1, 0),
             [randn(2, 3, 4)])
    x = leaf(randn(2, 3))
    assert x.transpose(0, 1).grad_fn == "TransposeBackward"
    assert x.permute(1, 0).grad_fn == "PermuteBackward"


def test_transpose_permute_errors():
    x = an.tensor(randn(2, 3, 4))
    with pytest.raises(IndexError, match=r"transpose: dimension out of range \(expected to be in range of "
                                         r"\[-3, 2\], but got 3\)"):
        x.transpose(0, 3)
    with pytest.raises(ValueError, match=r"permute: number of dims doesn't match: got 2 dims for a tensor of "
                                         r"shape \[2, 3, 4\]"):
        x.permute(0, 1)
    with pytest.raises(ValueError, match=r"permute: dim 1 appears more than once"):
        x.permute(0, 1, 1)
    with pytest.raises(IndexError, match=r"permute: dimension out of range"):
        x.permute(0, 1, 5)


# ------------------------------------------------------ select / slice / []
def test_getitem_matches_numpy():
    a = randn(6, 5, 4)
    x = an.tensor(a)
    cases = [
        (1,), (-1,), (slice(1, 5, 2),), (slice(None), 2), ([0, 2, 2],), (slice(None), slice(None, None, 3)),
        (2, slice(1, None), -1), (slice(-3, None),), (slice(4, 2),), (slice(None), [4, 0], 1),
        (np.int64(3),), (np.array([1, 1, 5]),),
    ]
    for index in cases:
        np.testing.assert_array_equal(x[index].numpy(), a[index], err_msg=str(index))


def test_select_and_slice_are_views():
    base = randn(5, 6)
    x = an.from_numpy(base)
    row = x[2]
    col = x[:, 3]
    part = x[1:5:2, ::2]
    for v in (row, col, part):
        assert v._storage_ptr() == x._storage_ptr()
    base[2, 3] = 9.0
    assert row.numpy()[3] == 9.0 and col.numpy()[2] == 9.0
    base[3, 4] = -9.0
    assert part.numpy()[1, 2] == -9.0
    assert x[[0, 1]]._storage_ptr() != x._storage_ptr()  # integer arrays copy


def test_getitem_gradients():
    check_op(lambda x: x[1], lambda x: x[1], [randn(3, 4)])
    check_op(lambda x: x[-1], lambda x: x[-1], [randn(3, 4)])
    check_op(lambda x: x[1:5:2], lambda x: x[1:5:2], [randn(6, 3)])
    check_op(lambda x: x[:, 2], lambda x: x[:, 2], [randn(3, 4)])
    check_op(lambda x: x[[0, 2, 2]], lambda x: x[[0, 2, 2]], [randn(3, 4)])
    check_op(lambda x: x[1:, [3, 0, 3, 3]], lambda x: x[1:][:, [3, 0, 3, 3]], [randn(3, 4)])
    x = leaf(randn(3, 4))
    assert x[1].grad_fn == "SelectBackward"
    assert x[1:2].grad_fn == "SliceBackward"
    assert x[[1]].grad_fn == "IndexSelectBackward"


def test_chained_views_then_reduction():
    if not hasattr(_C, "sum"):
        pytest.skip("reductions are not built yet")
    a = randn(6, 5, 4)
    x = leaf(a)
    y = x[1:6:2].transpose(0, 2)[1]  # [5, 3]
    expected = a[1:6:2].transpose(2, 1, 0)[1]
    np.testing.assert_array_equal(y.detach().numpy(), expected)
    s = y.sum()
    np.testing.assert_allclose(s.item(), expected.astype(np.float64).sum(), rtol=1e-5)
    s.backward()
    grad = np.zeros_like(a)
    grad[1:6:2, :, 1] = 1.0
    np.testing.assert_array_equal(x.grad.numpy(), grad)
    # column sums of a transposed slice
    z = an.tensor(a)[:, 1:4].transpose(0, 1).sum(1)
    np.testing.assert_allclose(z.numpy(), a[:, 1:4].transpose(1, 0, 2).astype(np.float64).sum(1), rtol=1e-5)


def test_select_slice_errors():
    x = an.tensor(randn(3, 4))
    with pytest.raises(IndexError, match=r"index 3 is out of bounds for dimension 0 with size 3"):
        x[3]
    with pytest.raises(IndexError, match=r"select: index 4 is out of bounds for dimension 1 with size 4"):
        _C.select(x, 1, 4)
    with pytest.raises(IndexError, match=r"select: index -1 is out of bounds for dimension 0 with size 3"):
        _C.select(x, 0, -1)
    with pytest.raises(IndexError, match=r"select: dimension out of range"):
        _C.select(x, 2, 0)
    with pytest.raises(IndexError, match=r"slice: range \[2, 5\) is invalid for dimension 1 with size 4"):
        _C.slice(x, 1, 2, 5, 1)
    with pytest.raises(IndexError, match=r"slice: range \[3, 2\) is invalid"):
        _C.slice(x, 0, 3, 2, 1)
    with pytest.raises(ValueError, match=r"slice: step must be positive, got 0"):
        _C.slice(x, 0, 0, 2, 0)
    with pytest.raises(IndexError, match=r"select: cannot index a 0-d tensor"):
        _C.select(an.tensor(np.float32(1)), 0, 0)


def test_empty_slices_and_selects():
    a = randn(4, 3)
    x = leaf(a)
    e = x[4:]
    assert e.shape == (0, 3)
    f = x[2:2]
    assert f.shape == (0, 3)
    backward_with(e, np.zeros((0, 3)))
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros((4, 3)))
    z = an.zeros(0, 5)
    assert z[:, 1].shape == (0,)
    assert z[:, 1:3].shape == (0, 2)


def test_slice_backward_same_for_thread_counts(threads):
    a = randn(64, 96, 16)

    def run():
        x = leaf(a)
        y = x[3:60:2, ::3]
        backward_with(y, np.ones(y.shape, np.float32) * 0.5)
        return [x.grad.numpy()]

    g = same_for_thread_counts(run)[0]
    expected = np.zeros_like(a)
    expected[3:60:2, ::3] = 0.5
    np.testing.assert_array_equal(g, expected)


@pytest.mark.parametrize("threads", [1, 2])
def test_strided_copies_merge_contiguous_dims(threads):
    """Copies into and out of views (contiguous(), a slice's gradient) go row
    by row over the dims left after merging those that step over each other:
    a channel slice of NCHW is one run per image, a view with size-1 dims and
    a transposed one keep their element order; each against numpy, on 1
    and 2 threads."""
    prev = an.get_num_threads()
    an.set_num_threads(threads)
    try:
        a = randn(8, 12, 16, 16)
        x = an.tensor(a)
        views = {
            "channel slice": (x[:, 3:9], a[:, 3:9]),
            "strided channels": (x[:, 1:11:3], a[:, 1:11:3]),
            "one channel, then rows": (x[:, 5:6, 2:14], a[:, 5:6, 2:14]),
            "last columns": (x[:, :, :, 4:], a[:, :, :, 4:]),
            "transposed planes": (x.transpose(2, 3)[:, 2:7], a.transpose(0, 1, 3, 2)[:, 2:7]),
            "size-1 dims": (x[2:3, 4:5], a[2:3, 4:5]),
        }
        for name, (view, expected) in views.items():
            np.testing.assert_array_equal(view.contiguous().numpy(), expected, err_msg=name)
        # a channel slice's gradient: zeros outside, the cotangent inside
        for keep in (slice(0, 5), slice(5, 12), slice(2, 10, 2)):
            leaf_x = leaf(a)
            y = leaf_x[:, keep]
            g = randn(*y.shape)
            backward_with(y, g)
            expected = np.zeros_like(a)
            expected[:, keep] = g
            np.testing.assert_array_equal(leaf_x.grad.numpy(), expected, err_msg=str(keep))
    finally:
        an.set_num_threads(prev)


# -------------------------------------------------------------- index_select
def test_index_select_matches_numpy_take():
    a = randn(4, 5, 6)
    x = an.tensor(a)
    for dim in range(3):
        idx = np.array([0, 2, 2, 1, 3], dtype=np.int64)
        np.testing.assert_array_equal(_C.index_select(x, dim, idx).numpy(), np.take(a, idx, axis=dim))
    np.testing.assert_array_equal(_C.index_select(x, -1, [5, 0]).numpy(), np.take(a, [5, 0], axis=-1))
    # non-contiguous input
    t = x.transpose(0, 2)
    np.testing.assert_array_equal(_C.index_select(t, 1, [4, 1]).numpy(),
                                  np.take(a.transpose(2, 1, 0), [4, 1], axis=1))
    # empty index and empty input
    assert _C.index_select(x, 1, np.zeros(0, np.int64)).shape == (4, 0, 6)
    assert _C.index_select(an.zeros(0, 3), 1, [2, 2]).shape == (0, 2)
    nan = np.array([[np.nan, 1.0], [2.0, np.inf]], np.float32)
    np.testing.assert_array_equal(_C.index_select(an.tensor(nan), 1, [0, 0]).numpy(), nan[:, [0, 0]])


def test_index_select_gradient_accumulates_repeats():
    check_op(lambda x: _C.index_select(x, 1, [3, 0, 3, 3, 1]),
             lambda x: np.take(x, [3, 0, 3, 3, 1], axis=1), [randn(2, 4, 3)])
    torch = torch_or_skip()
    torch.set_num_threads(1)
    a = randn(3, 7, 5)
    idx = np.array([6, 0, 6, 2, 6, 0], np.int64)
    cot = randn(3, 6, 5)
    x = leaf(a)
    backward_with(_C.index_select(x, 1, idx), cot)
    tx = torch_leaf(torch, a)
    torch.index_select(tx, 1, torch.tensor(idx)).backward(torch.tensor(cot.astype(np.float64)))
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-6, atol=1e-6)


def test_index_select_errors():
    x = an.tensor(randn(3, 4))
    with pytest.raises(IndexError, match=r"index_select: index 4 \(at position 1\) is out of range for "
                                         r"dimension 1 with size 4"):
        _C.index_select(x, 1, [0, 4])
    with pytest.raises(IndexError, match=r"index_select: index -1 \(at position 0\) is out of range"):
        _C.index_select(x, 0, [-1])
    with pytest.raises(ValueError, match=r"index_select: index must be 1-D, got a 2-D array"):
        _C.index_select(x, 0, np.zeros((2, 2), np.int64))
    with pytest.raises(TypeError, match=r"index_select: index must hold integers"):
        _C.index_select(x, 0, np.zeros(2, np.float32))
    with pytest.raises(IndexError, match=r"index_select: dimension out of range"):
        _C.index_select(x, 2, [0])
    with pytest.raises(IndexError, match=r"tensors can only be indexed by ints, slices or integer arrays"):
        x[[0.5]]


def test_index_select_same_for_thread_counts(threads):
    a = randn(8, 300, 40)
    idx = RNG.integers(0, 300, size=500)
    cot = randn(8, 500, 40)

    def run():
        x = leaf(a)
        y = _C.index_select(x, 1, idx)
        backward_with(y, cot)
        return [y.detach().numpy(), x.grad.numpy()]

    y, g = same_for_thread_counts(run)
    np.testing.assert_array_equal(y, np.take(a, idx, axis=1))
    expected = np.zeros(a.shape, np.float64)
    np.add.at(expected, (slice(None), idx), cot.astype(np.float64))
    np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-5)

    # dim 0: a single outer block, split by columns
    b = randn(50, 2000)
    i0 = RNG.integers(0, 50, size=80)
    c0 = randn(80, 2000)

    def run0():
        x = leaf(b)
        backward_with(_C.index_select(x, 0, i0), c0)
        return [x.grad.numpy()]

    g0 = same_for_thread_counts(run0)[0]
    e0 = np.zeros(b.shape, np.float64)
    np.add.at(e0, i0, c0.astype(np.float64))
    np.testing.assert_allclose(g0, e0, rtol=1e-5, atol=1e-5)


# -------------------------------------------------------------------- concat
def test_concat_matches_numpy():
    parts = [randn(2, 3, 4), randn(2, 1, 4), randn(2, 5, 4)]
    out = an.cat([an.tensor(p) for p in parts], 1)
    np.testing.assert_array_equal(out.numpy(), np.concatenate(parts, 1))
    for dim in (0, -1, 2):
        ps = [randn(2, 3, 4), randn(2, 3, 4)]
        np.testing.assert_array_equal(an.concat(tuple(an.tensor(p) for p in ps), dim).numpy(),
                                      np.concatenate(ps, dim))
    # non-contiguous inputs and an empty part
    a = randn(4, 3)
    b = randn(3, 2)
    out = F.cat([an.tensor(a).transpose(0, 1), an.tensor(b)[:, :0], an.tensor(b)], 1)
    np.testing.assert_array_equal(out.numpy(), np.concatenate([a.T, b[:, :0], b], 1))
    assert an.cat([an.zeros(0, 3), an.zeros(0, 3)], 0).shape == (0, 3)
    nan = np.array([np.nan, np.inf], np.float32)
    np.testing.assert_array_equal(an.cat([an.tensor(nan), an.tensor(nan)]).numpy(), np.concatenate([nan, nan]))


def test_concat_gradients_and_inputs_without_grad():
    check_op(lambda a, b, c: an.cat([a, b, c], 1), lambda a, b, c: np.concatenate([a, b, c], 1),
             [randn(2, 2, 3), randn(2, 1, 3), randn(2, 3, 3)])
    a = leaf(randn(2, 3))
    b = an.tensor(randn(2, 4))
    c = leaf(randn(2, 1))
    out = an.cat([a, b, c], 1)
    assert out.grad_fn == "CatBackward"
    cot = randn(2, 8)
    backward_with(out, cot)
    np.testing.assert_array_equal(a.grad.numpy(), cot[:, :3])
    assert b.grad is None
    np.testing.assert_array_equal(c.grad.numpy(), cot[:, 7:])
    # more inputs than the engine's small-array fast path, the same tensor twice
    xs = [leaf(randn(1, 2)) for _ in range(11)]
    out = an.cat(xs + [xs[0]], 0)
    cot = randn(12, 2)
    backward_with(out, cot)
    np.testing.assert_allclose(xs[0].grad.numpy(), cot[0:1] + cot[11:12], rtol=1e-6)
    np.testing.assert_array_equal(xs[5].grad.numpy(), cot[5:6])


def test_concat_against_torch():
    torch = torch_or_skip()
    torch.set_num_threads(1)
    arrays = [randn(2, 3, 5, 5), randn(2, 7, 5, 5)]
    cot = randn(2, 10, 5, 5)
    xs = [leaf(a) for a in arrays]
    backward_with(an.cat(xs, 1), cot)
    ts = [torch_leaf(torch, a) for a in arrays]
    torch.cat(ts, 1).backward(torch.tensor(cot.astype(np.float64)))
    for x, t in zip(xs, ts):
        np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-6)


def test_concat_errors():
    a = an.tensor(randn(2, 3))
    with pytest.raises(ValueError, match=r"concat: sizes of tensors must match except in dimension 1: "
                                         r"tensor 0 has shape \[2, 3\] but tensor 2 has shape \[3, 3\]"):
        an.cat([a, a, an.tensor(randn(3, 3))], 1)
    with pytest.raises(ValueError, match=r"concat: sizes of tensors must match.*tensor 1 has shape \[2, 3, 1\]"):
        an.cat([a, an.tensor(randn(2, 3, 1))], 0)
    with pytest.raises(ValueError, match=r"non-empty list"):
        an.cat([], 0)
    with pytest.raises(ValueError, match=r"concat: expected a non-empty list of tensors"):
        _C.concat([], 0)
    with pytest.raises(ValueError, match=r"zero-dimensional tensor \(at position 0\)"):
        an.cat([an.tensor(np.float32(1)), an.tensor(np.float32(2))])
    with pytest.raises(IndexError, match=r"concat: dimension out of range"):
        an.cat([a, a], 2)
    with pytest.raises(TypeError, match=r"concat: tensor 1 must be an appealnet Tensor"):
        _C.concat([a, np.zeros((2, 3))], 0)


def test_concat_same_for_thread_counts(threads):
    arrays = [randn(16, 48, 28, 28), randn(16, 16, 28, 28)]
    cot = randn(16, 64, 28, 28)

    def run():
        xs = [leaf(a) for a in arrays]
        out = an.cat(xs, 1)
        backward_with(out, cot)
        return [out.detach().numpy(), xs[0].grad.numpy(), xs[1].grad.numpy()]

    out, g0, g1 = same_for_thread_counts(run)
    np.testing.assert_array_equal(out, np.concatenate(arrays, 1))
    np.testing.assert_array_equal(g0, cot[:, :48])
    np.testing.assert_array_equal(g1, cot[:, 48:])


# --------------------------------------------------------------- split/chunk
def test_split_and_chunk():
    a = randn(2, 10, 3)
    x = an.tensor(a)
    parts = F.split(x, 4, 1)
    assert [p.shape[1] for p in parts] == [4, 4, 2]
    for p, e in zip(parts, np.split(a, [4, 8], 1)):
        np.testing.assert_array_equal(p.numpy(), e)
        assert p._storage_ptr() == x._storage_ptr()
    parts = x.split([3, 0, 7], 1)
    assert [p.shape[1] for p in parts] == [3, 0, 7]
    chunks = x.chunk(3, 1)
    assert [c.shape[1] for c in chunks] == [4, 4, 2]
    np.testing.assert_array_equal(chunks[2].numpy(), a[:, 8:])
    assert [c.shape[0] for c in F.chunk(an.tensor(randn(6, 2)), 2)] == [3, 3]
    with pytest.raises(ValueError, match=r"split: sections \[3, 3\] do not sum to dimension size 10"):
        F.split(x, [3, 3], 1)
    with pytest.raises(ValueError, match=r"split: split_size must be positive"):
        F.split(x, 0, 1)
    with pytest.raises(ValueError, match=r"chunk: chunks must be positive"):
        F.chunk(x, 0, 1)


def test_split_gradients_reach_the_input():
    a = randn(2, 6, 3)
    x = leaf(a)
    left, right = F.chunk(x, 2, 1)  # the ShuffleNetV2 channel split
    out = an.cat([right, left * 2.0], 1)
    cot = randn(2, 6, 3)
    backward_with(out, cot)
    expected = np.concatenate([2.0 * cot[:, 3:], cot[:, :3]], 1)
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-6)


# ----------------------------------------------------------- channel_shuffle
def shuffle_reference(a, groups):
    n, c = a.shape[:2]
    rest = a.shape[2:]
    return a.reshape(n, groups, c // groups, *rest).swapaxes(1, 2).reshape(a.shape)


@pytest.mark.parametrize("shape,groups", [((4, 116, 14, 14), 2), ((2, 240, 8, 8), 3), ((1, 6, 3, 3), 6)])
def test_channel_shuffle_shufflenet_shapes(shape, groups):
    a = randn(*shape)
    out = F.channel_shuffle(an.tensor(a), groups)
    np.testing.assert_array_equal(out.numpy(), shuffle_reference(a, groups))
    torch = pytest.importorskip("torch")
    expected = torch.nn.ChannelShuffle(groups)(torch.from_numpy(a)).numpy()
    np.testing.assert_array_equal(out.numpy(), expected)


def test_channel_shuffle_gradient_is_the_inverse_shuffle():
    check_op(lambda x: F.channel_shuffle(x, 2), lambda x: shuffle_reference(x, 2), [randn(2, 6, 2, 2)])
    check_op(lambda x: F.channel_shuffle(x, 3), lambda x: shuffle_reference(x, 3), [randn(1, 6, 3, 1)])
    a = randn(2, 12, 4, 4)
    x = leaf(a)
    out = F.channel_shuffle(x, 4)
    assert out.grad_fn == "ChannelShuffleBackward"
    cot = randn(2, 12, 4, 4)
    backward_with(out, cot)
    torch = torch_or_skip()
    tx = torch_leaf(torch, a)
    torch.nn.ChannelShuffle(4)(tx).backward(torch.tensor(cot.astype(np.float64)))
    np.testing.assert_array_equal(x.grad.numpy(), tx.grad.numpy().astype(np.float32))


def test_channel_shuffle_strided_empty_nan():
    a = randn(2, 5, 6, 4)  # NHWC-like storage seen as NCHW through a permute
    x = an.tensor(a).permute(0, 3, 1, 2)  # [2, 4, 5, 6]
    np.testing.assert_array_equal(F.channel_shuffle(x, 2).numpy(), shuffle_reference(a.transpose(0, 3, 1, 2), 2))
    assert F.channel_shuffle(an.zeros(0, 4, 2, 2), 2).shape == (0, 4, 2, 2)
    assert F.channel_shuffle(an.zeros(2, 0, 2, 2), 2).shape == (2, 0, 2, 2)
    e = leaf(np.zeros((2, 0, 2, 2)))
    backward_with(F.channel_shuffle(e, 2), np.zeros((2, 0, 2, 2)))
    assert e.grad.shape == (2, 0, 2, 2)
    b = randn(1, 4, 1, 2)
    b[0, 1, 0, 1] = np.nan
    np.testing.assert_array_equal(F.channel_shuffle(an.tensor(b), 2).numpy(), shuffle_reference(b, 2))


def test_channel_shuffle_errors():
    with pytest.raises(ValueError, match=r"channel_shuffle: number of channels 116 must be divisible by "
                                         r"groups 3"):
        F.channel_shuffle(an.zeros(1, 116, 2, 2), 3)
    with pytest.raises(ValueError, match=r"channel_shuffle: number of groups must be positive, got 0"):
        F.channel_shuffle(an.zeros(1, 4, 2, 2), 0)
    with pytest.raises(ValueError, match=r"channel_shuffle: expected input of shape \[N, C, H, W\].*"
                                         r"got \[3, 4\]"):
        F.channel_shuffle(an.zeros(3, 4), 2)


def test_channel_shuffle_same_for_thread_counts(threads):
    a = randn(8, 116, 28, 28)
    cot = randn(8, 116, 28, 28)

    def run():
        x = leaf(a)
        out = F.channel_shuffle(x, 2)
        backward_with(out, cot)
        return [out.detach().numpy(), x.grad.numpy()]

    out, g = same_for_thread_counts(run)
    np.testing.assert_array_equal(out, shuffle_reference(a, 2))
    np.testing.assert_array_equal(g, shuffle_reference(cot, 58))


# ----------------------------------------------------------------------- pad
NP_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}


def numpy_pad(a, pads, mode, value=0.0):
    """np.pad with PyTorch's (last-dim-first) pad order, non-negative pads."""
    widths = [(0, 0)] * a.ndim
    for i in range(len(pads) // 2):
        widths[a.ndim - 1 - i] = (pads[2 * i], pads[2 * i + 1])
    if mode == "constant":
        return np.pad(a, widths, mode="constant", constant_values=value)
    return np.pad(a, widths, mode=NP_MODES[mode])


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate"])
def test_pad_matches_numpy(mode):
    a = randn(2, 3, 5, 6)
    x = an.tensor(a)
    for pads in [(1, 2), (2, 1, 3, 0), (0, 0, 1, 1), (1, 1, 1, 1, 1, 2)]:
        if mode == "reflect" and len(pads) == 6:
            pads = (1, 1, 1, 1, 1, 2)  # dim 1 has size 3: pad < 3
        out = F.pad(x, pads, mode, 1.5)
        np.testing.assert_array_equal(out.numpy(), numpy_pad(a, pads, mode, 1.5), err_msg=str(pads))
    # strided input gives the same as contiguous
    t = an.tensor(a.transpose(0, 1, 3, 2).copy()).transpose(2, 3)
    np.testing.assert_array_equal(F.pad(t, (2, 1, 1, 2), mode).numpy(), numpy_pad(a, (2, 1, 1, 2), mode))
    # pads of zero copy the input
    same = F.pad(x, (0, 0), mode)
    np.testing.assert_array_equal(same.numpy(), a)
    assert same._storage_ptr() != x._storage_ptr()


def test_pad_against_torch_with_gradients():
    torch = torch_or_skip()
    torch.set_num_threads(1)
    tf = torch.nn.functional
    cases = [
        ("constant", (1, 2, 0, 3), 0.5), ("constant", (-1, 2, 1, -2), 0.0), ("constant", (-2, -1), 3.0),
        ("reflect", (2, 3, 1, 2), 0.0), ("reflect", (3, 0), 0.0),
        ("replicate", (3, 1, 0, 4), 0.0), ("replicate", (2, 2), 0.0),
    ]
    for mode, pads, value in cases:
        # torch's reflect/replicate take 3-D input for one pair, 4-D for two
        a = randn(2, 3, 4, 5) if len(pads) == 4 else randn(3, 4, 5)
        x = leaf(a)
        out = F.pad(x, pads, mode, value)
        tx = torch_leaf(torch, a)
        kwargs = {"value": value} if mode == "constant" else {}
        tout = tf.pad(tx, pads, mode=mode, **kwargs)
        np.testing.assert_array_equal(out.detach().numpy(), tout.detach().numpy().astype(np.float32),
                                      err_msg=f"{mode} {pads}")
        cot = randn(*tout.shape)
        backward_with(out, cot)
        tout.backward(torch.tensor(cot.astype(np.float64)))
        np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-5, atol=1e-5,
                                   err_msg=f"{mode} {pads}")
        assert out.grad_fn == "PadBackward"


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate"])
def test_pad_finite_differences(mode):
    check_op(lambda x: F.pad(x, (2, 1, 1, 2), mode, 0.25), lambda x: numpy_pad(x, (2, 1, 1, 2), mode, 0.25),
             [randn(1, 2, 3, 4)])
    check_op(lambda x: F.pad(x, (1, 2), mode), lambda x: numpy_pad(x, (1, 2), mode), [randn(2, 4)])


def test_pad_empty_and_nan():
    assert F.pad(an.zeros(0, 3, 4), (1, 1, 2, 2)).shape == (0, 7, 6)
    assert F.pad(an.zeros(0, 3, 4), (1, 1), "reflect").shape == (0, 3, 6)
    z = F.pad(an.zeros(2, 0), (1, 2), "constant", 4.0)
    np.testing.assert_array_equal(z.numpy(), np.full((2, 3), 4.0, np.float32))
    a = np.array([[np.nan, 1.0, np.inf]], np.float32)
    np.testing.assert_array_equal(F.pad(an.tensor(a), (2, 2), "reflect").numpy(), np.pad(a, ((0, 0), (2, 2)), "reflect"))
    np.testing.assert_array_equal(F.pad(an.tensor(a), (1, 0), "constant", float("nan")).numpy(),
                                  np.array([[np.nan, np.nan, 1.0, np.inf]], np.float32))


def test_pad_errors():
    x = an.tensor(randn(1, 1, 3, 3))
    with pytest.raises(ValueError, match=r"pad: reflect padding \(3, 3\) must be less than the size 3 of "
                                         r"dimension 3 of input \[1, 1, 3, 3\]"):
        F.pad(x, (3, 3), "reflect")
    with pytest.raises(ValueError, match=r"pad: padding \(-2, -2\) of dimension 3 of input \[1, 1, 3, 3\] gives a "
                                         r"negative output size -1"):
        F.pad(x, (-2, -2))
    with pytest.raises(ValueError, match=r"pad: padding length 10 \(5 pairs\) is too large for an input of "
                                         r"shape \[1, 1, 3, 3\]"):
        F.pad(x, (1,) * 10)
    with pytest.raises(ValueError, match=r"pad: cannot replicate-pad the empty dimension 1"):
        F.pad(an.zeros(2, 0), (1, 1), "replicate")
    with pytest.raises(ValueError, match=r"pad mode must be"):
        F.pad(x, (1, 1), "circular")
    with pytest.raises(ValueError, match=r"pad: mode must be 'constant', 'reflect' or 'replicate', got 'wrap'"):
        _C.pad(x, (1, 1), "wrap", 0.0)
    with pytest.raises(ValueError, match=r"pad: pad must have an even number of entries, got 3"):
        _C.pad(x, (1, 1, 1), "constant", 0.0)


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate"])
def test_pad_same_for_thread_counts(mode, threads):
    a = randn(4, 32, 30, 30)
    pads = (3, 2, 1, 3)
    cot = randn(4, 32, 34, 35)

    def run():
        x = leaf(a)
        out = F.pad(x, pads, mode, 0.5)
        backward_with(out, cot)
        return [out.detach().numpy(), x.grad.numpy()]

    out, g = same_for_thread_counts(run)
    np.testing.assert_array_equal(out, numpy_pad(a, pads, mode, 0.5))
    if mode == "constant":
        np.testing.assert_array_equal(g, cot[:, :, 1:31, 3:33])


# ------------------------------------------------------ channel_shuffle_cat

@pytest.mark.parametrize("n,shape", [(2, (3, 58, 4, 4)), (3, (2, 5, 3, 2)), (1, (2, 4, 2, 2))])
def test_channel_shuffle_cat_equals_shuffle_of_cat(n, shape):
    arrays = [randn(*shape) for _ in range(n)]
    expected = shuffle_reference(np.concatenate(arrays, axis=1), n)
    np.testing.assert_array_equal(F.channel_shuffle_cat([an.tensor(a) for a in arrays]).numpy(), expected)
    # gradients: exact against the unfused composition, and by finite differences
    leaves = [leaf(a) for a in arrays]
    cot = randn(*expected.shape)
    backward_with(F.channel_shuffle_cat(leaves), cot)
    twins = [leaf(a) for a in arrays]
    backward_with(F.channel_shuffle(F.cat(twins, dim=1), n), cot)
    for x, twin in zip(leaves, twins):
        np.testing.assert_array_equal(x.grad.numpy(), twin.grad.numpy())
    check_op(lambda *xs: F.channel_shuffle_cat(list(xs)),
             lambda *xs: shuffle_reference(np.concatenate(xs, axis=1), len(xs)),
             [randn(1, 2, 2, 2) for _ in range(n)])


def test_channel_shuffle_cat_strided_inputs_and_partial_grads():
    a = randn(2, 8, 3, 3)
    x = leaf(a)
    passed, rest = x[:, :4], x[:, 4:]  # ShuffleNet v2's split: channel slices of one tensor
    y = leaf(randn(2, 4, 3, 3))
    out = F.channel_shuffle_cat([passed, y * 1.0])
    assert out.grad_fn == "ChannelShuffleCatBackward"
    np.testing.assert_array_equal(out.detach().numpy(),
                                  shuffle_reference(np.concatenate([a[:, :4], y.detach().numpy()], 1), 2))
    cot = randn(2, 8, 3, 3)
    backward_with(out, cot)
    expected = np.zeros_like(a)
    expected[:, :4] = cot[:, 0::2]
    np.testing.assert_array_equal(x.grad.numpy(), expected)
    np.testing.assert_array_equal(y.grad.numpy(), cot[:, 1::2])
    del rest


def test_channel_shuffle_cat_errors():
    with pytest.raises(ValueError, match=r"channel_shuffle_concat: inputs must have the same shape: tensor 0 has "
                                         r"shape \[1, 4, 2, 2\] but tensor 1 has shape \[1, 3, 2, 2\]"):
        F.channel_shuffle_cat([an.zeros(1, 4, 2, 2), an.zeros(1, 3, 2, 2)])
    with pytest.raises(ValueError, match=r"concat: sizes of tensors must match"):
        F.channel_shuffle_cat([an.zeros(1, 4, 2, 2), an.zeros(1, 4, 2, 3)])
    with pytest.raises(ValueError, match=r"expected inputs of shape \[N, C, H, W\]"):
        F.channel_shuffle_cat([an.zeros(3, 4), an.zeros(3, 4)])
    with pytest.raises(ValueError, match="non-empty list"):
        F.channel_shuffle_cat([])
