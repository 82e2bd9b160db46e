"""appealnet.nn modules against torch.nn (same weights copied in through
load_state_dict), the Module machinery (registration, naming, state_dict),
initialisation statistics and reproducibility."""
import math

import numpy as np
import pytest

import appealnet as an
import appealnet.nn as nn
import appealnet.nn.functional as F
from appealnet.nn import init
from gradcheck import torch_or_skip


@pytest.fixture(scope="module")
def torch():
    t = torch_or_skip()
    t.set_num_threads(1)
    return t


def _f32(a):
    return np.asarray(a, dtype=np.float32)


def _compare_module(torch, ours, theirs, x, rtol=1e-4, atol=1e-5, check_input_grad=True):
    """Loads torch's weights into ours, runs both (torch in float64 on the
    same float32 inputs), compares the outputs, the input gradient and every
    parameter gradient under a fixed random cotangent."""
    ours.load_state_dict(theirs.state_dict())
    theirs = theirs.double()
    x = _f32(x)
    xa = an.tensor(x, requires_grad=check_input_grad)
    xt = torch.tensor(x.astype(np.float64), requires_grad=check_input_grad)
    out_a, out_t = ours(xa), theirs(xt)
    np.testing.assert_allclose(out_a.detach().numpy(), out_t.detach().numpy(), rtol=rtol, atol=atol)
    cot = np.random.default_rng(7).standard_normal(out_t.shape).astype(np.float32)
    out_a.backward(an.tensor(cot))
    out_t.backward(torch.tensor(cot.astype(np.float64)))
    if check_input_grad:
        np.testing.assert_allclose(xa.grad.numpy(), xt.grad.numpy(), rtol=rtol * 10, atol=atol * 10)
    torch_grads = dict(theirs.named_parameters())
    names = [n for n, _ in ours.named_parameters()]
    assert names == list(torch_grads)
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), torch_grads[name].grad.numpy(),
                                   rtol=rtol * 10, atol=atol * 10, err_msg=name)
    return out_a


def _randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ------------------------------------------------------------- Parameter
def test_parameter_is_a_tensor_sharing_memory():
    data = an.tensor([[1.0, 2.0], [3.0, 4.0]])
    p = nn.Parameter(data)
    assert isinstance(p, an.Tensor) and isinstance(p, nn.Parameter)
    assert p.requires_grad and p.is_leaf
    assert not nn.Parameter(data, requires_grad=False).requires_grad
    data.fill_(5.0)
    np.testing.assert_array_equal(p.detach().numpy(), np.full((2, 2), 5.0, np.float32))
    assert type(p * 2.0) is an.Tensor  # ops give plain tensors
    assert repr(p).startswith("Parameter containing:\ntensor(")
    with pytest.raises(TypeError, match="expected an appealnet Tensor"):
        nn.Parameter(np.zeros(3))


# --------------------------------------------------------- Module machinery
class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.scale = nn.Parameter(an.ones(1))
        self.register_buffer("counter", an.zeros(2))

    def forward(self, x):
        return F.relu(self.bn(self.conv(x))) * self.scale


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = _Block()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4, 3)
        self.tied = self.head  # the same module twice: counted once

    def forward(self, x):
        return self.head(self.pool(self.block(x)).flatten(1))


def test_registration_and_traversal():
    net = _Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["block.scale", "block.conv.weight", "block.bn.weight", "block.bn.bias",
                     "head.weight", "head.bias"]
    assert [n for n, _ in net.named_buffers()] == [
        "block.counter", "block.bn.running_mean", "block.bn.running_var",
        "block.bn.num_batches_tracked"]
    assert [n for n, _ in net.named_children()] == ["block", "pool", "head"]
    assert [n for n, _ in net.named_modules()] == ["", "block", "block.conv", "block.bn", "pool",
                                                  "head"]
    assert len(list(net.modules())) == 6
    assert net.num_parameters() == 1 + 4 * 3 * 9 + 4 + 4 + 4 * 3 + 3
    assert net.block.conv.bias is None
    # plain attributes stay plain
    net.note = "hello"
    assert "note" not in dict(net.named_parameters()) and net.note == "hello"
    with pytest.raises(AttributeError, match="'_Net' object has no attribute 'missing'"):
        net.missing


