"""Batch norm with a fused activation (F.batch_norm(..., activation=...),
BatchNorm2d(x, activation=...)): bit for bit the unfused relu/relu6 of batch
norm, forward and backward, train and eval, with NaN and zeros in the data and
for 1 and 2 threads; against float64 numpy with finite differences and against
torch; running statistics, errors, module hooks, the profiler's figures and the
ONNX export."""
import numpy as np
import pytest

import appealnet as an
from appealnet import _C, nn
from appealnet.nn import functional as F
from gradcheck import check_op, torch_or_skip

UNFUSED = {"relu": F.relu, "relu6": F.relu6}


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def assert_bits_equal(got, expected, what):
    got, expected = np.asarray(got, np.float32), np.asarray(expected, np.float32)
    assert got.shape == expected.shape, what
    if got.tobytes() != expected.tobytes():
        differ = np.flatnonzero(got.view(np.uint32) != expected.view(np.uint32))
        i = differ[0]
        pytest.fail(f"{what}: {differ.size} elements differ bitwise, first at flat index "
                    f"{i}: {got.reshape(-1)[i]!r} vs {expected.reshape(-1)[i]!r}")


def awkward_inputs(shape, seed, training):
    """x scaled so that relu6 clips, with exact zeros (a channel that is constant
    over part of the batch); a NaN in the last channel (in training it makes the
    whole channel NaN through the statistics); a cotangent with zeros, -0 and a
    NaN."""
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = rand(rng, *shape) * 2 + 0.3
    x[:, 0] = 0.0                                    # constant channel: normalises to beta
    x[0, 0] = 4.0
    x.reshape(shape[0], c, -1)[-1, -1, 0] = np.nan
    w = rand(rng, c) * 5                             # |y| beyond 6 for relu6
    w[0] = 0.0
    b = rand(rng, c)
    b[1] = 0.0
    g = rand(rng, *shape)
    g.reshape(-1)[:3] = [0.0, -0.0, np.nan]
    rm = rand(rng, c)
    rv = (rng.random(c) + 0.1).astype(np.float32)
    return x, w, b, g, rm, rv


def run_bn(x, w, b, g, rm, rv, training, activation, fused, affine=True):
    """Forward and backward of act(batch_norm) fused or composed; returns the
    output, dx, dw, db and the running statistics afterwards."""
    tx = an.tensor(x, requires_grad=True)
    tw = an.tensor(w, requires_grad=True) if affine else None
    tb = an.tensor(b, requires_grad=True) if affine else None
    arm, arv = an.tensor(rm), an.tensor(rv)
    if fused:
        out = F.batch_norm(tx, arm, arv, tw, tb, training=training, momentum=0.3,
                           activation=activation)
    else:
        out = UNFUSED[activation](F.batch_norm(tx, arm, arv, tw, tb, training=training,
                                               momentum=0.3))
    out.backward(an.tensor(g))
    grads = [tx.grad.numpy()] + ([tw.grad.numpy(), tb.grad.numpy()] if affine else [])
    return [out.detach().numpy()] + grads + [arm.numpy(), arv.numpy()]


# ------------------------------------------------------ bit-identical to unfused
@pytest.mark.parametrize("activation", ["relu", "relu6"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(6, 5, 4, 3), (9, 4), (3, 4, 301), (4, 24, 19, 21)],
                         ids=["nchw", "bn1d", "long_rows", "over_grain"])
def test_fused_equals_composition_bitwise(shape, training, activation):
    inputs = awkward_inputs(shape, seed=sum(shape), training=training)
    names = ["out", "dx", "dweight", "dbias", "running_mean", "running_var"]
    fused = run_bn(*inputs, training, activation, fused=True)
    unfused = run_bn(*inputs, training, activation, fused=False)
    for name, got, expected in zip(names, fused, unfused):
        assert_bits_equal(got, expected, f"{name} ({activation}, training={training})")
    out = fused[0]
    assert np.isnan(out).any() and (out == 0).any()
    if activation == "relu6":
        assert (out == 6).any()


