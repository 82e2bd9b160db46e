"""Pure-PyTorch reference definitions of the appealnet model zoo (tests only).

Each class here is written from the architecture description of the
"pytorch-cifar" family (3x3 or 1x1 stem with stride 1, no max-pool) and of
He et al. 2016 for the small CIFAR ResNets.  Module attribute names are the
ones pytorch-cifar uses (conv1, bn1, layer1..4, shortcut, linear, layers, ...)
and match appealnet.models exactly, so ``ours.load_state_dict(ref.state_dict())``
works and a forward pass of both can be compared.  Every model pools with an
adaptive average pool, so 64x64 inputs work as well as 32x32.

Tests and the profiler use :func:`build` (name and keyword arguments as in
``appealnet.models.create``) and :func:`count_macs` (multiply-accumulates of
every Conv2d and Linear, counted with forward hooks).

Stochastic parts (dropout, drop-connect) are real here but tests switch them
off (p=0) when comparing, because the two libraries draw different numbers.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def make_divisible(value, divisor=8):
    """Rounds a scaled channel count to a multiple of ``divisor`` the way
    torchvision does: to the nearest multiple, but never below 90% of
    ``value`` and never below ``divisor``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _scaled(channels, width_mult):
    return channels if width_mult == 1.0 else make_divisible(channels * width_mult)


def _conv_bn(cin, cout, kernel, stride=1, groups=1):
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=(kernel - 1) // 2,
                     groups=groups, bias=False)
    return conv, nn.BatchNorm2d(cout)


def _pool_flatten(x):
    return F.adaptive_avg_pool2d(x, 1).flatten(1)


