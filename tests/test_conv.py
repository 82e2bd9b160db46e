"""conv2d: forward against a direct float64 convolution written here,
gradients by finite differences for each implementation (depthwise,
pointwise, im2col + GEMM), forward + backward against torch on layer shapes
of real networks, layouts, empty inputs, NaN, errors, determinism."""
import numpy as np
import pytest

import appealnet as an
from appealnet.nn import functional as F
from gradcheck import check_op, torch_or_skip


def conv_ref(x, w, b=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    """Direct convolution in float64: a loop over the kernel taps, each a
    strided slice of the zero-padded input contracted over its channels."""
    n, c, h, wd = x.shape
    cout, cg, kh, kw = w.shape
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    xp[:, :, ph:ph + h, pw:pw + wd] = x
    og = cout // groups
    y = np.zeros((n, cout, oh, ow))
    for g in range(groups):
        xg = xp[:, g * cg:(g + 1) * cg]
        wg = w[g * og:(g + 1) * og]
        for i in range(kh):
            for j in range(kw):
                patch = xg[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]
                y[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, wg[:, :, i, j])
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


def conv(stride=1, padding=0, dilation=1, groups=1):
    return lambda x, w, b=None: F.conv2d(x, w, b, stride, padding, dilation, groups)


def ref(stride=1, padding=0, dilation=1, groups=1):
    pair = lambda v: (v, v) if isinstance(v, int) else v
    return lambda x, w, b=None: conv_ref(x, w, b, pair(stride), pair(padding), pair(dilation), groups)


def rand(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def backward_with(out, cotangent):
    out.backward(an.tensor(np.asarray(cotangent, dtype=np.float32)))


# ----------------------------------------------- finite differences, per implementation
GRAD_CASES = [
    # name, x shape, w shape, stride, padding, dilation, groups
    ("general 3x3 pad", (2, 3, 5, 5), (4, 3, 3, 3), 1, 1, 1, 1),
    ("general stride 2 asym", (1, 2, 6, 5), (3, 2, 3, 2), (2, 1), (1, 0), 1, 1),
    ("general dilation 2", (1, 2, 7, 6), (2, 2, 3, 3), 1, 2, 2, 1),
    ("general grouped", (2, 4, 5, 4), (6, 2, 3, 3), 1, 1, 1, 2),
    ("pointwise", (2, 4, 3, 3), (5, 4, 1, 1), 1, 0, 1, 1),
    ("pointwise grouped", (2, 6, 3, 2), (3, 2, 1, 1), 1, 0, 1, 3),
    ("pointwise stride 2 (general)", (1, 3, 5, 5), (2, 3, 1, 1), 2, 0, 1, 1),
    ("depthwise", (2, 3, 5, 5), (3, 1, 3, 3), 1, 1, 1, 3),
    ("depthwise multiplier 2 stride 2", (1, 2, 6, 7), (4, 1, 3, 3), 2, 1, 1, 2),
    ("depthwise 5x5 dilated", (1, 2, 9, 9), (2, 1, 5, 5), 1, 2, 2, 2),
]


@pytest.mark.parametrize("case", GRAD_CASES, ids=[c[0] for c in GRAD_CASES])
def test_conv2d_forward_and_grad(case):
    _, xs, ws, stride, padding, dilation, groups = case
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])]
    check_op(conv(stride, padding, dilation, groups), ref(stride, padding, dilation, groups), arrays)


def test_conv2d_without_bias_grad():
    rng = np.random.default_rng(1)
    check_op(conv(1, 1), ref(1, 1), [rng.standard_normal((1, 2, 4, 4)), rng.standard_normal((3, 2, 3, 3))])


