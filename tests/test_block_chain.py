"""_C.block_chain / block_chain_run: inverted-residual blocks, each reading
the one before's output, run in one parallel region.  Each chain must give
the bits of its blocks called one by one (conv_pw_dw_pw), on 1, 2 and 3
threads, whether every block runs in the region or some run on their own;
and misuse raises with a message that names the problem."""
import numpy as np
import pytest

import appealnet as an
from appealnet import _C


def _block(rng, c, ce, co, stride, expand=True, residual=False, shortcut=False, pack=True,
           acts=("relu6", "relu6", None)):
    """A block tuple for block_chain: (w1, p1, b1, act1, wd, bd, stride, actd,
    w2, p2, b2, residual_from_input, act2[, ws, ps, bs])."""
    def weight(*shape, scale=1.0):
        return an.tensor((rng.standard_normal(shape) * scale).astype(np.float32))

    w1 = weight(ce, c, 1, 1, scale=0.4) if expand else None
    b1 = weight(ce) if expand else None
    wd, bd = weight(ce, 1, 3, 3), weight(ce)
    w2, b2 = weight(co, ce, 1, 1, scale=0.2), weight(co)
    packed = (lambda w: _C.conv2d_pack_weight(w) if pack and w is not None else None)
    block = (w1, packed(w1), b1, acts[0], wd, bd, stride, acts[1], w2, packed(w2), b2, residual,
             acts[2])
    if shortcut:
        ws = weight(co, c, 1, 1, scale=0.5)
        block += (ws, packed(ws), weight(co))
    return block


def _one_by_one(x, blocks):
    """The chain as conv_pw_dw_pw calls."""
    for b in blocks:
        residual = x if b[11] else None
        x = _C.conv_pw_dw_pw(x, *b[0:11], residual, b[12], *b[13:16])
    return x


def _mobilenet_like(rng, pack=True):
    """MobileNetV2's kinds of block over 32x32 -> 16x16 -> 8x8 -> 4x4 planes:
    no expansion, identity residuals, shortcut convolutions, strides 2, the
    bands of rows and the small-plane region."""
    return [
        _block(rng, 16, 16, 8, 1, expand=False, pack=pack),
        _block(rng, 8, 48, 12, 1, shortcut=True, pack=pack),
        _block(rng, 12, 72, 12, 1, residual=True, pack=pack),
        _block(rng, 12, 72, 16, 2, pack=pack),
        _block(rng, 16, 96, 16, 1, residual=True, pack=pack, acts=("relu", None, "relu")),
        _block(rng, 16, 96, 24, 2, pack=pack),
        _block(rng, 24, 144, 24, 1, residual=True, pack=pack),
        # on AVX-512 the shortcut (K = 24) takes tiles of 8 rows, the
        # projection (K = 144) of 14
        _block(rng, 24, 144, 40, 1, shortcut=True, pack=pack),
        _block(rng, 40, 240, 48, 2, pack=pack),
        _block(rng, 48, 288, 48, 1, residual=True, pack=pack),
    ]


def _same_bits(got, expected):
    np.testing.assert_array_equal(got.numpy().view(np.uint32), expected.numpy().view(np.uint32))


# (name, batch, blocks' builder, chains that run every block in the region on 2 threads)
CHAINS = [
    ("MobileNetV2's kinds of block", 1, _mobilenet_like, True),
    ("weights not packed", 1, lambda rng: _mobilenet_like(rng, pack=False), True),
    ("batch 2: whole images per thread, small planes on their own", 2, _mobilenet_like, False),
    # a chunk's rows would sum K = 300 in other blocks than the plane's: that
    # block takes the three calls between two regions
    ("a block of three calls in the middle", 1,
     lambda rng: [_block(rng, 16, 48, 16, 1, residual=True), _block(rng, 16, 300, 16, 1),
                  _block(rng, 16, 48, 16, 1, residual=True)], False),
    ("one block", 1, lambda rng: [_block(rng, 16, 48, 16, 2)], True),
]


@pytest.mark.parametrize("case", CHAINS, ids=[c[0] for c in CHAINS])
def test_a_chain_gives_the_bits_of_its_blocks_called_one_by_one(case):
    _, n, build, whole = case
    rng = np.random.default_rng(len(case[0]))
    blocks = build(rng)
    c = blocks[0][4].shape[0] if blocks[0][0] is None else blocks[0][0].shape[1]
    x = (rng.standard_normal((n, c, 32, 32)) * 2).astype(np.float32)
    x[0, 1, 17, 5] = np.nan  # spreads through the blocks' receptive fields, not lost
    x = an.tensor(x)
    chain = _C.block_chain(blocks)
    # the portable kernel has no narrow GEMM: the 8x8 and 4x4 blocks of the
    # long chains then take their own calls
    whole = whole and not (an.cpu_info().split("isa=")[1].startswith("generic") and len(blocks) > 1)
    threads = an.get_num_threads()
    try:
        for n_threads in (1, 2, 3):
            an.set_num_threads(n_threads)
            expected = _one_by_one(x, blocks)
            assert np.isnan(expected.numpy()[0]).any() and not np.isnan(expected.numpy()[1:]).any()
            if n_threads == 2:
                assert _C.block_chain_in_one_region(chain, tuple(x.shape)) == whole
            _same_bits(_C.block_chain_run(chain, x), expected)
    finally:
        an.set_num_threads(threads)


