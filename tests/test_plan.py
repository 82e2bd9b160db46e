"""appealnet.nn.utils.compile_for_inference / InferencePlan: a forward pass
recorded as a list of C-core calls and replayed.  The replay must give the
fused model's output bit for bit on inputs it was not recorded with, keep one
plan per input shape, drop activations as eagerly as the model does, and
refuse what a replay cannot reproduce: reads of activation values back into
Python, randomness, tensors from outside the trace."""
import gc

import numpy as np
import pytest

import appealnet as an
import appealnet.models as models
import appealnet.nn as nn
from appealnet.nn import functional as F
from appealnet.nn.utils import InferencePlan, compile_for_inference, fuse_for_inference

from test_fusion import calibrated


def images(shape, seed):
    return an.tensor(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def same_bits(a, b):
    a, b = np.asarray(a.numpy()), np.asarray(b.numpy())
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v2", "shufflenet_v2", "shufflenet_v1",
                                  "efficientnet_b0"])
def test_zoo_plans_reproduce_the_fused_model_bit_for_bit(name):
    an.manual_seed(0)
    model = calibrated(models.create(name, num_classes=10), (1, 3, 32, 32))
    example = images((1, 3, 32, 32), 0)
    plan = compile_for_inference(model, example)
    fused = fuse_for_inference(model, example)
    with an.no_grad():
        for seed in (5, 6):
            x = images((1, 3, 32, 32), seed)  # not the inputs the plan was checked on
            assert same_bits(plan(x), fused(x))
        # and it is the model's function: close to the unfused original
        x = images((1, 3, 32, 32), 7)
        np.testing.assert_allclose(plan(x).numpy(), model(x).numpy(), rtol=1e-4, atol=1e-4)


def test_the_compiled_replay_is_the_stepwise_loop_and_follows_replaced_steps():
    """run() executes the steps as generated straight-line code: the bits of
    the generic loop over the steps (ShuffleNetV2: a list argument of the
    shuffle's concatenation), and steps replaced after compiling (a profiler
    wrapping them; a step with several outputs) are what runs next."""
    an.manual_seed(4)
    model = calibrated(models.create("shufflenet_v2", num_classes=10), (1, 3, 32, 32))
    plan = compile_for_inference(model, images((1, 3, 32, 32), 0))
    shape_plan = plan._plans[(1, 3, 32, 32)]
    assert any(step[2] is None for step in shape_plan.steps)  # a nested (list) argument
    x = images((1, 3, 32, 32), 8)
    with an.no_grad():
        assert same_bits(shape_plan.run(x), shape_plan.run_stepwise(x))
    calls = []
    steps = shape_plan.steps

    def counted(function):
        def call(*args, **kwargs):
            calls.append(function)
            return function(*args, **kwargs)
        return call

    def twice(function):  # two outputs, both written to the step's slot
        return lambda *args, **kwargs: (function(*args, **kwargs), function(*args, **kwargs))

    replaced = [(counted(step[0]),) + tuple(step[1:]) for step in steps]
    replaced[1] = (twice(replaced[1][0]),) + replaced[1][1:5] + ((steps[1][5],) * 2,) + replaced[1][6:]
    shape_plan.steps = replaced
    try:
        assert same_bits(plan(x), shape_plan.run_stepwise(x))
    finally:
        shape_plan.steps = steps
    assert len(calls) == 2 * (len(steps) + 1)


def test_a_new_batch_size_records_its_own_plan_and_old_shapes_are_evicted():
    an.manual_seed(1)
    model = calibrated(models.create("resnet20", num_classes=10), (1, 3, 32, 32))
    plan = compile_for_inference(model, images((1, 3, 32, 32), 0), max_shapes=2)
    assert plan.shapes == [(1, 3, 32, 32)]
    with an.no_grad():
        for n in (3, 2):
            x = images((n, 3, 32, 32), n)
            assert same_bits(plan(x), plan.model(x))
    assert plan.shapes == [(3, 3, 32, 32), (2, 3, 32, 32)]  # the oldest went
    # a batch of 3 is the same computation per image as a batch of 1
    x = images((3, 3, 32, 32), 9)
    np.testing.assert_allclose(plan(x).numpy()[1:2], plan(x[1:2]).numpy(), rtol=1e-5, atol=1e-5)


