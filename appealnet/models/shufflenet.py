"""ShuffleNet v1 (groups=3) and v2 for 32x32 images (the pytorch-cifar variants).

Both downsample 8x: three stages, each opened by a stride-2 block, after a
stride-1 stem (1x1 conv to 24 channels in v1, 3x3 in v2).

v1 blocks: grouped 1x1 -> channel shuffle -> 3x3 depthwise -> grouped 1x1.
A stride-2 block concatenates an average-pooled copy of its input, so it
produces only the remaining channels itself.

v2 blocks: at stride 1 half the channels pass through untouched and the
other half goes 1x1 -> 3x3 depthwise -> 1x1; at stride 2 two branches each
make half the output.  Both end with concatenation and a 2-group shuffle.
"""
import numbers

from .. import nn
from .._api import cat
from ..nn import functional as F
from .base import ImageClassifier, check_num_classes, conv_bn

SHUFFLENET_V1_OUT_PLANES = (240, 480, 960)   # groups = 3
SHUFFLENET_V1_BLOCKS = (4, 8, 4)

# net_size -> output channels of the three stages and of the last 1x1 conv
SHUFFLENET_V2_CHANNELS = {0.5: (48, 96, 192, 1024), 1: (116, 232, 464, 1024),
                          1.5: (176, 352, 704, 1024), 2: (224, 488, 976, 2048)}
SHUFFLENET_V2_BLOCKS = (3, 7, 3)
STEM_CHANNELS = 24


class ShuffleBottleneck(nn.Module):
    """ShuffleNet v1 unit; ``out_planes`` is what the conv path produces."""

    def __init__(self, in_planes, out_planes, stride, groups):
        super().__init__()
        self.stride = stride
        mid_planes = out_planes // 4
        # The stem's 24 channels are too few to split into groups.
        self.first_groups = 1 if in_planes == STEM_CHANNELS else groups
        self.conv1, self.bn1 = conv_bn(in_planes, mid_planes, 1, groups=self.first_groups)
        self.conv2, self.bn2 = conv_bn(mid_planes, mid_planes, 3, stride, groups=mid_planes)
        self.conv3, self.bn3 = conv_bn(mid_planes, out_planes, 1, groups=groups)
        self.shortcut = nn.Sequential()
        if stride == 2:
            self.shortcut = nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1))

    def forward(self, x):
        out = nn.conv_batch_norm(self.conv1, self.bn1, x, activation="relu")
        if self.first_groups > 1:
            # lets the next grouped 1x1 conv see channels from every group
            out = F.channel_shuffle(out, self.first_groups)
        out = nn.conv_batch_norm(self.conv2, self.bn2, out, activation="relu")
        out = nn.conv_batch_norm(self.conv3, self.bn3, out)
        if self.stride == 2:
            return F.relu(cat([out, self.shortcut(x)], dim=1))
        return F.add_relu(out, self.shortcut(x))


class ShuffleNetV1(ImageClassifier):
    """ShuffleNet v1 with 3 groups (pytorch-cifar ShuffleNetG3)."""

    groups = 3

    def __init__(self, num_classes=10):
        super().__init__("shufflenet_v1", downsampling=8)
        num_classes = check_num_classes(num_classes, "shufflenet_v1")
        self.arch = {"name": "shufflenet_v1", "kwargs": {"num_classes": num_classes}}
        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        in_planes = STEM_CHANNELS
        for index, (planes, count) in enumerate(zip(SHUFFLENET_V1_OUT_PLANES,
                                                    SHUFFLENET_V1_BLOCKS)):
            units = []
            for position in range(count):
                downsample = position == 0
                produced = planes - in_planes if downsample else planes
                units.append(ShuffleBottleneck(in_planes, produced, 2 if downsample else 1,
                                               self.groups))
                in_planes = planes
            setattr(self, f"layer{index + 1}", nn.Sequential(*units))
        self.num_features = in_planes
        self.linear = nn.Linear(in_planes, num_classes)

    def feature_map(self, x):
        out = nn.conv_batch_norm(self.conv1, self.bn1, x, activation="relu")
        return self.layer3(self.layer2(self.layer1(out)))


