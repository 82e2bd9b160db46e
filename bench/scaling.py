"""OpenMP scaling past 2 cores: a full training step (batch 128) of the zoo's
CIFAR models at 1, 2, 4, 8 and 16 threads, ours vs PyTorch (each in its own
process, PyTorch with the malloc tunables of train_step.py), and the speed-up
of each over its own 1-thread time.  Meant for a many-core machine; on the
2-core development machine the counts above 2 only oversubscribe.

    python bench/scaling.py --threads 1,2,4,8,16 --models resnet20,mobilenet_v2
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_step  # noqa: E402  (the per-process children and their settings)
import _record  # noqa: E402
from _machine import print_peak  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2,4,8,16")
    parser.add_argument("--models", default="resnet20,mobilenet_v2")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    _record.add_argument(parser)
    args = parser.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    sys.path.insert(0, train_step.ROOT)
    import appealnet as an
    print_peak(an._C.cpu_description(), max(counts))
    print(f"os.cpu_count()={os.cpu_count()}")
    print(f"batch {args.batch}; median of {args.steps} steps after 2 warm-up steps; wall clock")
    print(f"{'model':<14}{'threads':>8}{'ours img/s':>12}{'speed-up':>10}{'torch img/s':>13}"
          f"{'speed-up':>10}{'ours/torch':>12}")
    for model in args.models.split(","):
        base = {}
        for threads in counts:
            run = argparse.Namespace(threads=threads, batch=args.batch, steps=args.steps)
            row = {}
            for side in ("ours", "torch+tunables"):
                result = train_step.run_child(side, model, "train", run)
                row[side] = args.batch / result["step_s"] if result else float("nan")
                base.setdefault(side, row[side])
            print(f"{model:<14}{threads:>8}{row['ours']:>12.1f}{row['ours'] / base['ours']:>10.2f}"
                  f"{row['torch+tunables']:>13.1f}{row['torch+tunables'] / base['torch+tunables']:>10.2f}"
                  f"{row['ours'] / row['torch+tunables']:>12.2f}", flush=True)


if __name__ == "__main__":
    _record.run(main, __file__)
