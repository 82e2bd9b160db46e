"""conv2d's stride-1 paths that read the zero-padded image in place
(csrc/ops/conv.c, implicit_gemm: planes of 256+ outputs) and the data
gradient computed as a convolution of dy with the flipped kernel (every
stride-1 kxk convolution whose padding is at most (k-1)*dilation).  Each is
compared with torch in float64, forward and all three gradients, on shapes
around the band split, the 32-wide micro-tile and the junk columns of the
padded width; results are bit-identical for 1 and 2 threads, and a NaN
reaches exactly the outputs whose window covers it.  The strided paths
(stride phases, and the AVX-512 gather of stride-2 panels from x) are
checked the same way below."""
import sys

import numpy as np
import pytest

import appealnet as an
from appealnet.nn import functional as F
from gradcheck import torch_or_skip

# (N, C_in, C_out, (kh, kw), (ph, pw), (dh, dw), groups, (H, W))
CASES = [
    (3, 16, 16, (3, 3), (1, 1), (1, 1), 1, (32, 32)),   # ResNet-20 stage 1: padded width 34
    (2, 32, 32, (3, 3), (1, 1), (1, 1), 1, (16, 16)),   # 256 outputs: the smallest implicit plane
    (2, 5, 7, (3, 3), (1, 1), (1, 1), 1, (30, 30)),     # padded width 32: no junk past the tile
    (2, 3, 29, (3, 5), (1, 2), (1, 1), 1, (17, 23)),    # rectangular kernel, M = 29 (14-row tiles)
    (2, 3, 6, (3, 3), (1, 1), (1, 1), 1, (100, 100)),   # 102-wide rows: bands of 20 rows
    (2, 8, 12, (3, 3), (2, 1), (2, 1), 4, (20, 24)),    # groups 4, dilation 2 in one axis
    (2, 4, 6, (5, 5), (2, 2), (1, 1), 2, (33, 33)),     # 5x5, groups 2
    (2, 3, 5, (3, 3), (0, 0), (1, 1), 1, (18, 18)),     # no padding: flipped padding 2
    (2, 3, 5, (3, 3), (3, 3), (1, 1), 1, (14, 14)),     # padding > (k-1)*d: dx by col2im
    (2, 3, 5, (3, 3), (1, 1), (1, 1), 1, (6, 6)),       # small plane: im2col tiles, flipped dx
    (1, 3, 32, (3, 3), (1, 1), (1, 1), 1, (32, 32)),    # batch 1: 4+ bands, shared out by threads
    (1, 4, 6, (3, 3), (1, 1), (1, 1), 2, (35, 17)),     # batch 1, groups, 35 rows in 4 bands
]


@pytest.fixture(autouse=True)
def _direct_lowering():
    """These are the direct lowerings' tests: 3x3 layers with 32+ channels
    would otherwise take Winograd (tests/test_conv_winograd.py)."""
    before = an.get_conv_winograd()
    an.set_conv_winograd(False)
    yield
    an.set_conv_winograd(before)


