"""Datasets in their official formats, downloads, splits and the input pipeline.

    from appealnet.data import CIFAR10, DataLoader, train_val_split, Subset
    train = CIFAR10("data", train=True, download=True)
    train_idx, val_idx = train_val_split(train, 0.1, seed=0)
    loader = DataLoader(Subset(train, train_idx), 128, shuffle=True, augment=True)
    for epoch in range(10):
        loader.set_epoch(epoch)
        for images, targets in loader:      # appealnet.Tensor float32, numpy int64
            ...

Every dataset holds uint8 ``images`` (N x C x H x W), int64 ``targets`` and
``classes``; ``mean``/``std`` are the per-channel statistics of its train
split. Only numpy is needed, except Pillow for Tiny-ImageNet's JPEG files.
"""
from .cifar import CIFAR10, CIFAR100, load_restricted_pickle
from .datasets import ArrayDataset, Digits, Subset, channel_stats, train_val_split
from .download import RESOURCES, ChecksumError, Resource, fetch
from .gtsrb import GTSRB
from .loader import DataLoader
from .tiny_imagenet import TinyImageNet
from .transforms import Augmentation, default_augmentation, normalize

__all__ = [
    "ArrayDataset", "Subset", "Digits", "CIFAR10", "CIFAR100", "GTSRB", "TinyImageNet",
    "train_val_split", "channel_stats", "DataLoader", "Augmentation", "default_augmentation", "normalize",
    "fetch", "RESOURCES", "Resource", "ChecksumError", "load_restricted_pickle",
]
