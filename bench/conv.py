"""Convolution layers of real networks: forward and forward+backward time,
appealnet vs PyTorch with the same thread count, measured in the same run.

    python bench/conv.py [--threads 2] [--batch 32] [--models resnet20,mobilenetv2]
                         [--rounds 5] [--min-time 0.05] [--clock wall|cpu]

Run with OPENBLAS_NUM_THREADS=1 (numpy's idle OpenBLAS threads otherwise
spin inside this process and count in --clock cpu).

Layer shapes are the distinct convolutions of ResNet-20, ResNet-18,
ResNet-101 (CIFAR variants), MobileNetV2, ShuffleNetV2 1x and EfficientNet-B0
on 32x32 inputs.  Each library runs in its own worker process (two OpenMP
runtimes in one process steal each other's cores, see bench/_workers.py);
each layer is timed in interleaved rounds (ours, torch, torch, ours, ...) so
that load from other processes hits both sides alike; the figure is the
median over rounds.  The backward computes the gradients of
input and weight (no bias, as in these networks: batch norm follows).

Prints per layer: time of forward, of forward+backward, and the ratio
torch/ours (> 1 means appealnet is faster), then totals per model and overall.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _record  # noqa: E402
from _machine import print_peak  # noqa: E402
from _workers import Worker, serve, settle  # noqa: E402


# (name, C_in, C_out, kernel, stride, groups, H): padding is kernel // 2.
LAYERS = {
    "resnet20": [
        ("conv1", 3, 16, 3, 1, 1, 32),
        ("s1 3x3", 16, 16, 3, 1, 1, 32),
        ("s2 3x3/2", 16, 32, 3, 2, 1, 32),
        ("s2 3x3", 32, 32, 3, 1, 1, 16),
        ("s3 3x3/2", 32, 64, 3, 2, 1, 16),
        ("s3 3x3", 64, 64, 3, 1, 1, 8),
    ],
    "resnet18": [
        ("conv1", 3, 64, 3, 1, 1, 32),
        ("l1 3x3", 64, 64, 3, 1, 1, 32),
        ("l2 3x3/2", 64, 128, 3, 2, 1, 32),
        ("l2 3x3", 128, 128, 3, 1, 1, 16),
        ("l2 down 1x1/2", 64, 128, 1, 2, 1, 32),
        ("l3 3x3/2", 128, 256, 3, 2, 1, 16),
        ("l3 3x3", 256, 256, 3, 1, 1, 8),
        ("l4 3x3/2", 256, 512, 3, 2, 1, 8),
        ("l4 3x3", 512, 512, 3, 1, 1, 4),
    ],
    "resnet101": [
        ("l1 1x1 reduce", 256, 64, 1, 1, 1, 32),
        ("l1 3x3", 64, 64, 3, 1, 1, 32),
        ("l1 1x1 expand", 64, 256, 1, 1, 1, 32),
        ("l2 3x3", 128, 128, 3, 1, 1, 16),
        ("l2 1x1 expand", 128, 512, 1, 1, 1, 16),
        ("l3 1x1 reduce", 1024, 256, 1, 1, 1, 8),
        ("l3 3x3", 256, 256, 3, 1, 1, 8),
        ("l3 1x1 expand", 256, 1024, 1, 1, 1, 8),
        ("l4 3x3", 512, 512, 3, 1, 1, 4),
        ("l4 1x1 expand", 512, 2048, 1, 1, 1, 4),
    ],
    "mobilenetv2": [
        ("conv1", 3, 32, 3, 1, 1, 32),
        ("b1 dw", 32, 32, 3, 1, 32, 32),
        ("b1 project", 32, 16, 1, 1, 1, 32),
        ("b2 expand", 16, 96, 1, 1, 1, 32),
        ("b2 dw", 96, 96, 3, 1, 96, 32),
        ("b2 project", 96, 24, 1, 1, 1, 32),
        ("b3 expand", 24, 144, 1, 1, 1, 32),
        ("b3 dw", 144, 144, 3, 1, 144, 32),
        ("b4 dw/2", 144, 144, 3, 2, 144, 32),
        ("b4 project", 144, 32, 1, 1, 1, 16),
        ("b5 expand", 32, 192, 1, 1, 1, 16),
        ("b5 dw", 192, 192, 3, 1, 192, 16),
        ("b7 expand", 64, 384, 1, 1, 1, 8),
        ("b7 dw", 384, 384, 3, 1, 384, 8),
        ("b7 project", 384, 64, 1, 1, 1, 8),
        ("b14 dw", 960, 960, 3, 1, 960, 4),
        ("b14 project", 960, 160, 1, 1, 1, 4),
        ("conv last", 320, 1280, 1, 1, 1, 4),
    ],
    "shufflenetv2": [
        ("conv1", 3, 24, 3, 1, 1, 32),
        ("s2 down dw/2", 24, 24, 3, 2, 24, 32),
        ("s2 down 1x1", 24, 58, 1, 1, 1, 32),
        ("s2 1x1", 58, 58, 1, 1, 1, 16),
        ("s2 dw", 58, 58, 3, 1, 58, 16),
        ("s3 1x1", 116, 116, 1, 1, 1, 8),
        ("s3 dw", 116, 116, 3, 1, 116, 8),
        ("s4 1x1", 232, 232, 1, 1, 1, 4),
        ("s4 dw", 232, 232, 3, 1, 232, 4),
        ("conv5", 464, 1024, 1, 1, 1, 4),
    ],
    "efficientnet_b0": [
        ("stem 3x3/2", 3, 32, 3, 2, 1, 32),
        ("b1 dw", 32, 32, 3, 1, 32, 16),
        ("b2 expand", 16, 96, 1, 1, 1, 16),
        ("b2 dw/2", 96, 96, 3, 2, 96, 16),
        ("b3 dw", 144, 144, 3, 1, 144, 8),
        ("b4 dw5x5/2", 144, 144, 5, 2, 144, 8),
        ("b5 dw5x5", 240, 240, 5, 1, 240, 4),
        ("b5 project", 240, 40, 1, 1, 1, 4),
        ("b9 dw5x5", 672, 672, 5, 1, 672, 2),
        ("head 1x1", 320, 1280, 1, 1, 1, 1),
    ],
}


def median_time(fn, min_time, clock):
    """Median seconds of one call of fn, over enough calls to fill min_time."""
    fn()
    start = clock()
    fn()
    once = clock() - start
    reps = max(1, int(min_time / max(once, 1e-6)))
    times = []
    for _ in range(reps):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times)


def ours_cases(layer, batch):
    import appealnet as an
    F = an.nn.functional
    x, w, g, stride, pad, groups = _arrays(layer, batch)
    ax, aw, ag = an.tensor(x, requires_grad=True), an.tensor(w, requires_grad=True), an.tensor(g)

    def fwd():
        with an.no_grad():
            F.conv2d(ax, aw, None, stride, pad, 1, groups)

    def fwd_bwd():
        ax.grad = None
        aw.grad = None
        F.conv2d(ax, aw, None, stride, pad, 1, groups).backward(ag)

    return fwd, fwd_bwd


def torch_cases(layer, batch):
    import torch
    conv = torch.nn.functional.conv2d
    x, w, g, stride, pad, groups = _arrays(layer, batch)
    tx, tw, tg = torch.from_numpy(x).requires_grad_(True), torch.from_numpy(w).requires_grad_(True), \
        torch.from_numpy(g)

    def fwd():
        with torch.no_grad():
            conv(tx, tw, None, stride, pad, 1, groups)

    def fwd_bwd():
        tx.grad = None
        tw.grad = None
        conv(tx, tw, None, stride, pad, 1, groups).backward(tg)

    return fwd, fwd_bwd


def _arrays(layer, batch):
    name, cin, cout, k, stride, groups, h = layer
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, cin, h, h)).astype(np.float32)
    w = (rng.standard_normal((cout, cin // groups, k, k)) * 0.1).astype(np.float32)
    pad = k // 2
    oh = (h + 2 * pad - k) // stride + 1
    g = rng.standard_normal((batch, cout, oh, oh)).astype(np.float32)
    return x, w, g, stride, pad, groups


def forward_flops(layer, batch):
    """2 x multiply-adds of the layer's forward at this batch."""
    name, cin, cout, k, stride, groups, h = layer
    oh = (h + 2 * (k // 2) - k) // stride + 1
    return 2.0 * batch * cout * oh * oh * (cin // groups) * k * k


def percent_of_peak(flops, ours_s, torch_s, peak, threads):
    """'ours/torch' GFLOP/s as whole percents of the cores' peak ('-' unmeasured)."""
    if not peak:
        return "-"
    cores = peak * 1e9 * threads
    return f"{100 * flops / ours_s / cores:.0f}/{100 * flops / torch_s / cores:.0f}"


def worker(side, threads, batch, clock_name):
    """Serves timing requests for one library in this process."""
    clock = time.process_time if clock_name == "cpu" else time.perf_counter
    if side == "ours":
        import appealnet as an
        an.set_num_threads(threads)
        hello = {"version": "appealnet", "threads": an.get_num_threads(),
                 "cpu": an._C.cpu_description()}
        make = ours_cases
    else:
        import torch
        torch.set_num_threads(threads)
        hello = {"version": f"torch {torch.__version__}", "threads": torch.get_num_threads()}
        make = torch_cases
    cache = {}

    def handle(req):
        key = tuple(req["layer"])
        if key not in cache:
            cache.clear()  # one layer's tensors at a time
            cache[key] = make(key, batch)
        fwd, fwd_bwd = cache[key]
        return [median_time(fwd, req["min_time"], clock), median_time(fwd_bwd, req["min_time"], clock)]

    serve(hello, handle)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--models", default=",".join(LAYERS))
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per layer")
    parser.add_argument("--min-time", type=float, default=0.05,
                        help="seconds per timing within a round")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: process CPU time, steadier on a shared machine; "
                             "only meaningful with --threads 1")
    parser.add_argument("--worker", choices=("ours", "torch"), help=argparse.SUPPRESS)
    _record.add_argument(parser)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.threads, args.batch, args.clock)
        return

    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS=str(args.threads))
    common = ["--threads", str(args.threads), "--batch", str(args.batch), "--clock", args.clock]
    ours = Worker(__file__, ["--worker", "ours"] + common, env)
    theirs = Worker(__file__, ["--worker", "torch"] + common, env)
    peak = print_peak(ours.hello['cpu'], args.threads)
    print(f"{theirs.hello['version']} ({theirs.hello['threads']} threads) and appealnet "
          f"({ours.hello['threads']} threads), each in its own process; batch {args.batch}; "
          f"{args.clock} clock; median of {args.rounds} interleaved rounds; "
          f"ratio = torch time / our time (>1: we are faster); %pk: GFLOP/s as % of the "
          f"{args.threads} cores' FMA peak, ours/torch (f+b: 3x the forward's flops)")
    print(f"{'model':<16}{'layer':<15}{'Cin':>5}{'Cout':>5}{'k':>2}{'s':>2}{'grp':>5}{'H':>4}"
          f"  {'fwd ours':>9}{'torch':>9}{'ratio':>6}{'%pk':>8}  {'f+b ours':>9}{'torch':>9}{'ratio':>6}"
          f"{'%pk':>8}")
    totals = {}
    for model in args.models.split(","):
        for layer in LAYERS[model]:
            req = {"layer": list(layer), "min_time": args.min_time}
            samples = {"ours": [], "torch": []}
            for r in range(args.rounds):
                order = [("ours", ours), ("torch", theirs)]
                for side, w in (order if r % 2 == 0 else order[::-1]):
                    settle(args.threads)
                    samples[side].append(w.call(req))
            of, ofb = (statistics.median(s[i] for s in samples["ours"]) for i in (0, 1))
            tf, tfb = (statistics.median(s[i] for s in samples["torch"]) for i in (0, 1))
            name, cin, cout, k, stride, groups, h = layer
            flops = forward_flops(layer, args.batch)
            print(f"{model:<16}{name:<15}{cin:>5}{cout:>5}{k:>2}{stride:>2}{groups:>5}{h:>4}"
                  f"  {of * 1e3:8.2f}m{tf * 1e3:8.2f}m{tf / of:6.2f}"
                  f"{percent_of_peak(flops, of, tf, peak, args.threads):>8}"
                  f"  {ofb * 1e3:8.2f}m{tfb * 1e3:8.2f}m{tfb / ofb:6.2f}"
                  f"{percent_of_peak(3 * flops, ofb, tfb, peak, args.threads):>8}", flush=True)
            t = totals.setdefault(model, [0.0, 0.0, 0.0, 0.0])
            for i, v in enumerate((of, tf, ofb, tfb)):
                t[i] += v
    ours.close()
    theirs.close()
    print("\ntotals (sum over the listed layers, ms)")
    grand = [0.0, 0.0, 0.0, 0.0]
    for model, (of, tf, ofb, tfb) in totals.items():
        print(f"{model:<16} fwd {of * 1e3:8.2f} vs {tf * 1e3:8.2f}  ratio {tf / of:5.2f}   "
              f"fwd+bwd {ofb * 1e3:8.2f} vs {tfb * 1e3:8.2f}  ratio {tfb / ofb:5.2f}")
        grand = [a + b for a, b in zip(grand, (of, tf, ofb, tfb))]
    of, tf, ofb, tfb = grand
    print(f"{'all':<16} fwd {of * 1e3:8.2f} vs {tf * 1e3:8.2f}  ratio {tf / of:5.2f}   "
          f"fwd+bwd {ofb * 1e3:8.2f} vs {tfb * 1e3:8.2f}  ratio {tfb / ofb:5.2f}")


if __name__ == "__main__":
    _record.run(main, __file__)