# ----------------------------------------------------- torch on real layer shapes
TORCH_CASES = [
    # name, x shape, w shape, stride, padding, dilation, groups
    ("resnet 3x3 64->64", (2, 64, 16, 16), (64, 64, 3, 3), 1, 1, 1, 1),
    ("resnet 3x3 64->128 s2", (2, 64, 16, 16), (128, 64, 3, 3), 2, 1, 1, 1),
    ("resnet 1x1 downsample s2", (2, 64, 16, 16), (128, 64, 1, 1), 2, 0, 1, 1),
    ("resnet stem 7x7 s2", (1, 3, 32, 32), (16, 3, 7, 7), 2, 3, 1, 1),
    ("mobilenetv2 expand 1x1", (2, 16, 16, 16), (96, 16, 1, 1), 1, 0, 1, 1),
    ("mobilenetv2 depthwise s2", (2, 96, 16, 16), (96, 1, 3, 3), 2, 1, 1, 96),
    ("mobilenetv2 project 1x1", (2, 96, 8, 8), (24, 96, 1, 1), 1, 0, 1, 1),
    ("shufflenet grouped 1x1 g3", (2, 240, 8, 8), (60, 80, 1, 1), 1, 0, 1, 3),
    ("efficientnet 5x5 depthwise", (2, 40, 14, 14), (40, 1, 5, 5), 1, 2, 1, 40),
    ("efficientnet 5x5 depthwise s2", (1, 24, 15, 15), (24, 1, 5, 5), 2, 2, 1, 24),
    # depthwise on planes up to 16x16 runs 16 channels at a time, channels-last
    # (except 3x3 stride 1 on rows a multiple of 16 wide: row by row, below)
    ("depthwise 4x4, 40 channels (16-channel blocks + 8)", (3, 40, 4, 4), (40, 1, 3, 3), 1, 1, 1, 40),
    ("depthwise 2x2, 5x5 kernel, 17 channels", (2, 17, 2, 2), (17, 1, 5, 5), 1, 2, 1, 17),
    ("depthwise 16x16, 20 channels", (2, 20, 16, 16), (20, 1, 3, 3), 1, 1, 1, 20),
    ("depthwise 8x8 dilation 2", (2, 24, 8, 8), (24, 1, 3, 3), 1, 2, 2, 24),
    ("depthwise 7x7 s2, 19 channels", (2, 19, 7, 7), (19, 1, 3, 3), 2, 1, 1, 19),
    ("depthwise 8x8 unpadded", (1, 16, 8, 8), (16, 1, 3, 3), 1, 0, 1, 16),
    # 3x3 stride 1 on planes 4 or 8 wide (whole vectors): flattened, four
    # vectors at a time (one plane of 8x8, two of 8x4, four of 4x4; a last
    # group past the final plane), the data gradient too
    ("depthwise 8x8 flattened", (2, 20, 8, 8), (20, 1, 3, 3), 1, 1, 1, 20),
    ("depthwise 4x4 flattened, 13 planes", (1, 13, 4, 4), (13, 1, 3, 3), 1, 1, 1, 13),
    ("depthwise 8x4 flattened, 7 planes", (1, 7, 8, 4), (7, 1, 3, 3), 1, 1, 1, 7),
    ("depthwise 4x8 flattened", (3, 5, 4, 8), (5, 1, 3, 3), 1, 1, 1, 5),
    ("depthwise 16x8 flattened (two groups a plane)", (2, 3, 16, 8), (3, 1, 3, 3), 1, 1, 1, 3),
    ("depthwise 12x4 (three vectors: channels-last)", (1, 5, 12, 4), (5, 1, 3, 3), 1, 1, 1, 5),
    # planes over 16x16 with rows a multiple of 16 wide run row by row; the
    # data gradient (a stride-1 convolution of dy) takes that path too
    ("depthwise 32x32 rows", (2, 5, 32, 32), (5, 1, 3, 3), 1, 1, 1, 5),
    ("depthwise 17x32 rows", (1, 3, 17, 32), (3, 1, 3, 3), 1, 1, 1, 3),
    # rows in blocks of 4 read straight from x: one vector per row (both
    # ends zero-filled in registers), three per row (an interior vector),
    # and fewer rows than a block
    ("depthwise 18x16 rows", (2, 3, 18, 16), (3, 1, 3, 3), 1, 1, 1, 3),
    ("depthwise 6x48 rows", (1, 4, 6, 48), (4, 1, 3, 3), 1, 1, 1, 4),
    ("depthwise 3x96 rows", (1, 2, 3, 96), (2, 1, 3, 3), 1, 1, 1, 2),
    ("depthwise 32x32 s2 (even/odd columns)", (2, 5, 32, 32), (5, 1, 3, 3), 2, 1, 1, 5),
    ("depthwise 64x64 s2 (even/odd columns)", (1, 2, 64, 64), (2, 1, 3, 3), 2, 1, 1, 2),
    ("depthwise 33x32 s2 (last row's window off the bottom)", (1, 3, 33, 32), (3, 1, 3, 3), 2, 1, 1, 3),
    ("depthwise 6x96 s2 (three vectors per row)", (1, 2, 6, 96), (2, 1, 3, 3), 2, 1, 1, 2),
    ("dilation 2", (2, 8, 12, 12), (8, 8, 3, 3), 1, 2, 2, 1),
    # the data gradient's flipped weights are built in blocks of 16 input
    # channels over threads: 36 per group is two blocks and a part block
    ("grouped 3x3, 36 channels a group (flip blocks 16 + 16 + 4)",
     (2, 72, 6, 6), (128, 36, 3, 3), 1, 1, 1, 2),
    ("odd sizes 7x5", (3, 4, 7, 5), (3, 4, 3, 3), (2, 1), (1, 2), 1, 1),
    # the direct kernel for few input channels (a first layer) and its edges
    ("first layer 3->32 on 32x32 (direct)", (2, 3, 32, 32), (32, 3, 3, 3), 1, 1, 1, 1),
    ("4->8 on 5x48 (direct, 32 + 16 columns)", (1, 4, 5, 48), (8, 4, 3, 3), 1, 1, 1, 1),
    ("5->8 on 16x16 (too many channels for it)", (1, 5, 16, 16), (8, 5, 3, 3), 1, 1, 1, 1),
]


@pytest.mark.parametrize("case", TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_conv2d_against_torch(case):
    torch = torch_or_skip()
    torch.set_num_threads(1)
    _, xs, ws, stride, padding, dilation, groups = case
    rng = np.random.default_rng(2)
    fan_in = ws[1] * ws[2] * ws[3]
    x, w, b = rand(rng, *xs), rand(rng, *ws, scale=fan_in ** -0.5), rand(rng, ws[0])
    tx, tw, tb = (an.tensor(v, requires_grad=True) for v in (x, w, b))
    out = F.conv2d(tx, tw, tb, stride, padding, dilation, groups)
    g = rand(rng, *out.shape)
    backward_with(out, g)
    ts = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (x, w, b)]
    expected = torch.nn.functional.conv2d(*ts, stride=stride, padding=padding, dilation=dilation, groups=groups)
    expected.backward(torch.tensor(g, dtype=torch.float64))
    assert out.shape == tuple(expected.shape)
    np.testing.assert_allclose(out.detach().numpy(), expected.detach().numpy(), rtol=1e-4, atol=1e-4)
    # weight/bias grads sum over batch and plane: scale the tolerance with that count
    for mine, theirs in zip((tx, tw, tb), ts):
        ref_grad = theirs.grad.numpy()
        atol = 1e-5 * max(1.0, np.abs(ref_grad).max())
        np.testing.assert_allclose(mine.grad.numpy(), ref_grad, rtol=1e-4, atol=atol)