def test_setattr_errors_and_replacement():
    lin = nn.Linear(2, 2)
    with pytest.raises(TypeError, match=r"cannot assign 'Tensor' as parameter 'weight'"):
        lin.weight = an.zeros(2, 2)
    lin.bias = None
    assert [n for n, _ in lin.named_parameters()] == ["weight"]
    lin.bias = nn.Parameter(an.zeros(2))
    assert [n for n, _ in lin.named_parameters()] == ["weight", "bias"]

    class Early(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(an.zeros(1))

    with pytest.raises(AttributeError, match="before Module.__init__"):
        Early()
    with pytest.raises(TypeError, match="is not a Module subclass"):
        nn.Module().add_module("x", 3)
    with pytest.raises(KeyError, match="contain"):
        nn.Module().register_buffer("a.b", an.zeros(1))
    del lin.bias
    assert [n for n, _ in lin.named_parameters()] == ["weight"]


def test_shared_parameter_is_deduplicated():
    a = nn.Linear(3, 3)
    b = nn.Linear(3, 3)
    b.weight = a.weight
    seq = nn.Sequential(a, b)
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "1.bias"]
    assert len(list(seq.parameters())) == 3


def test_train_eval_apply_zero_grad():
    net = _Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    seen = []
    net.apply(lambda m: seen.append(type(m).__name__))
    assert seen == ["Conv2d", "BatchNorm2d", "_Block", "AdaptiveAvgPool2d", "Linear", "_Net"]
    out = net(an.tensor(_randn(2, 3, 5, 5))).sum()
    out.backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad(set_to_none=False)
    assert all(np.all(p.grad.numpy() == 0) for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    net.requires_grad_(False)
    assert not any(p.requires_grad for p in net.parameters())


def test_repr_matches_torch(torch):
    tnn = torch.nn
    ours = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8),
                         nn.ReLU(inplace=True), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                         nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Dropout(0.2), nn.Linear(8, 2), nn.LeakyReLU(0.2), nn.Softmax(dim=1))
    theirs = tnn.Sequential(tnn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False),
                            tnn.BatchNorm2d(8), tnn.ReLU(inplace=True),
                            tnn.Conv2d(8, 8, 3, padding=1, groups=8), tnn.MaxPool2d(2),
                            tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Dropout(0.2),
                            tnn.Linear(8, 2), tnn.LeakyReLU(0.2), tnn.Softmax(dim=1))
    assert repr(ours) == repr(theirs)


# ------------------------------------------------------ naming vs torch
def _small_cnn(lib):
    m = lib.nn
    return m.Sequential(
        m.Conv2d(1, 8, 3, padding=1), m.BatchNorm2d(8), m.ReLU(), m.MaxPool2d(2),
        m.Conv2d(8, 16, 3, padding=1, groups=2), m.BatchNorm2d(16), m.ReLU(),
        m.AdaptiveAvgPool2d(1), m.Flatten(), m.Linear(16, 10))


def test_parameter_names_counts_and_state_dict_keys_match_torch(torch):
    ours, theirs = _small_cnn(an), _small_cnn(torch)
    assert [(n, tuple(p.shape)) for n, p in ours.named_parameters()] == \
        [(n, tuple(p.shape)) for n, p in theirs.named_parameters()]
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters())
    sd_a, sd_t = ours.state_dict(), theirs.state_dict()
    assert list(sd_a) == list(sd_t)
    assert all(sd_a[k].shape == tuple(sd_t[k].shape) for k in sd_a)
    assert all(v.dtype == np.float32 for v in sd_a.values())


