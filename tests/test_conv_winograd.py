"""conv2d through Winograd's F(4x4, 3x3) (csrc/kernels/winograd.c, the
"winograd" entry of csrc/ops/conv.c): 3x3, stride 1, padding 1, no groups,
32+ channels in and out, planes up to 64x64, batches of 32+ images and
2048+ outputs per channel (smaller ones stay direct).  The forward, the data
gradient (a convolution of dy with the flipped kernel) and the weight
gradient (through the same transforms) take it.  Checked against torch in float64
on the zoo's layer shapes and on planes and channel counts around the 4x4
tile and the 16-channel vectors; against the direct lowering; for 1 and 2
threads; and with non-finite inputs and weights, which go to the direct
lowering so that a NaN reaches exactly the outputs whose window covers it."""
import contextlib

import numpy as np
import pytest

import appealnet as an
from appealnet import _C
from appealnet.nn import functional as F
from gradcheck import torch_or_skip

# (N, C_in, C_out, H, W); every case has 32+ images and 512+ 2x2 blocks of outputs
CASES = [
    (32, 32, 32, 16, 16),   # ResNet-20 stage 2
    (64, 64, 64, 8, 8),     # ResNet-20 stage 3
    (32, 64, 64, 8, 8),     # the same at batch 32: 512 blocks, the fewest taken
    (32, 32, 40, 32, 32),   # ResNet-18 layer 1's plane
    (52, 32, 48, 7, 9),     # odd plane: the last tile row and column hang over
    (1024, 40, 32, 1, 1),   # one pixel: a single tile, 15 of its 16 outputs outside
    (512, 40, 36, 2, 3),    # channels not a multiple of 16 (partial vectors)
    (114, 33, 47, 5, 5),
    (150, 32, 32, 8, 8),    # several chunks, the last one shorter
]
# compared with the direct lowering only (float64 torch would be slow)
# (chunks of 32 tiles, not the 12 / 7 that fit L2: 8 and 28 images)
LARGE = [(32, 32, 32, 64, 64), (256, 512, 512, 4, 4), (32, 128, 128, 16, 16),
         (32, 256, 256, 8, 8), (128, 512, 512, 4, 4)]


