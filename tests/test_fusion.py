"""appealnet.nn.utils.fuse_for_inference: batch norm folded into the
convolution before it (and the fused activation applied inside the conv's
call).  The folded weights are checked against the formula in float64, every
zoo model's fused copy against its original, and the misuse cases raise."""
import numpy as np
import pytest

import appealnet as an
import appealnet.models as models
import appealnet.nn as nn
from appealnet.nn import functional as F
from appealnet.nn.utils import FoldedBatchNorm, FusedConv2d, fuse_for_inference


def calibrated(model, shape, seed=0):
    """Real running statistics (one train-mode pass with momentum 1) and
    non-trivial affine parameters, so folding has something to fold."""
    rng = np.random.default_rng(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 1.0
            with an.no_grad():
                module.weight.copy_(an.tensor(rng.uniform(0.5, 1.5, module.num_features).astype(np.float32)))
                module.bias.copy_(an.tensor(rng.normal(0, 0.2, module.num_features).astype(np.float32)))
    with an.no_grad():
        model.train()(an.tensor(rng.standard_normal((4,) + shape[1:]).astype(np.float32)))
    return model.eval()


def test_folded_weights_follow_the_formula():
    rng = np.random.default_rng(0)
    conv, bn = nn.Conv2d(3, 5, 3, padding=1, bias=True), nn.BatchNorm2d(5, eps=1e-3)
    model = calibrated(nn.Sequential(conv, bn), (1, 3, 8, 8))
    fused = fuse_for_inference(model, rng.standard_normal((1, 3, 8, 8)).astype(np.float32))
    new_conv, folded = fused[0], fused[1]
    assert isinstance(new_conv, FusedConv2d) and isinstance(folded, FoldedBatchNorm)
    w = conv.weight.detach().numpy().astype(np.float64)
    b = conv.bias.detach().numpy().astype(np.float64)
    scale = bn.weight.detach().numpy() / np.sqrt(bn.running_var.numpy().astype(np.float64) + 1e-3)
    np.testing.assert_allclose(new_conv.weight.detach().numpy(), w * scale[:, None, None, None], rtol=1e-6)
    np.testing.assert_allclose(new_conv.bias.detach().numpy(),
                               (b - bn.running_mean.numpy()) * scale + bn.bias.detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    assert new_conv.activation is None
    assert not any(p.requires_grad for p in fused.parameters())


@pytest.mark.parametrize("name", ["resnet20", "resnet18", "mobilenet_v1", "mobilenet_v2",
                                  "shufflenet_v1", "shufflenet_v2", "efficientnet_b0"])
def test_every_zoo_model_fuses_and_matches(name):
    an.manual_seed(0)
    model = calibrated(models.create(name, num_classes=10), (1, 3, 32, 32))
    before = {k: np.array(v, copy=True) for k, v in model.state_dict().items()}
    x = np.random.default_rng(3).standard_normal((3, 3, 32, 32)).astype(np.float32)
    ran = set()  # batch norms that forward uses (EfficientNet skips some at expansion 1)
    handles = [m.register_forward_hook(lambda mod, args, out: ran.add(id(mod)))
               for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with an.no_grad():
        model(an.tensor(x[:1]))
    for handle in handles:
        handle.remove()
    fused = fuse_for_inference(model, x[:1])
    folded = sum(isinstance(m, FoldedBatchNorm) for m in fused.modules())
    assert folded == len(ran) > 0  # every BN the zoo runs follows a convolution
    with an.no_grad():
        expected, got = model(an.tensor(x)).numpy(), fused(an.tensor(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(expected).max()))
    # the original is untouched
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(np.asarray(value), before[key])
    assert any(isinstance(m, FusedConv2d) and m.activation == "relu" for m in fused.modules()) \
        or name == "efficientnet_b0"  # SiLU is not fused


def test_fused_activation_matches_bn_then_relu():
    rng = np.random.default_rng(1)
    x = an.tensor(rng.standard_normal((2, 4, 9, 9)).astype(np.float32))
    w = an.tensor(rng.standard_normal((6, 4, 3, 3)).astype(np.float32))
    b = an.tensor(rng.standard_normal(6).astype(np.float32))
    plain = F.conv2d(x, w, b, 1, 1)
    for activation, reference in (("relu", F.relu(plain)), ("relu6", F.relu6(plain * 4.0))):
        scale = 4.0 if activation == "relu6" else 1.0
        got = an._C.conv2d(x, w * scale, b * scale, (1, 1), (1, 1), (1, 1), 1, activation)
        np.testing.assert_allclose(got.numpy(), reference.numpy(), rtol=1e-5, atol=1e-5)


# Every forward path applies the fused activation as it writes its output
# (name, x shape, w shape, stride, padding, groups)
ACTIVATION_PATHS = [
    ("implicit 32x32", (2, 8, 32, 32), (12, 8, 3, 3), 1, 1, 1),
    ("implicit strided", (2, 8, 32, 32), (12, 8, 3, 3), 2, 1, 1),
    ("padded small-image tiles", (5, 8, 8, 8), (12, 8, 3, 3), 1, 1, 1),
    ("strided small planes (im2col tiles)", (5, 8, 12, 12), (12, 8, 3, 3), 2, 1, 1),
    ("implicit, padding past the kernel", (1, 4, 20, 20), (6, 4, 3, 3), 1, 4, 1),
    ("pointwise in place", (2, 16, 10, 10), (24, 16, 1, 1), 1, 0, 1),
    ("pointwise small planes", (6, 16, 4, 4), (24, 16, 1, 1), 1, 0, 1),
    ("pointwise narrow (batch 1)", (1, 40, 4, 4), (60, 40, 1, 1), 1, 0, 1),
    ("grouped", (2, 12, 9, 9), (12, 4, 3, 3), 1, 1, 3),
    ("depthwise small planes", (2, 20, 8, 8), (20, 1, 3, 3), 1, 1, 20),
    ("depthwise 4x4 planes, a group past the last", (1, 13, 4, 4), (13, 1, 3, 3), 1, 1, 13),
    ("depthwise small planes stride 2 (channels-last)", (2, 20, 8, 8), (20, 1, 3, 3), 2, 1, 20),
    ("depthwise large planes", (2, 6, 30, 30), (6, 1, 3, 3), 1, 1, 6),
    ("depthwise 32x32 (row by row)", (1, 20, 32, 32), (20, 1, 3, 3), 1, 1, 20),
    ("depthwise 48x48 stride 2", (1, 4, 48, 48), (4, 1, 3, 3), 2, 1, 4),
    ("depthwise 32x32 stride 2 (even/odd columns)", (1, 20, 32, 32), (20, 1, 3, 3), 2, 1, 20),
    ("depthwise 5x5 on 24x24 (generic planes)", (1, 4, 24, 24), (4, 1, 5, 5), 1, 2, 4),
]


@pytest.mark.parametrize("case", ACTIVATION_PATHS, ids=[c[0] for c in ACTIVATION_PATHS])
@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_fused_activation_is_bit_identical_on_every_conv_path(case, activation):
    _, xs, ws, stride, padding, groups = case
    rng = np.random.default_rng(2)
    x = an.tensor((rng.standard_normal(xs) * 3).astype(np.float32))
    w = an.tensor(rng.standard_normal(ws).astype(np.float32))
    for bias in (None, an.tensor(rng.standard_normal(ws[0]).astype(np.float32))):
        args = ((stride, stride), (padding, padding), (1, 1), groups)
        plain = an._C.conv2d(x, w, bias, *args, None)
        expected = (F.relu if activation == "relu" else F.relu6)(plain).numpy()
        got = an._C.conv2d(x, w, bias, *args, activation).numpy()
        np.testing.assert_array_equal(got, expected)
        assert (got == 0).any() and (activation == "relu" or (got == 6).any())


@pytest.mark.parametrize("case", ACTIVATION_PATHS, ids=[c[0] for c in ACTIVATION_PATHS])
@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_fused_activation_turns_negative_zero_into_positive_zero(case, activation):
    """Products that underflow (1e-30 times -1e-30) and a bias of -0 sum to
    -0 or +0 (by where the kernel starts its sum); relu and relu6 give +0
    either way (x <= 0 -> +0), as the unfused activation does, and NaN
    passes: the vector kernels take max(0, x), which keeps a -0, and then
    add +0 (without that add, 14 of these cases fail on AVX-512)."""
    _, xs, ws, stride, padding, groups = case
    x = np.full(xs, 1e-30, np.float32)
    x.reshape(-1)[0] = np.nan
    w = an.tensor(np.full(ws, -1e-30, np.float32))
    bias = an.tensor(np.full(ws[0], -0.0, np.float32))
    args = ((stride, stride), (padding, padding), (1, 1), groups)
    plain = an._C.conv2d(an.tensor(x), w, bias, *args, None).numpy()
    got = an._C.conv2d(an.tensor(x), w, bias, *args, activation).numpy()
    assert np.isnan(got).sum() == np.isnan(plain).sum() > 0
    finite = got[~np.isnan(got)]
    np.testing.assert_array_equal(finite.view(np.uint32), np.zeros_like(finite.view(np.uint32)))


RESIDUAL_PATHS = ACTIVATION_PATHS + [
    # one image per GEMM: the residual is added in the micro-kernel's
    # registers (full 14x32 / 8x32 tiles and fringes) or the narrow kernel's
    ("pointwise in place, batch 1 (micro-kernel epilogue)", (1, 24, 32, 32), (144, 24, 1, 1), 1, 0, 1),
    ("pointwise in place, batch 1, 8x8 (narrow kernel)", (1, 40, 8, 8), (60, 40, 1, 1), 1, 0, 1),
    ("pointwise in place, K past one block", (1, 600, 16, 16), (20, 600, 1, 1), 1, 0, 1),
]


@pytest.mark.parametrize("case", RESIDUAL_PATHS, ids=[c[0] for c in RESIDUAL_PATHS])
@pytest.mark.parametrize("activation", [None, "relu", "relu6"])
def test_fused_residual_is_bit_identical_to_conv_then_add(case, activation):
    """conv2d(..., activation, residual) == act(conv2d(...) + residual), bit
    for bit, on every path (the 1x1 in-place path adds it in the GEMM's
    epilogue, the others in a pass after), on 1 and 2 threads."""
    _, xs, ws, stride, padding, groups = case
    rng = np.random.default_rng(3)
    x = an.tensor((rng.standard_normal(xs) * 3).astype(np.float32))
    w = an.tensor(rng.standard_normal(ws).astype(np.float32))
    bias = an.tensor(rng.standard_normal(ws[0]).astype(np.float32))
    args = ((stride, stride), (padding, padding), (1, 1), groups)
    plain = an._C.conv2d(x, w, bias, *args, None)
    residual = an.tensor((rng.standard_normal(plain.shape) * 3).astype(np.float32))
    residual.numpy()[0, 0, 0, :2] = [np.nan, -np.inf]
    joined = an._C.add(plain, residual)
    expected = {None: joined, "relu": F.relu(joined), "relu6": F.relu6(joined)}[activation].numpy()
    threads = an.get_num_threads()
    try:
        for n in (1, 2):
            an.set_num_threads(n)
            got = an._C.conv2d(x, w, bias, *args, activation, residual).numpy()
            np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))
    finally:
        an.set_num_threads(threads)
    # a non-contiguous residual (a transposed view) gives the same
    flipped = an.tensor(np.ascontiguousarray(residual.numpy().transpose(0, 1, 3, 2)))
    got = an._C.conv2d(x, w, bias, *args, activation, flipped.transpose(2, 3)).numpy()
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


def test_fused_residual_refuses_wrong_shapes_types_and_training():
    x = an.tensor(np.ones((1, 2, 5, 5), dtype=np.float32))
    w = an.tensor(np.ones((3, 2, 3, 3), dtype=np.float32))
    args = ((1, 1), (1, 1), (1, 1), 1)
    with pytest.raises(ValueError, match=r"residual must have the output's shape \[1, 3, 5, 5\], got \[1, 3, 5, 4\]"):
        an._C.conv2d(x, w, None, *args, None, an.zeros(1, 3, 5, 4))
    with pytest.raises(TypeError, match="residual"):
        an._C.conv2d(x, w, None, *args, None, np.ones((1, 3, 5, 5), np.float32))
    with pytest.raises(ValueError, match="inference only"):
        an._C.conv2d(x, w, None, *args, None, an.zeros(1, 3, 5, 5).requires_grad_(True))


# 1x1 layers whose weight an inference plan packs once (conv2d_pack_weight):
# narrow products (4x4 and 8x8 planes, full and partial tile panels), wide
# ones (32x32, one K block; 16x16 with K past one block), 8- and 14-row tiles
PACKED_POINTWISE = [
    ("4x4, 960 x 160 (narrow, 14-row panels)", (1, 160, 4, 4), (960, 160, 1, 1)),
    ("8x8, 64 x 384 (narrow, 8-row panels)", (1, 384, 8, 8), (64, 384, 1, 1)),
    ("8x8, 37 x 19 (narrow, partial panel)", (1, 19, 8, 8), (37, 19, 1, 1)),
    # the narrow kernel takes k two steps at a time (a prefetch per pair):
    # K = 701 in two K blocks (352 and 349 on AVX2), the last an odd count
    ("4x4, 13 x 701 (narrow, two K blocks, the last odd)", (1, 701, 4, 4), (13, 701, 1, 1)),
    ("32x32, 144 x 24 (blocked, one K block)", (1, 24, 32, 32), (144, 24, 1, 1)),
    ("16x16, 29 x 700 (blocked, K past one block)", (1, 700, 16, 16), (29, 700, 1, 1)),
    # two threads split its 9 row tiles of 14 (8 full, 8 rows in the last)
    # and share the partial one out by panels, in each of two K blocks
    ("9x9, 120 x 700 (blocked, split by rows, the partial tile shared)", (1, 700, 9, 9),
     (120, 700, 1, 1)),
    ("batch 3, 5x5, 20 x 12 (images batched per GEMM)", (3, 12, 5, 5), (20, 12, 1, 1)),
    ("one output channel", (1, 8, 6, 6), (1, 8, 1, 1)),
]


@pytest.mark.parametrize("case", PACKED_POINTWISE, ids=[c[0] for c in PACKED_POINTWISE])
def test_a_packed_weight_gives_the_same_bits(case):
    """conv2d with packed_weight = conv2d_pack_weight(weight) equals conv2d
    without it, bit for bit, with and without bias, residual and activation,
    on 1 and 2 threads."""
    _, xs, ws = case
    rng = np.random.default_rng(4)
    x = an.tensor((rng.standard_normal(xs) * 2).astype(np.float32))
    w = an.tensor(rng.standard_normal(ws).astype(np.float32))
    bias = an.tensor(rng.standard_normal(ws[0]).astype(np.float32))
    packed = an._C.conv2d_pack_weight(w)
    rows = packed.shape[2]
    assert packed.shape == (-(-ws[0] // rows), ws[1], rows)
    args = ((1, 1), (0, 0), (1, 1), 1)
    residual = an.tensor(rng.standard_normal((xs[0], ws[0]) + xs[2:]).astype(np.float32))
    threads = an.get_num_threads()
    try:
        for n in (1, 2):
            an.set_num_threads(n)
            for b, activation, r in ((None, None, None), (bias, "relu6", residual), (bias, "relu", None)):
                expected = an._C.conv2d(x, w, b, *args, activation, r).numpy()
                got = an._C.conv2d(x, w, b, *args, activation, r, packed).numpy()
                np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))
    finally:
        an.set_num_threads(threads)


def test_the_packed_weight_is_read_and_one_for_another_tile_height_is_ignored():
    """The kernel reads the packed copy, not the weight (a NaN copy gives
    NaN), and a copy laid out for another tile height than the kernel in
    use wants (packed under another ISA) is ignored, not misread."""
    rng = np.random.default_rng(5)
    x = an.tensor(rng.standard_normal((1, 40, 8, 8)).astype(np.float32))
    w = an.tensor(rng.standard_normal((64, 40, 1, 1)).astype(np.float32))
    args = ((1, 1), (0, 0), (1, 1), 1)
    rows = an._C.conv2d_pack_weight(w).shape[2]
    nan_copy = an.tensor(np.full((-(-64 // rows), 40, rows), np.nan, np.float32))
    assert np.isnan(an._C.conv2d(x, w, None, *args, None, None, nan_copy).numpy()).all()
    other = 14 if rows != 14 else 8
    foreign = an.tensor(np.full((-(-64 // other), 40, other), np.nan, np.float32))
    expected = an._C.conv2d(x, w, None, *args).numpy()
    got = an._C.conv2d(x, w, None, *args, None, None, foreign).numpy()
    np.testing.assert_array_equal(got, expected)


def test_packing_refuses_what_it_cannot_pack_and_copies_that_do_not_fit():
    w = an.tensor(np.ones((6, 4, 1, 1), np.float32))
    x = an.tensor(np.ones((1, 4, 5, 5), np.float32))
    args = ((1, 1), (0, 0), (1, 1), 1)
    packed = an._C.conv2d_pack_weight(w)
    with pytest.raises(ValueError, match=r"conv2d_pack_weight: expected the weight \[C_out, C_in, 1, 1\] "
                                         r"of a 1x1 convolution with C_out, C_in >= 1, got \[6, 4, 3, 3\]"):
        an._C.conv2d_pack_weight(an.tensor(np.ones((6, 4, 3, 3), np.float32)))
    with pytest.raises(ValueError, match=r"got \[0, 4, 1, 1\]"):
        an._C.conv2d_pack_weight(an.tensor(np.ones((0, 4, 1, 1), np.float32)))
    with pytest.raises(TypeError, match="weight"):
        an._C.conv2d_pack_weight(np.ones((6, 4, 1, 1), np.float32))
    other = an._C.conv2d_pack_weight(an.tensor(np.ones((6, 5, 1, 1), np.float32)))
    with pytest.raises(ValueError, match=r"packed weight \[1, 5, \d+\] does not belong to weight \[6, 4, 1, 1\]"):
        an._C.conv2d(x, w, None, *args, None, None, other)
    with pytest.raises(ValueError, match="does not belong"):
        an._C.conv2d(x, w, None, *args, None, None, an.tensor(np.ones((6, 4), np.float32)))
    with pytest.raises(ValueError, match=r"only for a 1x1 convolution with groups=1, got weight \[6, 2, 1, 1\] "
                                         r"with groups=2"):
        an._C.conv2d(x, an.tensor(np.ones((6, 2, 1, 1), np.float32)), None, (1, 1), (0, 0), (1, 1), 2,
                     None, None, packed)
    with pytest.raises(ValueError, match="inference only"):
        an._C.conv2d(x, an.tensor(np.ones((6, 4, 1, 1), np.float32), requires_grad=True), None, *args,
                     None, None, packed)
    with pytest.raises(TypeError, match="packed_weight"):
        an._C.conv2d(x, w, None, *args, None, None, np.ones((1, 4, 14), np.float32))
    # strided or padded 1x1 layers do not read it, and still give their result
    y = an._C.conv2d(x, w, None, (2, 2), (1, 1), (1, 1), 1, None, None, packed).numpy()
    np.testing.assert_array_equal(y, an._C.conv2d(x, w, None, (2, 2), (1, 1), (1, 1), 1).numpy())


def _block_by_calls(x, w1, b1, act1, wd, bd, stride, actd, w2, b2, residual, act2):
    e = an._C.conv2d(x, w1, b1, (1, 1), (0, 0), (1, 1), 1, act1) if w1 is not None else x
    d = an._C.conv2d(e, wd, bd, (stride, stride), (1, 1), (1, 1), wd.shape[0], actd)
    return an._C.conv2d(d, w2, b2, (1, 1), (0, 0), (1, 1), 1, act2, residual)


# (name, N, C, Ce, Co, H, stride, expand, residual): the one-pass path (planes
# 16 or 32 wide; bands of rows per thread at batch 1, whole images above) and
# the layers it hands to the three calls (8x8, 4x4, 16x16 stride 2)
BLOCKS = [
    ("32x32 s1 expand residual", 1, 24, 144, 24, 32, 1, True, True),
    ("32x32 s2 expand", 1, 24, 144, 32, 32, 2, True, False),
    ("16x16 s1 expand residual", 1, 32, 192, 32, 16, 1, True, True),
    ("32x32 no expansion", 1, 32, 32, 16, 32, 1, False, False),
    ("32x32 odd channels", 1, 5, 37, 11, 32, 1, True, True),
    ("batch 3, whole images per thread", 3, 8, 40, 8, 16, 1, True, True),
    ("batch 2 stride 2", 2, 8, 40, 16, 32, 2, True, False),
    ("8x8 (one region, K halves on 2 threads)", 1, 64, 384, 64, 8, 1, True, True),
    ("8x8 K 576 (halves)", 1, 96, 576, 96, 8, 1, True, True),
    ("8x8 K 300 (uneven halves)", 1, 24, 300, 40, 8, 1, True, True),
    ("4x4 K 960 (halves)", 1, 40, 960, 40, 4, 1, True, True),
    ("8x8 s2 K 576 (halves)", 1, 32, 576, 48, 8, 2, True, False),
    ("4x4 (one region, narrow GEMMs)", 1, 16, 96, 16, 4, 1, True, True),
    ("8x8 odd channels (one region)", 1, 5, 37, 11, 8, 1, True, True),
    ("4x4 no expansion (one region)", 1, 40, 40, 24, 4, 1, False, True),
    ("16x16 s2 bands (column-split depthwise, top padding 0)", 1, 32, 192, 64, 16, 2, True, False),
    ("20x20 s2 bands of 5 rows (three calls on 1 thread)", 1, 12, 40, 16, 20, 2, True, False),
    ("18x18 s2 odd output rows", 1, 12, 40, 16, 18, 2, True, True),
    ("batch 2 16x16 s2 (three calls)", 2, 16, 48, 24, 16, 2, True, False),
    ("8x8 s2 (one region)", 1, 32, 96, 40, 8, 2, True, False),
    ("batch 2 8x8 (three calls)", 2, 16, 48, 16, 8, 1, True, True),
    # a chunk's last rows (32 columns) would sum K = 300 in two blocks, the
    # whole plane in one: the three calls
    ("32x32 K 300 (chunks' K blocks differ: three calls)", 1, 16, 300, 16, 32, 1, True, True),
]


@pytest.mark.parametrize("case", BLOCKS, ids=[c[0] for c in BLOCKS])
def test_a_fused_block_gives_the_bits_of_its_three_convolutions(case):
    """conv_pw_dw_pw equals conv2d, depthwise conv2d, conv2d, bit for bit,
    with packed weights or not, on 1, 2 and 3 threads (a band per thread, a
    band of one row when the plane has fewer rows than threads' bands), with
    NaN in the input staying in its receptive field."""
    _, n, c, ce, co, h, stride, expand, with_residual = case
    rng = np.random.default_rng(c + ce + h)
    x = (rng.standard_normal((n, c, h, h)) * 2).astype(np.float32)
    x[0, 0, h // 2, 3] = np.nan
    x = an.tensor(x)
    w1 = an.tensor((rng.standard_normal((ce, c, 1, 1)) * 0.4).astype(np.float32)) if expand else None
    b1 = an.tensor(rng.standard_normal(ce).astype(np.float32)) if expand else None
    wd = an.tensor(rng.standard_normal((ce, 1, 3, 3)).astype(np.float32))
    bd = an.tensor(rng.standard_normal(ce).astype(np.float32))
    w2 = an.tensor((rng.standard_normal((co, ce, 1, 1)) * 0.2).astype(np.float32))
    b2 = an.tensor(rng.standard_normal(co).astype(np.float32))
    oh = (h - 1) // stride + 1
    residual = an.tensor(rng.standard_normal((n, co, oh, oh)).astype(np.float32)) if with_residual else None
    p1 = an._C.conv2d_pack_weight(w1) if expand else None
    p2 = an._C.conv2d_pack_weight(w2)
    threads = an.get_num_threads()
    try:
        for acts in (("relu6", "relu6", None), ("relu", None, "relu")):
            expected = _block_by_calls(x, w1, b1, acts[0], wd, bd, stride, acts[1], w2, b2, residual,
                                       acts[2]).numpy()
            assert np.isnan(expected).any() and not np.isnan(expected).all()
            for n_threads in (1, 2, 3):
                an.set_num_threads(n_threads)
                for packed in ((p1, p2), (None, None)):
                    got = an._C.conv_pw_dw_pw(x, w1, packed[0], b1, acts[0], wd, bd, stride, acts[1],
                                              w2, packed[1], b2, residual, acts[2]).numpy()
                    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))
    finally:
        an.set_num_threads(threads)


SHORTCUT_BLOCKS = [
    ("32x32 bands", 1, 32, 32, 16, 32, 1),
    ("16x16 bands, odd channels", 1, 5, 37, 11, 16, 1),
    ("batch 3, whole images per thread", 3, 8, 40, 12, 16, 1),
    ("8x8 (one region)", 1, 64, 384, 96, 8, 1),
    ("4x4 (one region), odd shortcut rows", 1, 40, 96, 30, 4, 1),
    ("32x32 stride 2 (calls, strided shortcut)", 1, 8, 24, 16, 32, 2),
]


@pytest.mark.parametrize("case", SHORTCUT_BLOCKS, ids=[c[0] for c in SHORTCUT_BLOCKS])
def test_a_fused_block_with_its_shortcut_gives_the_bits_of_its_convolutions(case):
    """The shortcut convolution (a 1x1 whose output is the residual) computed
    inside the call, per band where the one-pass path runs: the bits of the
    convolution run first and passed as the residual, on 1, 2 and 3 threads,
    packed or not, with NaN in the input."""
    _, n, c, ce, co, h, stride = case
    rng = np.random.default_rng(c + ce + co + h)
    x = (rng.standard_normal((n, c, h, h)) * 2).astype(np.float32)
    x[0, 0, h // 2, 3] = np.nan
    x = an.tensor(x)
    w1 = an.tensor((rng.standard_normal((ce, c, 1, 1)) * 0.4).astype(np.float32))
    b1 = an.tensor(rng.standard_normal(ce).astype(np.float32))
    wd = an.tensor(rng.standard_normal((ce, 1, 3, 3)).astype(np.float32))
    bd = an.tensor(rng.standard_normal(ce).astype(np.float32))
    w2 = an.tensor((rng.standard_normal((co, ce, 1, 1)) * 0.2).astype(np.float32))
    b2 = an.tensor(rng.standard_normal(co).astype(np.float32))
    ws = an.tensor((rng.standard_normal((co, c, 1, 1)) * 0.5).astype(np.float32))
    bs = an.tensor(rng.standard_normal(co).astype(np.float32))
    p1, p2, ps = (an._C.conv2d_pack_weight(w) for w in (w1, w2, ws))
    shortcut = an._C.conv2d(x, ws, bs, (stride, stride), (0, 0), (1, 1), 1)
    expected = _block_by_calls(x, w1, b1, "relu6", wd, bd, stride, "relu6", w2, b2, shortcut,
                               "relu").numpy()
    assert np.isnan(expected).any() and not np.isnan(expected).all()
    threads = an.get_num_threads()
    try:
        for n_threads in (1, 2, 3):
            an.set_num_threads(n_threads)
            for packed in ((p1, p2, ps), (None, None, None)):
                got = an._C.conv_pw_dw_pw(x, w1, packed[0], b1, "relu6", wd, bd, stride, "relu6", w2,
                                          packed[1], b2, None, "relu", ws, packed[2], bs).numpy()
                np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))
    finally:
        an.set_num_threads(threads)


def test_a_fused_blocks_shortcut_is_checked():
    x = an.tensor(np.ones((1, 4, 16, 16), np.float32))
    w1 = an.tensor(np.ones((8, 4, 1, 1), np.float32))
    wd = an.tensor(np.ones((8, 1, 3, 3), np.float32))
    w2 = an.tensor(np.ones((6, 8, 1, 1), np.float32))
    ws = an.tensor(np.ones((6, 4, 1, 1), np.float32))

    def block(ws=ws, ps=None, bs=None, residual=None):
        return an._C.conv_pw_dw_pw(x, w1, None, None, "relu6", wd, None, 1, "relu6", w2, None, None,
                                   residual, None, ws, ps, bs)

    y = block(bs=an.tensor(np.full(6, 0.5, np.float32))).numpy()
    np.testing.assert_array_equal(y[0, :, 5, 5], np.full(6, 8 * 6 + 4 + 0.5, np.float32))
    with pytest.raises(ValueError, match="a residual or a shortcut convolution, not both"):
        block(residual=an.tensor(np.ones((1, 6, 16, 16), np.float32)))
    with pytest.raises(ValueError, match="without the shortcut weight"):
        block(ws=None, bs=an.tensor(np.ones(6, np.float32)))
    with pytest.raises(ValueError, match=r"input \[1, 4, 16, 16\] has 4 channels, but weight \[6, 5, 1, 1\]"):
        block(ws=an.tensor(np.ones((6, 5, 1, 1), np.float32)))
    with pytest.raises(ValueError, match=r"residual must have the output's shape \[1, 6, 16, 16\]"):
        block(ws=an.tensor(np.ones((5, 4, 1, 1), np.float32)))
    with pytest.raises(ValueError, match="does not belong to weight"):
        block(ps=an._C.conv2d_pack_weight(an.tensor(np.ones((6, 3, 1, 1), np.float32))))
    with pytest.raises(ValueError, match="inference only"):
        block(ws=an.tensor(np.ones((6, 4, 1, 1), np.float32), requires_grad=True))
    with pytest.raises(TypeError, match="shortcut bias"):
        block(bs=np.ones(6, np.float32))


def test_a_fused_block_takes_views_and_one_image_of_a_batch():
    rng = np.random.default_rng(9)
    x = an.tensor(rng.standard_normal((2, 8, 32, 32)).astype(np.float32))
    w1 = an.tensor(rng.standard_normal((24, 8, 1, 1)).astype(np.float32))
    wd = an.tensor(rng.standard_normal((24, 1, 3, 3)).astype(np.float32))
    w2 = an.tensor(rng.standard_normal((8, 24, 1, 1)).astype(np.float32))
    flipped = an.tensor(np.ascontiguousarray(x.numpy()[1:2].transpose(0, 1, 3, 2))).transpose(2, 3)
    expected = _block_by_calls(x[1:2], w1, None, "relu6", wd, None, 1, "relu6", w2, None, None, None)
    got = an._C.conv_pw_dw_pw(flipped, w1, None, None, "relu6", wd, None, 1, "relu6", w2, None, None,
                              None, None)
    np.testing.assert_array_equal(got.numpy(), expected.numpy())


def test_a_fused_block_refuses_what_its_convolutions_refuse():
    x = an.tensor(np.ones((1, 4, 16, 16), np.float32))
    w1 = an.tensor(np.ones((8, 4, 1, 1), np.float32))
    wd = an.tensor(np.ones((8, 1, 3, 3), np.float32))
    w2 = an.tensor(np.ones((4, 8, 1, 1), np.float32))

    def block(x=x, w1=w1, p1=None, wd=wd, stride=1, w2=w2, residual=None, act="relu6"):
        return an._C.conv_pw_dw_pw(x, w1, p1, None, act, wd, None, stride, "relu6", w2, None, None,
                                   residual, None)

    assert block().shape == (1, 4, 16, 16)
    with pytest.raises(ValueError, match="inference only"):
        block(x=an.tensor(np.ones((1, 4, 16, 16), np.float32), requires_grad=True))
    with pytest.raises(ValueError, match="inference only"):
        block(w2=an.tensor(np.ones((4, 8, 1, 1), np.float32), requires_grad=True))
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        block(act="gelu")
    with pytest.raises(ValueError, match=r"output channels 6 \(weight \[6, 1, 3, 3\]\) are not "
                                         r"divisible by groups=8"):
        block(wd=an.tensor(np.ones((6, 1, 3, 3), np.float32)))
    with pytest.raises(ValueError, match=r"input \[1, 8, 16, 16\] has 8 channels, but weight \[4, 6, 1, 1\]"):
        block(w2=an.tensor(np.ones((4, 6, 1, 1), np.float32)))
    with pytest.raises(ValueError, match=r"residual must have the output's shape \[1, 4, 8, 8\]"):
        block(stride=2, residual=an.tensor(np.ones((1, 4, 16, 16), np.float32)))
    with pytest.raises(ValueError, match="stride must be >= 1, got \\(0, 0\\)"):
        block(stride=0)
    with pytest.raises(ValueError, match="expected input of shape \\[N, C, H, W\\], got \\[4, 16, 16\\]"):
        block(x=an.tensor(np.ones((4, 16, 16), np.float32)))
    with pytest.raises(ValueError, match="does not belong to weight"):
        block(p1=an._C.conv2d_pack_weight(an.tensor(np.ones((8, 5, 1, 1), np.float32))))
    with pytest.raises(TypeError, match="depthwise weight"):
        block(wd=None)
    with pytest.raises(TypeError, match="residual"):
        block(residual=np.ones((1, 4, 16, 16), np.float32))


def test_fused_activation_refuses_training_and_unknown_names():
    x = an.tensor(np.ones((1, 2, 5, 5), dtype=np.float32), requires_grad=True)
    w = an.tensor(np.ones((3, 2, 3, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="inference only"):
        an._C.conv2d(x, w, None, (1, 1), (1, 1), (1, 1), 1, "relu")
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        an._C.conv2d(x.detach(), w, None, (1, 1), (1, 1), (1, 1), 1, "gelu")


class SharedOutput(nn.Module):
    """The conv output feeds the batch norm AND a residual sum: folding the
    batch norm would change the sum, so fusion must refuse."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


def test_a_conv_output_used_twice_is_reported():
    model = calibrated(SharedOutput(), (1, 3, 8, 8))
    with pytest.raises(RuntimeError, match="differs from the original"):
        fuse_for_inference(model, np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32))


def test_folded_batch_norm_checks_the_activation():
    folded = FoldedBatchNorm(4, "relu")
    x = an.tensor(np.ones((1, 4, 2, 2), dtype=np.float32))
    assert folded(x, activation="relu") is x
    with pytest.raises(RuntimeError, match="fused with activation 'relu' but called with activation None"):
        folded(x)


def test_training_mode_is_restored_and_bad_model_rejected():
    model = calibrated(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), (1, 3, 6, 6)).train()
    fuse_for_inference(model, np.zeros((1, 3, 6, 6), dtype=np.float32))
    assert model.training
    with pytest.raises(TypeError, match="expected an appealnet.nn.Module"):
        fuse_for_inference(lambda x: x, np.zeros((1, 3, 6, 6), dtype=np.float32))


def test_fused_model_exports_to_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from appealnet.onnx_export import export_onnx
    an.manual_seed(0)
    model = calibrated(models.create("mobilenet_v2", num_classes=10), (1, 3, 32, 32))
    fused = fuse_for_inference(model, np.zeros((1, 3, 32, 32), dtype=np.float32))
    path = tmp_path / "fused.onnx"
    export_onnx(fused, path, (1, 3, 32, 32))
    x = np.random.default_rng(2).standard_normal((2, 3, 32, 32)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    theirs = session.run(None, {"input": x})[0]
    with an.no_grad():
        ours = fused(an.tensor(x)).numpy()
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(ours).max()))


def test_a_two_head_model_is_fused_and_checked_on_both_outputs():
    """TwoHead returns (logits, q_logit): each output is compared (this used
    to fail with 'tuple' object has no attribute 'numpy')."""
    an.manual_seed(4)
    model = calibrated(models.TwoHead("resnet20", num_classes=10), (1, 3, 32, 32))
    x = an.tensor(np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32))
    fused = fuse_for_inference(model, x)
    assert any(isinstance(m, FusedConv2d) for m in fused.modules())
    with an.no_grad():
        for got, expected in zip(fused(x), model(x)):
            np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4, atol=1e-4)