def test_small_cnn_matches_torch_train_and_eval(torch):
    ours, theirs = _small_cnn(an), _small_cnn(torch)
    x = _randn(4, 1, 8, 8, seed=3)
    _compare_module(torch, ours, theirs, x, rtol=1e-4, atol=1e-4)
    ours.eval()
    theirs.eval()
    out_a = ours(an.tensor(x))
    out_t = theirs(torch.tensor(x.astype(np.float64)))
    np.testing.assert_allclose(out_a.detach().numpy(), out_t.detach().numpy(), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------- layers
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(torch, bias):
    theirs = torch.nn.Linear(20, 7, bias=bias)
    ours = nn.Linear(20, 7, bias=bias)
    _compare_module(torch, ours, theirs, _randn(5, 20))
    # extra leading dims
    _compare_module(torch, nn.Linear(20, 7, bias=bias), torch.nn.Linear(20, 7, bias=bias),
                    _randn(2, 3, 20, seed=1))


def test_linear_noncontiguous_input_and_empty_batch():
    lin = nn.Linear(6, 4)
    x = _randn(6, 5)
    a = lin(an.tensor(x).transpose(0, 1)).detach().numpy()
    b = lin(an.tensor(np.ascontiguousarray(x.T))).detach().numpy()
    np.testing.assert_array_equal(a, b)
    assert lin(an.zeros(0, 6)).shape == (0, 4)


CONV_CASES = [
    dict(cin=3, cout=16, k=3, stride=2, padding=1, dilation=1, groups=1, hw=(15, 16)),  # stem
    dict(cin=8, cout=8, k=3, stride=1, padding=1, dilation=1, groups=8, hw=(10, 10)),   # depthwise
    dict(cin=8, cout=12, k=1, stride=1, padding=0, dilation=1, groups=2, hw=(6, 7)),    # grouped 1x1
    dict(cin=4, cout=6, k=(3, 5), stride=(1, 2), padding=(2, 1), dilation=(2, 1), groups=1,
         hw=(9, 11)),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"g{c['groups']}k{c['k']}s{c['stride']}")
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_matches_torch(torch, case, bias):
    kw = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
              groups=case["groups"], bias=bias)
    theirs = torch.nn.Conv2d(case["cin"], case["cout"], case["k"], **kw)
    ours = nn.Conv2d(case["cin"], case["cout"], case["k"], **kw)
    assert ours.weight.shape == tuple(theirs.weight.shape)
    _compare_module(torch, ours, theirs, _randn(2, case["cin"], *case["hw"]), atol=1e-4)


@pytest.mark.filterwarnings("ignore:Using padding=.same.")
@pytest.mark.parametrize("k,dilation", [(3, 1), (4, 1), (2, 3)])
def test_conv2d_same_padding_matches_torch(torch, k, dilation):
    theirs = torch.nn.Conv2d(2, 3, k, padding="same", dilation=dilation)
    ours = nn.Conv2d(2, 3, k, padding="same", dilation=dilation)
    out = _compare_module(torch, ours, theirs, _randn(1, 2, 7, 6))
    assert out.shape == (1, 3, 7, 6)


def test_conv2d_constructor_errors():
    with pytest.raises(ValueError, match=r"in_channels \(3\) must be divisible by groups \(2\)"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match=r"out_channels \(5\) must be divisible by groups \(2\)"):
        nn.Conv2d(4, 5, 3, groups=2)
    with pytest.raises(ValueError, match="'same' is not supported for strided"):
        nn.Conv2d(4, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="conv2d"):
        nn.Conv2d(4, 4, 3)(an.zeros(1, 3, 5, 5))