@pytest.mark.parametrize("activation", ["relu", "relu6"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_fused_equals_composition_without_affine(training, activation):
    x, w, b, g, rm, rv = awkward_inputs((5, 3, 4, 4), seed=7, training=training)
    x *= 4                                           # relu6 clips without a weight too
    fused = run_bn(x, w, b, g, rm, rv, training, activation, fused=True, affine=False)
    unfused = run_bn(x, w, b, g, rm, rv, training, activation, fused=False, affine=False)
    for got, expected in zip(fused, unfused):
        assert_bits_equal(got, expected, f"{activation} without affine")


@pytest.mark.parametrize("activation", [None, "relu", "relu6"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_one_and_two_threads_give_the_same_bits(training, activation):
    inputs = awkward_inputs((8, 32, 12, 12), seed=11, training=training)
    x = inputs[0]
    x[np.isnan(x)] = 1.0                             # finite, so every bit is meaningful
    prev = an.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            an.set_num_threads(threads)
            if activation is None:
                tx, tw, tb = (an.tensor(v, requires_grad=True) for v in inputs[:3])
                out = F.batch_norm(tx, an.tensor(inputs[4]), an.tensor(inputs[5]), tw, tb,
                                   training=training)
                out.backward(an.tensor(np.nan_to_num(inputs[3])))
                results.append([out.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(),
                                tb.grad.numpy()])
            else:
                results.append(run_bn(*inputs, training, activation, fused=True))
    finally:
        an.set_num_threads(prev)
    for one, two in zip(*results):
        assert_bits_equal(one, two, "1 vs 2 threads")


def test_only_some_inputs_need_grad():
    rng = np.random.default_rng(2)
    x, w, b = rand(rng, 4, 3, 5, 5), rand(rng, 3) * 3, rand(rng, 3)
    g = rand(rng, 4, 3, 5, 5)
    for training in (True, False):
        full = run_bn(x, w, b, g, np.zeros(3, np.float32), np.ones(3, np.float32), training,
                      "relu", fused=True)
        tx = an.tensor(x, requires_grad=True)
        out = F.batch_norm(tx, an.zeros(3), an.ones(3), an.tensor(w), an.tensor(b),
                           training=training, momentum=0.3, activation="relu")
        out.backward(an.tensor(g))
        assert_bits_equal(tx.grad.numpy(), full[1], "dx alone")
        tw = an.tensor(w, requires_grad=True)
        out = F.batch_norm(an.tensor(x), an.zeros(3), an.ones(3), tw, an.tensor(b),
                           training=training, momentum=0.3, activation="relu")
        out.backward(an.tensor(g))
        assert_bits_equal(tw.grad.numpy(), full[2], "dweight alone")


# ------------------------------------------------------------ float64 references
def bn_relu_train_ref(activation, eps=1e-5):
    def ref(x, w, b):
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        mean = x.mean(axis=axes, keepdims=True)
        var = x.var(axis=axes, keepdims=True)
        y = (x - mean) / np.sqrt(var + eps) * w.reshape(shape) + b.reshape(shape)
        return np.maximum(y, 0) if activation == "relu" else np.clip(y, 0, 6)
    return ref


def bn_relu_eval_ref(activation, rm, rv, eps=1e-5):
    def ref(x, w, b):
        shape = (1, -1) + (1,) * (x.ndim - 2)
        y = ((x - rm.reshape(shape)) / np.sqrt(rv.reshape(shape) + eps) * w.reshape(shape)
             + b.reshape(shape))
        return np.maximum(y, 0) if activation == "relu" else np.clip(y, 0, 6)
    return ref


@pytest.mark.parametrize("activation", ["relu", "relu6"])
@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 3, 2), (3, 2, 5)])
def test_train_against_float64_and_finite_differences(shape, activation):
    rng = np.random.default_rng(len(shape))
    c = shape[1]
    arrays = [rng.standard_normal(shape) * 2 + 1, rng.standard_normal(c) * 4, rng.standard_normal(c)]
    check_op(lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True,
                                          activation=activation),
             bn_relu_train_ref(activation), arrays, grad_rtol=2e-3, grad_atol=2e-4)


@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_eval_against_float64_and_finite_differences(activation):
    rng = np.random.default_rng(9)
    shape = (3, 4, 2, 3)
    rm = rng.standard_normal(4).astype(np.float32).astype(np.float64)
    rv = (rng.random(4) + 0.2).astype(np.float32).astype(np.float64)
    arrays = [rng.standard_normal(shape), rng.standard_normal(4) * 5, rng.standard_normal(4)]
    check_op(lambda x, w, b: F.batch_norm(x, an.tensor(rm), an.tensor(rv), w, b,
                                          training=False, activation=activation),
             bn_relu_eval_ref(activation, rm, rv), arrays)


