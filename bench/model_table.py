"""Prints the README's model table: parameters, MACs and the AppealNet
paper's "MFLOPs" of every model in the registry.

    python bench/model_table.py                      # 32x32 images, 10 classes
    python bench/model_table.py --size 64 --classes 200

MACs count the multiply-accumulates of convolutions and linear layers;
"paper MFLOPs" add the bias and batch-norm operations the way the paper's
Table I counts them (see appealnet.profiler for the exact rules).
"""
import argparse
import os
import sys

# Run from a checkout without installing: the package sits next to bench/.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import appealnet as an  # noqa: E402
from appealnet import models  # noqa: E402
from appealnet.profiler import profile  # noqa: E402


def model_table(size=32, num_classes=10):
    """The table as markdown text, one row per registered model."""
    image = (3, size, size)
    lines = [f"| model | params (M) | MACs (M) at {size}x{size} | paper MFLOPs |",
             "|---|---:|---:|---:|"]
    for name in models.list_models():
        model = models.create(name, num_classes=num_classes)
        plain = profile(model, image, convention="macs")
        paper = profile(model, image, convention="paper")
        lines.append(f"| {name} | {plain.params / 1e6:.2f} | {plain.macs / 1e6:.2f} | "
                     f"{paper.macs / 1e6:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32, help="image height and width")
    parser.add_argument("--classes", type=int, default=10, help="number of classes")
    args = parser.parse_args(argv)
    an.manual_seed(0)
    print(model_table(args.size, args.classes))


if __name__ == "__main__":
    main()