def test_batchnorm2d_train_three_steps_then_eval(torch):
    theirs = torch.nn.BatchNorm2d(6, momentum=0.2)
    ours = nn.BatchNorm2d(6, momentum=0.2)
    with torch.no_grad():
        theirs.weight.uniform_(0.5, 1.5)
        theirs.bias.uniform_(-0.5, 0.5)
    ours.load_state_dict(theirs.state_dict())
    theirs = theirs.double()
    for step in range(3):
        x = _randn(4, 6, 5, 5, seed=step) * (step + 1) + step
        xa = an.tensor(x, requires_grad=True)
        xt = torch.tensor(x.astype(np.float64), requires_grad=True)
        out_a, out_t = ours(xa), theirs(xt)
        np.testing.assert_allclose(out_a.detach().numpy(), out_t.detach().numpy(), rtol=1e-4,
                                   atol=1e-4)
        cot = _randn(*x.shape, seed=10 + step)
        out_a.backward(an.tensor(cot))
        out_t.backward(torch.tensor(cot.astype(np.float64)))
        np.testing.assert_allclose(xa.grad.numpy(), xt.grad.numpy(), rtol=1e-3, atol=1e-4)
    for name in ("running_mean", "running_var"):
        np.testing.assert_allclose(getattr(ours, name).numpy(),
                                   getattr(theirs, name).numpy(), rtol=1e-5, atol=1e-6)
    assert ours.num_batches_tracked.item() == 3 == theirs.num_batches_tracked.item()
    np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), rtol=1e-3,
                               atol=1e-4)
    ours.eval()
    theirs.eval()
    x = _randn(3, 6, 4, 4, seed=9)
    np.testing.assert_allclose(ours(an.tensor(x)).detach().numpy(),
                               theirs(torch.tensor(x.astype(np.float64))).detach().numpy(),
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"BatchNorm2d: expected 4D input \(got 3D input"):
        ours(an.zeros(2, 6, 4))
    with pytest.raises(ValueError, match="expected 6 channels"):
        ours(an.zeros(2, 5, 4, 4))


@pytest.mark.parametrize("kwargs", [dict(momentum=None), dict(affine=False),
                                    dict(track_running_stats=False)], ids=str)
def test_batchnorm1d_variants_match_torch(torch, kwargs):
    theirs = torch.nn.BatchNorm1d(5, **kwargs).double()
    ours = nn.BatchNorm1d(5, **kwargs)
    ours.load_state_dict(theirs.state_dict())
    for step in range(2):
        x = _randn(8, 5, seed=step) + step
        out_a = ours(an.tensor(x))
        out_t = theirs(torch.tensor(x.astype(np.float64)))
        np.testing.assert_allclose(out_a.detach().numpy(), out_t.detach().numpy(), rtol=1e-4,
                                   atol=1e-5)
    sd_t = theirs.state_dict()
    for key, value in ours.state_dict().items():
        np.testing.assert_allclose(value, sd_t[key].numpy(), rtol=1e-5, atol=1e-6, err_msg=key)
    ours.eval()
    theirs.eval()
    x = _randn(4, 5, 3, seed=5)
    np.testing.assert_allclose(ours(an.tensor(x)).detach().numpy(),
                               theirs(torch.tensor(x.astype(np.float64))).detach().numpy(),
                               rtol=1e-4, atol=1e-5)


POOLS = [
    ("MaxPool2d", dict(kernel_size=3, stride=2, padding=1)),
    ("MaxPool2d", dict(kernel_size=2, ceil_mode=True)),
    ("AvgPool2d", dict(kernel_size=3, stride=2, padding=1)),
    ("AvgPool2d", dict(kernel_size=2, stride=1, count_include_pad=False, padding=1)),
    ("AdaptiveAvgPool2d", dict(output_size=1)),
    ("AdaptiveAvgPool2d", dict(output_size=(3, None))),
]


@pytest.mark.parametrize("name,kwargs", POOLS, ids=lambda v: str(v))
def test_pools_match_torch(torch, name, kwargs):
    _compare_module(torch, getattr(nn, name)(**kwargs), getattr(torch.nn, name)(**kwargs),
                    _randn(2, 3, 7, 6, seed=4))


ACTIVATIONS = [("ReLU", {}), ("ReLU6", {}), ("LeakyReLU", dict(negative_slope=0.2)), ("SiLU", {}),
               ("Hardswish", {}), ("Hardsigmoid", {}), ("Sigmoid", {}), ("Tanh", {}),
               ("Softmax", dict(dim=1)), ("LogSoftmax", dict(dim=-1)), ("Identity", {}),
               ("Flatten", {}), ("Flatten", dict(start_dim=0, end_dim=1)),
               ("ChannelShuffle", dict(groups=2))]


