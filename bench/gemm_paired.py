"""GEMM on one thread, paired in one process: appealnet's SGEMM and numpy's
(OpenBLAS) take turns on each shape of bench/gemm.py (a round: one side runs
for ~10 ms, then the other; who goes first alternates), and the figure is
the median of the per-round ratios.  On a machine whose speed drifts over
seconds this is steadier than bench/gemm.py's medians, taken in two
processes: a drift moves both sides of a round together.

    python bench/gemm_paired.py [--rounds 40] [--save [PATH]]

One thread on each side: in one process, the idle threads of either
library's pool would spin on the other's cores.  OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE (which slow OpenBLAS down) are removed from this process's
environment before numpy loads, and the output says so.
"""
import argparse
import os
import statistics
import sys
import time

SLOWING_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
REMOVED = [f"{name}={os.environ.pop(name)}" for name in SLOWING_VARS if name in os.environ]
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _record  # noqa: E402
from _machine import print_peak  # noqa: E402
from gemm import SHAPES  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--turn-seconds", type=float, default=0.01)
    _record.add_argument(parser)
    args = parser.parse_args()
    if args.rounds < 1 or args.turn_seconds <= 0:
        parser.error("--rounds must be >= 1 and --turn-seconds > 0")

    sys.path.insert(0, ROOT)
    import numpy as np
    import appealnet as an
    from appealnet import _C

    an.set_num_threads(1)
    peak = print_peak(_C.cpu_description(), 1)
    print(f"numpy {np.__version__}; "
          + (f"removed {', '.join(REMOVED)} from this process" if REMOVED
             else "OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE not set"))
    print(f"1 thread each, one process; {args.rounds} rounds of ~{args.turn_seconds * 1e3:.0f} ms "
          "turns (CPU time); ratio = numpy's time / ours (>1: we are faster)\n")
    print(f"{'M x N x K':<17}{'op':<5}{'what':<36}{'ours GF/s':>10}{'numpy':>9}{'ratio':>7}"
          f"{'ours faster':>13}{'ours %pk':>9}")
    rng = np.random.default_rng(0)
    below = 0
    for M, N, K, ta, tb, what in SHAPES:
        a = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
        b = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
        na, nb = (a.T if ta else a), (b.T if tb else b)
        oa, ob = an.from_numpy(na), an.from_numpy(nb)
        np.testing.assert_allclose(_C.matmul(oa, ob).numpy(), na @ nb, rtol=2e-3, atol=2e-3)
        flops = 2.0 * M * N * K
        reps = max(1, int(args.turn_seconds / (flops / 80e9)))

        def turn(call):
            start = time.process_time()
            for _ in range(reps):
                call()
            return (time.process_time() - start) / reps

        def ours():
            return _C.matmul(oa, ob)

        def theirs():
            return na @ nb

        turn(ours), turn(theirs)  # warm-up: packing buffers, the allocator's cache
        ours_s, numpy_s, ratios = [], [], []
        for r in range(args.rounds):
            if r % 2 == 0:
                t_ours = turn(ours)
                t_numpy = turn(theirs)
            else:
                t_numpy = turn(theirs)
                t_ours = turn(ours)
            ours_s.append(t_ours)
            numpy_s.append(t_numpy)
            ratios.append(t_numpy / t_ours)
        ratio = statistics.median(ratios)
        below += ratio < 1.0
        faster = sum(x > 1.0 for x in ratios)
        op = {(0, 0): "NN", (0, 1): "NT", (1, 0): "TN"}[(ta, tb)]
        g_ours = flops / statistics.median(ours_s) * 1e-9
        g_numpy = flops / statistics.median(numpy_s) * 1e-9
        pk = f"{100 * g_ours / peak:8.0f}%" if peak else "       -"
        print(f"{f'{M}x{N}x{K}':<17}{op:<5}{what:<36}{g_ours:10.1f}{g_numpy:9.1f}{ratio:7.2f}"
              f"{f'{faster}/{args.rounds}':>13}{pk:>9}", flush=True)
    print(f"\nshapes where ours is slower (median ratio < 1): {below} of {len(SHAPES)}")
    return 0


if __name__ == "__main__":
    sys.exit(_record.run(main, __file__))