@pytest.mark.parametrize("activation", ["relu", "relu6"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(16, 32), (8, 16, 8, 8)])
def test_against_torch(shape, training, activation):
    torch = torch_or_skip()
    torch.set_num_threads(1)
    rng = np.random.default_rng(3)
    c = shape[1]
    x = rand(rng, *shape) * 3 + 0.5
    w, b = rand(rng, c) * 4, rand(rng, c)
    rm, rv = rand(rng, c), (rng.random(c) + 0.5).astype(np.float32)
    g = rand(rng, *shape)
    tx, tw, tb = (an.tensor(v, requires_grad=True) for v in (x, w, b))
    arm, arv = an.tensor(rm), an.tensor(rv)
    out = F.batch_norm(tx, arm, arv, tw, tb, training=training, momentum=0.2, eps=1e-3,
                       activation=activation)
    out.backward(an.tensor(g))
    ts = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (x, w, b)]
    trm, trv = torch.tensor(rm, dtype=torch.float64), torch.tensor(rv, dtype=torch.float64)
    act = torch.nn.functional.relu if activation == "relu" else torch.nn.functional.relu6
    expected = act(torch.nn.functional.batch_norm(ts[0], trm, trv, ts[1], ts[2],
                                                  training=training, momentum=0.2, eps=1e-3))
    expected.backward(torch.tensor(g, dtype=torch.float64))
    np.testing.assert_allclose(out.detach().numpy(), expected.detach().numpy(), rtol=1e-4,
                               atol=1e-4)
    for mine, theirs in zip((tx, tw, tb), ts):
        ref = theirs.grad.numpy()
        np.testing.assert_allclose(mine.grad.numpy(), ref, rtol=1e-4,
                                   atol=1e-5 * max(1, np.abs(ref).max()))
    np.testing.assert_allclose(arm.numpy(), trm.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(arv.numpy(), trv.numpy(), rtol=1e-5, atol=1e-6)


def test_empty_batch_in_training_gives_zero_parameter_gradients():
    # the backward kernels overwrite their outputs: an empty batch must still
    # write the zeros the gradients are
    for activation in (None, "relu"):
        x = an.tensor(np.zeros((0, 3), np.float32), requires_grad=True)
        w = an.tensor(np.ones(3, np.float32), requires_grad=True)
        b = an.tensor(np.zeros(3, np.float32), requires_grad=True)
        out = F.batch_norm(x, None, None, w, b, training=True, activation=activation)
        out.sum().backward()
        assert x.grad.shape == (0, 3)
        np.testing.assert_array_equal(w.grad.numpy(), np.zeros(3))
        np.testing.assert_array_equal(b.grad.numpy(), np.zeros(3))


# ------------------------------------------------------------------- modules
def test_module_keyword_matches_functional_and_keeps_state_dict_and_hooks():
    rng = np.random.default_rng(4)
    x = rand(rng, 4, 3, 5, 5)
    fused_bn, plain_bn = nn.BatchNorm2d(3), nn.BatchNorm2d(3)
    seen = []
    fused_bn.register_forward_hook(lambda module, args, output: seen.append(output))
    fused = fused_bn(an.tensor(x), activation="relu6")
    plain = F.relu6(plain_bn(an.tensor(x)))
    assert_bits_equal(fused.detach().numpy(), plain.detach().numpy(), "module relu6")
    assert seen and seen[0] is fused
    assert fused.grad_fn == "NativeBatchNormRelu6Backward"
    assert plain.grad_fn == "Relu6Backward"
    assert list(fused_bn.state_dict()) == list(plain_bn.state_dict())
    for key, value in plain_bn.state_dict().items():   # running stats, batch count
        np.testing.assert_array_equal(fused_bn.state_dict()[key], value)
    bn1d = nn.BatchNorm1d(3).eval()
    with an.no_grad():
        assert_bits_equal(bn1d(an.tensor(x[:, :, 0, 0]), activation="relu").numpy(),
                          F.relu(bn1d(an.tensor(x[:, :, 0, 0]))).numpy(), "BatchNorm1d eval")


def test_unknown_activation_is_a_value_error_that_names_it():
    x = an.zeros((2, 3, 2, 2))
    with pytest.raises(ValueError, match=r"batch_norm: activation must be None, 'relu' or "
                                         r"'relu6', got 'gelu'"):
        F.batch_norm(x, None, None, training=True, activation="gelu")
    with pytest.raises(ValueError, match=r"got <function relu"):
        F.batch_norm(x, None, None, training=True, activation=F.relu)
    bn = nn.BatchNorm2d(3)
    with pytest.raises(ValueError, match="'silu'"):
        bn(x, activation="silu")
    assert bn.num_batches_tracked.item() == 0          # the failed call changed nothing
    with pytest.raises(ValueError, match=r"unknown activation 'Relu'"):
        _C.batch_norm(x, None, None, None, None, True, 0.1, 1e-5, "Relu")


# ----------------------------------------------------- profiler and ONNX export
class ConvBnAct(nn.Module):
    def __init__(self, fused, activation):
        super().__init__()
        self.fused, self.activation = fused, activation
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        if self.fused:
            return self.bn(self.conv(x), activation=self.activation)
        return UNFUSED[self.activation](self.bn(self.conv(x)))


@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_profiler_figures_do_not_depend_on_fusion(activation):
    for convention in ("macs", "paper"):
        fused = an.profile(ConvBnAct(True, activation), (3, 8, 8), convention)
        unfused = an.profile(ConvBnAct(False, activation), (3, 8, 8), convention)
        assert fused.macs == unfused.macs and fused.params == unfused.params
        assert fused.activation_bytes_inference == unfused.activation_bytes_inference
        assert fused.activation_bytes_training() == unfused.activation_bytes_training()
    bn_row = [row for row in fused.layers if row.name == "bn"][0]
    assert bn_row.ops == ["batch_norm", activation]


@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_onnx_export_of_fused_batch_norm(activation, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    an.manual_seed(0)
    model = ConvBnAct(True, activation)
    with an.no_grad():
        model.bn.weight.fill_(4.0)                      # reach relu6's upper bound
    model.train()(an.tensor(np.random.default_rng(0).standard_normal((2, 3, 6, 6))))
    model.eval()
    path = tmp_path / "bn_act.onnx"
    an.export_onnx(model, path, (1, 3, 6, 6))
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    ops = [n.op_type for n in proto.graph.node]
    assert ops[:3] == ["Conv", "BatchNormalization", "Relu" if activation == "relu" else "Clip"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((3, 3, 6, 6)).astype(np.float32)
    with an.no_grad():
        ours = model(an.tensor(x)).numpy()
    theirs = session.run(None, {"input": x})[0]
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-5)
    if activation == "relu6":
        assert (ours == 6).any()


@pytest.mark.parametrize("shape", [(16, 300, 8, 8), (48, 5, 32, 32), (3, 3000, 4, 4)],
                         ids=["blocks of 128 channels", "two channels a block", "one partial"])
def test_the_training_backward_in_blocks_of_channels(shape):
    """The training backward runs channels in blocks of about 1 MB of dy and
    x (here several blocks, the last one partial; two 32x32 channels a
    block): the same bits on 1, 2 and 3 threads, and dx, dgamma and dbeta
    against float64."""
    rng = np.random.default_rng(shape[1])
    c = shape[1]
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    w = rng.uniform(0.5, 3, c).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    prev = an.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            an.set_num_threads(threads)
            tx, tw, tb = (an.tensor(v, requires_grad=True) for v in (x, w, b))
            out = F.batch_norm(tx, None, None, tw, tb, training=True, activation="relu")
            out.backward(an.tensor(dy))
            results.append([tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy()])
    finally:
        an.set_num_threads(prev)
    for other in results[1:]:
        for one, two in zip(results[0], other):
            assert_bits_equal(one, two, "1 vs 2 or 3 threads")
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    axes, per_channel = (0, 2, 3), (1, -1, 1, 1)
    mean = x64.mean(axis=axes, keepdims=True)
    invstd = 1.0 / np.sqrt(x64.var(axis=axes, keepdims=True) + 1e-5)
    xhat = (x64 - mean) * invstd
    g = np.where(xhat * w.reshape(per_channel) + b.reshape(per_channel) > 0, dy64, 0.0)
    count = x.size // c
    sum_g, sum_g_xhat = g.sum(axis=axes, keepdims=True), (g * xhat).sum(axis=axes, keepdims=True)
    dx = w.reshape(per_channel) * invstd / count * (count * g - sum_g - xhat * sum_g_xhat)
    np.testing.assert_allclose(results[0][0], dx, rtol=1e-3, atol=1e-5 * np.abs(dx).max())
    np.testing.assert_allclose(results[0][1], sum_g_xhat.ravel(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(results[0][2], sum_g.ravel(), rtol=1e-4, atol=1e-3)
