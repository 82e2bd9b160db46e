"""Trains a model on CIFAR-10 from ../shared/data (or --data-dir) with the
recipe of `appealnet run --dataset cifar10` and prints images/s, time per
epoch and the final test accuracy.

    python bench/train_cifar10.py --model resnet20 --epochs 5
    python bench/train_cifar10.py --model mobilenet_v1:width_mult=0.25 --epochs 10
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np

import appealnet as an
from appealnet.data import CIFAR10, DataLoader
from appealnet.experiment import RECIPES, parse_model_spec
from appealnet.train import evaluate, fit

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    recipe = RECIPES["cifar10"]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.path.join(HERE, "..", "..", "shared", "data"))
    parser.add_argument("--model", default=recipe["big"])
    parser.add_argument("--epochs", type=int, default=recipe["epochs"][0])
    parser.add_argument("--batch-size", type=int, default=recipe["batch_size"])
    parser.add_argument("--lr", type=float, default=recipe["lr"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    an.set_num_threads(args.threads)
    an.manual_seed(args.seed)
    train, test = CIFAR10(args.data_dir, train=True), CIFAR10(args.data_dir, train=False)
    name, kwargs = parse_model_spec(args.model)
    model = an.models.create(name, num_classes=10, **kwargs)
    loader = DataLoader(train, args.batch_size, shuffle=True, seed=args.seed, augment=True)
    test_loader = DataLoader(test, 256, mean=train.mean, std=train.std)
    started = time.perf_counter()
    history = fit(model, loader, args.epochs, lr=args.lr, warmup_epochs=recipe["warmup_epochs"],
                  seed=args.seed, progress=True)
    total = time.perf_counter() - started
    accuracy = evaluate(model, test_loader)["accuracy"]
    report = {
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "cpu": an.cpu_info(), "threads": args.threads, "python": platform.python_version(),
        "model": args.model, "epochs": args.epochs,
        "images_per_s": float(np.median([h["images_per_s"] for h in history])),
        "seconds_per_epoch": float(np.median([h["seconds"] for h in history])),
        "total_seconds": total, "test_accuracy": accuracy,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
