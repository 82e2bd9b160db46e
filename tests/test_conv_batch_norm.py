"""A convolution followed by a batch norm in training (F.conv2d_batch_norm,
nn.conv_batch_norm): the convolution computes each output plane's moments as
it writes the plane, and the batch norm takes its statistics from them.  The
results must be the bits of the two separate calls (outputs, every gradient,
the running statistics) on every convolution path, with 1 or 2 threads; the
statistics themselves must match float64 (per-plane moments combined by
Chan's formula, not E[x^2] - E[x]^2)."""
import numpy as np
import pytest

import appealnet as an
import appealnet.nn as nn
import appealnet.nn.functional as F

# (name, x shape, weight shape, stride, padding, dilation, groups, conv bias)
LAYERS = [
    ("1x1, image by image", (3, 8, 16, 16), (12, 8, 1, 1), 1, 0, 1, 1, False),
    ("1x1, several images a GEMM", (5, 8, 4, 4), (12, 8, 1, 1), 1, 0, 1, 1, True),
    ("1x1 grouped (ShuffleNet v1)", (3, 8, 8, 8), (12, 4, 1, 1), 1, 0, 1, 2, False),
    ("3x3 stride 2", (3, 8, 16, 16), (16, 8, 3, 3), 2, 1, 1, 1, False),
    ("3x3, 16 channels on 32x32", (3, 16, 32, 32), (16, 16, 3, 3), 1, 1, 1, 1, False),
    ("3x3 Winograd", (32, 32, 8, 8), (32, 32, 3, 3), 1, 1, 1, 1, False),
    ("3x3 Winograd, larger chunks", (40, 32, 16, 16), (40, 32, 3, 3), 1, 1, 1, 1, False),
    ("3x3 stem, 3 channels", (3, 3, 32, 32), (16, 3, 3, 3), 1, 1, 1, 1, True),
    ("5x5 dilated", (2, 6, 12, 12), (10, 6, 5, 5), 1, 4, 2, 1, False),
    ("depthwise 32x32", (2, 16, 32, 32), (16, 1, 3, 3), 1, 1, 1, 16, False),
    ("depthwise 16x16", (3, 16, 16, 16), (16, 1, 3, 3), 1, 1, 1, 16, False),
    ("depthwise 8x8", (3, 24, 8, 8), (24, 1, 3, 3), 1, 1, 1, 24, False),
    ("depthwise 4x4", (5, 32, 4, 4), (32, 1, 3, 3), 1, 1, 1, 32, False),
    ("depthwise stride 2, 32x32", (2, 16, 32, 32), (16, 1, 3, 3), 2, 1, 1, 16, False),
    ("depthwise stride 2, 16x16", (3, 16, 16, 16), (16, 1, 3, 3), 2, 1, 1, 16, False),
    ("depthwise stride 2, 8x8", (3, 24, 8, 8), (24, 1, 3, 3), 2, 1, 1, 24, False),
    ("depthwise 5x5 (EfficientNet)", (3, 16, 8, 8), (16, 1, 5, 5), 1, 2, 1, 16, True),
    ("depthwise, multiplier 2", (2, 8, 12, 12), (16, 1, 3, 3), 1, 1, 1, 8, False),
]

ACTIVATIONS = (None, "relu", "relu6")


def _run(layer, activation, fused, threads, nonfinite=False):
    _, xs, ws, stride, padding, dilation, groups, with_bias = layer
    rng = np.random.default_rng(sum(xs) + sum(ws))
    x_np = (rng.standard_normal(xs) * 2 + 0.5).astype(np.float32)
    if nonfinite:
        x_np[0, 0, 1, 2] = np.nan
    cout = ws[0]
    leaves = {
        "x": an.tensor(x_np, requires_grad=True),
        "w": an.tensor(rng.standard_normal(ws).astype(np.float32) * 0.3, requires_grad=True),
        "gamma": an.tensor(rng.uniform(0.5, 8, cout).astype(np.float32), requires_grad=True),
        "beta": an.tensor(rng.standard_normal(cout).astype(np.float32), requires_grad=True),
    }
    if with_bias:
        leaves["b"] = an.tensor(rng.standard_normal(cout).astype(np.float32), requires_grad=True)
    bias = leaves.get("b")
    running_mean = an.tensor(rng.standard_normal(cout).astype(np.float32))
    running_var = an.tensor(rng.uniform(0.5, 2, cout).astype(np.float32))
    an.set_num_threads(threads)
    try:
        if fused:
            out = F.conv2d_batch_norm(leaves["x"], leaves["w"], bias, stride, padding, dilation, groups,
                                      running_mean, running_var, leaves["gamma"], leaves["beta"],
                                      True, 0.1, 1e-5, activation=activation)
        else:
            y = F.conv2d(leaves["x"], leaves["w"], bias, stride, padding, dilation, groups)
            out = F.batch_norm(y, running_mean, running_var, leaves["gamma"], leaves["beta"], True,
                               0.1, 1e-5, activation=activation)
        weights = an.tensor(rng.standard_normal(tuple(out.shape)).astype(np.float32))
        (out * weights).sum().backward()
    finally:
        an.set_num_threads(2)
    arrays = {"out": out.detach().numpy(), "running_mean": running_mean.numpy(),
              "running_var": running_var.numpy()}
    arrays.update({f"grad_{k}": v.grad.numpy() for k, v in leaves.items()})
    return arrays


