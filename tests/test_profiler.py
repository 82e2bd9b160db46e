"""The profiler (appealnet.profiler), model selection (appealnet.models.selection)
and the module forward hooks they rely on.

MAC counts are checked three ways: by hand on single layers, against a
counter written here on torch modules over the torch reference zoo (every
model), and against the figures of the AppealNet paper's Table I.
"""
import copy
import json

import numpy as np
import pytest

import appealnet as an
import appealnet.nn.functional as F
from appealnet import _C, models, nn
from appealnet.models import selection
from appealnet.profiler import profile

IMAGE = (3, 32, 32)


@pytest.fixture(autouse=True)
def one_thread():
    previous = an.get_num_threads()
    an.set_num_threads(1)
    yield
    an.set_num_threads(previous)


# ------------------------------------------------------------- forward hooks
class TestForwardHooks:
    def test_forward_hook_sees_args_and_output_and_can_replace_output(self):
        layer = nn.Linear(3, 2)
        seen = []
        handle = layer.register_forward_hook(
            lambda module, args, output: seen.append((module, args[0].shape, output.shape)))
        layer(an.zeros(4, 3))
        assert seen == [(layer, (4, 3), (4, 2))]
        replace = layer.register_forward_hook(lambda module, args, output: output * 0.0 + 7.0)
        np.testing.assert_array_equal(np.asarray(layer(an.zeros(1, 3))), np.full((1, 2), 7.0))
        handle.remove()
        replace.remove()
        layer(an.zeros(1, 3))
        assert len(seen) == 2  # the removed hook saw nothing more

    def test_pre_hook_replaces_arguments_single_value_or_tuple(self):
        layer = nn.ReLU()
        with layer.register_forward_pre_hook(lambda module, args: args[0] * -1.0):
            out = layer(an.tensor([[1.0, -2.0]]))
        np.testing.assert_array_equal(np.asarray(out), [[0.0, 2.0]])
        with layer.register_forward_pre_hook(lambda module, args: (args[0] + 1.0,)):
            out = layer(an.tensor([[-0.5]]))
        np.testing.assert_array_equal(np.asarray(out), [[0.5]])
        # the context manager removed both hooks
        np.testing.assert_array_equal(np.asarray(layer(an.tensor([[-1.0]]))), [[0.0]])

    def test_hooks_run_in_registration_order_and_nest_parent_around_child(self):
        child = nn.Identity()
        parent = nn.Sequential(child)
        calls = []
        parent.register_forward_pre_hook(lambda m, a: calls.append("parent pre"))
        child.register_forward_pre_hook(lambda m, a: calls.append("child pre 1"))
        child.register_forward_pre_hook(lambda m, a: calls.append("child pre 2"))
        child.register_forward_hook(lambda m, a, o: calls.append("child post"))
        parent.register_forward_hook(lambda m, a, o: calls.append("parent post"))
        parent(an.zeros(1))
        assert calls == ["parent pre", "child pre 1", "child pre 2", "child post", "parent post"]

    def test_remove_twice_is_harmless_and_hooks_reject_non_callables(self):
        layer = nn.Identity()
        handle = layer.register_forward_hook(lambda m, a, o: None)
        handle.remove()
        handle.remove()
        assert not layer._forward_hooks
        with pytest.raises(TypeError, match="hook must be callable"):
            layer.register_forward_hook(3)
        with pytest.raises(TypeError, match="hook must be callable"):
            layer.register_forward_pre_hook("not a function")

    def test_kwargs_reach_forward_and_deepcopy_keeps_working(self):
        class Scale(nn.Module):
            def forward(self, x, factor=1.0):
                return x * factor

        module = Scale()
        seen = []
        module.register_forward_hook(lambda m, args, out: seen.append(len(args)))
        np.testing.assert_array_equal(np.asarray(module(an.ones(2), factor=3.0)), [3.0, 3.0])
        assert seen == [1]
        clone = copy.deepcopy(nn.Sequential(nn.Linear(2, 2)))
        assert clone(an.zeros(1, 2)).shape == (1, 2)


