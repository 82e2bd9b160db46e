"""Tensor creation, numpy interchange, autograd mechanics and the
broadcasting arithmetic ops of the core."""
import gc
import threading

import numpy as np
import pytest

import appealnet as an
from gradcheck import check_op, torch_or_skip


# ------------------------------------------------------------ creation
def test_tensor_copies_and_converts_by_value():
    src = np.array([[1.5, -2.0], [3.0, 4.25]], dtype=np.float64)
    t = an.tensor(src)
    assert t.shape == (2, 2) and t.ndim == 2 and t.numel() == 4
    np.testing.assert_array_equal(t.numpy(), src.astype(np.float32))
    src[0, 0] = 100.0  # a copy: the tensor is unaffected
    assert t.numpy()[0, 0] == 1.5
    np.testing.assert_array_equal(an.tensor(np.arange(5)).numpy(), np.arange(5, dtype=np.float32))
    np.testing.assert_array_equal(an.tensor([True, False]).numpy(), [1.0, 0.0])
    assert an.tensor(3.5).shape == () and an.tensor(3.5).item() == 3.5


def test_int_values_are_converted_not_reinterpreted():
    big = np.array([2**31 - 1, -7], dtype=np.int64)
    np.testing.assert_array_equal(an.tensor(big).numpy(), big.astype(np.float32))


@pytest.mark.parametrize("bad", [np.array([1 + 2j]), np.array(["a", "b"]), np.array([object()])])
def test_unconvertible_dtypes_are_refused(bad):
    with pytest.raises(TypeError, match="cannot convert an array of dtype"):
        an.tensor(bad)


def test_non_contiguous_and_negative_stride_arrays():
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    for view in (base[:, ::2], base[::-1], base[::-1, ::-3], base.T):
        np.testing.assert_array_equal(an.tensor(view).numpy(), view)
        shared = an.from_numpy(view)
        np.testing.assert_array_equal(np.asarray(shared), view)
        # arithmetic on a strided view equals arithmetic on its copy
        np.testing.assert_array_equal((shared + 1).numpy(), view + 1)


def test_from_numpy_shares_memory_and_keeps_owner_alive():
    arr = np.zeros((3, 4), dtype=np.float32)
    t = an.from_numpy(arr)
    arr[1, 2] = 7.0
    assert t.numpy()[1, 2] == 7.0
    del arr
    gc.collect()
    assert t.numpy()[1, 2] == 7.0  # the tensor holds the array


def test_from_numpy_refuses_other_dtypes_and_read_only():
    with pytest.raises(TypeError, match="float32"):
        an.from_numpy(np.zeros(3))
    ro = np.zeros(3, dtype=np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        an.from_numpy(ro)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        an.from_numpy([1.0, 2.0])


def test_numpy_view_is_zero_copy_and_buffer_protocol():
    t = an.zeros(2, 3)
    view = t.numpy()
    view[0, 1] = 5.0
    assert t.numpy()[0, 1] == 5.0
    arr = np.asarray(t)
    assert arr.dtype == np.float32 and arr.ctypes.data == t.data_ptr()
    mv = memoryview(t)
    assert mv.format == "f" and mv.shape == (2, 3)


def test_numpy_refused_on_tensor_requiring_grad():
    t = an.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="detach"):
        t.numpy()
    np.testing.assert_array_equal(t.detach().numpy(), [1.0, 1.0])


def test_empty_tensors():
    e = an.tensor(np.zeros((0, 3)))
    assert e.shape == (0, 3) and e.numel() == 0
    assert (e + 1).shape == (0, 3)
    assert np.asarray(e).shape == (0, 3)
    with pytest.raises(ValueError, match="0 elements"):
        e.item()


def test_too_many_dims_and_negative_shape():
    with pytest.raises(ValueError, match="at most 8 dimensions"):
        an.tensor(np.zeros((1,) * 9))
    with pytest.raises(ValueError, match="negative dimension"):
        an.zeros(-1, 2)


def test_item_and_len():
    t = an.tensor([[2.0]])
    assert t.item() == 2.0 and len(an.zeros(4, 2)) == 4
    with pytest.raises(ValueError, match="cannot be converted"):
        an.zeros(2).item()


def test_constructing_base_directly_is_refused():
    with pytest.raises(TypeError, match="appealnet.tensor"):
        an.Tensor()