@pytest.mark.parametrize("name,kwargs", ACTIVATIONS, ids=lambda v: str(v))
def test_parameter_free_modules_match_torch(torch, name, kwargs):
    x = _randn(2, 4, 3, 3, seed=2) * 4
    _compare_module(torch, getattr(nn, name)(**kwargs), getattr(torch.nn, name)(**kwargs), x)


def test_softmax_default_dim_follows_torch_rule(torch):
    for shape in [(5,), (2, 5), (2, 3, 4), (2, 3, 2, 2)]:
        x = _randn(*shape)
        ours = nn.Softmax()(an.tensor(x)).numpy()
        theirs = torch.nn.functional.softmax(torch.tensor(x), dim=0 if len(shape) in (0, 1, 3) else 1)
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-5, atol=1e-6)


def test_dropout_train_and_eval():
    x = an.ones(100, 100)
    drop = nn.Dropout(0.25)
    drop.eval()
    np.testing.assert_array_equal(drop(x).numpy(), x.numpy())
    drop.train()
    an.manual_seed(5)
    y1 = drop(x).numpy()
    kept = y1 != 0
    assert 0.72 < kept.mean() < 0.78
    np.testing.assert_allclose(y1[kept], 1 / 0.75, rtol=1e-6)
    an.manual_seed(5)
    np.testing.assert_array_equal(drop(x).numpy(), y1)
    with pytest.raises(ValueError, match="between 0 and 1, but got 1.5"):
        nn.Dropout(1.5)


def test_sequential_and_module_list(torch):
    layers = [nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)]
    seq = nn.Sequential(*layers)
    assert len(seq) == 3 and seq[0] is layers[0] and seq[-1] is layers[2]
    assert list(seq) == layers
    head = seq[1:]
    assert isinstance(head, nn.Sequential) and len(head) == 2 and head[1] is layers[2]
    with pytest.raises(IndexError, match="index 3 is out of range"):
        seq[3]
    seq.append(nn.Tanh())
    assert len(seq) == 4 and [n for n, _ in seq.named_children()] == ["0", "1", "2", "3"]
    del seq[3]
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    _compare_module(torch, seq, theirs, _randn(5, 4))
    from collections import OrderedDict
    named = nn.Sequential(OrderedDict([("fc", nn.Linear(2, 2)), ("act", nn.ReLU())]))
    assert [n for n, _ in named.named_parameters()] == ["fc.weight", "fc.bias"]
    assert named.fc is named[0]

    blocks = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    blocks.append(nn.Linear(2, 1))
    assert len(blocks) == 4 and blocks[-1].out_features == 1
    assert [n for n, _ in blocks.named_parameters()][-2:] == ["3.weight", "3.bias"]
    blocks.insert(0, nn.Identity())
    assert isinstance(blocks[0], nn.Identity) and len(list(blocks.parameters())) == 8


def test_loss_modules_match_torch(torch):
    logits = _randn(6, 4, seed=1)
    labels = np.array([0, 3, 1, 2, 3, 0])
    for kwargs in (dict(), dict(reduction="sum"), dict(label_smoothing=0.1)):
        ours = nn.CrossEntropyLoss(**kwargs)(an.tensor(logits), labels).item()
        theirs = torch.nn.CrossEntropyLoss(**kwargs)(torch.tensor(logits), torch.tensor(labels))
        assert ours == pytest.approx(theirs.item(), rel=1e-5)
    target = (np.random.default_rng(0).random((6, 4)) > 0.5).astype(np.float32)
    pos_weight = np.array([1.0, 2.0, 0.5, 3.0], np.float32)
    ours = nn.BCEWithLogitsLoss(pos_weight=an.tensor(pos_weight))(an.tensor(logits), an.tensor(target))
    theirs = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight))(
        torch.tensor(logits), torch.tensor(target))
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    ours = nn.MSELoss()(an.tensor(logits), an.tensor(target)).item()
    assert ours == pytest.approx(torch.nn.MSELoss()(torch.tensor(logits), torch.tensor(target)).item(),
                                 rel=1e-5)
    with pytest.raises(ValueError, match="reduction must be one of"):
        nn.MSELoss(reduction="avg")