def test_a_chain_runs_the_blocks_of_mobilenet_v2_in_one_region():
    """The plan of MobileNetV2 at batch 1 chains its 17 blocks; on 2 threads
    all of them run in the chain's region (on 1, the 16x16 stride-2 block
    takes the three calls between two regions)."""
    from appealnet import models
    from appealnet.nn.plan import compile_for_inference

    an.manual_seed(0)
    model = models.create("mobilenet_v2", num_classes=10).eval()
    x = an.tensor(np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32))
    plan = compile_for_inference(model, x)
    assert plan.ops(x.shape) == ["conv2d", "block_chain", "conv2d", "mean", "linear"]
    chain = plan._plans[tuple(x.shape)].steps[1][0]
    assert len(chain.templates) == 17 and sum(chain.from_input) == 10
    threads = an.get_num_threads()
    try:
        an.set_num_threads(2)
        generic = an.cpu_info().split("isa=")[1].startswith("generic")  # no narrow GEMM
        assert _C.block_chain_in_one_region(chain.chain, (1, 32, 32, 32)) != generic
        an.set_num_threads(1)
        assert not _C.block_chain_in_one_region(chain.chain, (1, 32, 32, 32))
    finally:
        an.set_num_threads(threads)


def test_a_chain_reads_its_weights_at_each_run():
    rng = np.random.default_rng(5)
    blocks = [_block(rng, 8, 24, 8, 1, residual=True, pack=False),
              _block(rng, 8, 24, 8, 1, residual=True, pack=False)]
    x = an.tensor(rng.standard_normal((1, 8, 16, 16)).astype(np.float32))
    chain = _C.block_chain(blocks)
    before = _C.block_chain_run(chain, x).numpy()
    with an.no_grad():
        bias = blocks[1][10]  # the second projection's
        bias.copy_(an.tensor(bias.numpy() + 1.0))
    after = _C.block_chain_run(chain, x)
    _same_bits(after, _one_by_one(x, blocks))
    np.testing.assert_allclose(after.numpy() - before, 1.0, rtol=0, atol=1e-5)
    del blocks  # the chain keeps its own references
    assert _C.block_chain_run(chain, x).shape == (1, 8, 16, 16)


def test_a_chain_refuses_bad_blocks_and_inputs():
    rng = np.random.default_rng(1)
    good = _block(rng, 8, 24, 8, 1, residual=True)
    with pytest.raises(ValueError, match="expected at least one block, got 0"):
        _C.block_chain([])
    with pytest.raises(TypeError, match="expected a sequence of block tuples"):
        _C.block_chain(3)
    with pytest.raises(TypeError, match="block 1 is not a tuple"):
        _C.block_chain([good, list(good)])
    with pytest.raises(TypeError, match="depthwise weight"):
        _C.block_chain([good[:4] + (None,) + good[5:]])
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        _C.block_chain([good[:3] + ("gelu",) + good[4:]])
    with pytest.raises(ValueError, match="block 0: .*without the shortcut weight"):
        _C.block_chain([good[:11] + (False, None, None, None, good[10])])
    with pytest.raises(ValueError, match="block 0: a shortcut convolution and residual_from_input"):
        _C.block_chain([good + (good[8], None, None)])
    chain = _C.block_chain([good, _block(rng, 8, 24, 4, 2)])
    with pytest.raises(TypeError, match="expected a chain from block_chain, got int"):
        _C.block_chain_run(7, an.tensor(np.ones((1, 8, 8, 8), np.float32)))
    with pytest.raises(ValueError, match=r"input \[1, 6, 8, 8\] has 6 channels, but weight \[24, 8, 1, 1\]"):
        _C.block_chain_run(chain, an.tensor(np.ones((1, 6, 8, 8), np.float32)))
    with pytest.raises(ValueError, match=r"expected input of shape \[N, C, H, W\], got \[8, 8, 8\]"):
        _C.block_chain_run(chain, an.tensor(np.ones((8, 8, 8), np.float32)))
    with pytest.raises(ValueError, match="inference only"):
        _C.block_chain_run(chain, an.tensor(np.ones((1, 8, 8, 8), np.float32), requires_grad=True))
    # a second block that does not take the first's output: the call's own message
    broken = _C.block_chain([good, _block(rng, 5, 24, 8, 1)])
    with pytest.raises(ValueError, match=r"input \[1, 8, 8, 8\] has 8 channels, but weight \[24, 5, 1, 1\]"):
        _C.block_chain_run(broken, an.tensor(np.ones((1, 8, 8, 8), np.float32)))
    assert not _C.block_chain_in_one_region(broken, (1, 8, 8, 8))
    with pytest.raises(TypeError):
        _C.block_chain_in_one_region(chain, (1, 8, 8))
    # empty planes: the convolution's own message, no division by zero
    for shape in ((1, 8, 0, 0), (1, 8, 0, 5), (1, 8, 5, 0)):
        empty = an.tensor(np.ones(shape, np.float32))
        with pytest.raises(ValueError, match="larger than the padded input"):
            _C.block_chain_run(chain, empty)
        with pytest.raises(ValueError, match="larger than the padded input"):
            _C.conv_pw_dw_pw(empty, *good[0:11], empty, good[12])
    for shape in ((1, 8, 0, 0), (1, 8, -3, 8), (1, 8, 1 << 40, 8), (0, 8, 8, 8)):
        assert not _C.block_chain_in_one_region(chain, shape)