# ---------------------------------------------------- hand-computed counts
def _single(layer, shape, convention="macs"):
    return profile(layer, shape, convention=convention).macs


class TestHandCounts:
    def test_conv_3x3_same_padding(self):
        conv = nn.Conv2d(3, 8, 3, padding=1)
        assert _single(conv, (3, 8, 8)) == 8 * 3 * 9 * 64
        # paper convention: plus one addition per output element for the bias
        assert _single(conv, (3, 8, 8), "paper") == 8 * 3 * 9 * 64 + 8 * 64
        assert _single(nn.Conv2d(3, 8, 3, padding=1, bias=False), (3, 8, 8), "paper") \
            == 8 * 3 * 9 * 64

    def test_linear(self):
        assert _single(nn.Linear(10, 5), (10,)) == 50
        assert _single(nn.Linear(10, 5), (10,), "paper") == 55
        assert _single(nn.Linear(10, 5, bias=False), (10,), "paper") == 50

    def test_grouped_and_depthwise_convs(self):
        # groups=2: each output sees in_channels/groups = 2 input channels
        assert _single(nn.Conv2d(4, 8, 3, padding=1, groups=2), (4, 6, 6)) == 8 * 36 * 2 * 9
        assert _single(nn.Conv2d(8, 8, 3, padding=1, groups=8), (8, 6, 6)) == 8 * 36 * 9
        assert _single(nn.Conv2d(8, 16, 1, groups=4), (8, 5, 5)) == 16 * 25 * 2

    def test_stride_padding_dilation_and_rectangular_kernels(self):
        # 9x9, k3, stride 2, no padding -> 4x4 outputs
        assert _single(nn.Conv2d(3, 4, 3, stride=2), (3, 9, 9)) == 4 * 16 * 27
        # (3,5) kernel, stride (2,1), padding (1,2) on 8x8 -> 4x8 outputs
        conv = nn.Conv2d(3, 4, (3, 5), stride=(2, 1), padding=(1, 2))
        assert _single(conv, (3, 8, 8)) == 4 * 4 * 8 * 3 * 15
        # dilation 2: effective 5x5 kernel on 9x9, no padding -> 5x5 outputs
        assert _single(nn.Conv2d(2, 3, 3, dilation=2), (2, 9, 9)) == 3 * 25 * 2 * 9

    def test_batch_norm_counts_only_in_paper_convention(self):
        assert _single(nn.BatchNorm2d(8), (8, 4, 4)) == 0
        assert _single(nn.BatchNorm2d(8), (8, 4, 4), "paper") == 2 * 8 * 16
        assert _single(nn.BatchNorm2d(8, affine=False), (8, 4, 4), "paper") == 8 * 16

    def test_activations_pooling_and_adds_count_zero_in_both(self):
        net = nn.Sequential(nn.ReLU(), nn.SiLU(), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1))
        for convention in ("macs", "paper"):
            assert _single(net, (4, 8, 8), convention) == 0

    def test_functional_form_counts_like_module_form(self):
        class ModuleForm(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(4, 4, 3, padding=1)
                self.bn = nn.BatchNorm2d(4)
                self.act = nn.ReLU()
                self.fc = nn.Linear(4, 3)

            def forward(self, x):
                y = self.act(self.bn(self.conv(x)))
                return self.fc((y + x).mean(dim=(2, 3)))

        class FunctionalForm(ModuleForm):
            def forward(self, x):
                y = F.conv2d(x, self.conv.weight, self.conv.bias, padding=1)
                y = F.relu(F.batch_norm(y, self.bn.running_mean, self.bn.running_var,
                                        self.bn.weight, self.bn.bias))
                return F.linear((y + x).mean(dim=(2, 3)), self.fc.weight, self.fc.bias)

        for convention in ("macs", "paper"):
            by_module = profile(ModuleForm(), (4, 5, 5), convention)
            by_function = profile(FunctionalForm(), (4, 5, 5), convention)
            assert by_module.macs == by_function.macs
            assert by_module.params == by_function.params
        expected_paper = (4 * 25 * 36 + 4 * 25) + 2 * 4 * 25 + (4 * 3 + 3)
        assert profile(FunctionalForm(), (4, 5, 5), "paper").macs == expected_paper
        # functional ops run in a container's forward get rows of their own
        kinds = [row.kind for row in profile(FunctionalForm(), (4, 5, 5)).layers]
        assert kinds == ["F.conv2d", "F.batch_norm", "F.relu", "F.add", "F.mean", "F.linear"]

    def test_rows_describe_each_layer_and_sum_to_the_total(self):
        net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
        prof = profile(net, (3, 8, 8))
        assert [(r.name, r.kind) for r in prof.layers] == [
            ("0", "Conv2d"), ("1", "BatchNorm2d"), ("2", "ReLU"), ("3", "AdaptiveAvgPool2d"),
            ("4", "Flatten"), ("5", "Linear")]
        conv, pool, linear = prof.layers[0], prof.layers[3], prof.layers[5]
        assert conv.input_shape == (1, 3, 8, 8) and conv.output_shape == (1, 8, 8, 8)
        assert (conv.macs, conv.params, conv.output_elements) == (8 * 3 * 9 * 64, 224, 512)
        assert pool.output_shape == (1, 8, 1, 1) and pool.output_elements == 8
        assert (linear.macs, linear.params) == (40, 45)
        assert prof.macs == sum(r.macs for r in prof.layers) == 8 * 3 * 9 * 64 + 40
        assert prof.params == sum(r.params for r in prof.layers) == net.num_parameters()


# ------------------------------------------------------------------- memory
class TestActivationMemory:
    def test_sequential_net(self):
        net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                            nn.Linear(512, 5))
        prof = profile(net, (3, 8, 8), batch_size=4, training_batch_size=16)
        # elements alive: input 192, conv 512, relu 512 (flatten is a view), linear 5;
        # peak while the ReLU runs: conv output + ReLU output = 1024
        assert prof.activation_bytes_inference == 1024 * 4 * 4
        # kept for backward: conv's input (192), ReLU's output (512, also linear's input)
        assert prof.activation_bytes_training() == (192 + 512) * 16 * 4
        assert prof.activation_bytes_training(3) == (192 + 512) * 3 * 4

    def test_residual_keeps_the_skip_alive(self):
        class Residual(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(8, 8, 3, padding=1)

            def forward(self, x):
                return F.relu(self.conv(x)) + x

        prof = profile(Residual(), (8, 4, 4))
        # x (128) lives until the add: x + relu output + sum = 3 * 128
        assert prof.activation_bytes_inference == 3 * 128 * 4
        # conv keeps x, relu keeps its output, add keeps nothing
        assert prof.activation_bytes_training(1) == 2 * 128 * 4

    def test_gate_multiplication_keeps_both_operands(self):
        class Gate(nn.Module):
            def forward(self, x):
                return x * F.sigmoid(x)

        prof = profile(Gate(), (2, 3, 3))
        assert prof.activation_bytes_training(1) == 2 * 18 * 4
        # scaling by a constant keeps no activation
        class Scale(nn.Module):
            def forward(self, x):
                return x * 0.5

        assert profile(Scale(), (2, 3, 3)).activation_bytes_training(1) == 0


# --------------------------------------------------- the zoo against torch
def torch_counts(model, input_shape):
    """(macs, paper) of one image, counted with hooks on torch modules."""
    torch = pytest.importorskip("torch")
    counts = {"macs": 0, "paper": 0}

    def hook(module, inputs, output):
        out = output.numel()
        if isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            macs = out * (module.in_channels // module.groups) * kh * kw
            counts["macs"] += macs
            counts["paper"] += macs + (out if module.bias is not None else 0)
        elif isinstance(module, torch.nn.Linear):
            macs = out * module.in_features
            counts["macs"] += macs
            counts["paper"] += macs + (out if module.bias is not None else 0)
        elif isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            counts["paper"] += out * (2 if module.affine else 1)
        elif isinstance(module, (torch.nn.ReLU, torch.nn.ReLU6, torch.nn.SiLU,
                                 torch.nn.Sigmoid, torch.nn.Hardswish)):
            pass  # activations: zero in both conventions

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for handle in handles:
            handle.remove()
    return counts


@pytest.mark.parametrize("name", models.list_models())
def test_zoo_counts_match_torch_reference(name):
    torch = pytest.importorskip("torch")
    reference_models = pytest.importorskip("torch_reference_models")
    torch.set_num_threads(1)
    reference = reference_models.build(name, 10)
    expected = torch_counts(reference, IMAGE)
    ours = models.create(name, num_classes=10)
    for convention in ("macs", "paper"):
        prof = profile(ours, IMAGE, convention=convention)
        assert prof.macs == pytest.approx(expected[convention], rel=1e-3), convention
        assert prof.macs == sum(row.macs for row in prof.layers)
    assert prof.params == sum(p.numel() for p in reference.parameters())


@pytest.fixture(scope="module")
def resnet101():
    an.manual_seed(0)
    return models.create("resnet101", num_classes=10)


@pytest.fixture(scope="module")
def mobilenet_v2():
    an.manual_seed(0)
    return models.create("mobilenet_v2", num_classes=10)


class TestPaperFigures:
    """AppealNet Table I: ResNet-101 2520.3 and MobileNet 94.6 MFLOPs (CIFAR-10),
    2520.4 and 94.7 (CIFAR-100); plain MACs 2510.0 and 91.15."""

    def test_cifar10(self, resnet101, mobilenet_v2):
        assert profile(resnet101, IMAGE, "paper").macs / 1e6 == pytest.approx(2520.3, rel=5e-3)
        assert profile(mobilenet_v2, IMAGE, "paper").macs / 1e6 == pytest.approx(94.6, rel=5e-3)
        assert profile(resnet101, IMAGE, "macs").macs / 1e6 == pytest.approx(2510.0, rel=5e-4)
        assert profile(mobilenet_v2, IMAGE, "macs").macs / 1e6 == pytest.approx(91.15, rel=5e-4)

    def test_cifar100(self):
        mobilenet = models.create("mobilenet_v2", num_classes=100)
        assert profile(mobilenet, IMAGE, "paper").macs / 1e6 == pytest.approx(94.7, rel=5e-3)

    def test_rows_of_a_deep_net_sum_to_the_total(self, resnet101):
        prof = profile(resnet101, IMAGE, "paper")
        assert prof.macs == sum(row.macs for row in prof.layers)
        assert prof.params == sum(row.params for row in prof.layers) == 42512970
        # the residual block's join (F.add_relu: relu(out + shortcut) in one
        # op) has a row named after the block
        kinds = {row.kind for row in prof.layers if row.name == "layer1.0"}
        assert kinds == {"F.add_relu"}


# -------------------------------------------------------- two-head models
class TestTwoHead:
    def test_predictor_cost_reported_separately(self):
        net = models.TwoHead("resnet8", num_classes=10)
        prof = profile(net, IMAGE)
        backbone_macs = profile(models.create("resnet8", num_classes=10), IMAGE).macs
        assert prof.predictor_macs == 64 == net.predictor_macs()
        assert prof.predictor_params == 65
        assert prof.macs == backbone_macs + 64
        assert profile(net, IMAGE, "paper").predictor_macs == 65  # plus the bias
        logits_only = models.create("resnet8", num_classes=10)
        assert profile(logits_only, IMAGE).predictor_macs is None

    def test_functional_ops_are_named_after_the_module_whose_code_runs_them(self):
        # TwoHead calls backbone.forward_features(x), which the hooks cannot see
        prof = profile(models.TwoHead("resnet8", num_classes=10), IMAGE)
        functional = [(row.name, row.kind) for row in prof.layers if row.kind.startswith("F.")]
        # the stem's relu is fused into its batch norm: no row of its own
        assert functional[0] == ("backbone.layer1.0", "F.add_relu")
        assert [row.ops for row in prof.layers if row.name == "backbone.bn1"] == \
            [["batch_norm", "relu"]]
        assert functional[-2:] == [("backbone", "F.mean"), ("predictor", "F.reshape")]

    def test_mlp_predictor(self):
        net = models.TwoHead("resnet8", num_classes=10, predictor="mlp", predictor_hidden=(16,))
        assert profile(net, IMAGE).predictor_macs == 64 * 16 + 16 == net.predictor_macs()


# ------------------------------------------------- latency, report, errors
def _tiny_net():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 2))


