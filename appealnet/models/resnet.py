"""Residual networks for 32x32 images.

Two families:

* ``resnet18/34/50/101/152`` — the pytorch-cifar ResNets: a 64-channel 3x3
  stem with stride 1 (no max-pool), four stages of 64/128/256/512 planes
  (strides 1, 2, 2, 2) made of BasicBlocks or Bottlenecks (expansion 4), and a
  projection shortcut (1x1 conv + BN) wherever the shape changes.
* ``resnet8/20/32/44/56/110`` — the small CIFAR ResNets of He et al. 2016:
  6n+2 layers, three stages of 16/32/64 channels with n basic blocks each.
  Their default shortcut is option A, parameter-free (subsample by 2, pad the
  new channels with zeros), which keeps ResNet-20 at 0.27M parameters;
  ``shortcut="B"`` uses the 1x1 conv + BN projection instead.

Module names follow pytorch-cifar (conv1, bn1, layer1..4, shortcut, linear)
so a PyTorch state_dict from that code loads directly.
"""
from .. import nn
from ..nn import functional as F
from ..nn import init
from .base import ImageClassifier, check_num_classes, conv_bn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions plus the shortcut, ReLU after the sum."""

    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(in_planes, planes, 3, stride)
        self.conv2, self.bn2 = conv_bn(planes, planes, 3)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(*conv_bn(in_planes, planes, 1, stride))

    def forward(self, x):
        out = nn.conv_batch_norm(self.conv1, self.bn1, x, activation="relu")
        out = nn.conv_batch_norm(self.conv2, self.bn2, out)
        return F.add_relu(out, self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride) -> 1x1 expand by 4, plus shortcut."""

    expansion = 4

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1, self.bn1 = conv_bn(in_planes, planes, 1)
        self.conv2, self.bn2 = conv_bn(planes, planes, 3, stride)
        self.conv3, self.bn3 = conv_bn(planes, out_planes, 1)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(*conv_bn(in_planes, out_planes, 1, stride))

    def forward(self, x):
        out = nn.conv_batch_norm(self.conv1, self.bn1, x, activation="relu")
        out = nn.conv_batch_norm(self.conv2, self.bn2, out, activation="relu")
        out = nn.conv_batch_norm(self.conv3, self.bn3, out)
        return F.add_relu(out, self.shortcut(x))


class ResNet(ImageClassifier):
    """pytorch-cifar ResNet: 3x3 stem, four stages, 8x downsampling."""

    def __init__(self, block, num_blocks, num_classes=10, model_name="resnet"):
        super().__init__(model_name, downsampling=8)
        if len(num_blocks) != 4 or any(int(n) < 1 for n in num_blocks):
            raise ValueError(f"{model_name}: num_blocks must be four positive counts, "
                             f"got {num_blocks!r}")
        num_classes = check_num_classes(num_classes, model_name)
        self.in_planes = 64
        self.conv1, self.bn1 = conv_bn(3, 64, 3)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], 1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], 2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], 2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], 2)
        self.num_features = 512 * block.expansion
        self.linear = nn.Linear(self.num_features, num_classes)

    def _make_layer(self, block, planes, count, stride):
        blocks = []
        for block_stride in [stride] + [1] * (int(count) - 1):
            blocks.append(block(self.in_planes, planes, block_stride))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*blocks)

    def feature_map(self, x):
        out = nn.conv_batch_norm(self.conv1, self.bn1, x, activation="relu")
        return self.layer4(self.layer3(self.layer2(self.layer1(out))))


# ------------------------------------------------------ small CIFAR ResNets
class ZeroPadShortcut(nn.Module):
    """Option A shortcut: keep every other pixel and pad the missing channels
    with zeros, split evenly before and after (no parameters)."""

    def __init__(self, extra_channels):
        super().__init__()
        self.extra_channels = int(extra_channels)

    def forward(self, x):
        before = self.extra_channels // 2
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, before, self.extra_channels - before))

    def extra_repr(self):
        return f"extra_channels={self.extra_channels}"


class CifarBasicBlock(nn.Module):
    """BasicBlock whose downsampling shortcut is option A or option B."""

    def __init__(self, in_planes, planes, stride, shortcut):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(in_planes, planes, 3, stride)
        self.conv2, self.bn2 = conv_bn(planes, planes, 3)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            if shortcut == "A":
                self.shortcut = ZeroPadShortcut(planes - in_planes)
            else:
                self.shortcut = nn.Sequential(*conv_bn(in_planes, planes, 1, stride))

    def forward(self, x):
        out = nn.conv_batch_norm(self.conv1, self.bn1, x, activation="relu")
        out = nn.conv_batch_norm(self.conv2, self.bn2, out)
        return F.add_relu(out, self.shortcut(x))


