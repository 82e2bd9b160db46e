"""GEMM throughput: appealnet's BLIS-style SGEMM vs numpy (OpenBLAS) in the
same run, as GFLOP/s and as a fraction of the FMA peak measured by a small
C loop compiled and run by this script.

    python bench/gemm.py [--threads 1,2] [--rounds 7] [--clock wall|cpu]

Shapes: squares 256..2048 and the GEMMs that the convolutions of the
models lower to (M = C_out, N = output positions of a chunk of images,
K = C_in*kh*kw; dW and dx GEMMs use the transposed operands, passed as
transposed views so neither library copies them).

Fairness:
  * OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, when set in the environment, make
    OpenBLAS pick a slower kernel; the script re-executes itself without
    them (in its own process only) and says so.
  * Each library runs in its own worker process (idle OpenBLAS and OpenMP
    threads spin and would steal each other's cores, see _workers.py), with
    OPENBLAS_NUM_THREADS and appealnet's thread count both set to --threads.
  * Both sides allocate their output every call (numpy's a @ b and
    appealnet's matmul); calls are interleaved (ours, numpy, numpy, ours, ...)
    and the figure is the median over rounds.
  * Each timed sample follows one untimed call: after the pause between
    workers' turns, libgomp's threads have stopped spinning and gone to
    sleep (OpenBLAS's spin far longer), and waking a sleeping vCPU under
    the hypervisor cost up to milliseconds, which a sample of one or two
    calls (the large shapes on two threads) then measured instead of the
    GEMM (a Zen 5: 1024^2 on two threads at 206 GFLOP/s in such samples,
    448 in one process calling it back to back).
  * --clock cpu divides the process CPU time by the thread count: steadier
    than wall time on a machine shared with other jobs, but it also counts
    any time a runtime's idle threads spin.
"""
import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _record  # noqa: E402
from _machine import print_peak  # noqa: E402
from _workers import Worker, serve, settle  # noqa: E402

SLOWING_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

# (M, N, K, trans_a, trans_b, note)
SHAPES = [
    (256, 256, 256, 0, 0, "square"),
    (512, 512, 512, 0, 0, "square"),
    (1024, 1024, 1024, 0, 0, "square"),
    (2048, 2048, 2048, 0, 0, "square"),
    (16, 1024, 144, 0, 0, "resnet20 3x3 16ch fwd"),
    (64, 1024, 576, 0, 0, "resnet18 3x3 64ch fwd"),
    (64, 576, 1024, 0, 1, "resnet18 3x3 64ch dW"),
    (576, 1024, 64, 1, 0, "resnet18 3x3 64ch dx"),
    (128, 512, 1152, 0, 0, "resnet18 3x3 128ch@16 fwd (2 img)"),
    (512, 512, 4608, 0, 0, "resnet18 3x3 512ch@4 fwd (32 img)"),
    (256, 1024, 64, 0, 0, "resnet101 1x1 expand fwd"),
    (144, 1024, 24, 0, 0, "mobilenetv2 1x1 expand fwd"),
    (24, 1024, 144, 0, 0, "mobilenetv2 1x1 project fwd"),
    (1280, 512, 320, 0, 0, "mobilenetv2 last 1x1 (32 img)"),
]