# -------------------------------------------------------------- layouts, edges
def test_conv2d_non_contiguous_input_and_weight():
    rng = np.random.default_rng(3)
    x_nhwc = rand(rng, 2, 6, 7, 4)
    x = x_nhwc.transpose(0, 3, 1, 2)                       # NCHW view of NHWC memory
    w = rand(rng, 4, 2, 3, 3)
    w_strided = rand(rng, 4, 4, 3, 3)[:, ::2]               # [4, 2, 3, 3] non-contiguous
    for weight in (w, w_strided):
        got = F.conv2d(an.from_numpy(x), an.from_numpy(weight), None, 1, 1, 1, 2).numpy()
        expected = F.conv2d(an.tensor(np.ascontiguousarray(x)), an.tensor(np.ascontiguousarray(weight)),
                            None, 1, 1, 1, 2).numpy()
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_allclose(got, conv_ref(x, weight, padding=(1, 1), groups=2), rtol=1e-4, atol=1e-4)


def test_conv2d_empty_batch_and_zero_channels():
    w = an.tensor(np.ones((4, 3, 3, 3), np.float32), requires_grad=True)
    b = an.tensor(np.arange(4, dtype=np.float32), requires_grad=True)
    x = an.tensor(np.zeros((0, 3, 5, 5), np.float32), requires_grad=True)
    out = F.conv2d(x, w, b, 1, 1, 1, 1)
    assert out.shape == (0, 4, 5, 5)
    backward_with(out, np.zeros((0, 4, 5, 5)))
    assert x.grad.shape == (0, 3, 5, 5)
    np.testing.assert_array_equal(w.grad.numpy(), np.zeros((4, 3, 3, 3)))
    np.testing.assert_array_equal(b.grad.numpy(), np.zeros(4))
    # no input channels: the output is the bias alone
    out = F.conv2d(an.zeros((2, 0, 4, 4)), an.zeros((3, 0, 3, 3)), an.tensor([1.0, 2.0, 3.0]), 1, 0, 1, 1)
    np.testing.assert_array_equal(out.numpy(), np.broadcast_to(np.array([1, 2, 3], np.float32).reshape(1, 3, 1, 1), (2, 3, 2, 2)))


@pytest.mark.parametrize("groups,ws", [(1, (2, 3, 3, 3)), (3, (3, 1, 3, 3)), (1, (2, 3, 1, 1))])
def test_conv2d_nan_propagates_to_covering_windows(groups, ws):
    # (6x6 planes; the depthwise fast paths for 32x32 planes are checked below)
    x = np.zeros((1, 3, 6, 6), np.float32)
    x[0, 0, 2, 2] = np.nan
    out = F.conv2d(an.tensor(x), an.tensor(np.ones(ws, np.float32)), None, 1, 0, 1, groups).numpy()
    k = ws[2]
    nan_rows = slice(max(0, 2 - k + 1), 3)
    expected = np.zeros(out.shape, bool)
    out_channels = range(out.shape[1]) if groups == 1 else [0]
    for co in out_channels:
        expected[0, co, nan_rows, nan_rows] = True
    np.testing.assert_array_equal(np.isnan(out), expected)


def test_conv2d_grad_with_only_weight_requiring_grad():
    rng = np.random.default_rng(4)
    x, w = rand(rng, 2, 3, 6, 6), rand(rng, 4, 3, 3, 3)
    tw = an.tensor(w, requires_grad=True)
    out = F.conv2d(an.tensor(x), tw, None, 2, 1, 1, 1)
    g = np.ones(out.shape, np.float32)
    backward_with(out, g)
    # dW[o, c, i, j] = sum over images and outputs of the tapped input
    num = np.zeros(w.shape)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    for i in range(3):
        for j in range(3):
            num[:, :, i, j] = xp[:, :, i:i + 6:2, j:j + 6:2].sum(axis=(0, 2, 3))
    np.testing.assert_allclose(tw.grad.numpy(), num, rtol=1e-5, atol=1e-5)


CONV_ERRORS = [
    ((2, 4, 8, 8), (6, 2, 3, 3), dict(groups=3), r"conv2d: input channels 4 \(input \[2, 4, 8, 8\]\) are not divisible by groups=3"),
    ((2, 6, 8, 8), (4, 2, 3, 3), dict(groups=3), r"conv2d: output channels 4 \(weight \[4, 2, 3, 3\]\) are not divisible by groups=3"),
    ((1, 4, 8, 8), (64, 3, 3, 3), dict(), r"conv2d: input \[1, 4, 8, 8\] has 4 channels, but weight \[64, 3, 3, 3\] with groups=1 expects 3"),
    ((1, 3, 4, 4), (2, 3, 5, 5), dict(), r"conv2d: kernel size \(5, 5\) \(dilated\) is larger than the padded input \(4, 4\)"),
    ((1, 3, 4, 4), (2, 3, 3, 3), dict(dilation=2), r"conv2d: kernel size \(5, 5\) \(dilated\) is larger than the padded input \(4, 4\)"),
    ((3, 4), (2, 3, 3, 3), dict(), r"conv2d: expected input of shape \[N, C, H, W\], got \[3, 4\]"),
    ((1, 3, 8, 8), (2, 3, 3), dict(), r"conv2d: expected weight of shape \[C_out, C_in/groups, kh, kw\], got \[2, 3, 3\]"),
    ((1, 3, 8, 8), (2, 3, 3, 3), dict(stride=0), r"conv2d: stride must be >= 1, got \(0, 0\)"),
    ((1, 3, 8, 8), (2, 3, 3, 3), dict(padding=(-1, 0)), r"conv2d: padding must be >= 0, got \(-1, 0\)"),
    ((1, 3, 8, 8), (2, 3, 3, 3), dict(dilation=(1, 0)), r"conv2d: dilation must be >= 1, got \(1, 0\)"),
    ((1, 3, 8, 8), (2, 3, 3, 3), dict(groups=0), r"conv2d: groups must be >= 1, got 0"),
]