def test_ops_lists_the_recorded_core_calls():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    plan = compile_for_inference(model, np.ones((2, 4), np.float32), fuse=False)
    assert plan.ops((2, 4)) == ["linear", "relu", "linear"]
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    with an.no_grad():
        expected = model(an.tensor(x)).numpy()
    np.testing.assert_array_equal(plan(x).numpy(), expected)  # numpy input accepted


def test_tuple_outputs_of_a_two_head_model_keep_their_structure():
    an.manual_seed(2)
    model = models.TwoHead("resnet20", num_classes=10)
    model = calibrated(model, (1, 3, 32, 32))
    plan = compile_for_inference(model, images((2, 3, 32, 32), 0))
    x = images((2, 3, 32, 32), 3)
    got = plan(x)
    with an.no_grad():
        expected = plan.model(x)
    assert isinstance(got, tuple) and len(got) == 2
    assert same_bits(got[0], expected[0]) and same_bits(got[1], expected[1])


def test_the_plan_runs_without_autograd_and_leaves_the_model_as_it_was():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    model.train()
    plan = compile_for_inference(model, images((1, 3, 8, 8), 0), fuse=False)
    assert model.training and all(m.training for m in model.modules())
    x = images((1, 3, 8, 8), 1).requires_grad_(True)
    out = plan(x)
    assert not out.requires_grad and out.grad_fn is None


def test_intermediate_activations_are_released_during_the_replay():
    """Each recorded slot is dropped after its last reader, so a replay holds
    a few activations at a time, not all of them (which at batch 128 would be
    gigabytes); after it only the output is left."""
    an.manual_seed(3)
    model = calibrated(models.create("mobilenet_v2", num_classes=10), (1, 3, 32, 32))
    x = images((4, 3, 32, 32), 0)
    plan = compile_for_inference(model, x)
    shape_plan = plan._plans[(4, 3, 32, 32)]
    live, most = {0}, 1
    for step in shape_plan.steps:
        out, frees = step[5], step[6]
        live.update([out] if isinstance(out, int) else out)
        most = max(most, len(live))
        live.difference_update(frees)
    assert len(shape_plan.steps) > 50 and most <= 4
    assert live == set(shape_plan.output_slots)

    gc.collect()
    before = an._C.allocator_stats()["live_bytes"]
    out = plan(x)
    gc.collect()
    assert an._C.allocator_stats()["live_bytes"] - before <= out.numel() * 4 + 4096


def test_residual_joins_are_fused_into_the_convolution_before_them():
    """MobileNetV2's projection 1x1 + shortcut add, ResNet's second conv +
    add_relu: one conv2d call each, with the same bits (the zoo test above
    compares to the fused model)."""
    x = images((1, 3, 32, 32), 0)
    for name, join in (("mobilenet_v2", "add"), ("resnet20", "add_relu")):
        an.manual_seed(0)
        model = models.create(name, num_classes=10)
        fused_model = fuse_for_inference(model, x)
        fused_joins = InferencePlan(fused_model, fuse_blocks=False).ops(x.shape)
        kept_joins = InferencePlan(fused_model, fuse_joins=False, fuse_blocks=False).ops(x.shape)
        assert join not in fused_joins and kept_joins.count(join) > 5
        assert len(kept_joins) - len(fused_joins) == kept_joins.count(join)


class ConvOutputReused(nn.Module):
    """The conv output is both added and returned: not fusable (the plain
    output must still exist)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        y = self.conv(x)
        return y + x, y


class JoinWithBroadcast(nn.Module):
    """A join whose other operand broadcasts: the residual must have the
    output's shape, so this stays an add."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.register_buffer("shift", an.tensor(np.ones((1, 4, 1, 1), np.float32)))

    def forward(self, x):
        return F.relu(self.conv(x) + self.shift)