# ----------------------------------------------------------- arithmetic
SHAPE_PAIRS = [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((2, 1, 4), (3, 1)), ((5,), ()),
               ((2, 8, 4, 4), (1, 8, 1, 1)), ((1,), (3, 2))]


@pytest.mark.parametrize("op,ref", [
    (lambda a, b: a + b, lambda a, b: a + b),
    (lambda a, b: a - b, lambda a, b: a - b),
    (lambda a, b: a * b, lambda a, b: a * b),
    (lambda a, b: a / b, lambda a, b: a / b),
])
@pytest.mark.parametrize("sa,sb", SHAPE_PAIRS)
def test_broadcasting_arithmetic_values_and_grads(op, ref, sa, sb):
    rng = np.random.default_rng(1)
    a = rng.standard_normal(sa)
    b = rng.uniform(0.5, 2.0, sb) * rng.choice([-1, 1], sb)  # keep away from 0 for div
    check_op(op, ref, [a, b])


def test_neg_and_scalar_operands():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 5))
    check_op(lambda t: -t, lambda t: -t, [x])
    check_op(lambda t: 2.0 - t * 3 + 1 / (t * t + 1), lambda t: 2.0 - t * 3 + 1 / (t * t + 1), [x])


def test_broadcast_mismatch_message_names_both_shapes():
    with pytest.raises(ValueError, match=r"add: shapes \[2, 3\] and \[4\] cannot be broadcast"):
        an.zeros(2, 3) + an.zeros(4)


def test_arithmetic_against_torch():
    torch = torch_or_skip()
    rng = np.random.default_rng(3)
    a = rng.standard_normal((4, 1, 6)).astype(np.float32)
    b = rng.standard_normal((3, 1)).astype(np.float32) + 3
    ta, tb = an.tensor(a, requires_grad=True), an.tensor(b, requires_grad=True)
    pa = torch.tensor(a, dtype=torch.float64, requires_grad=True)
    pb = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    out = (ta * tb - ta / tb + tb).sum()
    ref = (pa * pb - pa / pb + pb).sum()
    out.backward()
    ref.backward()
    np.testing.assert_allclose(out.item(), ref.item(), rtol=1e-5)
    np.testing.assert_allclose(ta.grad.numpy(), pa.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tb.grad.numpy(), pb.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_nan_and_inf_propagate():
    t = an.tensor([np.nan, np.inf, 1.0])
    out = (t * 2 + 1).numpy()
    assert np.isnan(out[0]) and np.isinf(out[1]) and out[2] == 3.0
    assert (an.tensor([1.0]) / an.tensor([0.0])).item() == np.inf


# ------------------------------------------------------------- autograd
def test_grad_accumulates_across_backward_calls():
    x = an.tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2 + 3, 4 + 3])
    x.grad = None
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2, 4])


def test_second_backward_through_freed_graph_errors():
    x = an.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.backward()


def test_retain_graph_allows_second_backward():
    x = an.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [4, 8])


def test_backward_on_non_scalar_needs_gradient():
    x = an.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match="only for scalar outputs"):
        y.backward()
    y.backward(an.tensor([1.0, 10.0]))
    np.testing.assert_allclose(x.grad.numpy(), [2, 20])


def test_backward_gradient_shape_must_match():
    x = an.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(ValueError, match=r"gradient has shape \[3\] but the tensor has shape \[2\]"):
        (x * 2).backward(an.ones(3))


def test_backward_without_grad_errors():
    with pytest.raises(RuntimeError, match="does not require grad"):
        (an.ones(2) * 2).sum().backward()


def test_detach_and_no_grad():
    x = an.tensor([1.0, 2.0], requires_grad=True)
    d = x.detach()
    assert not d.requires_grad and d.is_leaf and d._storage_ptr() == x._storage_ptr()
    with an.no_grad():
        y = x * 2
    assert not y.requires_grad and y.grad_fn is None
    z = x * 2
    assert z.requires_grad and z.grad_fn == "MulBackward" and not z.is_leaf

    @an.no_grad()
    def f(t):
        return t * 3

    assert not f(x).requires_grad
    assert an.is_grad_enabled()


