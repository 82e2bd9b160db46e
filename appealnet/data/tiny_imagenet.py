"""Tiny-ImageNet-200 in its official layout (``tiny-imagenet-200/``).

``wnids.txt`` lists the 200 WordNet ids, ``words.txt`` maps ids to names,
``train/<wnid>/images/*.JPEG`` hold 500 training images per class and
``val/val_annotations.txt`` labels the 10,000 ``val/images/*.JPEG``. The
official test split has no labels and is not offered.

Class ``k`` is the k-th WordNet id in sorted order (the order of a folder
listing of ``train/``, as most published Tiny-ImageNet models use).
Decoding JPEG needs Pillow, an optional dependency (``pip install pillow``);
grayscale images are replicated to three channels.
"""
import os

import numpy as np

from . import download as _download
from .datasets import ArrayDataset

_FOLDER = "tiny-imagenet-200"
_SIZE = 64


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("TinyImageNet needs Pillow to decode its JPEG images: pip install pillow") from None
    return Image


def _read_lines(path, hint):
    if not os.path.exists(path):
        raise FileNotFoundError(f"Tiny-ImageNet file {path} not found. {hint}")
    with open(path) as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def tiny_imagenet_files(folder, split):
    """Parses the layout: ``(paths, targets, wnids, names)`` for ``split``
    ("train" or "val") of the ``tiny-imagenet-200`` folder ``folder``."""
    hint = ("Pass download=True, or download http://cs231n.stanford.edu/tiny-imagenet-200.zip "
            "and unzip it into root")
    wnids = sorted(_read_lines(os.path.join(folder, "wnids.txt"), hint))
    if not wnids:
        raise ValueError(f"{os.path.join(folder, 'wnids.txt')} lists no classes")
    words = {}
    words_path = os.path.join(folder, "words.txt")
    if os.path.exists(words_path):
        for line in _read_lines(words_path, hint):
            wnid, _, name = line.partition("\t")
            words[wnid] = name
    names = [words.get(wnid, wnid) for wnid in wnids]
    index = {wnid: k for k, wnid in enumerate(wnids)}
    paths, targets = [], []
    if split == "train":
        for wnid in wnids:
            images_dir = os.path.join(folder, "train", wnid, "images")
            if not os.path.isdir(images_dir):
                raise FileNotFoundError(f"Tiny-ImageNet class folder {images_dir} not found. {hint}")
            files = sorted(f for f in os.listdir(images_dir) if f.lower().endswith((".jpeg", ".jpg")))
            paths += [os.path.join(images_dir, f) for f in files]
            targets += [index[wnid]] * len(files)
    elif split == "val":
        annotations = os.path.join(folder, "val", "val_annotations.txt")
        for number, line in enumerate(_read_lines(annotations, hint), start=1):
            fields = line.split("\t")
            if len(fields) < 2:
                raise ValueError(f"{annotations}, line {number}: expected 'file<TAB>wnid...', got {line!r}")
            if fields[1] not in index:
                raise ValueError(f"{annotations}, line {number}: class {fields[1]!r} is not in wnids.txt")
            paths.append(os.path.join(folder, "val", "images", fields[0]))
            targets.append(index[fields[1]])
    else:
        raise ValueError(f"split must be 'train' or 'val' (the test split has no labels), got {split!r}")
    if not paths:
        raise ValueError(f"the Tiny-ImageNet {split} split under {folder} holds no images")
    return paths, np.asarray(targets, np.int64), wnids, names


def _decode(path, image_module):
    if not os.path.exists(path):
        raise FileNotFoundError(f"Tiny-ImageNet image {path} not found")
    with image_module.open(path) as image:
        if image.mode not in ("RGB", "L"):
            raise ValueError(f"{path}: image mode {image.mode!r} is not RGB or grayscale (L)")
        if image.size != (_SIZE, _SIZE):
            raise ValueError(f"{path}: image is {image.size[0]}x{image.size[1]}, expected {_SIZE}x{_SIZE}")
        pixels = np.asarray(image.convert("RGB"), np.uint8)
    return pixels.transpose(2, 0, 1)


class TinyImageNet(ArrayDataset):
    """Tiny-ImageNet-200: 100,000 train / 10,000 val RGB images of 64x64, 200 classes.

    ``root`` holds the ``tiny-imagenet-200/`` folder. ``classes`` are the
    names from words.txt; ``wnids`` the WordNet ids in class order.
    """
    name = "tiny-imagenet"

    def __init__(self, root, split="train", download=False):
        root = os.fspath(root)
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val' (the test split has no labels), got {split!r}")
        folder = os.path.join(root, _FOLDER)
        if download:
            _download.fetch("tiny-imagenet", root)
        paths, targets, wnids, names = tiny_imagenet_files(folder, split)
        image_module = _pillow()
        images = np.stack([_decode(path, image_module) for path in paths])
        self.root, self.wnids = root, wnids
        super().__init__(images, targets, names, split=split)

    def train_split(self):
        return self if self.split == "train" else TinyImageNet(self.root, split="train")
