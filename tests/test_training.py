"""End-to-end training: a tiny MLP and a tiny CNN learn synthetic problems;
training is bit-identical across thread counts; a long loop does not leak."""
import os
import time

import numpy as np
import pytest

import appealnet as an
import appealnet.nn as nn
import appealnet.optim as optim


def _xor_blobs(n=256, seed=0):
    """Four Gaussian blobs at (+-1, +-1); the label is the XOR of the signs."""
    rng = np.random.default_rng(seed)
    centers = rng.integers(0, 2, size=(n, 2))
    x = (centers * 2 - 1) + 0.25 * rng.standard_normal((n, 2))
    y = centers[:, 0] ^ centers[:, 1]
    return x.astype(np.float32), y.astype(np.int64)


def _stripes(n=128, seed=0):
    """8x8 images of horizontal (label 0) or vertical (label 1) stripes with a
    random phase and period, plus noise."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, 1, 8, 8), np.float32)
    labels = rng.integers(0, 2, size=n)
    coords = np.arange(8)
    for i in range(n):
        period = rng.integers(2, 5)
        phase = rng.integers(0, period)
        wave = ((coords + phase) % period < period / 2).astype(np.float32)
        pattern = np.tile(wave[:, None], (1, 8)) if labels[i] == 0 else np.tile(wave[None, :], (8, 1))
        images[i, 0] = pattern + 0.3 * rng.standard_normal((8, 8))
    return images, labels.astype(np.int64)


def _mlp():
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 2))


def _cnn(width=8):
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 2))


def _train(model, opt, x, y, steps, batch=None, sched=None):
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    n = x.shape[0]
    rng = np.random.default_rng(1)
    for _ in range(steps):
        idx = rng.choice(n, batch, replace=False) if batch else np.arange(n)
        opt.zero_grad()
        loss = loss_fn(model(an.tensor(x[idx])), y[idx])
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        losses.append(loss.item())
    return losses


def _accuracy(model, x, y):
    model.eval()
    with an.no_grad():
        pred = model(an.tensor(x)).argmax(1)
    model.train()
    return float(np.mean(pred == y))


def test_mlp_learns_xor_with_sgd():
    an.manual_seed(0)
    x, y = _xor_blobs()
    model = _mlp()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = _train(model, opt, x, y, steps=100)
    assert losses[0] > 0.5
    assert losses[-1] < losses[0] / 10, losses[::10]
    x_test, y_test = _xor_blobs(seed=1)
    assert _accuracy(model, x_test, y_test) > 0.9


def test_cnn_learns_stripes_with_adam_and_schedule():
    an.manual_seed(0)
    x, y = _stripes()
    model = _cnn()
    opt = optim.Adam(model.parameters(), lr=0.02)
    sched = optim.lr_scheduler.SequentialLR(
        opt, [optim.lr_scheduler.LinearLR(opt, start_factor=0.2, total_iters=5),
              optim.lr_scheduler.CosineAnnealingLR(opt, T_max=55)], milestones=[5])
    losses = _train(model, opt, x, y, steps=60, batch=64, sched=sched)
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) / 5, losses[::5]
    x_test, y_test = _stripes(seed=7)
    assert _accuracy(model, x_test, y_test) > 0.9
    # BN running statistics were tracked and are used in eval
    assert model[1].num_batches_tracked.item() == 60


def _train_cnn_with_threads(threads):
    previous = an.get_num_threads()
    an.set_num_threads(threads)
    try:
        an.manual_seed(3)
        x, y = _stripes(n=64, seed=3)
        model = nn.Sequential(_cnn(width=16), )
        model.add_module("drop", nn.Dropout(0.1))
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
        _train(model, opt, x, y, steps=6)
        return model.state_dict()
    finally:
        an.set_num_threads(previous)


def test_training_is_bit_identical_across_thread_counts():
    one = _train_cnn_with_threads(1)
    two = _train_cnn_with_threads(2)
    assert list(one) == list(two)
    for key in one:
        np.testing.assert_array_equal(one[key], two[key], err_msg=key)


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
def test_long_training_loop_keeps_memory_flat():
    an.manual_seed(0)
    x, y = _xor_blobs(n=32)
    xt = an.tensor(x)
    model = _mlp()
    opt = optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    rss_at_1000 = None
    for step in range(10_000):
        opt.zero_grad()
        loss = loss_fn(model(xt), y)
        loss.backward()
        opt.step()
        if step == 999:
            rss_at_1000 = _rss_bytes()
    growth = _rss_bytes() - rss_at_1000
    assert growth < 5 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 9,000 steps"
    assert time.perf_counter() - start < 15.0
    assert np.isfinite(loss.item())
