"""Where an inference plan's batch-1 time goes: every op timed inside the
recorded chain, and again alone (repeated on its own inputs, so that its
weights and activations stay in cache), per op and summed.

    python bench/plan_chain.py [--model mobilenet_v2] [--threads 2] [--runs 300] [--no-chain]
                               [--save [PATH]]

The gap between the two sums is what running the ops one after another costs
beyond the kernels themselves: weights fetched from L3 (MobileNetV2's 8.9 MB
of weights do not fit the cores' L2), activations that the other core wrote,
the Python between ops.  A run of blocks that the plan chains into one
call (block_chain) is timed as one op; --no-chain keeps them apart, each
block timed on its own (the plan's end-to-end time is then the unchained
plan's).  The plan's end-to-end median is printed next to the
sums, and onnxruntime's on the same model (our ONNX export, all graph
optimisations, equal threads) when it is installed; onnxruntime runs in a
child process of its own (idle OpenMP threads of one library spin on the
cores the other needs).
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _record  # noqa: E402
from _machine import print_peak  # noqa: E402

# An onnxruntime session on argv[1] with argv[2] threads, warmed up: the
# start of this script's child and of paired_latency.py's.
ORT_SESSION = r"""
import json, sys, time, statistics
import numpy as np, onnxruntime as ort
path, threads = sys.argv[1], int(sys.argv[2])
options = ort.SessionOptions()
options.intra_op_num_threads = threads
options.inter_op_num_threads = 1
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
for _ in range(50):
    session.run(None, {name: x})
"""

ORT_CHILD = ORT_SESSION + r"""
runs = int(sys.argv[3])
times = []
for _ in range(runs):
    start = time.perf_counter()
    session.run(None, {name: x})
    times.append(time.perf_counter() - start)
print(statistics.median(times))
"""


def describe(name, args):
    """A short label for one step: conv2d with its shapes, else the op name."""
    if name == "conv2d":
        x, w = args[0], args[1]
        extra = " +residual" if len(args) > 8 and args[8] is not None else ""
        return (f"conv2d {tuple(x.shape)[1:]} w{tuple(w.shape)} stride {args[3][0]} "
                f"groups {args[6]}{extra}")
    if name == "conv_pw_dw_pw":
        x, w1, wd, w2, stride = args[0], args[1], args[5], args[9], args[7]
        expand = f"{w1.shape[0]}x{w1.shape[1]} " if w1 is not None else ""
        return (f"block {tuple(x.shape)[1:]} 1x1 {expand}-> dw{wd.shape[0]} stride {stride} "
                f"-> 1x1 {w2.shape[0]}x{w2.shape[1]}" + (" +residual" if args[12] is not None else "")
                + (" +shortcut 1x1" if len(args) > 14 and args[14] is not None else ""))
    return name


def onnxruntime_median(model, threads, runs):
    import appealnet as an
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        an.export_onnx(model, path, input_shape=(1, 3, 32, 32))
        out = subprocess.run([sys.executable, "-c", ORT_CHILD, path, str(threads), str(runs)],
                             capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--no-chain", action="store_true",
                        help="time each block of a chained run on its own")
    _record.add_argument(parser)
    args = parser.parse_args()
    if args.threads < 1 or args.runs < 10:
        parser.error("--threads must be >= 1 and --runs >= 10")

    import appealnet as an
    import appealnet.models as models
    from appealnet.nn.plan import InferencePlan, compile_for_inference

    an.set_num_threads(args.threads)
    an.manual_seed(0)
    print_peak(an.cpu_info(), args.threads)
    model = models.create(args.model, num_classes=10)
    model.eval()
    x = an.tensor(np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32))
    plan = compile_for_inference(model, x)
    if args.no_chain:
        plan = InferencePlan(plan.model, prepack=True, chain_blocks=False)
        plan(x)
    shape_plan = plan._plans[(1, 3, 32, 32)]
    steps = list(shape_plan.steps)

    end_to_end = []
    for _ in range(50):
        plan(x)
    for _ in range(args.runs):
        start = time.perf_counter()
        plan(x)
        end_to_end.append(time.perf_counter() - start)

    # each step timed where it runs in the chain; the last run's arguments kept
    in_chain = [[] for _ in steps]
    last_args = [None] * len(steps)

    def timed(index, function):
        def call(*a, **k):
            start = time.perf_counter()
            result = function(*a, **k)
            in_chain[index].append(time.perf_counter() - start)
            last_args[index] = (a, k)
            return result
        return call

    shape_plan.steps = [(timed(i, step[0]),) + tuple(step[1:]) for i, step in enumerate(steps)]
    try:
        for _ in range(args.runs):
            plan(x)
    finally:
        shape_plan.steps = steps
    alone = []
    for index, step in enumerate(steps):
        a, k = last_args[index]
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            step[0](*a, **k)
            times.append(time.perf_counter() - start)
        alone.append(statistics.median(times))
    chain = [statistics.median(t) for t in in_chain]
    labels = [describe(name, last_args[i][0]) for i, name in enumerate(shape_plan.op_names)]
    last_args = None  # the activations can go

    print(f"{args.model}, batch 1, {args.threads} thread(s), median of {args.runs} runs (us)")
    print(f"{'#':>3} {'in chain':>9} {'alone':>8} {'ratio':>6}  op")
    for index, label in enumerate(labels):
        print(f"{index:3d} {chain[index] * 1e6:9.1f} {alone[index] * 1e6:8.1f} "
              f"{chain[index] / alone[index]:6.2f}  {label}")
    total_chain, total_alone = sum(chain), sum(alone)
    print(f"sum over ops: in chain {total_chain * 1e3:.3f} ms, alone {total_alone * 1e3:.3f} ms "
          f"(chain / alone {total_chain / total_alone:.2f})")
    print(f"plan end to end: {statistics.median(end_to_end) * 1e3:.3f} ms")
    time.sleep(0.5)  # let our idle threads stop spinning before the peer starts
    ort_median = onnxruntime_median(model, args.threads, args.runs)
    if ort_median is None:
        print("onnxruntime: not installed")
    else:
        print(f"onnxruntime end to end: {ort_median * 1e3:.3f} ms "
              f"(plan / onnxruntime {statistics.median(end_to_end) / ort_median:.2f})")


if __name__ == "__main__":
    _record.run(main, __file__)
