"""appealnet.models — CIFAR-style CNNs, their registry and the two-head network.

    import appealnet.models as models
    models.list_models()                          # ['efficientnet_b0', 'mobilenet_v1', ...]
    net = models.create("mobilenet_v2", num_classes=100, width_mult=0.5)
    net.arch                                      # {'name': 'mobilenet_v2', 'kwargs': {...}}
    same = models.from_arch(net.arch)             # an identically shaped fresh model
    two = models.TwoHead("resnet20", num_classes=10)
    logits, q_logit = two(x)

Every zoo model takes 32x32 (or larger, e.g. 64x64) RGB input, exposes
``forward_features(x)`` ([N, num_features] pooled features), ``num_features``,
its classifier as ``linear``, and ``arch`` (JSON-able: how to rebuild it).
Module names follow pytorch-cifar, so its PyTorch state_dicts load directly.
"""
import inspect

from .base import ImageClassifier, make_divisible
from .efficientnet import EfficientNetB0, efficientnet_b0
from .mobilenet import MobileNetV1, MobileNetV2, mobilenet_v1, mobilenet_v2
from .resnet import (CifarResNet, ResNet, resnet8, resnet18, resnet20, resnet32, resnet34,
                     resnet44, resnet50, resnet56, resnet101, resnet110, resnet152)
from .shufflenet import ShuffleNetV1, ShuffleNetV2, shufflenet_v1, shufflenet_v2
from .twohead import TwoHead

_FACTORIES = {factory.__name__: factory for factory in (
    resnet8, resnet20, resnet32, resnet44, resnet56, resnet110,
    resnet18, resnet34, resnet50, resnet101, resnet152,
    mobilenet_v1, mobilenet_v2, shufflenet_v1, shufflenet_v2, efficientnet_b0)}

TWOHEAD_NAME = "twohead"


def list_models():
    """Names accepted by create() for single-head models, sorted."""
    return sorted(_FACTORIES)


def create(name, num_classes=None, **kw):
    """Builds a model by name: ``create("resnet20", num_classes=10, shortcut="B")``.

    ``num_classes`` defaults to 10.  ``create("twohead", backbone=..., ...)``
    builds a TwoHead (so that ``from_arch(two_head.arch)`` works); its
    backbone is a name or an arch dict.  Unknown names raise ValueError
    listing the known ones; unknown options raise TypeError listing the
    accepted ones.
    """
    if name == TWOHEAD_NAME:
        if "backbone" not in kw:
            raise ValueError("create('twohead'): give the backbone (a model name or arch dict) "
                             "as backbone=...")
        return TwoHead(kw.pop("backbone"), num_classes=num_classes, **kw)
    if not isinstance(name, str) or name not in _FACTORIES:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())} "
                         f"(and {TWOHEAD_NAME!r})")
    factory = _FACTORIES[name]
    accepted = [p for p in inspect.signature(factory).parameters if p != "num_classes"]
    unknown = sorted(set(kw) - set(accepted))
    if unknown:
        raise TypeError(f"{name}: unknown option(s) {unknown}; accepted: "
                        f"{['num_classes'] + accepted}")
    return factory(10 if num_classes is None else num_classes, **kw)


def from_arch(arch):
    """Rebuilds a model (fresh weights) from its ``arch`` record."""
    if not isinstance(arch, dict) or "name" not in arch \
            or not isinstance(arch.get("kwargs", {}), dict):
        raise ValueError(f"an arch record is a dict {{'name': str, 'kwargs': dict}}, got {arch!r}")
    return create(arch["name"], **dict(arch.get("kwargs", {})))


__all__ = [
    "create", "list_models", "from_arch", "TwoHead", "ImageClassifier", "make_divisible",
    "ResNet", "CifarResNet", "MobileNetV1", "MobileNetV2", "ShuffleNetV1", "ShuffleNetV2",
    "EfficientNetB0", *_FACTORIES,
]

try:  # model selection lives in its own module, written separately
    from .selection import select  # noqa: F401  (re-exported)
    __all__.append("select")
except ModuleNotFoundError as missing:
    if missing.name != __name__ + ".selection":   # a broken selection.py must not hide
        raise