def test_the_layers_cover_every_convolution_path():
    algorithms = {F.conv2d_algorithm(xs, ws, stride, padding, dilation, groups)
                  for _, xs, ws, stride, padding, dilation, groups, _ in LAYERS}
    assert algorithms >= {"pointwise", "im2col_gemm", "implicit_gemm", "winograd",
                          "direct3x3_few_channels", "depthwise"}, algorithms


@pytest.mark.parametrize("layer", LAYERS, ids=[layer[0] for layer in LAYERS])
def test_fused_statistics_give_the_bits_of_the_two_calls(layer):
    activation = ACTIVATIONS[LAYERS.index(layer) % 3]
    want = _run(layer, activation, fused=False, threads=2)
    for threads in (1, 2):
        got = _run(layer, activation, fused=True, threads=threads)
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{key}, {threads} thread(s)")


def test_a_non_finite_input_takes_the_same_fallbacks():
    """Winograd hands a NaN input to the direct lowering, moments and all."""
    layer = next(layer for layer in LAYERS if layer[0] == "3x3 Winograd")
    want = _run(layer, "relu", fused=False, threads=2, nonfinite=True)
    got = _run(layer, "relu", fused=True, threads=2, nonfinite=True)
    assert np.isnan(want["out"]).any()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


@pytest.mark.parametrize("plane", [(1, 1), (1, 5), (4, 4), (3, 7), (8, 8), (6, 11), (32, 32)])
def test_batch_statistics_match_float64_far_from_zero(plane):
    """A mean 1e4 times the spread (float32 sums of x^2 would lose every
    digit of the variance); the planes cover the 32-lane body, the 8-lane rest and the
    scalar tail of the moments' sums."""
    rng = np.random.default_rng(plane[0] * 100 + plane[1])
    x = (1000.0 + 0.1 * rng.standard_normal((6, 3) + plane)).astype(np.float32)
    x[:, 1] = (x[:, 1] - 1000.0) * 1e-3  # a channel near zero with a tiny spread
    running_mean, running_var = an.zeros(3), an.ones(3)
    out = F.batch_norm(an.tensor(x), running_mean, running_var, None, None, True, 1.0, 0.0)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(0, 2, 3))
    var_biased = x64.var(axis=(0, 2, 3))
    count = x.size // 3
    np.testing.assert_allclose(running_mean.numpy(), mean, rtol=1e-7)
    np.testing.assert_allclose(running_var.numpy(), var_biased * count / (count - 1), rtol=2e-6)
    # the output is normalised in float32 around the float32 mean (x - mean
    # is then exact): compared with that, the statistics' own error shows
    mean32 = mean.astype(np.float32).astype(np.float64)
    invstd32 = (1.0 / np.sqrt(var_biased)).astype(np.float32).astype(np.float64)
    want = (x64 - mean32[None, :, None, None]) * invstd32[None, :, None, None]
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-6, atol=1e-6)


def _pair(bias=False):
    an.manual_seed(3)
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=bias)
    bn = nn.BatchNorm2d(6)
    return conv, bn


def _counting(monkeypatch):
    calls = []
    original = F.conv2d_batch_norm

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(F, "conv2d_batch_norm", counted)
    return calls


def test_conv_batch_norm_is_the_two_calls_and_counts_the_batch_once(monkeypatch):
    x_np = np.random.default_rng(0).standard_normal((3, 4, 8, 8)).astype(np.float32)
    calls = _counting(monkeypatch)
    results = []
    for fused in (True, False):
        conv, bn = _pair(bias=True)
        bn.momentum = None  # cumulative average: the batch count enters the update
        x = an.tensor(x_np, requires_grad=True)
        for _ in range(2):
            out = nn.conv_batch_norm(conv, bn, x, activation="relu") if fused else \
                bn(conv(x), activation="relu")
        out.sum().backward()
        results.append((out.detach().numpy(), x.grad.numpy(), conv.weight.grad.numpy(),
                        conv.bias.grad.numpy(), bn.weight.grad.numpy(), bn.running_mean.numpy(),
                        bn.running_var.numpy(), bn.num_batches_tracked.item()))
    assert len(calls) == 2
    assert results[0][-1] == results[1][-1] == 2
    for got, want in zip(results[0], results[1]):
        np.testing.assert_array_equal(got, want)


def test_same_padding_with_an_extra_pixel_goes_through_the_fused_call(monkeypatch):
    calls = _counting(monkeypatch)
    an.manual_seed(5)
    conv, bn = nn.Conv2d(3, 5, 4, padding="same"), nn.BatchNorm2d(5)
    x = an.tensor(np.random.default_rng(1).standard_normal((2, 3, 9, 9)).astype(np.float32))
    got = nn.conv_batch_norm(conv, bn, x).detach().numpy()
    bn.num_batches_tracked.zero_()
    want = bn(conv(x)).detach().numpy()
    assert len(calls) == 1 and got.shape == (2, 5, 9, 9)
    np.testing.assert_array_equal(got, want)