def test_latency_measured_only_when_asked():
    net = _tiny_net()
    assert profile(net, (3, 8, 8)).latency_ms == {}
    prof = profile(net, (3, 8, 8), measure_latency=True, latency_batch_sizes=(1, 2), repeats=3)
    assert sorted(prof.latency_ms) == [1, 2] == sorted(prof.latency_p90_ms)
    for batch in (1, 2):
        assert 0 < prof.latency_ms[batch] <= prof.latency_p90_ms[batch]
    assert "latency at batch 2: median" in prof.table()


def test_table_and_dict_report_the_same_numbers():
    prof = profile(_tiny_net(), (3, 8, 8), convention="paper")
    text = prof.table()
    assert "MFLOPs(paper)" in text and "Conv2d" in text and "1x4x8x8" in text
    data = json.loads(json.dumps(prof.to_dict()))
    assert data["macs"] == prof.macs and data["params"] == prof.params
    assert data["convention"] == "paper"
    assert [row["macs"] for row in data["layers"]] == [row.macs for row in prof.layers]
    assert data["activation_bytes_training"] == prof.activation_bytes_training()


def test_profiling_leaves_model_and_core_as_they_were():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5))
    net.train()
    net[1].eval()
    before = {op: getattr(_C, op) for op in ("conv2d", "relu", "add", "reshape")}
    profile(net, (3, 6, 6))
    assert net.training and net[0].training and not net[1].training and net[2].training
    assert all(getattr(_C, op) is function for op, function in before.items())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    assert net[1].num_batches_tracked.item() == 0  # ran in eval: statistics untouched


