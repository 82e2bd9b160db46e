"""Batch-1 latency of an inference plan against onnxruntime, paired and
interleaved: each side in a persistent process of its own, the two taking
turns (a round: one side runs --per-round inferences, then the other; who
goes first alternates), with a pause between turns so that the idle threads
of one stop spinning before the other starts.  A machine whose speed drifts
over minutes moves both sides of a round together, so the median of the
per-round ratios is steadier than two medians taken minutes apart.

    python bench/paired_latency.py [--model mobilenet_v2] [--threads 2] [--rounds 20]
                                   [--per-round 60] [--pause 0.25] [--save [PATH]]

onnxruntime's pool spins ~60 ms after a run, ours ~3 ms (process CPU time
measured while idle), so the default pause covers both; a 1 s pause gave
the same ratios.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _record  # noqa: E402
from _machine import print_peak  # noqa: E402
from plan_chain import ORT_SESSION  # noqa: E402

# Each child reads a count per line on stdin and answers with the median
# seconds of that many inferences.
OURS_CHILD = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
import appealnet as an
from appealnet import models
from appealnet.nn.plan import compile_for_inference
model_name, threads, mode = sys.argv[2], int(sys.argv[3]), sys.argv[4]
an.set_num_threads(threads)
an.manual_seed(0)
model = models.create(model_name, num_classes=10)
model.eval()
x = an.tensor(np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32))
if mode == "export":
    an.export_onnx(model, sys.argv[5], input_shape=(1, 3, 32, 32))
    sys.exit(0)
plan = compile_for_inference(model, x)
for _ in range(50):
    plan(x)
print(json.dumps(an.cpu_info()), flush=True)
for line in sys.stdin:
    times = []
    for _ in range(int(line)):
        start = time.perf_counter()
        plan(x)
        times.append(time.perf_counter() - start)
    print(json.dumps(sorted(times)[len(times) // 2]), flush=True)
"""

ORT_CHILD = ORT_SESSION + r"""
print(json.dumps(ort.__version__), flush=True)
for line in sys.stdin:
    times = []
    for _ in range(int(line)):
        start = time.perf_counter()
        session.run(None, {name: x})
        times.append(time.perf_counter() - start)
    print(json.dumps(sorted(times)[len(times) // 2]), flush=True)
"""


def _ask(process, count):
    process.stdin.write(f"{count}\n")
    process.stdin.flush()
    line = process.stdout.readline()
    if not line:
        raise RuntimeError("a benchmark child exited early")
    return json.loads(line)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=60)
    parser.add_argument("--pause", type=float, default=0.25,
                        help="seconds of idle before each turn (the other side's threads stop spinning)")
    _record.add_argument(parser)
    args = parser.parse_args()
    if args.threads < 1 or args.rounds < 2 or args.per_round < 5:
        parser.error("--threads must be >= 1, --rounds >= 2 and --per-round >= 5")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("onnxruntime is not installed: nothing to pair with")
        return 1

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        subprocess.run([sys.executable, "-c", OURS_CHILD, ROOT, args.model, str(args.threads),
                        "export", path], check=True, env=env)
        ours = subprocess.Popen([sys.executable, "-c", OURS_CHILD, ROOT, args.model,
                                 str(args.threads), "run"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, env=env)
        peer = subprocess.Popen([sys.executable, "-c", ORT_CHILD, path, str(args.threads)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        try:
            print_peak(json.loads(ours.stdout.readline()), args.threads)
            print(f"onnxruntime {json.loads(peer.stdout.readline())} on our ONNX export, "
                  f"all graph optimisations")
            print(f"{args.model}, batch 1, {args.threads} thread(s) on each side; {args.rounds} "
                  f"alternating rounds of {args.per_round} inferences per side (median per turn)")
            ours_times, peer_times, ratios = [], [], []
            for r in range(args.rounds):
                order = [("ours", ours), ("peer", peer)]
                if r % 2:
                    order.reverse()
                turn = {}
                for side, process in order:
                    time.sleep(args.pause)  # the other side's idle threads stop spinning
                    turn[side] = _ask(process, args.per_round)
                ours_times.append(turn["ours"])
                peer_times.append(turn["peer"])
                ratios.append(turn["ours"] / turn["peer"])
        finally:
            for process in (ours, peer):
                process.stdin.close()
                process.wait(timeout=60)
    faster = sum(ratio < 1.0 for ratio in ratios)
    print(f"ours (plan):  median {statistics.median(ours_times) * 1e3:.3f} ms over the rounds")
    print(f"onnxruntime:  median {statistics.median(peer_times) * 1e3:.3f} ms over the rounds")
    print(f"ours / onnxruntime, median of the per-round ratios: {statistics.median(ratios):.3f} "
          f"(<1: we are faster); ours faster in {faster} of {args.rounds} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(_record.run(main, __file__))