def timed(fn, clock, threads):
    if clock == "cpu":
        start = time.process_time()
        fn()
        return (time.process_time() - start) / threads
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def worker(side, threads, clock):
    """Serves requests {"shape": index} with seconds per GEMM call for one
    library, in a process whose OPENBLAS_NUM_THREADS is `threads`."""
    sys.path.insert(0, ROOT)
    import numpy as np
    if side == "ours":
        import appealnet as an
        from appealnet import _C
        an.set_num_threads(threads)
    rng = np.random.default_rng(0)
    prepared = {}

    def prepare(index):
        M, N, K, ta, tb, note = SHAPES[index]
        a = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
        b = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
        na, nb = (a.T if ta else a), (b.T if tb else b)
        reps = max(1, int(0.02 / (2.0 * M * N * K / 100e9 / threads)))  # ~20 ms per sample
        if side == "ours":
            oa, ob = an.from_numpy(na), an.from_numpy(nb)
            np.testing.assert_allclose(_C.matmul(oa, ob).numpy(), na @ nb, rtol=2e-3, atol=2e-3)

            def once():
                _C.matmul(oa, ob)
        else:
            def once():
                na @ nb

        def run():
            for _ in range(reps):
                once()
        run()  # warm-up: packing buffers, thread pools
        return run, once, reps

    def handle(req):
        if req["shape"] not in prepared:
            prepared.clear()
            prepared[req["shape"]] = prepare(req["shape"])
        run, once, reps = prepared[req["shape"]]
        once()  # the pool's threads awake again after the other worker's turn (see the docstring)
        return timed(run, clock, threads) / reps

    serve({"side": side}, handle)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--worker", choices=("ours", "numpy"), help=argparse.SUPPRESS)
    _record.add_argument(parser)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, int(args.threads), args.clock)
        return

    removed = [v for v in SLOWING_VARS if v in os.environ]
    if removed and not os.environ.get("APPEALNET_BENCH_REEXEC"):
        env = {k: v for k, v in os.environ.items() if k not in SLOWING_VARS}
        env["APPEALNET_BENCH_REEXEC"] = ",".join(f"{v}={os.environ[v]}" for v in removed)
        os.execve(sys.executable, [sys.executable] + sys.argv, env)

    sys.path.insert(0, ROOT)
    import numpy as np
    import appealnet as an

    note = os.environ.get("APPEALNET_BENCH_REEXEC")
    thread_counts = [int(t) for t in args.threads.split(",")]
    peak = print_peak(an._C.cpu_description(), max(thread_counts))
    print(f"numpy {np.__version__}; " + (f"re-executed without {note} (they slow OpenBLAS down)"
                                         if note else "OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE not set"))
    print(f"clock: {args.clock}; median of {args.rounds} interleaved rounds; "
          "ratio = ours / numpy (>1: we are faster)\n")
    for threads in thread_counts:
        env = {k: v for k, v in os.environ.items() if k not in SLOWING_VARS}
        env["OPENBLAS_NUM_THREADS"] = str(threads)
        env["OMP_NUM_THREADS"] = str(threads)
        common = ["--threads", str(threads), "--clock", args.clock]
        # Our worker checks each shape against numpy once; with OpenBLAS
        # threads in its process, they spun after that call and halved our
        # 2-thread figures (measured: 1024^2 at 130 instead of 275 GFLOP/s).
        # OpenBLAS is not what we measure there: one thread for it.
        ours = Worker(__file__, ["--worker", "ours"] + common, dict(env, OPENBLAS_NUM_THREADS="1"))
        theirs = Worker(__file__, ["--worker", "numpy"] + common, env)
        print(f"--- {threads} thread(s)")
        print(f"{'M x N x K':<17}{'op':<5}{'what':<36}{'ours GF/s':>10}{'numpy':>9}{'ratio':>7}"
              f"{'ours %pk':>9}{'numpy %pk':>10}")
        for index, (M, N, K, ta, tb, what) in enumerate(SHAPES):
            samples = {"ours": [], "numpy": []}
            for r in range(args.rounds):
                order = [("ours", ours), ("numpy", theirs)]
                for side, w in (order if r % 2 == 0 else order[::-1]):
                    settle(threads)
                    samples[side].append(w.call({"shape": index}))
            flops = 2.0 * M * N * K
            g_ours = flops / statistics.median(samples["ours"]) * 1e-9
            g_numpy = flops / statistics.median(samples["numpy"]) * 1e-9
            op = {(0, 0): "NN", (0, 1): "NT", (1, 0): "TN"}[(ta, tb)]
            pk = (lambda g: f"{100 * g / (peak * threads):8.0f}%") if peak else (lambda g: "      -")
            shape = f"{M}x{N}x{K}"
            print(f"{shape:<17}{op:<5}{what:<36}{g_ours:10.1f}{g_numpy:9.1f}"
                  f"{g_ours / g_numpy:7.2f}{pk(g_ours):>9}{pk(g_numpy):>10}", flush=True)
        ours.close()
        theirs.close()
        print()


if __name__ == "__main__":
    _record.run(main, __file__)