def test_shared_subexpression_and_diamond_graph():
    x = an.tensor([0.5, -1.5], requires_grad=True)
    a = x * x
    out = (a * a + a * x).sum()  # x^4 + x^3
    out.backward()
    xv = np.array([0.5, -1.5])
    np.testing.assert_allclose(x.grad.numpy(), 4 * xv**3 + 3 * xv**2, rtol=1e-6)


def test_non_leaf_requires_grad_cannot_be_cleared():
    x = an.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf"):
        (x * 2).requires_grad = False


def test_grad_assignment_checks_shape():
    x = an.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match="assigned grad has shape"):
        x.grad = an.zeros(2)


def test_deep_chain_backward_does_not_overflow():
    x = an.tensor([1.0], requires_grad=True)
    y = x
    for _ in range(20000):
        y = y + 1e-4
    y.backward()
    assert x.grad.item() == 1.0


def test_graph_memory_is_freed_after_backward():
    import weakref
    x = an.tensor(np.ones(1000), requires_grad=True)
    y = x * 2
    ref = weakref.ref(y)
    (y * y).sum().backward()
    del y
    gc.collect()
    assert ref() is None


# -------------------------------------------------- threads and the GIL
def test_same_results_with_one_and_two_threads():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((256, 513)).astype(np.float32)
    b = rng.standard_normal((513,)).astype(np.float32)
    results = []
    for n in (1, 2):
        an.set_num_threads(n)
        assert an.get_num_threads() == n
        ta, tb = an.tensor(a, requires_grad=True), an.tensor(b, requires_grad=True)
        (ta * tb + ta / (tb * tb + 1)).sum().backward()
        results.append((ta.grad.numpy().copy(), tb.grad.numpy().copy()))
    an.set_num_threads(2)
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    with pytest.raises(ValueError, match="positive"):
        an.set_num_threads(0)


def test_python_threads_on_different_tensors():
    rng = np.random.default_rng(5)
    data = [rng.standard_normal((200, 300)).astype(np.float32) for _ in range(4)]
    expected = [2 * d for d in data]
    errors = []

    def work(k):
        try:
            for _ in range(20):
                x = an.tensor(data[k], requires_grad=True)
                (x * x).sum().backward()
                np.testing.assert_allclose(x.grad.numpy(), expected[k], rtol=1e-6)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_manual_seed_reproducible():
    an.manual_seed(123)
    a = an.randn(1000).numpy().copy()
    b = an.rand(10).numpy().copy()
    an.manual_seed(123)
    np.testing.assert_array_equal(a, an.randn(1000).numpy())
    np.testing.assert_array_equal(b, an.rand(10).numpy())
    assert abs(a.mean()) < 0.1 and abs(a.std() - 1) < 0.1
    assert an.initial_seed() == 123
    u = an.rand(100000).numpy()
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.01


def test_backward_never_writes_into_the_callers_gradient():
    x = an.tensor([1.0, 2.0, 3.0], requires_grad=True)
    a = x * 1
    out = a + a * 2  # the add passes its gradient straight through to both inputs
    seed = an.ones(3)
    out.backward(seed)
    np.testing.assert_array_equal(seed.numpy(), [1, 1, 1])
    np.testing.assert_array_equal(x.grad.numpy(), [3, 3, 3])


def test_a_leafs_first_gradient_never_aliases_what_someone_else_holds():
    """A first gradient that only backward holds becomes the leaf's .grad
    as it is (no copy); one the caller or another leaf holds is copied:
    the caller's seed, and an add's gradient handed to both its inputs."""
    seed = an.ones(3)
    x = an.tensor([1.0, 2.0, 3.0], requires_grad=True)
    x.backward(seed)                       # the seed itself reaches the leaf
    x.grad.numpy()[...] = 7.0
    np.testing.assert_array_equal(seed.numpy(), [1, 1, 1])
    x.backward(seed)                       # accumulates in place into x.grad only
    np.testing.assert_array_equal(x.grad.numpy(), [8, 8, 8])
    np.testing.assert_array_equal(seed.numpy(), [1, 1, 1])

    a = an.tensor([1.0, 2.0], requires_grad=True)
    b = an.tensor([3.0, 4.0], requires_grad=True)
    (a + b).backward(an.ones(2))           # one gradient tensor for both leaves
    assert a.grad._storage_ptr() != b.grad._storage_ptr()
    a.grad.numpy()[...] = 5.0
    np.testing.assert_array_equal(b.grad.numpy(), [1, 1])
    (a + b).backward(an.ones(2))
    np.testing.assert_array_equal(a.grad.numpy(), [6, 6])
    np.testing.assert_array_equal(b.grad.numpy(), [2, 2])

    c = an.tensor(np.arange(6, dtype=np.float32).reshape(2, 3), requires_grad=True)
    (c * 2.0).sum().backward()             # a fresh product: taken as it is, and correct
    np.testing.assert_array_equal(c.grad.numpy(), np.full((2, 3), 2.0))
    (c * 3.0).sum().backward()
    np.testing.assert_array_equal(c.grad.numpy(), np.full((2, 3), 5.0))