def _inputs(case, seed=0):
    n, cin, cout, (kh, kw), _, _, g, (h, w) = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, cin, h, w)).astype(np.float32)
    wt = (rng.standard_normal((cout, cin // g, kh, kw)) / np.sqrt(cin // g * kh * kw)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    return x, wt, b


@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
def test_stride1_conv_matches_torch(case):
    torch = torch_or_skip()
    torch.set_num_threads(1)
    n, cin, cout, k, p, d, g, _ = case
    x, w, b = _inputs(case)
    ax, aw, ab = (an.tensor(v, requires_grad=True) for v in (x, w, b))
    y = F.conv2d(ax, aw, ab, 1, p, d, g)
    gy = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    y.backward(an.tensor(gy))

    tx, tw, tb = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, 1, p, d, g)
    ty.backward(torch.tensor(gy, dtype=torch.float64))
    assert y.shape == tuple(ty.shape)
    scale = np.sqrt(cin // g * k[0] * k[1])
    np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(ax.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-4 * np.sqrt(cout))
    np.testing.assert_allclose(aw.grad.numpy(), tw.grad.numpy(), rtol=1e-4,
                               atol=1e-4 * np.sqrt(n * y.shape[2] * y.shape[3]))
    np.testing.assert_allclose(ab.grad.numpy(), tb.grad.numpy(), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("case", [CASES[0], CASES[4], CASES[5], (37, 4, 6, (3, 3), (1, 1), (1, 1), 1, (6, 6)),
                                  CASES[-2], CASES[-1]],
                         ids=["resnet", "bands", "groups", "37-images", "batch-1", "batch-1-groups"])
def test_stride1_conv_is_identical_for_any_thread_count(case):
    # the weight gradient is summed in up to 16 fixed parts, whatever the
    # number of threads (8 here is more threads than parts of the 3-image
    # cases and fewer than those of 37 images)
    n, cin, cout, k, p, d, g, _ = case
    x, w, b = _inputs(case, seed=3)
    results = []
    previous = an.get_num_threads()
    try:
        for threads in (1, 2, 8):
            an.set_num_threads(threads)
            ax, aw = an.tensor(x, requires_grad=True), an.tensor(w, requires_grad=True)
            y = F.conv2d(ax, aw, an.tensor(b), 1, p, d, g)
            (y * y).sum().backward()
            results.append((y.detach().numpy().copy(), ax.grad.numpy().copy(), aw.grad.numpy().copy()))
    finally:
        an.set_num_threads(previous)
    for first, *others in zip(*results):
        for other in others:
            np.testing.assert_array_equal(first, other)


def test_nan_reaches_only_the_windows_that_cover_it():
    # The padded rows are computed with junk columns in between; a NaN next
    # to the padding must not leak into them or into the next row's outputs.
    x = np.ones((2, 3, 20, 20), dtype=np.float32)
    x[1, 2, 7, 19] = np.nan  # last column of a row
    w = np.ones((4, 3, 3, 3), dtype=np.float32)
    y = F.conv2d(an.tensor(x), an.tensor(w), None, 1, 1).numpy()
    covered = np.zeros_like(y, dtype=bool)
    covered[1, :, 6:9, 18:20] = True
    assert np.isnan(y[covered]).all()
    assert np.isfinite(y[~covered]).all()
    # and in the data gradient, through the flipped kernel
    ax = an.tensor(np.ones((1, 2, 18, 18), dtype=np.float32), requires_grad=True)
    out = F.conv2d(ax, an.tensor(np.ones((3, 2, 3, 3), dtype=np.float32)), None, 1, 1)
    gy = np.zeros(out.shape, dtype=np.float32)
    gy[0, 1, 0, 17] = np.nan
    out.backward(an.tensor(gy))
    dx = ax.grad.numpy()
    hit = np.zeros_like(dx, dtype=bool)
    hit[0, :, 0:2, 16:18] = True
    assert np.isnan(dx[hit]).all()
    assert np.isfinite(dx[~hit]).all()


@pytest.mark.parametrize("size", [20, 6], ids=["padded-image", "padded-tile"])
def test_nan_reaches_only_the_weight_taps_that_read_it(size):
    # pixel (3, 0) of channel 1: with 3x3 padding 1, the kernel column 2 never
    # reads column 0 (its output would be ow = -1), every other tap does
    x = np.ones((2, 3, size, size), dtype=np.float32)
    x[1, 1, 3, 0] = np.nan
    w = an.tensor(np.ones((4, 3, 3, 3), dtype=np.float32), requires_grad=True)
    F.conv2d(an.tensor(x), w, None, 1, 1).sum().backward()
    dw = w.grad.numpy()
    read = np.zeros_like(dw, dtype=bool)
    read[:, 1, :, :2] = True
    assert np.isnan(dw[read]).all()
    assert np.isfinite(dw[~read]).all()


# Strided layers with 256+ outputs read the stride phases of the padded image
# in place (implicit_gemm_strided); their backward stays with im2col tiles.
# On AVX-512, stride-2 layers with output rows of up to 16 gather from x
# instead (GATHER_CASES below): here the ResNet-20 and 1x1 cases.
# (N, C_in, C_out, (kh, kw), (sh, sw), (ph, pw), (dh, dw), groups, (H, W))
STRIDED_CASES = [
    (2, 16, 32, (3, 3), (2, 2), (1, 1), (1, 1), 1, (32, 32)),   # ResNet-20 downsampling
    (2, 3, 16, (7, 7), (2, 2), (3, 3), (1, 1), 1, (32, 32)),    # ResNet stem: 4 taps per phase
    (2, 6, 10, (5, 5), (2, 2), (2, 2), (1, 1), 2, (33, 35)),    # odd sizes: uneven phases, groups
    (2, 8, 12, (1, 1), (2, 2), (0, 0), (1, 1), 1, (32, 32)),    # 1x1 downsample: one phase read
    (2, 4, 5, (3, 3), (2, 1), (1, 1), (1, 1), 1, (40, 17)),     # stride in one axis only
    (1, 4, 6, (3, 3), (2, 2), (2, 2), (2, 2), 1, (34, 34)),     # dilation 2: taps in one phase
    (1, 3, 4, (3, 3), (3, 3), (0, 1), (1, 1), 1, (50, 49)),     # stride 3, padding in one axis
]


def _strided_inputs(case, seed):
    n, cin, cout, (kh, kw), _, _, _, g, (h, w) = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, cin, h, w)).astype(np.float32)
    wt = (rng.standard_normal((cout, cin // g, kh, kw)) / np.sqrt(cin // g * kh * kw)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    return x, wt, b


def _run_strided(case, x, wt, b, gy_seed):
    """y, dx, dw of the case's convolution, dy drawn from gy_seed; and dy."""
    _, _, _, _, s, p, d, g, _ = case
    ax, aw, ab = (an.tensor(v, requires_grad=True) for v in (x, wt, b))
    y = F.conv2d(ax, aw, ab, s, p, d, g)
    gy = np.random.default_rng(gy_seed).standard_normal(y.shape).astype(np.float32)
    y.backward(an.tensor(gy))
    return (y.detach().numpy(), ax.grad.numpy(), aw.grad.numpy()), gy


def _strided_on_one_and_two_threads(case, x, wt, b, gy_seed):
    """_run_strided on 1 and 2 threads, asserted bit-identical: ([results
    on 1, on 2], dy)."""
    results = []
    previous = an.get_num_threads()
    try:
        for threads in (1, 2):
            an.set_num_threads(threads)
            out, gy = _run_strided(case, x, wt, b, gy_seed)
            results.append(out)
    finally:
        an.set_num_threads(previous)
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)
    return results, gy


def _assert_strided_matches_torch(case, x, wt, b, gy, results):
    torch = torch_or_skip()
    torch.set_num_threads(1)
    n, cin, cout, (kh, kw), s, p, d, g, _ = case
    tx, tw, tb = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (x, wt, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, s, p, d, g)
    ty.backward(torch.tensor(gy, dtype=torch.float64))
    y, dx, dw = results
    assert y.shape == tuple(ty.shape)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-4, atol=1e-5 * np.sqrt(cin * kh * kw))
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-4, atol=1e-4 * np.sqrt(cout))
    np.testing.assert_allclose(dw, tw.grad.numpy(), rtol=1e-4,
                               atol=1e-4 * np.sqrt(n * y.shape[2] * y.shape[3]))


@pytest.mark.parametrize("case", STRIDED_CASES, ids=[str(c) for c in STRIDED_CASES])
def test_strided_conv_matches_torch(case):
    torch_or_skip()
    x, wt, b = _strided_inputs(case, seed=11)
    results, gy = _run_strided(case, x, wt, b, gy_seed=12)
    assert results[0].shape[2] * results[0].shape[3] >= 256  # large planes
    _assert_strided_matches_torch(case, x, wt, b, gy, results)


def test_strided_conv_identical_for_any_thread_count_and_nan_stays_in_its_windows():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((5, 16, 32, 32)).astype(np.float32)
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    outs = []
    previous = an.get_num_threads()
    try:
        for threads in (1, 2, 8):
            an.set_num_threads(threads)
            outs.append(F.conv2d(an.tensor(x), an.tensor(w), None, 2, 1).numpy())
    finally:
        an.set_num_threads(previous)
    for other in outs[1:]:
        np.testing.assert_array_equal(outs[0], other)
    # a NaN at the last column of an odd row: with stride 2 it is read only by
    # output column 15 (taps kj = 1 and 2 of windows starting at 29 and 31)
    x = np.ones((1, 2, 32, 32), dtype=np.float32)
    x[0, 1, 9, 31] = np.nan
    y = F.conv2d(an.tensor(x), an.tensor(np.ones((3, 2, 3, 3), np.float32)), None, 2, 1).numpy()
    covered = np.zeros_like(y, dtype=bool)
    covered[0, :, 4:6, 15] = True  # rows 8..10 and 10..12 hold input row 9
    assert np.isnan(y[covered]).all()
    assert np.isfinite(y[~covered]).all()


# Strided layers on small planes take tiles of whole images: each image is
# split into its stride phases in the column workspace (pad_tile), and the
# forward's B panels and the weight gradient's taps are copied from there.
# (N, C_in, C_out, (kh, kw), (sh, sw), (ph, pw), (dh, dw), groups, (H, W))
SMALL_STRIDED_CASES = [
    (12, 32, 64, (3, 3), (2, 2), (1, 1), (1, 1), 1, (16, 16)),  # ResNet-20 stage 3 downsampling
    (9, 6, 10, (3, 3), (2, 2), (1, 1), (1, 1), 2, (9, 7)),      # odd planes: uneven phases, groups
    (8, 5, 7, (5, 5), (2, 2), (2, 2), (1, 1), 1, (12, 12)),     # 5x5: 3 taps in one phase, 2 in the other
    (8, 4, 6, (3, 3), (2, 2), (0, 0), (1, 1), 1, (11, 10)),     # no padding
    (8, 4, 6, (3, 3), (2, 2), (2, 1), (2, 1), 1, (12, 12)),     # dilation 2 in one axis, padding 2 / 1
    (10, 3, 5, (3, 3), (3, 2), (1, 0), (1, 1), 1, (14, 13)),    # strides 3 and 2: the general phases
    (16, 8, 12, (1, 1), (2, 2), (0, 0), (1, 1), 1, (12, 12)),   # 1x1 downsample: only phase (0, 0) copied
    (8, 4, 6, (2, 2), (3, 3), (0, 0), (1, 1), 1, (14, 14)),     # 2 taps of stride 3: phase 2 never read
]


@pytest.mark.parametrize("case", SMALL_STRIDED_CASES, ids=[str(c) for c in SMALL_STRIDED_CASES])
def test_strided_small_planes_through_phase_tiles_match_torch(case):
    torch_or_skip()
    x, wt, b = _strided_inputs(case, seed=13)
    results, gy = _strided_on_one_and_two_threads(case, x, wt, b, gy_seed=14)
    assert results[0][0].shape[2] * results[0][0].shape[3] < 256  # not the in-place strided path
    _assert_strided_matches_torch(case, x, wt, b, gy, results[0])


# Stride-2 layers whose output rows are at most 16 wide gather their B panels
# straight from x on AVX-512 (an_im2col_stride2_panel_avx512): two masked
# loads and an even-lane permute per tap and output row, small and large
# planes alike.  Other CPUs take the stride phases above, so these cases
# check whichever path the machine has.  Output widths 1..17 (17: back to
# the phases), spans of one vector (rows of up to 8 outputs) and of two, a
# tap's span starting before the row and ending past it, kernels 1-7.
# (N, C_in, C_out, (kh, kw), (ph, pw), groups, (H, W))
GATHER_CASES = [
    (3, 5, 7, (3, 3), (1, 1), 1, (16, 16)),    # ResNet's 3x3/2: 8 outputs, one vector
    (2, 4, 6, (3, 3), (1, 1), 1, (32, 32)),    # 16 outputs: two vectors per span
    (2, 4, 6, (3, 3), (1, 1), 1, (31, 31)),    # 16 outputs, the last tap's span ends past the row
    (2, 4, 6, (3, 3), (1, 1), 1, (33, 33)),    # 17 outputs: the phases
    (4, 3, 5, (3, 3), (1, 1), 1, (17, 15)),    # 9 x 8 outputs: runs split across panels
    (5, 3, 5, (3, 3), (1, 1), 1, (2, 1)),      # one output column
    (2, 6, 8, (1, 1), (0, 0), 1, (32, 32)),    # 1x1/2 shortcut, 16 outputs
    (6, 6, 8, (1, 1), (0, 0), 1, (9, 9)),      # 1x1/2 on an odd plane
    (2, 3, 8, (7, 7), (3, 3), 1, (32, 32)),    # 7x7 stem: spans 3 before and 3 past the row
    (3, 4, 6, (5, 3), (2, 0), 2, (20, 23)),    # rectangular kernel, no column padding, groups
    (3, 4, 6, (2, 2), (0, 0), 1, (12, 12)),    # even kernel
    (1, 8, 16, (3, 3), (1, 1), 1, (32, 32)),   # batch 1: bands of one image
]


@pytest.mark.parametrize("case", GATHER_CASES, ids=[str(c) for c in GATHER_CASES])
def test_stride2_gathered_panels_match_torch_on_any_thread_count(case):
    torch_or_skip()
    n, cin, cout, k, p, g, hw = case
    full = (n, cin, cout, k, (2, 2), p, (1, 1), g, hw)
    x, wt, b = _strided_inputs(full, seed=15)
    results, gy = _strided_on_one_and_two_threads(full, x, wt, b, gy_seed=16)
    _assert_strided_matches_torch(full, x, wt, b, gy, results[0])


GUARDED_CHILD = r"""
import ctypes, mmap, sys
import numpy as np
import appealnet as an
from appealnet.nn import functional as F
page = mmap.PAGESIZE
libc = ctypes.CDLL(None, use_errno=True)
libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
for shape, k, p in (((1, page // 4 // 256, 16, 16), 3, 1), ((1, page // 4 // 1024, 32, 32), 3, 1),
                    ((1, page // 4 // 1024, 32, 32), 1, 0), ((1, page // 4 // 1024, 32, 32), 7, 3)):
    area = mmap.mmap(-1, 3 * page)
    floats = np.frombuffer(area, dtype=np.float32)
    base = floats.ctypes.data
    # x fills the middle page exactly; the pages before and after fault
    x = floats[page // 4: 2 * page // 4].reshape(shape)
    x[...] = np.random.default_rng(0).standard_normal(shape)
    for at in (base, base + 2 * page):
        assert libc.mprotect(at, page, 0) == 0, ctypes.get_errno()
    w = np.random.default_rng(1).standard_normal((4, shape[1], k, k)).astype(np.float32)
    results = []
    for source in (an.from_numpy(x), an.tensor(x.copy())):
        weight = an.tensor(w, requires_grad=True)
        y = F.conv2d(source, weight, None, 2, p)
        y.backward(an.tensor(np.ones(y.shape, np.float32)))  # the weight gradient reads x too
        results.append((y.detach().numpy(), weight.grad.numpy()))
    for guarded, reference in zip(*results):
        np.testing.assert_array_equal(guarded, reference)
    for at in (base, base + 2 * page):
        libc.mprotect(at, page, 3)
print("ok")
"""


@pytest.mark.skipif(sys.platform != "linux", reason="mprotect guard pages through ctypes: Linux only")
def test_stride2_gather_reads_nothing_outside_x():
    """x alone on a page between two inaccessible ones: the masked loads of
    taps whose span starts before the first row or ends past the last, in
    the forward and in the weight gradient's gather, read none of the lanes
    outside it (a read there would kill the child)."""
    from gradcheck import run_python
    proc = run_python(["-c", GUARDED_CHILD], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