def test_a_failing_forward_restores_everything():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            self.conv(x)
            raise RuntimeError("broken model")

    net = Broken()
    original = _C.conv2d
    with pytest.raises(RuntimeError, match="broken model"):
        profile(net, (3, 5, 5))
    assert _C.conv2d is original
    assert not net._forward_hooks and not net.conv._forward_pre_hooks


def test_bad_arguments():
    net = _tiny_net()
    with pytest.raises(TypeError, match="expected an appealnet.nn.Module"):
        profile(lambda x: x, (3, 8, 8))
    with pytest.raises(ValueError, match="convention must be one of"):
        profile(net, (3, 8, 8), convention="flops")
    with pytest.raises(ValueError, match="input_shape must be positive ints"):
        profile(net, (3, 0, 8))
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        profile(net, (3, 8, 8), batch_size=0)
    with pytest.raises(ValueError, match="repeats must be a positive integer"):
        profile(net, (3, 8, 8), measure_latency=True, repeats=0)
    with pytest.raises(ValueError, match="batch must be a positive integer"):
        profile(net, (3, 8, 8)).activation_bytes_training(-1)


# ---------------------------------------------------------------- selection
POOL = ["resnet8", "resnet20", "mobilenet_v2"]   # 12.24, 40.55, 91.15 M MACs