@pytest.mark.parametrize("xs,ws,kwargs,message", CONV_ERRORS)
def test_conv2d_errors(xs, ws, kwargs, message):
    with pytest.raises(ValueError, match=message):
        F.conv2d(an.zeros(xs), an.zeros(ws), **kwargs)


def test_conv2d_bias_and_type_errors():
    with pytest.raises(ValueError, match=r"conv2d: expected bias of shape \[2\] for weight \[2, 3, 3, 3\], got \[3\]"):
        F.conv2d(an.zeros((1, 3, 8, 8)), an.zeros((2, 3, 3, 3)), an.zeros(3))
    with pytest.raises(TypeError, match=r"conv2d"):
        F.conv2d(an.zeros((1, 3, 8, 8)), np.zeros((2, 3, 3, 3), np.float32))


@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_nan_on_32x32_planes_reaches_exactly_its_windows(stride):
    """The row-by-row and even/odd-column paths: a NaN input taints the
    outputs whose 3x3 window (padding 1) covers it, and no others."""
    x = np.zeros((1, 2, 32, 32), np.float32)
    x[0, 1, 9, 20] = np.nan
    out = F.conv2d(an.tensor(x), an.tensor(np.ones((2, 1, 3, 3), np.float32)), None, stride, 1, 1, 2).numpy()
    expected = np.zeros(out.shape, bool)
    for oh in range(out.shape[2]):
        for ow in range(out.shape[3]):
            if abs(oh * stride - 9) <= 1 and abs(ow * stride - 20) <= 1:
                expected[0, 1, oh, ow] = True
    np.testing.assert_array_equal(np.isnan(out), expected)


def depthwise_weight_gradient_float64(x, dy):
    """3x3, padding 1, stride 1: the sum over images and valid output
    positions of dy * x, in float64 (IEEE: inf and NaN propagate)."""
    n, c, h, w = x.shape
    xp = np.zeros((n, c, h + 2, w + 2))
    xp[:, :, 1:h + 1, 1:w + 1] = x
    valid = np.zeros((h + 2, w + 2), bool)
    valid[1:h + 1, 1:w + 1] = True
    out = np.zeros((c, 3, 3))
    with np.errstate(invalid="ignore", over="ignore"):
        for i in range(3):
            for j in range(3):
                window = xp[:, :, i:i + h, j:j + w].astype(np.float64)
                products = dy.astype(np.float64) * window
                products[:, :, ~valid[i:i + h, j:j + w]] = 0.0  # padding: no term at all
                out[:, i, j] = products.sum(axis=(0, 2, 3))
    return out.reshape(c, 1, 3, 3)


# Planes wider than 16 columns (a multiple of 8, up to 64x64) sum the 3x3
# weight gradient 8 columns at a time, nine taps in vector registers, from a
# zero-framed copy (weight_grad_3x3_wide); 36 columns take the general loop.
@pytest.mark.parametrize("xs", [(2, 5, 32, 32), (1, 3, 24, 40), (3, 2, 64, 24), (1, 2, 20, 36)])
def test_depthwise_weight_gradient_on_wide_planes(xs):
    """Against float64, the same bits on 1 and 2 threads, and an inf in dy
    on the plane's border reaches only the taps whose window holds it (the
    frame's zeros are not multiplied by it)."""
    rng = np.random.default_rng(xs[2] + xs[3])
    c = xs[1]
    x, w = rand(rng, *xs), rand(rng, c, 1, 3, 3)
    dy = rand(rng, *xs)
    dy[0, 0, 0, 0] = np.inf              # top-left: taps (1,1), (1,2), (2,1), (2,2) see it
    dy[-1, c - 1, xs[2] - 1, xs[3] - 1] = -np.inf   # bottom-right corner
    x[0, 0, 0, 0] = 0.0                  # inf x 0 = NaN for tap (1,1) only
    expected = depthwise_weight_gradient_float64(x, dy)
    threads = an.get_num_threads()
    grads = []
    try:
        for n in (1, 2):
            an.set_num_threads(n)
            tx, tw = an.tensor(x), an.tensor(w, requires_grad=True)
            backward_with(F.conv2d(tx, tw, None, 1, 1, 1, c), dy)
            grads.append(tw.grad.numpy())
    finally:
        an.set_num_threads(threads)
    np.testing.assert_array_equal(grads[0], grads[1])
    got = grads[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(expected))
    assert np.isnan(expected[0, 0, 1, 1]) and np.isfinite(expected[0, 0, 0, :]).all()
    finite = np.isfinite(expected)
    scale = np.sqrt(xs[0] * xs[2] * xs[3])
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("xs,ws,stride,padding,groups", [
    ((2, 32, 24, 24), (48, 32, 3, 3), 1, 1, 1),      # im2col + GEMM
    ((2, 64, 20, 20), (64, 64, 1, 1), 1, 0, 1),      # pointwise
    ((2, 64, 24, 24), (64, 1, 3, 3), 2, 1, 64),      # depthwise
    ((3, 40, 8, 8), (40, 1, 3, 3), 1, 1, 40),        # depthwise 8x8, flattened
    ((1, 45, 4, 4), (45, 1, 3, 3), 1, 1, 45),        # depthwise 4x4, flattened
    # flattened, the second thread's first group of planes an odd one (the
    # copies alternate between two buffers by group parity)
    ((1, 232, 4, 4), (232, 1, 3, 3), 1, 1, 232),
    ((1, 58, 8, 8), (58, 1, 3, 3), 1, 1, 58),
    ((3, 40, 8, 8), (40, 1, 3, 3), 2, 1, 40),        # depthwise, channels-last blocks
    ((2, 20, 32, 32), (20, 1, 3, 3), 1, 1, 20),      # depthwise, row by row
    ((2, 20, 32, 32), (20, 1, 3, 3), 2, 1, 20),      # depthwise stride 2, even/odd columns
    ((2, 24, 16, 16), (24, 8, 3, 3), 1, 1, 3),       # grouped general
])
def test_conv2d_thread_count_does_not_change_results(xs, ws, stride, padding, groups):
    rng = np.random.default_rng(5)
    x = an.tensor(rand(rng, *xs), requires_grad=True)
    w = an.tensor(rand(rng, *ws), requires_grad=True)
    b = an.tensor(rand(rng, ws[0]), requires_grad=True)
    results = []
    prev = an.get_num_threads()
    try:
        for threads in (1, 2):
            an.set_num_threads(threads)
            for t in (x, w, b):
                t.grad = None
            out = F.conv2d(x, w, b, stride, padding, 1, groups)
            backward_with(out, np.cos(np.arange(np.prod(out.shape))).reshape(out.shape))
            results.append((out.detach().numpy(), x.grad.numpy(), w.grad.numpy(), b.grad.numpy()))
    finally:
        an.set_num_threads(prev)
    for p, q in zip(*results):
        np.testing.assert_array_equal(p, q)


