"""Every ISA the CPU offers gives the same answers (APPEALNET_ISA forces one
per child process): the direct kernels compiled per ISA (depthwise planes and
weight gradients, batch norm) and the elementwise code are bit-identical to
the portable build; the GEMM-based convolutions, whose blocking follows the micro-kernel,
agree with float64 to float32 accuracy under each ISA.  (Forcing an ISA the
CPU lacks is an error at import; the C library falls back to the best level:
tested here and in tests/c/test_gemm.c.)"""
import json
import os

import numpy as np
import pytest

import appealnet as an
from gradcheck import run_python

# (name, (N, C, H), weight shape, stride, padding, groups)
LAYERS = [
    ("dw3x3_s1_32", (3, 8, 32), (8, 1, 3, 3), 1, 1, 8),
    ("dw3x3_s1_4", (5, 16, 4), (16, 1, 3, 3), 1, 1, 16),  # flattened planes (and the 8x8 below)
    ("dw3x3_s1_8_partial", (3, 20, 8), (20, 1, 3, 3), 1, 1, 20),
    ("dw3x3_s2_15", (3, 8, 15), (8, 1, 3, 3), 2, 1, 8),
    # rows of a whole number of 8-lane vectors but not of 16: AVX2's row
    # kernels (8 lanes) against the framed plane of the 16-lane builds
    ("dw3x3_s1_24", (2, 8, 24), (8, 1, 3, 3), 1, 1, 8),
    ("dw3x3_s2_16", (2, 8, 16), (8, 1, 3, 3), 2, 1, 8),
    # stride 2 onto 4-wide outputs: the column-split kernel under the
    # generic and AVX2 builds, the permute kernel under AVX-512
    ("dw3x3_s2_8", (2, 12, 8), (12, 1, 3, 3), 2, 1, 12),
    # the data gradient's column pairs, 16 a vector under AVX-512: 20 pairs
    # (a full vector and a partial one) and an odd column left over
    ("dw3x3_s2_41", (2, 3, 41), (3, 1, 3, 3), 2, 1, 3),
    ("dw5x5_s1_8", (3, 8, 8), (8, 1, 5, 5), 1, 2, 8),
    ("dense3x3_s1_20", (2, 6, 20), (10, 6, 3, 3), 1, 1, 1),
    ("dense3x3_s2_16", (2, 6, 16), (10, 6, 3, 3), 2, 1, 1),
    # 16 outputs a row: two-vector spans of the AVX-512 gather from x, the
    # stride phases under the other builds
    ("dense3x3_s2_32", (2, 4, 32), (6, 4, 3, 3), 2, 1, 1),
    ("pointwise_8", (4, 24, 8), (40, 24, 1, 1), 1, 0, 1),
    ("winograd3x3_9", (3, 40, 9), (36, 40, 3, 3), 1, 1, 1),  # transforms built per ISA too
]

CHILD = r"""
import json, sys
import numpy as np
import appealnet as an
from appealnet.nn import functional as F
layers = json.loads(sys.argv[1]); out = sys.argv[2]
results = {"isa": an.cpu_info().split("isa=")[1].split()[0].rstrip(";")}
for name, (n, c, h), ws, stride, pad, groups in layers:
    rng = np.random.default_rng(len(name))
    x = an.tensor(rng.standard_normal((n, c, h, h)).astype(np.float32), requires_grad=True)
    w = an.tensor(rng.standard_normal(ws).astype(np.float32), requires_grad=True)
    y = F.conv2d(x, w, None, stride, pad, 1, groups)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(an.tensor(gy))
    results[name + ".y"] = y.detach().numpy()
    results[name + ".dx"] = x.grad.numpy()
    results[name + ".dw"] = w.grad.numpy()
    results[name + ".gy"] = gy
r = np.random.default_rng(7).standard_normal(4099).astype(np.float32)
results["relu"] = F.relu(an.tensor(r)).numpy()
for shape in ((6, 5, 16, 16), (9, 7, 4, 4)):  # wide builds, and the portable one for small planes
    rng = np.random.default_rng(shape[2])
    x = an.tensor((rng.standard_normal(shape) * 3 + 1).astype(np.float32), requires_grad=True)
    g = an.tensor(rng.uniform(0.5, 2, shape[1]).astype(np.float32), requires_grad=True)
    b = an.tensor(rng.standard_normal(shape[1]).astype(np.float32), requires_grad=True)
    y = F.batch_norm(x, None, None, g, b, True, activation="relu")
    y.backward(an.tensor(rng.standard_normal(shape).astype(np.float32)))
    for part, value in (("y", y.detach()), ("dx", x.grad), ("dg", g.grad), ("db", b.grad)):
        results[f"bn{shape[2]}.{part}"] = value.numpy()
np.savez(out, **results)
"""