class ShuffleV2Unit(nn.Module):
    """Stride-1 ShuffleNet v2 unit: split, transform one half, concat, shuffle."""

    def __init__(self, channels, split_ratio=0.5):
        super().__init__()
        self.split_ratio = split_ratio
        half = int(channels * split_ratio)
        self.conv1, self.bn1 = conv_bn(half, half, 1)
        self.conv2, self.bn2 = conv_bn(half, half, 3, groups=half)
        self.conv3, self.bn3 = conv_bn(half, half, 1)

    def forward(self, x):
        keep = int(x.shape[1] * self.split_ratio)
        passed, transformed = x[:, :keep], x[:, keep:]
        out = nn.conv_batch_norm(self.conv1, self.bn1, transformed, activation="relu")
        out = nn.conv_batch_norm(self.conv2, self.bn2, out)
        out = nn.conv_batch_norm(self.conv3, self.bn3, out, activation="relu")
        return F.channel_shuffle_cat([passed, out])


class ShuffleV2DownUnit(nn.Module):
    """Stride-2 ShuffleNet v2 unit: left branch dw3x3 -> 1x1, right branch
    1x1 -> dw3x3 -> 1x1, each giving half of ``out_channels``."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        mid = out_channels // 2
        self.conv1, self.bn1 = conv_bn(in_channels, in_channels, 3, 2, groups=in_channels)
        self.conv2, self.bn2 = conv_bn(in_channels, mid, 1)
        self.conv3, self.bn3 = conv_bn(in_channels, mid, 1)
        self.conv4, self.bn4 = conv_bn(mid, mid, 3, 2, groups=mid)
        self.conv5, self.bn5 = conv_bn(mid, mid, 1)

    def forward(self, x):
        left = nn.conv_batch_norm(self.conv2, self.bn2, nn.conv_batch_norm(self.conv1, self.bn1, x), activation="relu")
        right = nn.conv_batch_norm(self.conv3, self.bn3, x, activation="relu")
        right = nn.conv_batch_norm(self.conv5, self.bn5, nn.conv_batch_norm(self.conv4, self.bn4, right), activation="relu")
        return F.channel_shuffle_cat([left, right])


class ShuffleNetV2(ImageClassifier):
    """ShuffleNet v2 at net_size 0.5, 1, 1.5 or 2 (pytorch-cifar configs)."""

    def __init__(self, num_classes=10, net_size=1):
        super().__init__("shufflenet_v2", downsampling=8)
        num_classes = check_num_classes(num_classes, "shufflenet_v2")
        if isinstance(net_size, bool) or not isinstance(net_size, numbers.Real) \
                or net_size not in SHUFFLENET_V2_CHANNELS:
            raise ValueError(f"shufflenet_v2: net_size must be one of "
                             f"{sorted(SHUFFLENET_V2_CHANNELS)}, got {net_size!r}")
        net_size = float(net_size) if net_size % 1 else int(net_size)
        self.arch = {"name": "shufflenet_v2",
                     "kwargs": {"num_classes": num_classes, "net_size": net_size}}
        channels = SHUFFLENET_V2_CHANNELS[net_size]
        self.conv1, self.bn1 = conv_bn(3, STEM_CHANNELS, 3)
        in_channels = STEM_CHANNELS
        for index, count in enumerate(SHUFFLENET_V2_BLOCKS):
            units = [ShuffleV2DownUnit(in_channels, channels[index])]
            units += [ShuffleV2Unit(channels[index]) for _ in range(count)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*units))
            in_channels = channels[index]
        self.conv2, self.bn2 = conv_bn(in_channels, channels[3], 1)
        self.num_features = channels[3]
        self.linear = nn.Linear(channels[3], num_classes)

    def feature_map(self, x):
        out = nn.conv_batch_norm(self.conv1, self.bn1, x, activation="relu")
        out = self.layer3(self.layer2(self.layer1(out)))
        return nn.conv_batch_norm(self.conv2, self.bn2, out, activation="relu")


def shufflenet_v1(num_classes=10):
    """ShuffleNet v1, groups=3 (pytorch-cifar ShuffleNetG3), 0.86M parameters."""
    return ShuffleNetV1(num_classes)


def shufflenet_v2(num_classes=10, net_size=1):
    """ShuffleNet v2; net_size 0.5, 1 (1.26M parameters), 1.5 or 2."""
    return ShuffleNetV2(num_classes, net_size)