# ------------------------------------------------------- pytorch-cifar ResNet
class BasicBlock(nn.Module):
    """Two 3x3 convs; projection shortcut (1x1 conv + BN) when shape changes."""
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(in_planes, planes, 3, stride)
        self.conv2, self.bn2 = _conv_bn(planes, planes, 3)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(*_conv_bn(in_planes, planes, 1, stride))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand by 4."""
    expansion = 4

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1, self.bn1 = _conv_bn(in_planes, planes, 1)
        self.conv2, self.bn2 = _conv_bn(planes, planes, 3, stride)
        self.conv3, self.bn3 = _conv_bn(planes, out_planes, 1)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(*_conv_bn(in_planes, out_planes, 1, stride))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, block, num_blocks, num_classes=10):
        super().__init__()
        self.in_planes = 64
        self.conv1, self.bn1 = _conv_bn(3, 64, 3)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], 1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], 2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], 2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], 2)
        self.linear = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes, count, stride):
        blocks = []
        for s in [stride] + [1] * (count - 1):
            blocks.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*blocks)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(_pool_flatten(out))


# ------------------------------------------------ small CIFAR ResNets (He 2016)
class ZeroPadShortcut(nn.Module):
    """Option A: subsample by 2 and pad the new channels with zeros (no params)."""

    def __init__(self, extra_channels):
        super().__init__()
        self.extra = extra_channels

    def forward(self, x):
        x = x[:, :, ::2, ::2]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class SmallBasicBlock(nn.Module):
    def __init__(self, in_planes, planes, stride, shortcut):
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(in_planes, planes, 3, stride)
        self.conv2, self.bn2 = _conv_bn(planes, planes, 3)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            if shortcut == "A":
                self.shortcut = ZeroPadShortcut(planes - in_planes)
            else:
                self.shortcut = nn.Sequential(*_conv_bn(in_planes, planes, 1, stride))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """6n+2 layers: 16/32/64 channels, n basic blocks per stage."""

    def __init__(self, depth, num_classes=10, shortcut="A"):
        super().__init__()
        n = (depth - 2) // 6
        self.in_planes = 16
        self.conv1, self.bn1 = _conv_bn(3, 16, 3)
        self.layer1 = self._make_layer(16, n, 1, shortcut)
        self.layer2 = self._make_layer(32, n, 2, shortcut)
        self.layer3 = self._make_layer(64, n, 2, shortcut)
        self.linear = nn.Linear(64, num_classes)

    def _make_layer(self, planes, count, stride, shortcut):
        blocks = []
        for s in [stride] + [1] * (count - 1):
            blocks.append(SmallBasicBlock(self.in_planes, planes, s, shortcut))
            self.in_planes = planes
        return nn.Sequential(*blocks)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(_pool_flatten(out))


# ---------------------------------------------------------------- MobileNet v1
MOBILENET_V1_CFG = [64, (128, 2), 128, (256, 2), 256, (512, 2), 512, 512, 512, 512, 512,
                    (1024, 2), 1024]


class DepthwiseSeparable(nn.Module):
    def __init__(self, in_planes, out_planes, stride):
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(in_planes, in_planes, 3, stride, groups=in_planes)
        self.conv2, self.bn2 = _conv_bn(in_planes, out_planes, 1)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)))


class MobileNetV1(nn.Module):
    def __init__(self, num_classes=10, width_mult=1.0):
        super().__init__()
        stem = _scaled(32, width_mult)
        self.conv1, self.bn1 = _conv_bn(3, stem, 3)
        blocks, in_planes = [], stem
        for item in MOBILENET_V1_CFG:
            out, stride = (item, 1) if isinstance(item, int) else item
            out = _scaled(out, width_mult)
            blocks.append(DepthwiseSeparable(in_planes, out, stride))
            in_planes = out
        self.layers = nn.Sequential(*blocks)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(_pool_flatten(out))


# ---------------------------------------------------------------- MobileNet v2
MOBILENET_V2_CFG = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                    (6, 160, 3, 2), (6, 320, 1, 1)]


class InvertedResidual(nn.Module):
    def __init__(self, in_planes, out_planes, expansion, stride):
        super().__init__()
        self.stride = stride
        planes = expansion * in_planes
        self.conv1, self.bn1 = _conv_bn(in_planes, planes, 1)
        self.conv2, self.bn2 = _conv_bn(planes, planes, 3, stride, groups=planes)
        self.conv3, self.bn3 = _conv_bn(planes, out_planes, 1)
        self.shortcut = nn.Sequential()
        if stride == 1 and in_planes != out_planes:
            self.shortcut = nn.Sequential(*_conv_bn(in_planes, out_planes, 1))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + self.shortcut(x) if self.stride == 1 else out


class MobileNetV2(nn.Module):
    def __init__(self, num_classes=10, width_mult=1.0):
        super().__init__()
        stem = _scaled(32, width_mult)
        last = _scaled(1280, max(1.0, width_mult))
        self.conv1, self.bn1 = _conv_bn(3, stem, 3)
        blocks, in_planes = [], stem
        for expansion, out, count, stride in MOBILENET_V2_CFG:
            out = _scaled(out, width_mult)
            for s in [stride] + [1] * (count - 1):
                blocks.append(InvertedResidual(in_planes, out, expansion, s))
                in_planes = out
        self.layers = nn.Sequential(*blocks)
        self.conv2, self.bn2 = _conv_bn(in_planes, last, 1)
        self.linear = nn.Linear(last, num_classes)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        out = F.relu(self.bn2(self.conv2(out)))
        return self.linear(_pool_flatten(out))


# ---------------------------------------------------------------- ShuffleNet v1
def channel_shuffle(x, groups):
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleBottleneck(nn.Module):
    def __init__(self, in_planes, out_planes, stride, groups):
        super().__init__()
        self.stride = stride
        mid = out_planes // 4
        # the first block sees the 24-channel stem: too few channels to group
        self.first_groups = 1 if in_planes == 24 else groups
        self.conv1, self.bn1 = _conv_bn(in_planes, mid, 1, groups=self.first_groups)
        self.conv2, self.bn2 = _conv_bn(mid, mid, 3, stride, groups=mid)
        self.conv3, self.bn3 = _conv_bn(mid, out_planes, 1, groups=groups)
        self.shortcut = nn.Sequential()
        if stride == 2:
            self.shortcut = nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = channel_shuffle(out, self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            return F.relu(torch.cat([out, self.shortcut(x)], 1))
        return F.relu(out + self.shortcut(x))


class ShuffleNetV1(nn.Module):
    def __init__(self, num_classes=10, groups=3, out_planes=(240, 480, 960), blocks=(4, 8, 4)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        in_planes = 24
        for index, (planes, count) in enumerate(zip(out_planes, blocks)):
            layer = []
            for i in range(count):
                # stride-2 blocks concatenate the pooled input: produce the rest
                produced = planes - in_planes if i == 0 else planes
                layer.append(ShuffleBottleneck(in_planes, produced, 2 if i == 0 else 1, groups))
                in_planes = planes
            setattr(self, f"layer{index + 1}", nn.Sequential(*layer))
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(_pool_flatten(out))


# ---------------------------------------------------------------- ShuffleNet v2
SHUFFLENET_V2_CHANNELS = {0.5: (48, 96, 192, 1024), 1: (116, 232, 464, 1024),
                          1.5: (176, 352, 704, 1024), 2: (224, 488, 976, 2048)}


class ShuffleV2Unit(nn.Module):
    """Stride 1: half the channels pass through, the other half is
    1x1 -> dw3x3 -> 1x1; then concatenate and shuffle."""

    def __init__(self, channels, split_ratio=0.5):
        super().__init__()
        self.split_ratio = split_ratio
        half = int(channels * split_ratio)
        self.conv1, self.bn1 = _conv_bn(half, half, 1)
        self.conv2, self.bn2 = _conv_bn(half, half, 3, groups=half)
        self.conv3, self.bn3 = _conv_bn(half, half, 1)

    def forward(self, x):
        keep = int(x.shape[1] * self.split_ratio)
        x1, x2 = x[:, :keep], x[:, keep:]
        out = F.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return channel_shuffle(torch.cat([x1, out], 1), 2)


class ShuffleV2DownUnit(nn.Module):
    """Stride 2: both branches see the whole input, each gives half the output."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        mid = out_channels // 2
        self.conv1, self.bn1 = _conv_bn(in_channels, in_channels, 3, 2, groups=in_channels)
        self.conv2, self.bn2 = _conv_bn(in_channels, mid, 1)
        self.conv3, self.bn3 = _conv_bn(in_channels, mid, 1)
        self.conv4, self.bn4 = _conv_bn(mid, mid, 3, 2, groups=mid)
        self.conv5, self.bn5 = _conv_bn(mid, mid, 1)

    def forward(self, x):
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], 1), 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, num_classes=10, net_size=1, blocks=(3, 7, 3)):
        super().__init__()
        channels = SHUFFLENET_V2_CHANNELS[net_size]
        self.conv1, self.bn1 = _conv_bn(3, 24, 3)
        in_channels = 24
        for index, count in enumerate(blocks):
            units = [ShuffleV2DownUnit(in_channels, channels[index])]
            units += [ShuffleV2Unit(channels[index]) for _ in range(count)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*units))
            in_channels = channels[index]
        self.conv2, self.bn2 = _conv_bn(in_channels, channels[3], 1)
        self.linear = nn.Linear(channels[3], num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.relu(self.bn2(self.conv2(out)))
        return self.linear(_pool_flatten(out))


# -------------------------------------------------------------- EfficientNet-B0
# (expansion, out channels, blocks, kernel, stride)
EFFICIENTNET_B0_CFG = [(1, 16, 1, 3, 1), (6, 24, 2, 3, 2), (6, 40, 2, 5, 2), (6, 80, 3, 3, 2),
                       (6, 112, 3, 5, 1), (6, 192, 4, 5, 2), (6, 320, 1, 3, 1)]


class SqueezeExcite(nn.Module):
    def __init__(self, channels, se_channels):
        super().__init__()
        self.se1 = nn.Conv2d(channels, se_channels, 1)
        self.se2 = nn.Conv2d(se_channels, channels, 1)

    def forward(self, x):
        scale = F.silu(self.se1(F.adaptive_avg_pool2d(x, 1)))
        return x * torch.sigmoid(self.se2(scale))


class MBConv(nn.Module):
    def __init__(self, in_channels, out_channels, kernel, stride, expansion, drop_rate):
        super().__init__()
        self.expansion = expansion
        self.drop_rate = drop_rate
        channels = expansion * in_channels
        # conv1/bn1 exist even when expansion == 1 (unused then), as in pytorch-cifar
        self.conv1, self.bn1 = _conv_bn(in_channels, channels, 1)
        self.conv2, self.bn2 = _conv_bn(channels, channels, kernel, stride, groups=channels)
        self.se = SqueezeExcite(channels, int(in_channels * 0.25))
        self.conv3, self.bn3 = _conv_bn(channels, out_channels, 1)
        self.has_skip = stride == 1 and in_channels == out_channels

    def forward(self, x):
        out = x if self.expansion == 1 else F.silu(self.bn1(self.conv1(x)))
        out = F.silu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.se(out)))
        if not self.has_skip:
            return out
        if self.training and self.drop_rate > 0:
            keep = 1.0 - self.drop_rate
            mask = torch.empty(out.shape[0], 1, 1, 1, dtype=out.dtype).bernoulli_(keep)
            out = out * mask / keep
        return out + x


