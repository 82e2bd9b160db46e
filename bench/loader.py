"""The input pipeline's cost next to a training step, on CIFAR-10.

    python bench/loader.py [--root /work/shared/data] [--batch 128] [--batches 100] [--steps 5]
                           [--model mobilenet_v2] [--threads N]

Measures, with the same batch size:

1. the time to prepare one batch (gather, random crop with 4-pixel zero
   padding, flip, normalise to float32) with no background thread: the cost
   the loader would add if nothing overlapped it;
2. one training step of the model (forward, cross-entropy, backward, SGD);
3. while training with ``prefetch=1``, how long the training loop waits for
   each batch (what the background thread leaves on the critical path).

Prints the loader's share of a step; the target is at most 10 %. The model is
``appealnet.models.create(--model)`` when the model zoo is installed, else a
small stand-in conv net (the output says which).
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import appealnet as an  # noqa: E402
import appealnet.nn.functional as F  # noqa: E402
from appealnet import nn, optim  # noqa: E402
from appealnet.data import CIFAR10, DataLoader  # noqa: E402


def build_model(name):
    try:
        from appealnet import models
    except ImportError:
        models = None
    if models is not None:
        return models.create(name, num_classes=10), name
    net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                        nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))
    return net, "stand-in conv net (appealnet.models not available)"


def time_preparation(loader, batches):
    """Seconds per batch with prefetch=0 (the producer runs on the caller's thread)."""
    times, iterator = [], iter(loader)
    for _ in range(batches):
        start = time.perf_counter()
        next(iterator)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def train_steps(model, loader, steps):
    """(median step seconds, median wait-for-batch seconds) while training."""
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    step_times, wait_times = [], []
    iterator = iter(loader)
    for step in range(steps + 1):  # the first step warms up caches and allocator
        start = time.perf_counter()
        images, targets = next(iterator)
        got_batch = time.perf_counter()
        loss = F.cross_entropy(model(images), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        done = time.perf_counter()
        if step:
            wait_times.append(got_batch - start)
            step_times.append(done - got_batch)
    return statistics.median(step_times), statistics.median(wait_times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.environ.get("APPEALNET_DATA", "/work/shared/data"))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        an.set_num_threads(args.threads)

    if os.path.isdir(os.path.join(args.root, "cifar-10-batches-bin")):
        data, source = CIFAR10(args.root, train=True), f"CIFAR-10 train from {args.root}"
    else:
        rng = np.random.default_rng(0)
        data = (rng.integers(0, 256, (50000, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 50000))
        source = "random uint8 stand-in for CIFAR-10 (no copy found)"
    model, model_name = build_model(args.model)
    print(f"data: {source}; batch {args.batch}; threads {an.get_num_threads()}; model: {model_name}")

    sync = DataLoader(data, args.batch, shuffle=True, seed=0, augment="cifar10", prefetch=0,
                      mean=[0.4914, 0.4822, 0.4465], std=[0.2470, 0.2435, 0.2616])
    prepare = time_preparation(sync, args.batches)
    prefetched = DataLoader(data, args.batch, shuffle=True, seed=0, augment="cifar10", prefetch=1,
                            mean=sync.mean, std=sync.std)
    step, wait = train_steps(model, prefetched, args.steps)

    print(f"loader, one batch prepared (no thread): {prepare * 1e3:8.2f} ms")
    print(f"training step ({model_name}):      {step * 1e3:8.2f} ms")
    print(f"loader share of a step:                 {100 * prepare / step:8.3f} %  (target <= 10 %)")
    print(f"wait for a batch with prefetch=1:       {wait * 1e3:8.3f} ms ({100 * wait / step:.3f} % of a step)")


if __name__ == "__main__":
    main()