# 1x1 layers on planes under 128 pixels run several whole images per GEMM,
# whose B panels are read straight from x (pack_pointwise_panel, and
# pack_pointwise_taps_panel for the weight gradient): runs of columns that
# cross images inside a panel (planes of 9, 25, 49 and 64 pixels, 8x8 being
# the zoo's largest that batch), several K blocks (600 and 1024 channels),
# groups, a batch that splits into uneven tiles, and two threads, against
# the float64 reference.  dx is written
# whole, never zeroed first: a gradient from reused memory must not leak in.
@pytest.mark.parametrize("xs,cout,groups", [
    ((5, 600, 3, 3), 24, 1),
    ((9, 48, 7, 7), 96, 3),
    ((33, 40, 2, 2), 16, 2),
    ((3, 20, 5, 5), 10, 1),
    ((40, 1024, 4, 4), 40, 1),
    ((2, 232, 4, 4), 232, 1),
    ((11, 64, 8, 8), 96, 1),   # 8x8, the largest planes that batch
    ((2, 24, 16, 16), 40, 2),  # one image per GEMM, x and dx in place
])
def test_pointwise_small_planes_batched(xs, cout, groups):
    rng = np.random.default_rng(xs[1] + cout)
    x = rand(rng, *xs)
    w = rand(rng, cout, xs[1] // groups, 1, 1)
    b = rand(rng, cout)
    dy = rand(rng, xs[0], cout, xs[2], xs[3])
    expected = conv_ref(x, w, b, groups=groups)
    og, cg = cout // groups, xs[1] // groups
    dy64 = dy.astype(np.float64).reshape(xs[0], groups, og, -1)
    w64 = w.astype(np.float64).reshape(groups, og, cg)
    x64 = x.astype(np.float64).reshape(xs[0], groups, cg, -1)
    dx_expected = np.einsum("ngop,goc->ngcp", dy64, w64).reshape(xs)
    dw_expected = np.einsum("ngop,ngcp->goc", dy64, x64).reshape(w.shape)
    scale = np.sqrt(max(xs[1], cout, xs[0] * xs[2] * xs[3]))
    prev = an.get_num_threads()
    try:
        outs = []
        for threads in (1, 2):
            an.set_num_threads(threads)
            # NaN in the allocator's cache, where dx may be placed next
            junk = an.tensor(np.full(xs, np.nan, np.float32)) * 1.0
            del junk
            xt, wt = an.tensor(x, requires_grad=True), an.tensor(w, requires_grad=True)
            out = F.conv2d(xt, wt, an.tensor(b), 1, 0, 1, groups)
            backward_with(out, dy)
            got = (out.detach().numpy(), xt.grad.numpy(), wt.grad.numpy())
            for value, want in zip(got, (expected, dx_expected, dw_expected)):
                np.testing.assert_allclose(value, want, rtol=1e-4, atol=1e-4 * scale)
            outs.append(got)
        for p, q in zip(*outs):
            np.testing.assert_array_equal(p, q)
    finally:
        an.set_num_threads(prev)


def taps_in_order_float32(x, w, start, stride=1):
    """k x k (3x3 or 5x5), padding k // 2 depthwise in float32 the way the
    small-plane paths sum: start, then + w * x for the taps in row-major
    order, a tap on the zero frame adding w * 0, each product and sum
    rounded to float32."""
    n, c, h, wd = x.shape
    k = w.shape[2]
    pad = k // 2
    oh, ow = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    xp = np.zeros((n, c, h + 2 * pad, wd + 2 * pad), np.float32)
    xp[:, :, pad:pad + h, pad:pad + wd] = x
    acc = np.array(start, np.float32)
    for i in range(k):
        for j in range(k):
            acc = acc + w[:, 0, i, j].reshape(1, c, 1, 1) * xp[:, :, i:i + stride * (oh - 1) + 1:stride,
                                                               j:j + stride * (ow - 1) + 1:stride]
    return acc


def weight_gradient_in_order(x, dy, k, stride):
    """The depthwise weight gradient as the channels-last blocks sum it: per
    image, + dy * x over the output positions in row-major order from +0 in
    float32 (the zero frame included), the images then added in order in
    float64, rounded once to float32."""
    n, c, h, wd = x.shape
    pad = k // 2
    xp = np.zeros((n, c, h + 2 * pad, wd + 2 * pad), np.float32)
    xp[:, :, pad:pad + h, pad:pad + wd] = x
    total = np.zeros((c, k, k))
    for image in range(n):
        acc = np.zeros((c, k, k), np.float32)
        for i in range(dy.shape[2]):
            for j in range(dy.shape[3]):
                window = xp[image, :, i * stride:i * stride + k, j * stride:j * stride + k]
                acc = acc + dy[image, :, i, j].reshape(c, 1, 1) * window
        total += acc
    return total.astype(np.float32).reshape(c, 1, k, k)


def activated(sums, activation):
    """The fused activation as the kernels apply it: x <= 0 -> +0 (NaN
    passes, -0 too becomes +0), then x >= 6 -> 6 for relu6."""
    if activation is None:
        return sums
    out = np.where(sums <= 0, np.float32(0), sums)
    if activation == "relu6":
        out = np.where(out >= 6, np.float32(6), out)
    return out


def assert_depthwise_bits(x, w, b, stride, activation, expected, thread_counts):
    """The depthwise 3x3 (padding 1) forward with its fused activation gives
    `expected` bit for bit on each thread count."""
    c = x.shape[1]
    threads = an.get_num_threads()
    try:
        for n in thread_counts:
            an.set_num_threads(n)
            got = an._C.conv2d(an.tensor(x), an.tensor(w), an.tensor(b), (stride, stride), (1, 1),
                               (1, 1), c, activation).numpy()
            np.testing.assert_array_equal(got.view(np.uint32), expected.astype(np.float32).view(np.uint32))
    finally:
        an.set_num_threads(threads)


@pytest.mark.parametrize("xs", [(2, 20, 8, 8), (1, 13, 4, 4), (1, 7, 8, 4), (2, 3, 16, 8), (1, 5, 12, 4),
                                (1, 232, 4, 4), (1, 58, 8, 8), (1, 6, 2, 8), (1, 9, 6, 8)])
def test_depthwise_small_planes_sum_taps_in_row_major_order(xs):
    """Forward and data gradient of the flattened (and channels-last) small
    plane paths, bit for bit against float32 sums in the documented order."""
    rng = np.random.default_rng(6)
    c = xs[1]
    x, w, b = rand(rng, *xs), rand(rng, c, 1, 3, 3), rand(rng, c)
    tx = an.tensor(x, requires_grad=True)
    out = F.conv2d(tx, an.tensor(w), an.tensor(b), 1, 1, 1, c)
    np.testing.assert_array_equal(out.detach().numpy(),
                                  taps_in_order_float32(x, w, np.broadcast_to(b.reshape(1, c, 1, 1), xs)))
    g = rand(rng, *xs)
    backward_with(out, g)
    # dx: dy convolved with the kernel rotated by 180 degrees, onto zero
    np.testing.assert_array_equal(tx.grad.numpy(), taps_in_order_float32(g, w[:, :, ::-1, ::-1], np.zeros(xs)))


# Planes up to 16x16 that no row kernel takes run 16 channels at a time,
# channels-last (in 8-lane halves on AVX2 and the portable build): 5x5 on
# EfficientNet's 4x4 and 2x2 planes, stride 2 onto 4x4 and onto odd planes,
# a 14x14 plane, 3x3 onto 4x4; 17-20 channels leave a partial block.  Five
# images of three blocks: each thread's run of (block, image) units crosses
# from one block's weights to the next.
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("xs,k,stride", [((2, 20, 4, 4), 5, 1), ((1, 17, 2, 2), 5, 1),
                                         ((2, 18, 8, 8), 5, 2), ((1, 19, 7, 7), 5, 2),
                                         ((1, 20, 14, 14), 5, 1), ((3, 17, 4, 4), 3, 1),
                                         ((5, 40, 2, 2), 5, 1)])
def test_depthwise_channels_last_blocks_sum_in_order(xs, k, stride, use_bias):
    """Forward, data gradient (stride 1: dy convolved with the rotated
    kernel) and weight gradient bit for bit against float32 sums in the
    documented order, on 1 and 2 threads."""
    rng = np.random.default_rng(xs[1] * k + stride)
    c = xs[1]
    x, w, b = rand(rng, *xs), rand(rng, c, 1, k, k), rand(rng, c)
    if not use_bias:
        b = np.zeros_like(b)
    threads = an.get_num_threads()
    try:
        for n in (1, 2):
            an.set_num_threads(n)
            tx, tw = an.tensor(x, requires_grad=True), an.tensor(w, requires_grad=True)
            out = F.conv2d(tx, tw, an.tensor(b) if use_bias else None, stride, k // 2, 1, c)
            y = out.detach().numpy()
            np.testing.assert_array_equal(y, taps_in_order_float32(x, w, np.broadcast_to(b.reshape(1, c, 1, 1), y.shape),
                                                                   stride))
            g = rand(np.random.default_rng(n), *y.shape)
            backward_with(out, g)
            np.testing.assert_array_equal(tw.grad.numpy(), weight_gradient_in_order(x, g, k, stride))
            if stride == 1:
                np.testing.assert_array_equal(tx.grad.numpy(),
                                              taps_in_order_float32(g, w[:, :, ::-1, ::-1], np.zeros(xs)))
    finally:
        an.set_num_threads(threads)


@pytest.mark.parametrize("xs", [(1, 40, 8, 8), (1, 37, 4, 4), (2, 3, 16, 8), (1, 5, 8, 4)])
@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_depthwise_small_planes_apply_the_activation_as_they_write(xs, activation):
    """The fused activation of the 4- and 8-wide planes' forward (the
    masked-load kernel on AVX-512, the flattened one elsewhere): x <= 0 ->
    +0 (-0 too), then x >= 6 -> 6 for relu6, NaN passing; bit for bit the
    taps in order followed by that activation, 1 and 2 threads."""
    rng = np.random.default_rng(xs[1] * xs[3])
    c = xs[1]
    x, w, b = rand(rng, *xs) * 4, rand(rng, c, 1, 3, 3), rand(rng, c)
    x[0, 0, 1, 1] = np.nan
    b[1] = -0.0
    w[1] = 0.0  # channel 1: -0 from the bias alone
    sums = taps_in_order_float32(x, w, np.broadcast_to(b.reshape(1, c, 1, 1), xs))
    expected = activated(sums, activation)
    assert np.isnan(expected).any() and (expected == 0).any()
    assert activation == "relu" or (expected == 6).any()
    assert_depthwise_bits(x, w, b, 1, activation, expected, (1, 2))


@pytest.mark.parametrize("xs", [(1, 40, 8, 8), (2, 7, 8, 8), (1, 19, 16, 16), (1, 5, 20, 16),
                                (2, 3, 7, 16), (1, 4, 1, 16), (1, 6, 7, 8), (1, 5, 4, 32),
                                (1, 3, 6, 8), (1, 3, 10, 32), (1, 4, 32, 32), (1, 2, 6, 96),
                                (1, 3, 4, 64), (2, 2, 3, 64)])
@pytest.mark.parametrize("activation", [None, "relu", "relu6"])
def test_depthwise_stride2_small_planes_sum_taps_in_row_major_order(xs, activation):
    """Stride 2 onto small outputs (the permute kernels on AVX-512; the
    column-split kernel elsewhere, for outputs 4 wide or whole 8-lane
    vectors up to 64 a plane: 8x8, 16x16, 7x8 with its last window off the
    bottom, 4x32 with two vectors a row, 4x64 and 3x64 whose streams hold
    a 32-wide row past the 64 outputs; channels-last blocks for 20x16 and
    6x8 with 12 outputs; the row kernels for 10x32 and 32x32, AVX2's
    lane-order one included, and for 6x96, wider than it takes): bit for bit the taps in row-major order
    from the bias, then the activation, on 1, 2 and 3 threads; odd and
    single-row planes; a NaN reaches exactly the outputs whose window holds
    it."""
    rng = np.random.default_rng(xs[1] * xs[2])
    n, c, h, wd = xs
    x, w, b = rand(rng, *xs) * 4, rand(rng, c, 1, 3, 3), rand(rng, c)
    x[0, 0, h // 2, 3] = np.nan
    oh, ow = (h - 1) // 2 + 1, (wd - 1) // 2 + 1
    sums = taps_in_order_float32(x, w, np.broadcast_to(b.reshape(1, c, 1, 1), (n, c, oh, ow)), 2)
    expected = activated(sums, activation)
    window = np.zeros((oh, ow), bool)
    for i in range(oh):
        for j in range(ow):
            window[i, j] = abs(2 * i - h // 2) <= 1 and abs(2 * j - 3) <= 1
    np.testing.assert_array_equal(np.isnan(expected[0, 0]), window)
    assert_depthwise_bits(x, w, b, 2, activation, expected, (1, 2, 3))


@pytest.mark.parametrize("h,w", [(8, 8), (4, 4), (8, 4)])
@pytest.mark.parametrize("col", ["first", "last"])
def test_depthwise_nan_on_flattened_planes_stays_in_its_window(h, w, col):
    """The flattened small-plane path reads a flat run of the plane: a NaN in
    a row's first or last column must not wrap into the neighbouring row's
    outputs (the wrap columns read zeroed copies), forward or backward."""
    c = 6
    r, q = h // 2, 0 if col == "first" else w - 1
    x = np.zeros((1, c, h, w), np.float32)
    x[0, 4, r, q] = np.nan
    tx = an.tensor(x, requires_grad=True)
    out = F.conv2d(tx, an.tensor(np.ones((c, 1, 3, 3), np.float32)), None, 1, 1, 1, c)
    expected = np.zeros(out.shape, bool)
    expected[0, 4, max(0, r - 1):r + 2, max(0, q - 1):q + 2] = True
    np.testing.assert_array_equal(np.isnan(out.detach().numpy()), expected)
    g = np.zeros(out.shape, np.float32)
    g[0, 2, r, q] = np.nan
    backward_with(out, g)
    expected_dx = np.zeros(x.shape, bool)
    expected_dx[0, 2, max(0, r - 1):r + 2, max(0, q - 1):q + 2] = True
    np.testing.assert_array_equal(np.isnan(tx.grad.numpy()), expected_dx)


# (x shape, weight shape): the direct 3x3 kernel for few input channels
# (1-4 of them, each count its own compiled body; 16-64 columns, 8-channel
# blocks) and shapes next to it that it leaves to
# the GEMM lowering (5 channels, 12 outputs, 80 columns, 8 columns)
DIRECT_FIRST_LAYERS = [((1, 3, 32, 32), (32, 3, 3, 3)), ((2, 3, 16, 16), (16, 3, 3, 3)),
                       ((1, 1, 5, 48), (8, 1, 3, 3)), ((3, 4, 9, 64), (24, 4, 3, 3)),
                       ((1, 2, 6, 32), (16, 2, 3, 3)),
                       ((1, 5, 16, 16), (8, 5, 3, 3)), ((1, 3, 16, 16), (12, 3, 3, 3)),
                       ((1, 3, 4, 80), (8, 3, 3, 3)), ((1, 3, 8, 8), (8, 3, 3, 3))]


@pytest.mark.parametrize("xs, ws", DIRECT_FIRST_LAYERS)
@pytest.mark.parametrize("activation", [None, "relu6"])
def test_first_layers_match_the_gemm_lowering_bit_for_bit(xs, ws, activation):
    """A 3x3 padding-1 layer with few input channels equals, bit for bit,
    the same layer run on the explicitly zero-padded image without padding
    (the GEMM lowering, whose sum the direct kernel reproduces), with and
    without bias, NaN and infinity staying in their windows, on 1 and 2
    threads."""
    rng = np.random.default_rng(xs[1] + ws[0] + xs[3])
    x = rand(rng, *xs)
    x[0, 0, 0, 0], x[-1, -1, xs[2] // 2, xs[3] - 1] = np.nan, np.inf
    w, b = rand(rng, *ws), rand(rng, ws[0])
    padded = an.tensor(np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))))
    threads = an.get_num_threads()
    try:
        for bias in (None, an.tensor(b)):
            expected = an._C.conv2d(padded, an.tensor(w), bias, (1, 1), (0, 0), (1, 1), 1,
                                    activation).numpy()
            assert np.isnan(expected).any() and np.isfinite(expected).any()
            for n in (1, 2):
                an.set_num_threads(n)
                got = an._C.conv2d(an.tensor(x), an.tensor(w), bias, (1, 1), (1, 1), (1, 1), 1,
                                   activation).numpy()
                np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))
    finally:
        an.set_num_threads(threads)


