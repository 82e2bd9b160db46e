"""MobileNet v1 and v2 for 32x32 images (the pytorch-cifar variants).

Both keep the 3x3 stem at stride 1 and drop the first ImageNet downsampling
steps, so a 32x32 image still leaves a 2x2 (v1) or 4x4 (v2) final map.
``width_mult`` scales every layer's channels, rounded to a multiple of 8 as
torchvision does (v2's 1280-channel last conv only ever grows).
"""
from .. import nn
from .base import (ImageClassifier, check_num_classes, check_width_mult, conv_bn,
                   scaled_channels)

# output channels, or (output channels, stride) where the block downsamples
MOBILENET_V1_CFG = (64, (128, 2), 128, (256, 2), 256, (512, 2), 512, 512, 512, 512, 512,
                    (1024, 2), 1024)

# (expansion, output channels, blocks, stride of the first block); the second
# stage keeps stride 1 (ImageNet uses 2) so 32x32 inputs are not shrunk too fast.
MOBILENET_V2_CFG = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                    (6, 160, 3, 2), (6, 320, 1, 1))


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv (carries the stride) then 1x1 pointwise, BN+ReLU after each."""

    def __init__(self, in_planes, out_planes, stride=1):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(in_planes, in_planes, 3, stride, groups=in_planes)
        self.conv2, self.bn2 = conv_bn(in_planes, out_planes, 1)

    def forward(self, x):
        out = nn.conv_batch_norm(self.conv1, self.bn1, x, activation="relu")
        return nn.conv_batch_norm(self.conv2, self.bn2, out, activation="relu")


class MobileNetV1(ImageClassifier):
    """3x3 stem (32 channels) and 13 depthwise-separable blocks; 16x downsampling."""

    def __init__(self, num_classes=10, width_mult=1.0):
        super().__init__("mobilenet_v1", downsampling=16)
        num_classes = check_num_classes(num_classes, "mobilenet_v1")
        width_mult = check_width_mult(width_mult, "mobilenet_v1")
        self.arch = {"name": "mobilenet_v1",
                     "kwargs": {"num_classes": num_classes, "width_mult": width_mult}}
        stem = scaled_channels(32, width_mult)
        self.conv1, self.bn1 = conv_bn(3, stem, 3)
        blocks, in_planes = [], stem
        for item in MOBILENET_V1_CFG:
            out_planes, stride = (item, 1) if isinstance(item, int) else item
            out_planes = scaled_channels(out_planes, width_mult)
            blocks.append(DepthwiseSeparable(in_planes, out_planes, stride))
            in_planes = out_planes
        self.layers = nn.Sequential(*blocks)
        self.num_features = in_planes
        self.linear = nn.Linear(in_planes, num_classes)

    def feature_map(self, x):
        return self.layers(nn.conv_batch_norm(self.conv1, self.bn1, x, activation="relu"))


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise (carries the stride) -> 1x1 linear projection.

    At stride 1 the input is added back, through a 1x1 conv + BN when the
    channel count changes (pytorch-cifar's choice; torchvision skips those)."""

    def __init__(self, in_planes, out_planes, expansion, stride):
        super().__init__()
        self.stride = stride
        planes = expansion * in_planes
        self.conv1, self.bn1 = conv_bn(in_planes, planes, 1)
        self.conv2, self.bn2 = conv_bn(planes, planes, 3, stride, groups=planes)
        self.conv3, self.bn3 = conv_bn(planes, out_planes, 1)
        self.shortcut = nn.Sequential()
        if stride == 1 and in_planes != out_planes:
            self.shortcut = nn.Sequential(*conv_bn(in_planes, out_planes, 1))

    def forward(self, x):
        out = nn.conv_batch_norm(self.conv1, self.bn1, x, activation="relu")
        out = nn.conv_batch_norm(self.conv2, self.bn2, out, activation="relu")
        out = nn.conv_batch_norm(self.conv3, self.bn3, out)
        return out + self.shortcut(x) if self.stride == 1 else out


class MobileNetV2(ImageClassifier):
    """3x3 stem, 17 inverted residual blocks, 1x1 conv to 1280; 8x downsampling
    (91.15M MACs at 32x32 and 10 classes)."""

    def __init__(self, num_classes=10, width_mult=1.0):
        super().__init__("mobilenet_v2", downsampling=8)
        num_classes = check_num_classes(num_classes, "mobilenet_v2")
        width_mult = check_width_mult(width_mult, "mobilenet_v2")
        self.arch = {"name": "mobilenet_v2",
                     "kwargs": {"num_classes": num_classes, "width_mult": width_mult}}
        stem = scaled_channels(32, width_mult)
        last = scaled_channels(1280, max(1.0, width_mult))
        self.conv1, self.bn1 = conv_bn(3, stem, 3)
        blocks, in_planes = [], stem
        for expansion, out_planes, count, stride in MOBILENET_V2_CFG:
            out_planes = scaled_channels(out_planes, width_mult)
            for block_stride in [stride] + [1] * (count - 1):
                blocks.append(InvertedResidual(in_planes, out_planes, expansion, block_stride))
                in_planes = out_planes
        self.layers = nn.Sequential(*blocks)
        self.conv2, self.bn2 = conv_bn(in_planes, last, 1)
        self.num_features = last
        self.linear = nn.Linear(last, num_classes)

    def feature_map(self, x):
        out = self.layers(nn.conv_batch_norm(self.conv1, self.bn1, x, activation="relu"))
        return nn.conv_batch_norm(self.conv2, self.bn2, out, activation="relu")


def mobilenet_v1(num_classes=10, width_mult=1.0):
    """MobileNet v1 (pytorch-cifar), 3.2M parameters at width 1."""
    return MobileNetV1(num_classes, width_mult)


def mobilenet_v2(num_classes=10, width_mult=1.0):
    """MobileNet v2 (pytorch-cifar), 2.3M parameters at width 1."""
    return MobileNetV2(num_classes, width_mult)