class EfficientNetB0(nn.Module):
    def __init__(self, num_classes=10, width_mult=1.0, dropout=0.2, drop_connect=0.2):
        super().__init__()
        self.dropout = dropout
        stem = _scaled(32, width_mult)
        self.conv1, self.bn1 = _conv_bn(3, stem, 3)
        total = sum(cfg[2] for cfg in EFFICIENTNET_B0_CFG)
        blocks, in_channels = [], stem
        for expansion, out, count, kernel, stride in EFFICIENTNET_B0_CFG:
            out = _scaled(out, width_mult)
            for s in [stride] + [1] * (count - 1):
                rate = drop_connect * len(blocks) / total
                blocks.append(MBConv(in_channels, out, kernel, s, expansion, rate))
                in_channels = out
        self.layers = nn.Sequential(*blocks)
        self.linear = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        out = self.layers(F.silu(self.bn1(self.conv1(x))))
        out = F.dropout(_pool_flatten(out), self.dropout, self.training)
        return self.linear(out)


# ------------------------------------------------------------------ registry
_RESNET_BLOCKS = {"resnet18": (BasicBlock, [2, 2, 2, 2]), "resnet34": (BasicBlock, [3, 4, 6, 3]),
                  "resnet50": (Bottleneck, [3, 4, 6, 3]), "resnet101": (Bottleneck, [3, 4, 23, 3]),
                  "resnet152": (Bottleneck, [3, 8, 36, 3])}
