"""Helpers used by every op test.

check_grads(fn, arrays): runs fn on appealnet tensors built from `arrays`
(float64 numpy), back-propagates a fixed random cotangent, and compares each
input's gradient with central finite differences of the same scalar
<fn(x), cotangent> evaluated in float64 by `ref` (a float64 numpy
transcription of the op) — so the check is not limited by float32 rounding.

torch_or_skip(): torch when installed, else pytest.skip (CI installs torch,
so these run there).
"""
import numpy as np
import pytest

import appealnet as an


def to_tensors(arrays, requires_grad=True):
    return [an.tensor(a.astype(np.float32), requires_grad=requires_grad) for a in arrays]


def numeric_grad(ref, arrays, cotangent, eps=1e-6):
    """d<ref(*arrays), cotangent>/d arrays by central differences in float64."""
    grads = []
    for k, a in enumerate(arrays):
        g = np.zeros_like(a, dtype=np.float64)
        flat = a.reshape(-1)
        gflat = g.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            plus = np.sum(ref(*arrays) * cotangent)
            flat[i] = old - eps
            minus = np.sum(ref(*arrays) * cotangent)
            flat[i] = old
            gflat[i] = (plus - minus) / (2 * eps)
        grads.append(g)
    return grads


def check_op(fn, ref, arrays, rtol=1e-4, atol=1e-5, grad_rtol=1e-3, grad_atol=1e-4, seed=0,
             check_grad=True):
    """Forward against the float64 reference; backward against finite
    differences of the reference.  Arrays are rounded to float32 first so
    both sides see the same inputs."""
    arrays = [np.asarray(a, dtype=np.float32).astype(np.float64) for a in arrays]
    tensors = to_tensors(arrays, requires_grad=check_grad)
    out = fn(*tensors)
    expected = ref(*arrays)
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=rtol, atol=atol)
    if not check_grad:
        return out
    rng = np.random.default_rng(seed)
    cotangent = rng.standard_normal(expected.shape)
    out.backward(an.tensor(cotangent))
    numeric = numeric_grad(ref, arrays, cotangent)
    for t, g in zip(tensors, numeric):
        assert t.grad is not None, "no gradient reached an input"
        np.testing.assert_allclose(t.grad.numpy(), g, rtol=grad_rtol, atol=grad_atol)
    return out


def torch_or_skip():
    return pytest.importorskip("torch")


def run_python(args, env=None, timeout=120):
    """Runs `python <args>` in a child process that imports the same appealnet
    as this test process (the installed one in CI, the in-place build in a
    checkout) — never the uncompiled source tree next to it."""
    import os
    import subprocess
    import sys

    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(an.__file__)))
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(
        [package_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    here = os.path.dirname(os.path.abspath(__file__))  # holds no package named appealnet
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=here, timeout=timeout)
