"""TwoHead: shapes, head values against numpy, from_pretrained weight copy,
gradient flow into both heads and the backbone, the arch record, options
and bad input."""
import json

import numpy as np
import pytest

import appealnet as an
import appealnet.models as models
import appealnet.nn as nn
import appealnet.nn.functional as F
from appealnet.models import TwoHead
from appealnet import optim


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One compute thread: these are small problems, and the suite shares
    two cores with other test processes (OpenMP threads would wait on each other)."""
    previous = an.get_num_threads()
    an.set_num_threads(1)
    yield
    an.set_num_threads(previous)


def _x(batch=3, size=32, seed=0):
    return an.tensor(np.random.default_rng(seed).standard_normal((batch, 3, size, size)))


def _np(t):
    return t.detach().numpy()


def _linear_np(layer, x):
    return x @ _np(layer.weight).T + _np(layer.bias)


def test_outputs_and_q():
    an.manual_seed(0)
    net = TwoHead("resnet8", num_classes=7)
    net.eval()
    x = _x()
    logits, q_logit = net(x)
    assert logits.shape == (3, 7) and q_logit.shape == (3,)
    q = _np(net.q(x))
    np.testing.assert_allclose(q, 1 / (1 + np.exp(-_np(q_logit))), rtol=1e-6)
    assert np.all((q > 0) & (q < 1))
    assert net.num_features == 64 and net.num_classes == 7
    # default heads: the backbone's classifier and the paper's Linear(F, 1)
    features = _np(net.forward_features(x))
    np.testing.assert_allclose(_np(logits), _linear_np(net.approximator.linear, features),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(q_logit), _linear_np(net.predictor.layers[0], features)[:, 0],
                               rtol=1e-5, atol=1e-6)
    assert net.predictor_macs() == 64
    assert net(_x(batch=2, size=64))[0].shape == (2, 7)


def test_from_pretrained_copies_backbone_and_classifier_exactly():
    an.manual_seed(1)
    single = models.mobilenet_v2(num_classes=10, width_mult=0.5)
    # a trained-looking model: non-trivial BN statistics from a few train passes
    for seed in range(3):
        single(_x(batch=4, seed=seed))
    single.eval()
    state_before = single.state_dict()
    two = TwoHead.from_pretrained(single, predictor_input="features+softmax")
    two.eval()
    x = _x(batch=2, seed=9)
    np.testing.assert_array_equal(_np(two(x)[0]), _np(single(x)))
    np.testing.assert_array_equal(_np(two.forward_features(x)), _np(single.forward_features(x)))
    # the original is untouched and shares nothing with the copy
    assert isinstance(single.linear, nn.Linear)
    for key, value in single.state_dict().items():
        np.testing.assert_array_equal(value, state_before[key])
    own_ids = {id(p) for p in single.parameters()}
    assert not own_ids & {id(p) for p in two.parameters()}
    # copied weights carry over under the backbone./approximator. prefixes
    two_state = two.state_dict()
    for key, value in state_before.items():
        new_key = "approximator." + key if key.startswith("linear.") else "backbone." + key
        np.testing.assert_array_equal(two_state[new_key], value)
    # the predictor is new: F + C inputs, one output
    assert two.predictor.layers[0].weight.shape == (1, single.num_features + 10)
    assert two.arch["kwargs"]["backbone"] == single.arch


def test_gradients_reach_backbone_and_both_heads():
    an.manual_seed(2)
    net = TwoHead("shufflenet_v2", num_classes=10, net_size=0.5, predictor="mlp",
                  predictor_hidden=(16,), approximator_hidden=(32,))
    net.train()
    logits, q_logit = net(_x(batch=4))
    y = np.array([0, 1, 2, 3])
    loss = F.cross_entropy(logits, y) + F.binary_cross_entropy_with_logits(
        q_logit, an.tensor([1.0, 0.0, 1.0, 0.0]))
    loss.backward()
    groups = {"backbone": net.backbone_parameters(),
              "approximator": net.approximator_parameters(),
              "predictor": net.predictor_parameters()}
    for group, params in groups.items():
        assert params, group
        for param in params:
            assert param.grad is not None and np.abs(param.grad.numpy()).max() > 0, group
    # the three groups partition the parameters
    ids = [id(p) for params in groups.values() for p in params]
    assert len(ids) == len(set(ids)) == len(list(net.parameters()))


@pytest.mark.parametrize("predictor_input, reaches_approximator",
                         [("features", False), ("features+logits", True),
                          ("features+softmax", True)])
def test_predictor_loss_paths(predictor_input, reaches_approximator):
    an.manual_seed(3)
    net = TwoHead("resnet8", predictor_input=predictor_input)
    _, q_logit = net(_x(batch=2))
    q_logit.sum().backward()
    assert all(p.grad is not None for p in net.predictor_parameters())
    assert np.abs(net.backbone.conv1.weight.grad.numpy()).max() > 0
    approximator_grads = [p.grad for p in net.approximator_parameters()]
    assert all((g is not None) == reaches_approximator for g in approximator_grads)


@pytest.mark.parametrize("predictor_input", ["features", "features+logits", "features+softmax"])
@pytest.mark.parametrize("predictor", ["linear", "mlp"])
def test_head_values_against_numpy(predictor, predictor_input):
    an.manual_seed(4)
    net = TwoHead("resnet8", num_classes=5, approximator_hidden=(12, 6), predictor=predictor,
                  predictor_hidden=(9, 4), predictor_input=predictor_input)
    net.eval()
    x = _x(batch=3)
    logits, q_logit = net(x)
    z = _np(net.forward_features(x))

    hidden = [m for m in net.approximator.hidden if isinstance(m, nn.Linear)]
    h = z
    for layer in hidden:
        h = np.maximum(_linear_np(layer, h), 0)
    expected_logits = _linear_np(net.approximator.linear, h)
    np.testing.assert_allclose(_np(logits), expected_logits, rtol=1e-5, atol=1e-5)

    joined = {"features": z,
              "features+logits": np.concatenate([z, expected_logits], 1),
              "features+softmax": np.concatenate(
                  [z, np.exp(expected_logits) / np.exp(expected_logits).sum(1, keepdims=True)],
                  1)}[predictor_input]
    layers = [m for m in net.predictor.layers if isinstance(m, nn.Linear)]
    h = joined
    for layer in layers[:-1]:
        h = np.maximum(_linear_np(layer, h), 0)
    np.testing.assert_allclose(_np(q_logit), _linear_np(layers[-1], h)[:, 0], rtol=1e-5,
                               atol=1e-5)

    fan_in = 64 + (0 if predictor_input == "features" else 5)
    widths = [fan_in] + ([9, 4] if predictor == "mlp" else []) + [1]
    assert net.predictor_macs() == sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    assert net.approximator.macs() == 64 * 12 + 12 * 6 + 6 * 5


def test_arch_record_round_trip():
    an.manual_seed(5)
    net = TwoHead("efficientnet_b0", num_classes=100, width_mult=0.5, predictor="mlp",
                  predictor_hidden=[32], predictor_input="features+logits")
    arch = json.loads(json.dumps(net.arch))
    assert arch == net.arch
    assert arch["name"] == "twohead"
    assert arch["kwargs"]["backbone"]["name"] == "efficientnet_b0"
    assert arch["kwargs"]["backbone"]["kwargs"]["num_classes"] == 100
    rebuilt = models.from_arch(arch)
    assert isinstance(rebuilt, TwoHead) and rebuilt.arch == net.arch
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == \
        {k: v.shape for k, v in net.state_dict().items()}
    rebuilt.load_state_dict(net.state_dict())
    net.eval()
    rebuilt.eval()
    x = _x(batch=2)
    for ours, theirs in zip(net(x), rebuilt(x)):
        np.testing.assert_array_equal(_np(ours), _np(theirs))
    # the backbone's dropout moves with the classifier into the approximator
    assert net.approximator.dropout_rate == pytest.approx(0.2)
    same = models.create("twohead", backbone="resnet8", predictor="mlp")
    assert same.arch["kwargs"]["backbone"] == models.resnet8().arch


def test_joint_training_steps_reduce_the_loss():
    an.manual_seed(6)
    net = TwoHead("resnet8", num_classes=3)
    x, y = _x(batch=8, seed=1), np.array([0, 1, 2, 0, 1, 2, 0, 1])
    opt = optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(15):
        logits, q_logit = net(x)
        # Algorithm 1's shape: q weighs the edge loss, -log q keeps q from collapsing
        q = F.sigmoid(q_logit)
        edge = F.cross_entropy(logits, y, reduction="none")
        loss = (q * edge + (1 - q) * 0.1).mean() - 0.1 * F.logsigmoid(q_logit).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


# ------------------------------------------------------------------ bad input
def test_unknown_backbone_lists_known_models():
    with pytest.raises(ValueError, match=r"unknown model 'resnet9'; known models: .*mobilenet_v2"):
        TwoHead("resnet9")


def test_bad_backbone_options_are_reported():
    with pytest.raises(ValueError, match=r"mobilenet_v2: width_mult must be a finite number > 0"):
        TwoHead("mobilenet_v2", width_mult=0)
    with pytest.raises(ValueError, match=r"backbone options \['width_mult'\] only apply"):
        TwoHead(models.resnet8(), width_mult=0.5)
    with pytest.raises(ValueError, match=r"num_classes=100 does not match .*10 classes"):
        TwoHead(models.resnet8(), num_classes=100)
    with pytest.raises(TypeError, match=r"expected a model, a model name or an arch dict"):
        TwoHead(3)


def test_bad_head_options():
    with pytest.raises(ValueError, match=r"predictor must be one of \('linear', 'mlp'\)"):
        TwoHead("resnet8", predictor="conv")
    with pytest.raises(ValueError, match=r"predictor_input must be one of .*'features\+softmax'"):
        TwoHead("resnet8", predictor_input="logits")
    with pytest.raises(ValueError, match=r"approximator_hidden must be a sequence of positive"):
        TwoHead("resnet8", approximator_hidden=(0,))
    with pytest.raises(ValueError, match=r"predictor_hidden must be a sequence of positive"):
        TwoHead("resnet8", predictor_hidden=64)
    with pytest.raises(ValueError, match=r"predictor='mlp' needs at least one predictor_hidden"):
        TwoHead("resnet8", predictor="mlp", predictor_hidden=())
    with pytest.raises(ValueError, match=r"from_pretrained keeps the model's classifier"):
        TwoHead.from_pretrained(models.resnet8(), approximator_hidden=(16,))


def test_backbone_cannot_serve_two_networks():
    backbone = models.resnet8()
    TwoHead(backbone)
    with pytest.raises(TypeError, match=r"already part of a TwoHead"):
        TwoHead(backbone)


def test_too_small_input():
    net = TwoHead("mobilenet_v1")
    assert net.min_input_size == 16
    with pytest.raises(ValueError, match=r"mobilenet_v1: input size 8x8 is too small.*"
                                         r"minimum input size is 16x16"):
        net(an.zeros(1, 3, 8, 8))