# ----------------------------------------------------------- state dict
def test_state_dict_round_trip_in_place():
    an.manual_seed(0)
    net = _small_cnn(an)
    net(an.tensor(_randn(2, 1, 8, 8)))  # moves BN running stats
    saved = net.state_dict()
    weight = net[0].weight
    saved_copy = {k: v.copy() for k, v in saved.items()}
    with an.no_grad():
        for p in net.parameters():
            p.fill_(0.0)
    # state_dict values are copies, not views
    for k in saved:
        np.testing.assert_array_equal(saved[k], saved_copy[k])
    result = net.load_state_dict(saved)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert net[0].weight is weight  # written in place: optimizers keep their references
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, saved_copy[k], err_msg=k)
    assert saved["1.num_batches_tracked"].shape == () and saved["1.num_batches_tracked"] == 1


def test_load_state_dict_errors_name_the_keys():
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    good = net.state_dict()
    missing = {k: v for k, v in good.items() if k != "1.running_var"}
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "1.running_var"'):
        net.load_state_dict(missing)
    extra = dict(good, **{"2.weight": np.zeros(3, np.float32)})
    with pytest.raises(RuntimeError, match=r'Unexpected key\(s\) in state_dict: "2.weight"'):
        net.load_state_dict(extra)
    wrong = dict(good)
    wrong["0.weight"] = np.ones((3, 5), np.float32)
    before = net[0].weight.detach().numpy().copy()
    with pytest.raises(RuntimeError, match=r"size mismatch for 0.weight: copying a param with "
                                           r"shape \[3, 5\] from checkpoint, the shape in current "
                                           r"model is \[3, 4\]"):
        net.load_state_dict(wrong)
    np.testing.assert_array_equal(net[0].weight.detach().numpy(), before)  # nothing written
    with pytest.raises(RuntimeError, match="size mismatch for 0.weight"):
        net.load_state_dict(wrong, strict=False)
    result = net.load_state_dict(extra, strict=False)
    assert result.unexpected_keys == ["2.weight"] and result.missing_keys == []
    result = net.load_state_dict(missing, strict=False)
    assert result.missing_keys == ["1.running_var"]


# ---------------------------------------------------------------- init
def test_default_init_bounds_and_spread():
    an.manual_seed(123)
    lin = nn.Linear(1024, 512)
    bound = 1 / math.sqrt(1024)
    w = lin.weight.detach().numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.01)
    assert abs(w.mean()) < 0.01 * bound
    b = lin.bias.detach().numpy()
    assert np.abs(b).max() <= bound and b.std() == pytest.approx(bound / math.sqrt(3), rel=0.1)
    conv = nn.Conv2d(64, 128, 3)
    cbound = 1 / math.sqrt(64 * 9)
    cw = conv.weight.detach().numpy()
    assert np.abs(cw).max() <= cbound
    assert cw.std() == pytest.approx(cbound / math.sqrt(3), rel=0.01)
    assert np.abs(conv.bias.detach().numpy()).max() <= cbound
    dw = nn.Conv2d(32, 32, 3, groups=32)  # fan_in = 1 * 9
    assert np.abs(dw.weight.detach().numpy()).max() <= 1 / 3 + 1e-7
    bn = nn.BatchNorm2d(5)
    sd = bn.state_dict()
    np.testing.assert_array_equal(sd["weight"], np.ones(5))
    np.testing.assert_array_equal(sd["bias"], np.zeros(5))
    np.testing.assert_array_equal(sd["running_var"], np.ones(5))
    assert bn.momentum == 0.1 and bn.eps == 1e-5


