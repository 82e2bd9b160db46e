"""What every model of the zoo has in common.

``ImageClassifier`` gives each network the same face, which the two-head
network, the trainer and the profiler rely on:

    features = model.forward_features(x)     # [N, num_features], pooled and flattened
    logits   = model(x)                      # model.linear(dropout(features))
    model.arch                               # {"name": ..., "kwargs": {...}}: how to rebuild it
    model.min_input_size                     # smallest H (= W) the downsampling allows

Subclasses build their layers, set ``num_features``, ``downsampling`` and
``linear``, and implement ``feature_map(x)`` (the last convolutional map,
before pooling).  Pooling is adaptive (a mean over H and W) so the same
weights run on 32x32 CIFAR and 64x64 Tiny-ImageNet images.
"""
import math
import numbers

from .. import nn
from ..nn import functional as F


def make_divisible(value, divisor=8):
    """A scaled channel count rounded as torchvision rounds it: to the nearest
    multiple of ``divisor``, never below ``divisor`` and never more than 10%
    below ``value`` (so thin layers do not lose too much width)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def check_width_mult(width_mult, model_name):
    """width_mult as a float; ValueError unless it is a finite number > 0."""
    if isinstance(width_mult, bool) or not isinstance(width_mult, numbers.Real) \
            or not math.isfinite(width_mult) or width_mult <= 0:
        raise ValueError(f"{model_name}: width_mult must be a finite number > 0, "
                         f"got {width_mult!r}")
    return float(width_mult)


def scaled_channels(channels, width_mult):
    """Channels of a width-scaled layer (unchanged at width_mult 1)."""
    return channels if width_mult == 1.0 else make_divisible(channels * width_mult)


def check_num_classes(num_classes, model_name):
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) \
            or num_classes < 1:
        raise ValueError(f"{model_name}: num_classes must be a positive integer, "
                         f"got {num_classes!r}")
    return int(num_classes)


def check_probability(p, what, model_name):
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p < 1.0:
        raise ValueError(f"{model_name}: {what} must be a number in [0, 1), got {p!r}")
    return float(p)


def conv_bn(in_channels, out_channels, kernel_size, stride=1, groups=1):
    """A bias-free convolution with 'same'-style padding and its batch norm
    (the pair almost every layer of these networks is made of)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                     padding=(kernel_size - 1) // 2, groups=groups, bias=False)
    return conv, nn.BatchNorm2d(out_channels)


class ImageClassifier(nn.Module):
    """Base of the zoo's CNNs: input checks, pooled features, classifier."""

    in_channels = 3

    def __init__(self, model_name, downsampling):
        super().__init__()
        # Replaced by the factory with the name and keyword arguments it was
        # called with; this default keeps a directly built model describable.
        self.arch = {"name": model_name, "kwargs": {}}
        self.downsampling = int(downsampling)
        self.dropout_rate = 0.0
        self.num_features = 0

    @property
    def min_input_size(self):
        """Inputs smaller than this lose a whole pixel grid to the strided
        layers (the last feature map would be empty or pure padding)."""
        return self.downsampling

    def check_input(self, x):
        """Shape checks done before any compute, with the model's name."""
        name = self.arch["name"]
        shape = tuple(getattr(x, "shape", ()))
        if len(shape) != 4 or shape[1] != self.in_channels:
            raise ValueError(f"{name}: expected an input of shape [N, {self.in_channels}, H, W], "
                             f"got {list(shape)}")
        height, width = shape[2], shape[3]
        if height < self.min_input_size or width < self.min_input_size:
            raise ValueError(f"{name}: input size {height}x{width} is too small; the model "
                             f"downsamples {self.downsampling}x, so the minimum input size is "
                             f"{self.min_input_size}x{self.min_input_size}")

    def feature_map(self, x):
        """The last convolutional feature map [N, num_features, h, w]."""
        raise NotImplementedError(f"{type(self).__name__} must implement feature_map")

    def forward_features(self, x):
        """Pooled, flattened features [N, num_features] (the 'z' the heads share)."""
        self.check_input(x)
        return self.feature_map(x).mean(dim=(2, 3))

    def classify(self, features):
        """The classifier head on pooled features (dropout first, if any)."""
        if self.dropout_rate > 0.0 and self.training:
            features = F.dropout(features, self.dropout_rate, True)
        return self.linear(features)

    def forward(self, x):
        return self.classify(self.forward_features(x))