def test_pickle_and_deepcopy_keep_values_not_history():
    import copy
    import pickle
    x = an.tensor([[1.0, 2.0]], requires_grad=True)
    y = pickle.loads(pickle.dumps(x))
    assert y.requires_grad and y.is_leaf
    np.testing.assert_array_equal(y.detach().numpy(), [[1.0, 2.0]])
    z = copy.deepcopy(x)
    assert z._storage_ptr() != x._storage_ptr()
    np.testing.assert_array_equal(z.detach().numpy(), [[1.0, 2.0]])
    with pytest.raises(RuntimeError, match="leaves"):
        copy.deepcopy(x * 2)


def test_rng_state_round_trip_resumes_draws():
    an.manual_seed(9)
    an.rand(10)
    state = an.get_rng_state()
    first = an.randn(50).numpy().copy()
    an.rand(3)
    an.set_rng_state(state)
    np.testing.assert_array_equal(an.randn(50).numpy(), first)


def test_grad_mode_context_managers_nest_and_restore():
    assert an.is_grad_enabled()
    with an.no_grad():
        assert not an.is_grad_enabled()
        with an.enable_grad():
            assert an.is_grad_enabled()
        assert not an.is_grad_enabled()
    assert an.is_grad_enabled()
    with an.set_grad_enabled(False):
        assert not an.is_grad_enabled()
    assert an.is_grad_enabled()
    an.set_grad_enabled(False)
    assert not an.is_grad_enabled()
    an.set_grad_enabled(True)

    @an.no_grad()
    def recurse(depth):
        assert not an.is_grad_enabled()
        return depth if depth == 0 else recurse(depth - 1)

    recurse(3)
    assert an.is_grad_enabled()


def test_a_gradient_shared_by_two_inputs_is_never_summed_into():
    # add_relu and add hand the same gradient tensor to both inputs; a
    # non-leaf input that then receives a second contribution must sum into
    # a new tensor, leaving what the other input holds intact.  Both inputs
    # get a second contribution here, in every order of the three terms: in
    # one of them (h*3 and b*5 created before the join) summing in place
    # into the shared gradient gave a.grad = mask + 8.
    from appealnet.nn import functional as F
    rng = np.random.default_rng(0)
    a_np = rng.standard_normal((3, 4)).astype(np.float32)
    b_np = rng.standard_normal((3, 4)).astype(np.float32)
    mask = (a_np + b_np > 0).astype(np.float32)
    for rotation in range(3):
        a = an.tensor(a_np, requires_grad=True)
        b_leaf = an.tensor(b_np, requires_grad=True)
        h, b = a * 1.0, b_leaf * 1.0  # non-leaves: their gradients are pending inside backward
        terms = [lambda: F.add_relu(h, b).sum(), lambda: (h * 3.0).sum(), lambda: (b * 5.0).sum()]
        built = [terms[(i + rotation) % 3]() for i in range(3)]
        (built[0] + built[1] + built[2]).backward()
        np.testing.assert_array_equal(a.grad.numpy(), mask + 3.0)
        np.testing.assert_array_equal(b_leaf.grad.numpy(), mask + 5.0)
        # and through a plain add, whose gradient passes through unchanged
        a2 = an.tensor(a_np, requires_grad=True)
        b2 = an.tensor(b_np, requires_grad=True)
        h2 = a2 * 1.0
        ((h2 + b2).sum() + (h2 * h2).sum()).backward()
        np.testing.assert_array_equal(b2.grad.numpy(), np.ones_like(b_np))
        np.testing.assert_allclose(a2.grad.numpy(), 1.0 + 2.0 * a_np, rtol=1e-6)