def test_init_is_reproducible_under_manual_seed():
    def build():
        return [p.detach().numpy().copy() for p in _small_cnn(an).parameters()]

    an.manual_seed(42)
    a = build()
    an.manual_seed(42)
    b = build()
    an.manual_seed(43)
    c = build()
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_init_functions_follow_torch_formulas(torch):
    t = an.empty(256, 128, 3, 3)
    assert init.calculate_fan_in_and_fan_out(t) == (128 * 9, 256 * 9)
    for name, param in [("linear", None), ("conv2d", None), ("sigmoid", None), ("tanh", None),
                        ("relu", None), ("leaky_relu", None), ("leaky_relu", 0.2), ("selu", None)]:
        assert init.calculate_gain(name, param) == pytest.approx(
            torch.nn.init.calculate_gain(name, param))
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.kaiming_uniform_(an.empty(5))
    an.manual_seed(1)
    std = math.sqrt(2.0) / math.sqrt(256 * 9)
    init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu")
    assert t.numpy().std() == pytest.approx(std, rel=0.01)
    init.kaiming_uniform_(t, nonlinearity="relu")
    bound = math.sqrt(2.0) * math.sqrt(3.0 / (128 * 9))
    assert np.abs(t.numpy()).max() <= bound * (1 + 1e-6)
    assert t.numpy().std() == pytest.approx(bound / math.sqrt(3), rel=0.01)
    init.xavier_uniform_(t, gain=2.0)
    xbound = 2.0 * math.sqrt(6.0 / (128 * 9 + 256 * 9))
    assert np.abs(t.numpy()).max() <= xbound * (1 + 1e-6)
    init.xavier_normal_(t)
    assert t.numpy().std() == pytest.approx(math.sqrt(2.0 / (128 * 9 + 256 * 9)), rel=0.01)
    init.normal_(t, 3.0, 0.5)
    assert t.numpy().mean() == pytest.approx(3.0, abs=0.01)
    init.uniform_(t, -2.0, -1.0)
    assert t.numpy().min() >= -2.0 and t.numpy().max() <= -1.0
    init.constant_(t, 0.5)
    assert np.all(t.numpy() == 0.5)
    init.zeros_(t)
    assert np.all(t.numpy() == 0)
    init.ones_(t)
    assert np.all(t.numpy() == 1)
    p = nn.Parameter(an.empty(3, 4))
    init.kaiming_uniform_(p)  # runs under no_grad on a leaf that requires grad
    assert p.grad_fn is None and p.requires_grad
    assert init.kaiming_uniform_(an.empty(0, 4)).shape == (0, 4)


# ---------------------------------------------------------------- utils
def test_clip_grad_norm_matches_torch(torch):
    grads = [_randn(3, 4, seed=1) * 3, _randn(5, seed=2)]
    ours = [nn.Parameter(an.zeros(*g.shape)) for g in grads]
    theirs = [torch.nn.Parameter(torch.zeros(*g.shape)) for g in grads]
    for pa, pt, g in zip(ours, theirs, grads):
        pa.grad = an.tensor(g)
        pt.grad = torch.tensor(g)
    total = nn.utils.clip_grad_norm_(ours, 1.0)
    total_t = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert total == pytest.approx(total_t.item(), rel=1e-6)
    for pa, pt in zip(ours, theirs):
        np.testing.assert_allclose(pa.grad.numpy(), pt.grad.numpy(), rtol=1e-6, atol=1e-7)
    # below the threshold nothing changes
    before = ours[1].grad.numpy().copy()
    nn.utils.clip_grad_norm_(ours, 100.0)
    np.testing.assert_array_equal(ours[1].grad.numpy(), before)


def test_deepcopy_gives_an_independent_model_keeping_shared_weights():
    import copy
    net = _Net()
    net(an.tensor(_randn(2, 3, 5, 5)))
    twin = copy.deepcopy(net)
    assert twin.tied is twin.head and twin.head is not net.head
    assert isinstance(twin.head.weight, nn.Parameter) and twin.head.weight.requires_grad
    for (k, a), (_, b) in zip(net.state_dict().items(), twin.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=k)
    with an.no_grad():
        twin.head.weight.fill_(0.0)
        twin.block.bn.running_mean.fill_(7.0)
    assert not np.all(net.head.weight.detach().numpy() == 0)
    assert not np.any(net.block.bn.running_mean.numpy() == 7.0)