class CifarResNet(ImageClassifier):
    """He et al.'s CIFAR ResNet of depth 6n+2 (16/32/64 channels, 4x downsampling)."""

    def __init__(self, depth, num_classes=10, shortcut="A", model_name=None):
        model_name = model_name or f"resnet{depth}"
        super().__init__(model_name, downsampling=4)
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"{model_name}: depth must be 6n+2 with n >= 1, got {depth!r}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"{model_name}: shortcut must be 'A' (zero padding) or 'B' "
                             f"(1x1 conv + BN), got {shortcut!r}")
        num_classes = check_num_classes(num_classes, model_name)
        self.arch = {"name": model_name, "kwargs": {"num_classes": num_classes,
                                                    "shortcut": shortcut}}
        blocks_per_stage = (depth - 2) // 6
        self.in_planes = 16
        self.conv1, self.bn1 = conv_bn(3, 16, 3)
        self.layer1 = self._make_layer(16, blocks_per_stage, 1, shortcut)
        self.layer2 = self._make_layer(32, blocks_per_stage, 2, shortcut)
        self.layer3 = self._make_layer(64, blocks_per_stage, 2, shortcut)
        self.num_features = 64
        self.linear = nn.Linear(64, num_classes)
        # He et al. initialise convolutions and the classifier with He-normal weights.
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                init.kaiming_normal_(module.weight)

    def _make_layer(self, planes, count, stride, shortcut):
        blocks = []
        for block_stride in [stride] + [1] * (count - 1):
            blocks.append(CifarBasicBlock(self.in_planes, planes, block_stride, shortcut))
            self.in_planes = planes
        return nn.Sequential(*blocks)

    def feature_map(self, x):
        out = nn.conv_batch_norm(self.conv1, self.bn1, x, activation="relu")
        return self.layer3(self.layer2(self.layer1(out)))


# --------------------------------------------------------------- factories
def _resnet(name, block, num_blocks, num_classes):
    model = ResNet(block, num_blocks, num_classes, model_name=name)
    model.arch = {"name": name, "kwargs": {"num_classes": int(num_classes)}}
    return model


def resnet18(num_classes=10):
    """ResNet-18 (BasicBlock, [2, 2, 2, 2]), 11.2M parameters at 10 classes."""
    return _resnet("resnet18", BasicBlock, [2, 2, 2, 2], num_classes)


def resnet34(num_classes=10):
    """ResNet-34 (BasicBlock, [3, 4, 6, 3])."""
    return _resnet("resnet34", BasicBlock, [3, 4, 6, 3], num_classes)


def resnet50(num_classes=10):
    """ResNet-50 (Bottleneck, [3, 4, 6, 3])."""
    return _resnet("resnet50", Bottleneck, [3, 4, 6, 3], num_classes)


def resnet101(num_classes=10):
    """ResNet-101 (Bottleneck, [3, 4, 23, 3])."""
    return _resnet("resnet101", Bottleneck, [3, 4, 23, 3], num_classes)


def resnet152(num_classes=10):
    """ResNet-152 (Bottleneck, [3, 8, 36, 3])."""
    return _resnet("resnet152", Bottleneck, [3, 8, 36, 3], num_classes)


def _cifar_resnet(depth, num_classes, shortcut):
    return CifarResNet(depth, num_classes, shortcut)


def resnet8(num_classes=10, shortcut="A"):
    """CIFAR ResNet-8 (n=1)."""
    return _cifar_resnet(8, num_classes, shortcut)


def resnet20(num_classes=10, shortcut="A"):
    """CIFAR ResNet-20 (n=3), 0.27M parameters with option-A shortcuts."""
    return _cifar_resnet(20, num_classes, shortcut)


def resnet32(num_classes=10, shortcut="A"):
    """CIFAR ResNet-32 (n=5)."""
    return _cifar_resnet(32, num_classes, shortcut)


def resnet44(num_classes=10, shortcut="A"):
    """CIFAR ResNet-44 (n=7)."""
    return _cifar_resnet(44, num_classes, shortcut)


def resnet56(num_classes=10, shortcut="A"):
    """CIFAR ResNet-56 (n=9)."""
    return _cifar_resnet(56, num_classes, shortcut)


def resnet110(num_classes=10, shortcut="A"):
    """CIFAR ResNet-110 (n=18)."""
    return _cifar_resnet(110, num_classes, shortcut)
