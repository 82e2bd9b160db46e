"""GEMM on several threads in steady state: appealnet's SGEMM and numpy's
(OpenBLAS) each in its own process, every shape of bench/gemm.py called back
to back for --seconds, the two processes taking turns --rounds times; the
figure is the median over the rounds of the per-round ratios.

    python bench/gemm_steady.py [--threads 2] [--rounds 5] [--seconds 0.7] [--save [PATH]]

bench/gemm.py times a few calls per sample after a pause between the two
libraries' turns.  On a virtual machine, libgomp's threads go to sleep in
that pause and their vCPU halts; waking it cost up to milliseconds, so a
sample of one or two large products measured the wake-up more than the
GEMM (OpenBLAS's threads spin far longer and keep their cores).  Here each
shape runs for --seconds of wall time after 5 untimed calls, the rate a
training loop sees.  OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (which slow
OpenBLAS down) are removed from the numpy process's environment, and the
output says so.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _record  # noqa: E402
from _machine import print_peak  # noqa: E402
from gemm import SHAPES  # noqa: E402

SLOWING_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def worker(side, threads, seconds):
    """Prints one line: GFLOP/s of each shape, called back to back."""
    import numpy as np
    if side == "ours":
        sys.path.insert(0, ROOT)
        import appealnet as an
        from appealnet import _C
        an.set_num_threads(threads)
    rng = np.random.default_rng(0)
    rates = []
    for M, N, K, ta, tb, _ in SHAPES:
        a = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
        b = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
        na, nb = (a.T if ta else a), (b.T if tb else b)
        if side == "ours":
            oa, ob = an.from_numpy(na), an.from_numpy(nb)

            def call():
                _C.matmul(oa, ob)
        else:
            def call():
                na @ nb
        for _ in range(5):
            call()
        start, calls = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            call()
            calls += 1
        rates.append(2.0 * M * N * K * calls / (time.perf_counter() - start) * 1e-9)
    print(" ".join(f"{r:.3f}" for r in rates))


def run_side(side, threads, seconds):
    env = dict(os.environ)
    if side == "numpy":
        for name in SLOWING_VARS:
            env.pop(name, None)
        env["OPENBLAS_NUM_THREADS"] = str(threads)
    else:
        env["OPENBLAS_NUM_THREADS"] = "1"  # numpy's pool idle in our process
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", side,
                          "--threads", str(threads), "--seconds", str(seconds)],
                         env=env, capture_output=True, text=True, check=True)
    return [float(v) for v in out.stdout.split()]


def percent_of_peak(ours, theirs, i, peak, threads):
    """Median GFLOP/s of shape i, both sides, in whole percents of the cores' peak."""
    if not peak:
        return "-"
    return (f"{100 * statistics.median(o[i] for o in ours) / (peak * threads):.0f}/"
            f"{100 * statistics.median(t[i] for t in theirs) / (peak * threads):.0f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.7)
    parser.add_argument("--worker", choices=("ours", "numpy"), help=argparse.SUPPRESS)
    _record.add_argument(parser)
    args = parser.parse_args()
    if args.threads < 1 or args.rounds < 1 or args.seconds <= 0:
        parser.error("--threads and --rounds must be >= 1 and --seconds > 0")
    if args.worker:
        worker(args.worker, args.threads, args.seconds)
        return 0

    sys.path.insert(0, ROOT)
    import numpy as np
    from appealnet import _C
    removed = [f"{name}={os.environ[name]}" for name in SLOWING_VARS if name in os.environ]
    peak = print_peak(_C.cpu_description(), args.threads)
    print(f"numpy {np.__version__}; "
          + (f"removed {', '.join(removed)} from numpy's process" if removed
             else "OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE not set"))
    print(f"{args.threads} thread(s) each, own processes taking turns; {args.rounds} rounds of "
          f"{args.seconds:.1f} s per shape and side, wall clock; ratio = ours / numpy GFLOP/s "
          "(>1: we are faster)\n")
    ours, theirs = [], []
    for r in range(args.rounds):
        order = ("ours", "numpy") if r % 2 == 0 else ("numpy", "ours")
        got = {side: run_side(side, args.threads, args.seconds) for side in order}
        ours.append(got["ours"])
        theirs.append(got["numpy"])
    print(f"{'M x N x K':<17}{'op':<5}{'what':<36}{'ours GF/s':>10}{'numpy':>9}{'ratio':>7}"
          f"{'ours faster':>13}{'%pk ours/numpy':>16}")
    below = 0
    for i, (M, N, K, ta, tb, what) in enumerate(SHAPES):
        ratios = [o[i] / t[i] for o, t in zip(ours, theirs)]
        ratio = statistics.median(ratios)
        below += ratio < 1.0
        op = {(0, 0): "NN", (0, 1): "NT", (1, 0): "TN"}[(ta, tb)]
        print(f"{f'{M}x{N}x{K}':<17}{op:<5}{what:<36}{statistics.median(o[i] for o in ours):10.1f}"
              f"{statistics.median(t[i] for t in theirs):9.1f}{ratio:7.2f}"
              f"{f'{sum(x > 1.0 for x in ratios)}/{args.rounds}':>13}"
              f"{percent_of_peak(ours, theirs, i, peak, args.threads):>16}", flush=True)
    print(f"\nshapes where ours is slower (median ratio < 1): {below} of {len(SHAPES)}")
    return 0


if __name__ == "__main__":
    sys.exit(_record.run(main, __file__))
