"""EfficientNet-B0 for 32x32 images (the pytorch-cifar variant).

A 3x3 stride-1 stem (32 channels, swish) and 16 MBConv blocks:

    1x1 expand (skipped at expansion 1) -> kxk depthwise (k = 3 or 5, carries
    the stride) -> squeeze-excitation -> 1x1 linear projection [+ input]

Squeeze-excitation squeezes to a quarter of the block's *input* channels
(not of the expanded ones) with swish, and gates with a sigmoid.  Residual
blocks use drop-connect (stochastic depth): in training each sample's whole
residual branch is dropped with a rate growing linearly with the block's
depth up to ``drop_connect`` (pytorch-cifar intends this but never advances
its block counter, so its rate stays 0; here it grows).  The mask is drawn
from appealnet's generator, so ``appealnet.manual_seed`` makes it
reproducible.  Dropout (``dropout``) acts on the pooled features before the
classifier.  Downsampling is 16x, and there is no 1280-channel head conv:
the classifier reads the 320 channels of the last block directly.
"""
import numpy as np

from .. import nn
from .._api import rand, tensor
from ..nn import functional as F
from .base import (ImageClassifier, check_num_classes, check_probability, check_width_mult,
                   conv_bn, scaled_channels)

# (expansion, output channels, blocks, depthwise kernel, stride of the first block)
EFFICIENTNET_B0_CFG = ((1, 16, 1, 3, 1), (6, 24, 2, 3, 2), (6, 40, 2, 5, 2), (6, 80, 3, 3, 2),
                       (6, 112, 3, 5, 1), (6, 192, 4, 5, 2), (6, 320, 1, 3, 1))
SE_RATIO = 0.25


def drop_connect(x, drop_rate):
    """Zeroes whole samples of x with probability drop_rate and scales the
    kept ones by 1/(1 - drop_rate) (so the expectation is unchanged)."""
    keep = 1.0 - drop_rate
    draws = np.asarray(rand(x.shape[0], 1, 1, 1))
    mask = (draws < keep).astype(np.float32) / np.float32(keep)
    return x * tensor(mask)


class SqueezeExcite(nn.Module):
    """Channel gates from globally pooled activations (1x1 convs with bias)."""

    def __init__(self, channels, se_channels):
        super().__init__()
        self.se1 = nn.Conv2d(channels, se_channels, 1)
        self.se2 = nn.Conv2d(se_channels, channels, 1)

    def forward(self, x):
        squeezed = x.mean(dim=(2, 3), keepdim=True)
        gate = F.sigmoid(self.se2(F.silu(self.se1(squeezed))))
        return x * gate


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-excitation."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, expansion,
                 drop_rate=0.0):
        super().__init__()
        self.expansion = expansion
        self.drop_rate = drop_rate
        channels = expansion * in_channels
        # conv1/bn1 exist even at expansion 1, where forward skips them, so
        # that pytorch-cifar state_dicts (which hold them) load unchanged.
        self.conv1, self.bn1 = conv_bn(in_channels, channels, 1)
        self.conv2, self.bn2 = conv_bn(channels, channels, kernel_size, stride, groups=channels)
        self.se = SqueezeExcite(channels, max(1, int(in_channels * SE_RATIO)))
        self.conv3, self.bn3 = conv_bn(channels, out_channels, 1)
        self.has_skip = stride == 1 and in_channels == out_channels

    def forward(self, x):
        out = x if self.expansion == 1 else F.silu(nn.conv_batch_norm(self.conv1, self.bn1, x))
        out = F.silu(nn.conv_batch_norm(self.conv2, self.bn2, out))
        out = nn.conv_batch_norm(self.conv3, self.bn3, self.se(out))
        if not self.has_skip:
            return out
        if self.training and self.drop_rate > 0.0:
            out = drop_connect(out, self.drop_rate)
        return out + x


class EfficientNetB0(ImageClassifier):
    """EfficientNet-B0 (pytorch-cifar), 3.6M parameters at width 1 and 10 classes."""

    def __init__(self, num_classes=10, width_mult=1.0, dropout=0.2, drop_connect=0.2):
        super().__init__("efficientnet_b0", downsampling=16)
        num_classes = check_num_classes(num_classes, "efficientnet_b0")
        width_mult = check_width_mult(width_mult, "efficientnet_b0")
        self.dropout_rate = check_probability(dropout, "dropout", "efficientnet_b0")
        drop_connect = check_probability(drop_connect, "drop_connect", "efficientnet_b0")
        self.arch = {"name": "efficientnet_b0",
                     "kwargs": {"num_classes": num_classes, "width_mult": width_mult,
                                "dropout": self.dropout_rate, "drop_connect": drop_connect}}
        stem = scaled_channels(32, width_mult)
        self.conv1, self.bn1 = conv_bn(3, stem, 3)
        total_blocks = sum(cfg[2] for cfg in EFFICIENTNET_B0_CFG)
        blocks, in_channels = [], stem
        for expansion, out_channels, count, kernel_size, stride in EFFICIENTNET_B0_CFG:
            out_channels = scaled_channels(out_channels, width_mult)
            for block_stride in [stride] + [1] * (count - 1):
                rate = drop_connect * len(blocks) / total_blocks
                blocks.append(MBConv(in_channels, out_channels, kernel_size, block_stride,
                                     expansion, rate))
                in_channels = out_channels
        self.layers = nn.Sequential(*blocks)
        self.num_features = in_channels
        self.linear = nn.Linear(in_channels, num_classes)

    def feature_map(self, x):
        return self.layers(F.silu(nn.conv_batch_norm(self.conv1, self.bn1, x)))


def efficientnet_b0(num_classes=10, width_mult=1.0, dropout=0.2, drop_connect=0.2):
    """EfficientNet-B0 (pytorch-cifar); dropout before the classifier,
    drop_connect = the deepest block's stochastic-depth rate."""
    return EfficientNetB0(num_classes, width_mult, dropout, drop_connect)