# ------------------------------------------ small planes gathered by permutes
# Stride-1 layers on planes of at most 16 floats (ResNet-18's and
# ResNet-101's 4x4 layers) gather their column panels from x, one permuted
# plane per tap, on AVX-512 (an_im2col_small_plane_panel_avx512), forward
# and weight gradient (the data gradient is a forward).  Small integers
# make every sum exact whatever its order, so any value gathered into the
# wrong place shows, on every ISA.
SMALL_PLANE_CASES = [
    # name, x shape, w shape, padding, dilation, groups
    ("4x4 3x3, 5 images (a panel of one image)", (5, 40, 4, 4), (24, 40, 3, 3), 1, 1, 1),
    ("4x4 5x5 pad 2 (25 taps)", (3, 16, 4, 4), (8, 16, 5, 5), 2, 1, 1),
    ("3x3 planes (panels start inside an image)", (7, 12, 3, 3), (10, 12, 3, 3), 1, 1, 1),
    ("2x2 planes", (9, 20, 2, 2), (6, 20, 3, 3), 1, 1, 1),
    ("4x2 planes", (6, 8, 4, 2), (8, 8, 3, 3), 1, 1, 1),
    ("4x4 dilation 2, groups 2", (4, 16, 4, 4), (12, 8, 3, 3), 2, 2, 2),
    ("batch 1", (1, 64, 4, 4), (32, 64, 3, 3), 1, 1, 1),
]