def test_falls_back_to_the_two_calls_where_they_must_be_seen(monkeypatch):
    calls = _counting(monkeypatch)
    x = an.tensor(np.random.default_rng(2).standard_normal((2, 4, 6, 6)).astype(np.float32))
    conv, bn = _pair()
    bn.eval()  # eval mode: nothing to gain
    np.testing.assert_array_equal(nn.conv_batch_norm(conv, bn, x).detach().numpy(),
                                  bn(conv(x)).detach().numpy())
    bn.train()
    seen = []
    handle = conv.register_forward_hook(lambda module, args, output: seen.append(output.shape))
    nn.conv_batch_norm(conv, bn, x)  # a hook must see the convolution's output
    handle.remove()
    assert seen == [(2, 6, 6, 6)]
    replaced = nn.Identity()  # a user's replacement of the batch norm
    np.testing.assert_array_equal(nn.conv_batch_norm(conv, replaced, x).detach().numpy(),
                                  conv(x).detach().numpy())
    assert calls == []
    nn.conv_batch_norm(conv, bn, x)
    assert len(calls) == 1


def test_sequential_runs_a_conv_and_its_batch_norm_fused(monkeypatch):
    calls = _counting(monkeypatch)
    conv, bn = _pair()
    model = nn.Sequential(conv, bn, nn.ReLU(), nn.Conv2d(6, 2, 1))
    x = an.tensor(np.random.default_rng(3).standard_normal((2, 4, 6, 6)).astype(np.float32))
    got = model(x).detach().numpy()
    assert len(calls) == 1
    bn.num_batches_tracked.zero_()
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0)
    want = model[3](F.relu(bn(conv(x)))).detach().numpy()
    np.testing.assert_array_equal(got, want)


def test_a_bad_call_changes_nothing():
    conv, bn = _pair()
    x = an.tensor(np.ones((2, 4, 6, 6), np.float32))
    with pytest.raises(ValueError, match="expected input of shape"):
        nn.conv_batch_norm(conv, bn, an.tensor(np.ones((4, 6, 6), np.float32)))
    with pytest.raises(ValueError, match="activation must be None, 'relu' or 'relu6'"):
        nn.conv_batch_norm(conv, bn, x, activation="gelu")
    bn.weight = nn.Parameter(an.ones(7))  # of the wrong length
    with pytest.raises(ValueError, match="batch_norm"):
        nn.conv_batch_norm(conv, bn, x)
    assert bn.num_batches_tracked.item() == 0
    np.testing.assert_array_equal(bn.running_mean.numpy(), np.zeros(6, np.float32))
    np.testing.assert_array_equal(bn.running_var.numpy(), np.ones(6, np.float32))


def test_conv2d_algorithm_names_the_path_and_refuses_bad_shapes():
    assert F.conv2d_algorithm((128, 96, 32, 32), (96, 1, 3, 3), 1, 1, 1, 96) == "depthwise"
    assert F.conv2d_algorithm((1, 16, 32, 32), (96, 16, 1, 1)) == "pointwise"
    with pytest.raises(ValueError, match="expects 4"):
        F.conv2d_algorithm((1, 3, 8, 8), (4, 4, 3, 3))
    with pytest.raises(ValueError, match="4 dimensions"):
        F.conv2d_algorithm((3, 8, 8), (4, 3, 3, 3))


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v2", "shufflenet_v2", "efficientnet_b0"])
def test_a_zoo_training_step_is_the_same_fused_or_not(name):
    """The zoo's models at their real layer shapes (32x32, batch 4): a
    training step through nn.conv_batch_norm (the default) and through the
    two calls (forced by a forward hook on every convolution) give the same
    logits, gradients and running statistics, bit for bit."""
    import appealnet.models as models

    def step(hooked):
        an.manual_seed(0)
        model = models.create(name, num_classes=10)
        model.train()
        if hooked:
            for module in model.modules():
                if isinstance(module, nn.Conv2d):
                    module.register_forward_hook(lambda *args: None)
        rng = np.random.default_rng(0)
        x = an.tensor(rng.standard_normal((4, 3, 32, 32)).astype(np.float32))
        logits = model(x)
        F.cross_entropy(logits, rng.integers(0, 10, 4)).backward()
        grads = {k: v.grad.numpy() for k, v in model.named_parameters() if v.grad is not None}
        state = {k: np.array(v) for k, v in model.state_dict().items()}
        return logits.detach().numpy(), grads, state

    fused, plain = step(False), step(True)
    np.testing.assert_array_equal(fused[0], plain[0])
    assert fused[1].keys() == plain[1].keys() and len(fused[1]) > 10
    for key in plain[1]:
        np.testing.assert_array_equal(fused[1][key], plain[1][key], err_msg=key)
    for key in plain[2]:
        np.testing.assert_array_equal(fused[2][key], plain[2][key], err_msg=key)