class TestSelect:
    def test_largest_that_fits_by_default(self):
        choice = selection.select(POOL, max_macs=50e6)
        assert choice.name == "resnet20"
        assert choice.profile.macs == choice.profiles["resnet20"].macs == 40551040
        assert isinstance(choice.model, models.CifarResNet)
        assert sorted(choice.profiles) == sorted(POOL)
        assert choice.rejected == {
            "mobilenet_v2": "mobilenet_v2 needs 91.15 M MACs > max_macs 50 M"}

    def test_most_accurate_that_fits(self):
        accuracies = {"resnet8": 0.87, "resnet20": 0.85, "mobilenet_v2": 0.93}
        assert selection.select(POOL, max_macs=50e6, accuracies=accuracies).name == "resnet8"
        assert selection.select(POOL, accuracies=accuracies).name == "mobilenet_v2"
        assert models.select(POOL, max_params=300e3, key="params").name == "resnet20"

    def test_nothing_fits_names_the_constraint(self):
        with pytest.raises(ValueError,
                           match=r"no model fits: mobilenet_v2 needs 91\.15 M MACs > max_macs "
                                 r"10 M \(also: resnet8 needs 12\.24 M MACs"):
            selection.select(POOL, max_macs=10e6)
        with pytest.raises(ValueError, match=r"no model fits: resnet20 has 0\.270 M params > "
                                             r"max_params 0\.05 M"):
            selection.select(["resnet8", "resnet20"], max_params=50e3)

    def test_paper_convention_budget(self):
        assert selection.select(["mobilenet_v2"], max_macs=93e6).name == "mobilenet_v2"
        with pytest.raises(ValueError, match=r"needs 94\.60 M MFLOPs \(paper convention\) > "
                                             r"max_macs 93 M"):
            selection.select(["mobilenet_v2"], max_macs=93e6, convention="paper")

    def test_built_models_and_latency_budget(self):
        small, large = _tiny_net(), nn.Sequential(nn.Conv2d(3, 64, 3, padding=1),
                                                  nn.AdaptiveAvgPool2d(1))
        choice = selection.select({"small": small, "large": large}, input_shape=(3, 8, 8),
                                  key="latency_ms", repeats=2)
        assert set(choice.profiles) == {"small", "large"}
        assert all(p.latency_ms[1] > 0 for p in choice.profiles.values())
        unnamed = selection.select([small, _tiny_net()], input_shape=(3, 8, 8))
        assert sorted(unnamed.profiles) == ["Sequential", "Sequential#2"]
        with pytest.raises(ValueError, match=r"no model fits: .* ms \(median, batch 1\) > "
                                             r"max_latency_ms 1e-09 ms"):
            selection.select([small], input_shape=(3, 8, 8), max_latency_ms=1e-9, repeats=2)

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="the pool is empty"):
            selection.select([])
        with pytest.raises(TypeError, match="pool entry must be a model name"):
            selection.select([3.5])
        with pytest.raises(ValueError, match="unknown model 'resnet9'"):
            selection.select(["resnet9"])
        with pytest.raises(ValueError, match="key must be one of"):
            selection.select(["resnet8"], key="speed")
        with pytest.raises(ValueError, match="key 'accuracy' needs accuracies"):
            selection.select(["resnet8"], key="accuracy")
        with pytest.raises(ValueError, match="accuracies has no entry for resnet20"):
            selection.select(["resnet8", "resnet20"], accuracies={"resnet8": 0.9})
        with pytest.raises(ValueError, match="max_macs must be a positive number"):
            selection.select(["resnet8"], max_macs=-1)
        with pytest.raises(ValueError, match="convention must be one of"):
            selection.select(["resnet8"], convention="flops")