@pytest.mark.parametrize("case", SMALL_PLANE_CASES, ids=[c[0] for c in SMALL_PLANE_CASES])
def test_small_plane_conv_is_exact_on_integers(case):
    torch = torch_or_skip()
    _, xs, ws, padding, dilation, groups = case
    rng = np.random.default_rng(11)
    x = rng.integers(-3, 4, xs).astype(np.float32)
    w = rng.integers(-3, 4, ws).astype(np.float32)
    tx, tw = an.tensor(x, requires_grad=True), an.tensor(w, requires_grad=True)
    out = F.conv2d(tx, tw, None, 1, padding, dilation, groups)
    g = rng.integers(-3, 4, out.shape).astype(np.float32)
    backward_with(out, g)
    rx, rw = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (x, w))
    expected = torch.nn.functional.conv2d(rx, rw, None, 1, padding, dilation, groups)
    expected.backward(torch.tensor(g, dtype=torch.float64))
    np.testing.assert_array_equal(out.detach().numpy(), expected.detach().numpy())
    np.testing.assert_array_equal(tx.grad.numpy(), rx.grad.numpy())
    np.testing.assert_array_equal(tw.grad.numpy(), rw.grad.numpy())


def test_small_plane_conv_keeps_a_nan_inside_its_windows():
    x = np.ones((3, 20, 4, 4), dtype=np.float32)
    x[2, 3, 0, 0] = np.nan
    w = np.ones((8, 20, 3, 3), dtype=np.float32)
    out = F.conv2d(an.tensor(x), an.tensor(w), None, 1, 1).numpy()
    nan = np.zeros(out.shape, dtype=bool)
    nan[2, :, :2, :2] = True  # the outputs whose 3x3 window covers pixel (0, 0)
    np.testing.assert_array_equal(np.isnan(out), nan)
    np.testing.assert_array_equal(out[~nan], conv_ref(np.nan_to_num(x), w, padding=(1, 1))[~nan])
