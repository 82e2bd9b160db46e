"""The caching allocator behind every tensor: steady-state training reuses
cached blocks instead of asking the system for fresh memory, the cache does
not grow step after step, release_workspace empties it, and caching changes
no result.  The C side (threads, alignment, the cap) is tests/c/test_allocator.c."""
import os

import numpy as np
import pytest

import appealnet as an
from gradcheck import run_python
import appealnet.nn as nn
import appealnet.optim as optim
from appealnet import _C

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cnn():
    an.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((16, 3, 16, 16)).astype(np.float32),
            rng.integers(0, 10, size=16).astype(np.int64))


def _step(model, opt, x, y):
    opt.zero_grad()
    loss = nn.CrossEntropyLoss()(model(an.tensor(x)), y)
    loss.backward()
    opt.step()
    return float(loss.item())


def _skip_if_disabled():
    if not _C.allocator_stats()["enabled"]:
        pytest.skip("APPEALNET_NO_CACHE is set: the cache is bypassed")


def test_stats_report_the_configuration():
    st = _C.allocator_stats()
    assert set(st) == {"hits", "misses", "frees_cached", "frees_system", "cached_bytes",
                       "cached_blocks", "live_bytes", "limit_bytes", "enabled"}
    assert st["limit_bytes"] > 0
    assert st["cached_bytes"] >= 0 and st["live_bytes"] >= 0


def test_steady_state_training_reuses_blocks_and_does_not_grow():
    _skip_if_disabled()
    model = _cnn()
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = _data()
    for _ in range(3):  # warm-up: momentum buffers, first packing buffers
        _step(model, opt, x, y)
    before = _C.allocator_stats()
    for _ in range(5):
        _step(model, opt, x, y)
    after = _C.allocator_stats()
    hits = after["hits"] - before["hits"]
    misses = after["misses"] - before["misses"]
    assert hits > 100, (before, after)  # every step allocates dozens of tensors
    assert misses == 0, (before, after)  # ... and all of them come from the cache
    assert after["cached_bytes"] == before["cached_bytes"]
    assert after["cached_blocks"] == before["cached_blocks"]


def test_release_workspace_empties_the_cache():
    _skip_if_disabled()
    t = an.zeros((256, 257))
    del t
    assert _C.allocator_stats()["cached_bytes"] >= 256 * 257 * 4
    assert _C.workspace_bytes() >= _C.allocator_stats()["cached_bytes"]
    _C.release_workspace()
    st = _C.allocator_stats()
    assert st["cached_bytes"] == 0 and st["cached_blocks"] == 0
    # a block handed out after the release comes from the system again
    misses = st["misses"]
    t = an.zeros((256, 257))
    assert _C.allocator_stats()["misses"] == misses + 1
    np.testing.assert_array_equal(t.numpy(), 0.0)


def test_recycled_blocks_do_not_leak_old_values_into_results():
    _skip_if_disabled()
    filled = an.full((64, 64), 7.0)
    del filled  # its block is now cached, still holding 7s
    z = an.zeros((64, 64))
    np.testing.assert_array_equal(z.numpy(), 0.0)
    a = an.tensor(np.arange(64 * 64, dtype=np.float32).reshape(64, 64))
    np.testing.assert_array_equal((a * 2.0).numpy(), np.arange(64 * 64).reshape(64, 64) * 2.0)


def test_training_is_identical_with_the_cache_bypassed():
    """The same few steps in a child process with APPEALNET_NO_CACHE=1 give the
    same losses bit for bit."""
    code = (
        "import test_allocator as t\n"
        "from appealnet import _C, optim\n"
        "m = t._cnn(); o = optim.SGD(m.parameters(), lr=0.05, momentum=0.9); x, y = t._data()\n"
        "print(_C.allocator_stats()['enabled'], [t._step(m, o, x, y) for _ in range(3)])\n"
    )
    results = {}
    for flag in ("0", "1"):
        env = dict(os.environ, APPEALNET_NO_CACHE=flag)
        run = run_python(["-c", code], env=env)
        assert run.returncode == 0, run.stderr[-3000:]
        results[flag] = run.stdout.strip()
    assert results["0"].startswith("True ") and results["1"].startswith("False ")
    assert results["0"][5:] == results["1"][6:]