def _inputs(case, seed=0):
    n, cin, cout, h, w = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, cin, h, w)).astype(np.float32)
    wt = (rng.standard_normal((cout, cin, 3, 3)) / np.sqrt(9 * cin)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    g = rng.standard_normal((n, cout, h, w)).astype(np.float32)
    return x, wt, b, g


def _run(x, wt, b, g):
    tx, tw, tb = (an.tensor(v, requires_grad=True) for v in (x, wt, b))
    y = F.conv2d(tx, tw, tb, 1, 1)
    y.backward(an.tensor(g))
    return y.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy()


@pytest.fixture
def winograd():
    before = an.get_conv_winograd()
    an.set_conv_winograd(True)
    yield
    an.set_conv_winograd(before)


@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
def test_matches_torch_float64(case, winograd):
    torch = torch_or_skip()
    x, wt, b, g = _inputs(case)
    y, dx, dw, db = _run(x, wt, b, g)
    tx, tw, tb = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (x, wt, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, padding=1)
    ty.backward(torch.tensor(g, dtype=torch.float64))
    for mine, ref in ((y, ty.detach()), (dx, tx.grad), (dw, tw.grad), (db, tb.grad)):
        ref = ref.numpy()
        np.testing.assert_allclose(mine, ref, rtol=1e-4, atol=2e-5 * max(1.0, np.abs(ref).max()))


@contextlib.contextmanager
def _direct_lowering():
    before = an.get_conv_winograd()
    an.set_conv_winograd(False)
    try:
        yield
    finally:
        an.set_conv_winograd(before)


def _fast_and_direct(case, seed):
    x, wt, b, g = _inputs(case, seed=seed)
    fast = _run(x, wt, b, g)
    with _direct_lowering():
        direct = _run(x, wt, b, g)
    return fast, direct


def test_is_on_by_default_and_differs_from_the_direct_lowering_only_in_rounding():
    assert an.get_conv_winograd()
    fast, direct = _fast_and_direct((64, 64, 64, 8, 8), seed=3)
    np.testing.assert_array_equal(fast[3], direct[3])  # the bias gradient: a plain sum
    for a, d in zip(fast[:3], direct[:3]):
        assert not np.array_equal(a, d)  # it did run: another rounding
        np.testing.assert_allclose(a, d, rtol=1e-5, atol=1e-5 * np.abs(d).max())


@pytest.mark.parametrize("case", LARGE, ids=[str(c) for c in LARGE])
def test_large_layers_match_the_direct_lowering(case, winograd):
    fast, direct = _fast_and_direct(case, seed=4)
    for a, d in zip(fast, direct):
        np.testing.assert_allclose(a, d, rtol=1e-4, atol=2e-5 * np.abs(d).max())


@pytest.mark.parametrize("case", [(31, 64, 64, 8, 8), (127, 64, 64, 4, 4), (128, 32, 32, 2, 2),
                                  (32, 64, 64, 64, 64)])
def test_small_batches_and_large_images_keep_the_direct_lowering(case, winograd):
    # below 32 images or 2048 outputs per channel the transforms do not pay,
    # and an image whose transforms need over 4 MB (36 x 128 channels x 256
    # tiles here) would make the workspace unbounded: the
    # direct lowering runs, and gives its own bits
    fast, direct = _fast_and_direct(case, seed=6)
    for a, d in zip(fast, direct):
        np.testing.assert_array_equal(a, d)


@pytest.mark.parametrize("case", [(150, 32, 32, 8, 8), (32, 64, 64, 16, 16), (52, 32, 48, 7, 9),
                                  (32, 256, 256, 8, 8)])
def test_identical_for_one_and_two_threads(case, winograd):
    x, wt, b, g = _inputs(case, seed=5)
    results = []
    prev = an.get_num_threads()
    try:
        for threads in (1, 2):
            an.set_num_threads(threads)
            results.append(_run(x, wt, b, g))
    finally:
        an.set_num_threads(prev)
    for a, c in zip(*results):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_fused_bias_and_activation(activation, winograd):
    x, wt, b, _ = _inputs((64, 32, 40, 9, 8), seed=7)
    x *= 4  # reach 6 as well
    with an.no_grad():
        fused = _C.conv2d(an.tensor(x), an.tensor(wt), an.tensor(b), (1, 1), (1, 1), (1, 1), 1,
                          activation).numpy()
        plain = F.conv2d(an.tensor(x), an.tensor(wt), an.tensor(b), 1, 1)
        expected = (F.relu(plain) if activation == "relu" else F.relu6(plain)).numpy()
    np.testing.assert_array_equal(fused, expected)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_reaches_exactly_its_windows(bad, winograd):
    # A tile mixes its 16 inputs (inf - inf, 0 * inf): such inputs go to the
    # direct lowering, whose sums touch only the windows covering them.
    x = np.ones((64, 32, 8, 8), dtype=np.float32)
    x[1, 5, 3, 6] = bad
    w = np.full((32, 32, 3, 3), 0.01, dtype=np.float32)
    y = F.conv2d(an.tensor(x), an.tensor(w), None, 1, 1).numpy()
    covered = np.zeros_like(y, dtype=bool)
    covered[1, :, 2:5, 5:8] = True
    assert (~np.isfinite(y[covered])).all()
    assert np.isfinite(y[~covered]).all()
    with _direct_lowering():
        direct = F.conv2d(an.tensor(x), an.tensor(w), None, 1, 1).numpy()
    np.testing.assert_array_equal(y, direct)


def test_non_finite_gradient_and_weights_take_the_direct_lowering(winograd):
    x, wt, b, g = _inputs((64, 32, 32, 8, 8), seed=9)
    g[0, 3, 1, 1] = np.nan
    _, dx, dw, _ = _run(x, wt, b, g)
    hit = np.zeros_like(dx, dtype=bool)
    hit[0, :, 0:3, 0:3] = True
    assert np.isnan(dx[hit]).all() and np.isfinite(dx[~hit]).all()
    inf_wt = wt.copy()
    inf_wt[4, 2, 1, 1] = np.inf
    with an.no_grad():
        y = F.conv2d(an.tensor(x), an.tensor(inf_wt), None, 1, 1).numpy()
    with _direct_lowering():
        _, direct_dx, direct_dw, _ = _run(x, wt, b, g)
        with an.no_grad():
            direct = F.conv2d(an.tensor(x), an.tensor(inf_wt), None, 1, 1).numpy()
    # the same bits as the direct lowering: it is what ran (dy has a NaN)
    np.testing.assert_array_equal(dx, direct_dx)
    np.testing.assert_array_equal(dw, direct_dw)
    np.testing.assert_array_equal(y, direct)


def test_non_finite_input_sends_the_weight_gradient_to_the_direct_lowering(winograd):
    x, wt, b, g = _inputs((64, 32, 32, 8, 8), seed=11)
    x[2, 7, 4, 4] = np.inf
    fast = _run(x, wt, b, g)
    with _direct_lowering():
        direct = _run(x, wt, b, g)
    # the output and the weight gradient read x: the direct lowering ran
    # (dx reads only dy and w, which are finite: Winograd)
    for i in (0, 2, 3):
        np.testing.assert_array_equal(fast[i], direct[i])


def test_switch_takes_any_truth_value_and_reports_a_bool():
    before = an.get_conv_winograd()
    try:
        an.set_conv_winograd(0)
        assert an.get_conv_winograd() is False
        an.set_conv_winograd([1])
        assert an.get_conv_winograd() is True
    finally:
        an.set_conv_winograd(before)
