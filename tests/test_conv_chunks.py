"""conv2d's im2col + GEMM lowering in tiles (csrc/ops/conv.c): small output
planes batch several images into one GEMM, large ones split each image into
bands of output rows, and a huge column matrix limits the images per tile.
Each regime is compared with torch in float64, forward and both gradients,
with several chunks and an uneven batch; and results are bit-identical for
1 and 2 threads."""
import numpy as np
import pytest

import appealnet as an
from appealnet.nn import functional as F
from gradcheck import torch_or_skip

# (N, C_in, C_out, kernel, stride, padding, dilation, groups, H): a tile is
# about 512 output positions: whole images (within 8 MB of workspace) or a
# band of rows of one image.
CASES = [
    (37, 8, 12, 3, 1, 1, 1, 1, 4),     # 16 positions: 32-image chunks, balanced to 19 + 18
    (40, 6, 10, 3, 2, 1, 1, 2, 8),     # stride 2, groups 2, 16 positions per image
    (21, 16, 24, 1, 1, 0, 1, 1, 4),    # 1x1 on a 4x4 plane: im2col is a plane copy, 21 images a tile
    (70, 8, 6, 1, 1, 0, 1, 2, 3),      # 1x1, groups 2, 3x3 plane: tiles of 35 images, 2 dW parts
    (3, 6, 4, 1, 1, 0, 1, 2, 24),      # 1x1, groups 2, 24x24: read in place, two bands of 12 rows
    (9, 12, 8, 1, 2, 0, 1, 1, 8),      # strided 1x1 (ResNet downsampling)
    (5, 4, 6, 3, 1, 2, 2, 1, 16),      # dilation 2, 256 positions: 2-image chunks
    (3, 5, 7, 3, 1, 1, 1, 1, 24),      # 576 positions: two bands of 12 rows, GEMM writes y in place
    (2, 3, 5, 3, 2, 1, 2, 1, 70),      # stride 2, dilation 2, 34x34 output: three bands
    (2, 4, 6, 5, 1, 2, 1, 2, 33),      # 5x5, groups 2, odd rows: bands of 17 + 16
    (3, 520, 4, 3, 1, 1, 1, 1, 12),    # 12x12 = 144 positions but 4680 x 144 columns per image:
                                       # the 8 MB budget keeps it to 2 images per tile
    (50, 256, 512, 3, 1, 1, 1, 1, 4),  # 1.2M weights: dW tiles (25 + 25 images) one after
                                       # another, each padded over the threads
]


def _inputs(case, seed=0):
    n, cin, cout, k, s, p, d, g, h = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, cin, h, h)).astype(np.float32)
    w = (rng.standard_normal((cout, cin // g, k, k)) / np.sqrt(cin // g * k * k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    return x, w, b


@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
def test_chunked_conv_matches_torch(case):
    torch = torch_or_skip()
    torch.set_num_threads(1)
    n, cin, cout, k, s, p, d, g, h = case
    x, w, b = _inputs(case)
    ax, aw, ab = (an.tensor(v, requires_grad=True) for v in (x, w, b))
    y = F.conv2d(ax, aw, ab, s, p, d, g)
    rng = np.random.default_rng(1)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(an.tensor(gy))

    tx, tw, tb = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, s, p, d, g)
    ty.backward(torch.tensor(gy, dtype=torch.float64))
    scale = np.sqrt(cin // g * k * k)
    np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(ax.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(aw.grad.numpy(), tw.grad.numpy(), rtol=1e-4, atol=1e-4 * np.sqrt(n * h * h))
    np.testing.assert_allclose(ab.grad.numpy(), tb.grad.numpy(), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[6], CASES[11]],
                         ids=["images", "groups", "bands", "serial dW tiles"])
def test_chunked_conv_is_identical_for_1_and_2_threads(case):
    n, cin, cout, k, s, p, d, g, h = case
    x, w, b = _inputs(case, seed=3)
    results = []
    previous = an.get_num_threads()
    try:
        for threads in (1, 2):
            an.set_num_threads(threads)
            ax, aw = an.tensor(x, requires_grad=True), an.tensor(w, requires_grad=True)
            y = F.conv2d(ax, aw, an.tensor(b), s, p, d, g)
            (y * y).sum().backward()
            results.append((y.detach().numpy().copy(), ax.grad.numpy().copy(), aw.grad.numpy().copy()))
    finally:
        an.set_num_threads(previous)
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


def test_chunked_conv_propagates_nan_only_into_its_image():
    case = CASES[0]
    x, w, _ = _inputs(case)
    x[5, 2, 1, 1] = np.nan
    y = F.conv2d(an.tensor(x), an.tensor(w), None, 1, 1).numpy()
    assert np.isnan(y[5]).any()
    # the other images share the GEMM with image 5 but not its columns
    assert np.isfinite(np.delete(y, 5, axis=0)).all()