def test_cache_limit_is_read_from_the_environment():
    code = ("from appealnet import _C, zeros\n"
            "t = zeros((1024, 1024)); del t\n"  # 4 MiB: over the 1 MiB cap, so not kept
            "s = zeros((64, 1024)); del s\n"    # 256 KiB: kept
            "st = _C.allocator_stats(); print(st['limit_bytes'], st['cached_bytes'], st['frees_system'])\n")
    env = dict(os.environ, APPEALNET_CACHE_LIMIT_MB="1")
    env.pop("APPEALNET_NO_CACHE", None)
    run = run_python(["-c", code], env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    limit, cached, frees_system = map(int, run.stdout.split())
    assert limit == 1 << 20
    assert cached == 64 * 1024 * 4
    assert frees_system >= 1


def _held_by_backward(retain_graph):
    """Bytes the allocator holds (handed out or cached) after backward through
    sum(exp(exp(x) * x)), the cache emptied first: with the cache keeping
    every freed block, that is the most the pass had at once, plus what was
    live before.  All tensors but the sum are 4 MB."""
    _C.release_workspace()
    x = an.tensor(np.full(1 << 20, 0.5, dtype=np.float32), requires_grad=True)
    (x.exp() * x).exp().sum().backward(retain_graph=retain_graph)
    st = _C.allocator_stats()
    e = np.exp(0.5)
    np.testing.assert_allclose(x.grad.numpy()[:3], np.exp(0.5 * e) * (e + 0.5 * e), rtol=1e-5)
    return st["cached_bytes"] + st["live_bytes"]


def test_backward_lets_go_of_saved_tensors_as_it_goes():
    """Without retain_graph a node's saved tensors and inputs go as soon as
    its backward has run: the outer exp's input and output are freed before
    the product's backward makes its two gradients, which take their blocks:
    one 4 MB block fewer at the peak than when the graph is kept."""
    _skip_if_disabled()
    kept = _held_by_backward(retain_graph=True)
    released = _held_by_backward(retain_graph=False)
    assert kept - released >= 4 << 20, (kept, released)


def test_a_graph_used_by_backward_cannot_be_used_again():
    x = an.tensor(np.ones(8, dtype=np.float32), requires_grad=True)
    y = (x.exp() * 3.0).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.backward()
    z = (x.exp() * 3.0).sum()
    z.backward(retain_graph=True)
    z.backward()  # kept once, usable once more
    np.testing.assert_allclose(x.grad.numpy(), 3 * 3.0 * np.e, rtol=1e-6)


def test_a_large_request_takes_a_cached_block_up_to_twice_its_size():
    _skip_if_disabled()
    _C.release_workspace()
    block = an.zeros((1 << 20,))  # 4 MB
    del block
    before = _C.allocator_stats()
    smaller = an.zeros((3 << 18,))  # 3 MB, two classes below: served by the cached 4 MB block
    after = _C.allocator_stats()
    assert (after["hits"], after["misses"]) == (before["hits"] + 1, before["misses"]), (before, after)
    assert after["cached_bytes"] == before["cached_bytes"] - (4 << 20)
    np.testing.assert_array_equal(smaller.numpy(), 0.0)
    del smaller
    _C.release_workspace()
    block = an.zeros((4 << 20,))  # 16 MB: more than twice 3 MB, so not taken
    del block
    before = _C.allocator_stats()
    smaller = an.zeros((3 << 18,))
    after = _C.allocator_stats()
    assert after["misses"] == before["misses"] + 1, (before, after)
    assert after["cached_bytes"] == before["cached_bytes"]