def _run(isa, tmp_path):
    out = tmp_path / f"{isa}.npz"
    env = dict(os.environ, APPEALNET_ISA=isa)
    proc = run_python(["-c", CHILD, json.dumps(LAYERS), str(out)], env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return dict(np.load(out)), proc.stderr


def _offered():
    env = dict(os.environ)
    env.pop("APPEALNET_ISA", None)
    proc = run_python(["-c", "import appealnet as an; print(an.cpu_info())"], env=env)
    best = proc.stdout.split("isa=")[1].split()[0].rstrip(";")
    if best == "neon":  # AArch64: the portable build and the NEON GEMM kernel
        return ["generic", "neon"]
    order = ["generic", "avx2", "avx512"]
    return order[: order.index(best) + 1] if best in order else ["generic"]


def _reference(name, arrays):
    torch = pytest.importorskip("torch")
    _, (n, c, h), ws, stride, pad, groups = next(layer for layer in LAYERS if layer[0] == name)
    rng = np.random.default_rng(len(name))
    x = torch.tensor(rng.standard_normal((n, c, h, h)).astype(np.float32), dtype=torch.float64,
                     requires_grad=True)
    w = torch.tensor(rng.standard_normal(ws).astype(np.float32), dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.conv2d(x, w, None, stride, pad, 1, groups)
    y.backward(torch.tensor(arrays[name + ".gy"], dtype=torch.float64))
    return y.detach().numpy(), x.grad.numpy(), w.grad.numpy()


def test_every_isa_agrees(tmp_path):
    isas = _offered()
    runs = {isa: _run(isa, tmp_path)[0] for isa in isas}
    portable = runs["generic"]
    for isa, arrays in runs.items():
        assert str(arrays["isa"]) == isa  # the forced level really ran
        for name, *_ in LAYERS:
            y, dx, dw = _reference(name, arrays)
            scale = np.sqrt(np.prod(next(l for l in LAYERS if l[0] == name)[2][1:]))
            np.testing.assert_allclose(arrays[name + ".y"], y, rtol=1e-4, atol=1e-5 * scale,
                                       err_msg=f"{isa} {name} forward")
            np.testing.assert_allclose(arrays[name + ".dx"], dx, rtol=1e-4, atol=1e-4 * scale,
                                       err_msg=f"{isa} {name} input gradient")
            np.testing.assert_allclose(arrays[name + ".dw"], dw, rtol=1e-4, atol=1e-3,
                                       err_msg=f"{isa} {name} weight gradient")
            if name.startswith("dw"):  # direct kernels: the same sums under every ISA
                for part in ("y", "dx", "dw"):
                    np.testing.assert_array_equal(arrays[f"{name}.{part}"], portable[f"{name}.{part}"],
                                                  err_msg=f"{isa} {name} {part} differs from generic")
        np.testing.assert_array_equal(arrays["relu"], portable["relu"])
        for key in arrays:  # batch norm: explicit lanes, the same sums under every ISA
            if key.startswith("bn"):
                np.testing.assert_array_equal(arrays[key], portable[key], err_msg=f"{isa} {key}")



def _refused(isa):
    """The error importing appealnet under APPEALNET_ISA=isa."""
    env = dict(os.environ, APPEALNET_ISA=isa)
    proc = run_python(["-c", "import appealnet"], env=env)
    assert proc.returncode != 0 and "RuntimeError: appealnet: " in proc.stderr, proc.stderr
    assert "Unset APPEALNET_ISA" in proc.stderr, proc.stderr
    assert "Segmentation" not in proc.stderr and "Illegal" not in proc.stderr, proc.stderr
    return proc.stderr


def test_a_level_the_cpu_cannot_run_is_refused_with_the_reason():
    """An ISA beyond this CPU (or of the other architecture: NEON on x86-64,
    AVX on AArch64), or a misspelt name, makes `import appealnet` raise a
    RuntimeError that names the request and the best level (the level the C
    library alone falls back to: tests/c/test_gemm.c).
    Nothing executes an instruction the CPU lacks."""
    offered = _offered()
    best = offered[-1]
    refused = [isa for isa in ("avx2", "avx512", "neon") if isa not in offered]
    assert refused  # x86-64 never offers neon, AArch64 never avx2/avx512
    for isa in refused:
        text = _refused(isa)
        assert f"requested ISA '{isa}'" in text and f"its best is '{best}'" in text, text
    text = _refused("sse9")
    assert "unknown APPEALNET_ISA value 'sse9'" in text and f"runs '{best}'" in text, text
    assert "expected generic|avx2|avx512|neon" in text, text