_CIFAR_RESNET_DEPTHS = {f"resnet{d}": d for d in (8, 20, 32, 44, 56, 110)}

MODEL_NAMES = sorted(list(_RESNET_BLOCKS) + list(_CIFAR_RESNET_DEPTHS)) + [
    "mobilenet_v1", "mobilenet_v2", "shufflenet_v1", "shufflenet_v2", "efficientnet_b0"]


def build(name, num_classes=10, **kw):
    """The torch reference for an appealnet.models name and keyword arguments
    (width_mult, net_size, shortcut, dropout, drop_connect)."""
    if name in _RESNET_BLOCKS:
        block, counts = _RESNET_BLOCKS[name]
        return ResNet(block, counts, num_classes)
    if name in _CIFAR_RESNET_DEPTHS:
        return CifarResNet(_CIFAR_RESNET_DEPTHS[name], num_classes, **kw)
    factories = {"mobilenet_v1": MobileNetV1, "mobilenet_v2": MobileNetV2,
                 "shufflenet_v1": ShuffleNetV1, "shufflenet_v2": ShuffleNetV2,
                 "efficientnet_b0": EfficientNetB0}
    if name not in factories:
        raise ValueError(f"unknown reference model {name!r}; known: {', '.join(MODEL_NAMES)}")
    return factories[name](num_classes=num_classes, **kw)


def count_macs(model, input_size=(32, 32)):
    """Multiply-accumulates of one image through every Conv2d and Linear
    (what papers report as FLOPs/MACs; BN, activations and pooling excluded)."""
    total = [0]

    def conv_hook(module, inputs, output):
        kh, kw = module.kernel_size
        total[0] += output.numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module, inputs, output):
        total[0] += output.numel() * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, *input_size))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return total[0]