@pytest.mark.parametrize("model, ops", [
    (ConvOutputReused(), ["conv2d", "add"]),
    (JoinWithBroadcast(), ["conv2d", "add", "relu"]),
])
def test_joins_that_cannot_be_fused_are_left_alone(model, ops):
    x = images((2, 4, 5, 5), 0)
    plan = compile_for_inference(model, x, fuse=False)
    assert plan.ops(x.shape) == ops
    plan = InferencePlan(model)  # fuse_joins on: still not fused
    assert plan.ops(x.shape) == ops


class WritesInPlace(nn.Module):
    """copy_ and fill_ return None and write into their first argument."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 3)

    def forward(self, x):
        y = self.linear(x)
        z = an.zeros(*y.shape)
        z.copy_(y)
        w = an.zeros(*y.shape)
        w.fill_(0.5)
        return z * w


def test_in_place_writes_are_replayed():
    model = WritesInPlace()
    plan = compile_for_inference(model, np.ones((2, 3), np.float32), fuse=False)
    assert plan.ops((2, 3)) == ["linear", "zeros", "copy_", "zeros", "fill_", "mul"]
    x = np.random.default_rng(4).standard_normal((2, 3)).astype(np.float32)
    with an.no_grad():
        expected = model(an.tensor(x)).numpy()
    np.testing.assert_array_equal(plan(x).numpy(), expected)


class ReadsBack(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 3)

    def forward(self, x):
        y = self.linear(x)
        return y * 2.0 if float(y.sum().item()) > 0 else y


class Noisy(nn.Module):
    def forward(self, x):
        return x + an.randn(*x.shape)


class HiddenConstant(nn.Module):
    def __init__(self):
        super().__init__()
        self.__dict__["offset"] = an.tensor(np.ones(3, np.float32))  # not a buffer

    def forward(self, x):
        return x + self.offset


class ReturnsParameter(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(an.tensor(np.ones(3, np.float32)))

    def forward(self, x):
        return self.weight


@pytest.mark.parametrize("model, message", [
    (ReadsBack(), "reads an activation back into Python"),
    (Noisy(), "calls 'normal_'"),
    (HiddenConstant(), "register_buffer"),
    (ReturnsParameter(), "was not computed by an op"),
])
def test_what_a_replay_cannot_reproduce_is_refused(model, message):
    with pytest.raises(RuntimeError, match=message):
        compile_for_inference(model, np.ones((2, 3), np.float32), fuse=False)
    # the tracing patches are gone afterwards
    assert type(an._C.add).__name__ == "builtin_function_or_method"
    assert an.Tensor.numpy is an._C.TensorBase.numpy


def test_bad_arguments_raise_clear_errors():
    model = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(TypeError, match="appealnet.nn.Module"):
        compile_for_inference(lambda x: x, np.ones((1, 3), np.float32))
    with pytest.raises(ValueError, match="non-empty"):
        compile_for_inference(model, np.ones((0, 3), np.float32))
    with pytest.raises(TypeError, match="array of numbers"):
        compile_for_inference(model, "not an array")
    with pytest.raises(ValueError, match="max_shapes"):
        InferencePlan(model, max_shapes=0)
    plan = compile_for_inference(model, np.ones((1, 3), np.float32))
    with pytest.raises(ValueError, match="cannot be multiplied"):  # the model's own error
        plan(np.ones((1, 5), np.float32))
    assert plan.shapes == [(1, 3)]


def _block_templates(plan, shape):
    """The conv_pw_dw_pw arguments of every block a plan runs, alone or in a
    chain of blocks (block_chain)."""
    templates = []
    for (function, template, *_), name in zip(plan._plans[shape].steps, plan.ops(shape)):
        if name == "conv_pw_dw_pw":
            templates.append(template)
        elif name == "block_chain":
            templates.extend(function.templates)
    return templates


def _pointwise_weights(plan, shape):
    """(weight, packed copy or None) of every 1x1 convolution a plan runs,
    alone (conv2d) or inside a block (conv_pw_dw_pw, block_chain)."""
    pairs = []
    for (_, template, *_), name in zip(plan._plans[shape].steps, plan.ops(shape)):
        if name == "conv2d" and tuple(template[1].shape[2:]) == (1, 1):
            pairs.append((template[1], template[9] if len(template) == 10 else None))
    for template in _block_templates(plan, shape):
        if template[1] is not None:
            pairs.append((template[1], template[2]))
        pairs.append((template[9], template[10]))
        if len(template) > 14:  # the shortcut convolution
            pairs.append((template[14], template[15]))
    return pairs


def test_the_plan_packs_each_pointwise_weight_once_and_only_when_fused():
    an.manual_seed(3)
    model = calibrated(models.create("mobilenet_v2", num_classes=10), (1, 3, 32, 32))
    x = images((1, 3, 32, 32), 0)
    shape = (1, 3, 32, 32)
    plan = compile_for_inference(model, x)
    pairs = _pointwise_weights(plan, shape)
    model_pointwise = [m for m in model.modules() if isinstance(m, nn.Conv2d)
                       and tuple(m.weight.shape[2:]) == (1, 1)]
    assert len(pairs) == len(model_pointwise) > 30
    for weight, copy in pairs:
        rows = copy.shape[2]
        assert copy.shape == (-(-weight.shape[0] // rows), weight.shape[1], rows)
        # panel p, row r, column k holds weight[p * rows + r, k]
        w = weight.numpy()[:, :, 0, 0]
        padded = np.zeros((copy.shape[0] * rows, w.shape[1]), np.float32)
        padded[: w.shape[0]] = w
        np.testing.assert_array_equal(copy.numpy().transpose(0, 2, 1).reshape(padded.shape), padded)
    before = [id(copy) for _, copy in pairs]
    with an.no_grad():
        plan(images(shape, 1))
    assert [id(copy) for _, copy in _pointwise_weights(plan, shape)] == before  # packed once
    unfused = compile_for_inference(model, x, fuse=False)
    assert all(copy is None for _, copy in _pointwise_weights(unfused, shape))


def test_batch_one_plans_run_each_inverted_residual_block_as_one_call():
    """MobileNetV2's 17 blocks and ShuffleNetV2's branches become
    conv_pw_dw_pw calls at batch 1, MobileNetV2's four shortcut convolutions
    inside their blocks' calls (bit-identical: the plan checks it when it
    records, and the zoo test above on other inputs), and MobileNetV2's
    blocks, each reading the one before's output, one block_chain call (the
    same bits as the blocks' calls without the chain); other batch sizes
    keep the separate convolutions."""
    for name, blocks, shortcuts in (("mobilenet_v2", 17, 4), ("shufflenet_v2", 19, 0)):
        an.manual_seed(0)
        model = calibrated(models.create(name, num_classes=10), (1, 3, 32, 32))
        plan = compile_for_inference(model, images((1, 3, 32, 32), 0))
        templates = _block_templates(plan, (1, 3, 32, 32))
        assert len(templates) == blocks
        assert sum(len(t) > 14 and t[14] is not None for t in templates) == shortcuts
        with an.no_grad():
            x = images((2, 3, 32, 32), 4)
            assert not {"conv_pw_dw_pw", "block_chain"} & set(plan.ops((2, 3, 32, 32)))
            assert same_bits(plan(x[0:1]), plan.model(x[0:1]))
        unchained = InferencePlan(plan.model, prepack=True, chain_blocks=False)
        assert unchained.ops((1, 3, 32, 32)).count("conv_pw_dw_pw") == blocks
        assert ("block_chain" in plan.ops((1, 3, 32, 32))) == (name == "mobilenet_v2")
        with an.no_grad():
            assert same_bits(plan(x[1:2]), unchained(x[1:2]))
