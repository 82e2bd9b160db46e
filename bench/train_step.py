"""Full training steps and inference of the model zoo: appealnet vs PyTorch
(and onnxruntime for inference) on the same architectures, equal threads.

    python bench/train_step.py [--threads 2] [--batch 128] [--steps 5] [--rounds 3]
                               [--models resnet20,mobilenet_v2,shufflenet_v2] [--no-infer]

Each measurement runs in its own subprocess, so peak RSS (getrusage
ru_maxrss) is that library's alone; "delta" subtracts the RSS the process
had after its imports (torch alone maps a few hundred MB).  The PyTorch
models are tests/torch_reference_models.py, the same architectures with the
same module names.  A training step is forward, cross-entropy, backward and
an SGD (momentum 0.9, weight decay 5e-4) update on a fixed random batch;
images/s = batch / median step time.  Inference: eval mode, no grad, images/s
at --batch and batch-1 latency (median and 90th percentile of 100 calls),
for the model as built ("ours"), after nn.utils.fuse_for_inference
("ours+fused": batch norm folded into the convolutions, as onnxruntime does
when it loads a graph) and after nn.utils.compile_for_inference ("ours+plan":
the fused model's forward pass replayed from its recorded C-core calls, as
onnxruntime runs a graph without Python in the loop).  onnxruntime runs the ONNX graph exported by
appealnet.export_onnx (unfused: it fuses itself).

PyTorch is measured twice, plainly and with
GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=...:top_pad=...
(glibc then keeps freed memory, which helps PyTorch's allocator); the better
of the two is compared, and which one it was is printed.  appealnet runs with
no such help.  Subprocesses run interleaved (ours, torch, torch+tunables, ...)
for --rounds rounds and the median is reported: the machine may be shared.
The ratio line also gives the median of the per-round ratios (ours against
the better PyTorch in the same round) and in how many rounds ours was
faster: the machine's speed moves between phases over minutes.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _record  # noqa: E402
from _machine import print_peak  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUNABLES = ("glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736:"
            "glibc.malloc.top_pad=268435456")


def _rss_now_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak_rss():
    """Starts the peak-RSS count at this process's own memory: ru_maxrss
    carries over the high-water mark of the process that spawned it (the
    inference figures all read the parent's 245 MB), /proc's VmHWM can be
    reset (Linux 4.0+)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss_mb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_MACS = {}


def forward_macs(model_name):
    """Multiply-adds of one image's forward pass (appealnet's profiler)."""
    if model_name not in _MACS:
        import appealnet.models as models
        from appealnet.profiler import profile
        _MACS[model_name] = profile(models.create(model_name, num_classes=10), (3, 32, 32)).macs
    return _MACS[model_name]


def _batch(batch, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((batch, 3, 32, 32)).astype(np.float32),
            rng.integers(0, 10, size=batch).astype(np.int64))


def _time_calls(fn, count):
    times = []
    for _ in range(count):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def child_ours_fused(model_name, task, threads, batch, steps):
    return child_ours(model_name, task, threads, batch, steps, fused=True)


def child_ours_plan(model_name, task, threads, batch, steps):
    return child_ours(model_name, task, threads, batch, steps, plan=True)


def child_ours(model_name, task, threads, batch, steps, fused=False, plan=False):
    sys.path.insert(0, ROOT)
    import appealnet as an
    import appealnet.models as models
    import appealnet.nn as nn
    import appealnet.optim as optim

    an.set_num_threads(threads)
    _reset_peak_rss()
    base = _rss_now_mb()
    an.manual_seed(0)
    model = models.create(model_name, num_classes=10)
    x, y = _batch(batch)
    result = {"base_rss_mb": base}
    if task == "train":
        model.train()
        opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        loss_fn = nn.CrossEntropyLoss()
        xt = an.tensor(x)

        def step():
            opt.zero_grad()
            loss = loss_fn(model(xt), y)
            loss.backward()
            opt.step()

        _time_calls(step, 2)
        result["step_s"] = statistics.median(_time_calls(step, steps))
    else:
        model.eval()
        xt, x1 = an.tensor(x), an.tensor(x[:1])
        if fused:  # batch norm folded into the convolutions, ReLU in their call
            from appealnet.nn.utils import fuse_for_inference
            model = fuse_for_inference(model, x1)
        if plan:  # the same, its forward pass replayed from the recorded C calls
            from appealnet.nn.utils import compile_for_inference
            model = compile_for_inference(model, x1)
        with an.no_grad():
            _time_calls(lambda: model(xt), 1)
            result["batch_s"] = statistics.median(_time_calls(lambda: model(xt), steps))
            _time_calls(lambda: model(x1), 5)
            result["latency_s"] = _time_calls(lambda: model(x1), 100)
    result["peak_rss_mb"] = _peak_rss_mb()
    return result


def child_torch(model_name, task, threads, batch, steps):
    import torch
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import torch_reference_models as ref

    torch.set_num_threads(threads)
    _reset_peak_rss()
    base = _rss_now_mb()
    torch.manual_seed(0)
    model = ref.build(model_name, num_classes=10)
    x, y = _batch(batch)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    result = {"base_rss_mb": base}
    if task == "train":
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        loss_fn = torch.nn.CrossEntropyLoss()

        def step():
            opt.zero_grad()
            loss = loss_fn(model(xt), yt)
            loss.backward()
            opt.step()

        _time_calls(step, 2)
        result["step_s"] = statistics.median(_time_calls(step, steps))
    else:
        model.eval()
        x1 = xt[:1].clone()
        with torch.no_grad():
            _time_calls(lambda: model(xt), 1)
            result["batch_s"] = statistics.median(_time_calls(lambda: model(xt), steps))
            _time_calls(lambda: model(x1), 5)
            result["latency_s"] = _time_calls(lambda: model(x1), 100)
    result["peak_rss_mb"] = _peak_rss_mb()
    return result


def child_ort(model_name, task, threads, batch, steps):
    sys.path.insert(0, ROOT)
    import onnxruntime as ort
    import appealnet as an
    import appealnet.models as models

    an.manual_seed(0)
    model = models.create(model_name, num_classes=10)
    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        an.export_onnx(model, path, input_shape=(2, 3, 32, 32), dynamic_batch=True)
        del model
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        _reset_peak_rss()
        base = _rss_now_mb()
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x, _ = _batch(batch)
    x1 = x[:1].copy()
    result = {"base_rss_mb": base}
    _time_calls(lambda: session.run(None, {name: x}), 1)
    result["batch_s"] = statistics.median(_time_calls(lambda: session.run(None, {name: x}), steps))
    _time_calls(lambda: session.run(None, {name: x1}), 5)
    result["latency_s"] = _time_calls(lambda: session.run(None, {name: x1}), 100)
    result["peak_rss_mb"] = _peak_rss_mb()
    return result


SIDES = {
    "ours": (child_ours, {}),
    "ours+fused": (child_ours_fused, {}),
    "ours+plan": (child_ours_plan, {}),
    "torch": (child_torch, {}),
    "torch+tunables": (child_torch, {"GLIBC_TUNABLES": TUNABLES}),
    "onnxruntime": (child_ort, {}),
}


def run_child(side, model, task, args):
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS="1")
    env.update(SIDES[side][1])
    cmd = [sys.executable, os.path.abspath(__file__), "--child", side, "--model", model,
           "--task", task, "--threads", str(args.threads), "--batch", str(args.batch),
           "--steps", str(args.steps)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        print(f"  {side} {model} {task} failed:\n{proc.stderr[-2000:]}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(results):
    """Median over rounds of each figure."""
    out = {}
    for key in ("step_s", "batch_s", "peak_rss_mb", "base_rss_mb"):
        vals = [r[key] for r in results if r and key in r]
        if vals:
            out[key] = statistics.median(vals)
    lat = [r["latency_s"] for r in results if r and "latency_s" in r]
    if lat:
        meds = [statistics.median(v) for v in lat]
        p90s = [sorted(v)[int(0.9 * len(v))] for v in lat]
        out["lat_median_ms"] = statistics.median(meds) * 1e3
        out["lat_p90_ms"] = statistics.median(p90s) * 1e3
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default="resnet20,mobilenet_v2,shufflenet_v2")
    parser.add_argument("--no-infer", action="store_true")
    parser.add_argument("--no-train", action="store_true")
    parser.add_argument("--child")
    parser.add_argument("--model")
    parser.add_argument("--task")
    _record.add_argument(parser)
    args = parser.parse_args()
    if args.child:
        fn = SIDES[args.child][0]
        print(json.dumps(fn(args.model, args.task, args.threads, args.batch, args.steps)))
        return

    sys.path.insert(0, ROOT)
    import appealnet as an
    peak = print_peak(an._C.cpu_description(), args.threads)
    an.set_num_threads(1)  # the parent only counts multiply-adds (no pool left spinning)
    print(f"threads {args.threads} on every side; batch {args.batch}; {args.steps} timed steps per "
          f"process after 2 warm-up steps; median of {args.rounds} interleaved rounds (wall clock)")
    tasks = ([] if args.no_train else ["train"]) + ([] if args.no_infer else ["infer"])
    for task in tasks:
        sides = ["ours"] + (["ours+fused", "ours+plan"] if task == "infer" else []) \
            + ["torch", "torch+tunables"] \
            + (["onnxruntime"] if task == "infer" else [])
        print(f"\n=== {task}")
        for model in args.models.split(","):
            raw = {s: [] for s in sides}
            for _ in range(args.rounds):
                for s in sides:
                    raw[s].append(run_child(s, model, task, args))
            figures = {s: summarise(raw[s]) for s in sides}
            ours = figures["ours"]
            if task == "train":
                key = "step_s"
            else:
                key = "batch_s"
            t_plain, t_tun = figures["torch"].get(key), figures["torch+tunables"].get(key)
            best_torch = "torch+tunables" if (t_tun and (not t_plain or t_tun < t_plain)) else "torch"
            for s in sides:
                f = figures[s]
                if key not in f:
                    continue
                line = (f"{model:<14}{s:<16}{args.batch / f[key]:9.1f} img/s"
                        f"   peak RSS {f['peak_rss_mb']:7.0f} MB (delta {f['peak_rss_mb'] - f['base_rss_mb']:6.0f})")
                if task == "infer":
                    line += f"   batch-1 median {f['lat_median_ms']:6.2f} ms  p90 {f['lat_p90_ms']:6.2f} ms"
                print(line)
            for variant in ("ours+fused", "ours+plan"):
                fused = figures.get(variant, {})
                if task == "infer" and key in fused and key in figures[best_torch]:
                    print(f"{model:<14}{variant}: {figures[best_torch][key] / fused[key]:.2f}x best torch images/s"
                          + (f", {figures['onnxruntime'][key] / fused[key]:.2f}x onnxruntime images/s; latency "
                             f"torch/{variant} {figures[best_torch]['lat_median_ms'] / fused['lat_median_ms']:.2f}, "
                             f"onnxruntime/{variant} {figures['onnxruntime']['lat_median_ms'] / fused['lat_median_ms']:.2f}"
                             if key in figures.get("onnxruntime", {}) else ""), flush=True)
            if key in ours and key in figures[best_torch] and peak:
                # training: forward, input and weight gradients, ~3x the forward's flops
                flops = (3 if task == "train" else 1) * 2.0 * forward_macs(model) * args.batch
                cores = peak * 1e9 * args.threads
                print(f"{model:<14}{forward_macs(model) / 1e6:.1f} M multiply-adds per image forward; "
                      f"{'training ~3x that' if task == 'train' else 'batch 128'}: ours "
                      f"{flops / ours[key] / 1e9:.1f} GFLOP/s ({100 * flops / ours[key] / cores:.0f}% of the "
                      f"{args.threads} cores' FMA peak), {best_torch} {flops / figures[best_torch][key] / 1e9:.1f} "
                      f"({100 * flops / figures[best_torch][key] / cores:.0f}%)")
            if key in ours and key in figures[best_torch]:
                # each round's two processes ran minutes apart at most: their
                # ratio is steadier than the ratio of medians where the
                # machine's speed drifts between phases
                paired = [t[key] / o[key] for o, t in zip(raw["ours"], raw[best_torch])
                          if o and t and key in o and key in t]
                print(f"{model:<14}ratio vs {best_torch} (best torch): "
                      f"{figures[best_torch][key] / ours[key]:.2f}x images/s (>1: we are faster); "
                      f"per round {statistics.median(paired):.2f}x median, ours faster in "
                      f"{sum(r > 1 for r in paired)} of {len(paired)}"
                      + (f"; latency torch/ours {figures[best_torch]['lat_median_ms'] / ours['lat_median_ms']:.2f}, "
                         f"onnxruntime/ours {figures['onnxruntime']['lat_median_ms'] / ours['lat_median_ms']:.2f}"
                         if task == "infer" and "lat_median_ms" in figures.get("onnxruntime", {}) else ""),
                      flush=True)


if __name__ == "__main__":
    _record.run(main, __file__)
