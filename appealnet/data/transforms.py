"""Batch transforms in numpy: random crop with zero padding, horizontal flip
and normalisation to float32.

Each works on a whole uint8 batch N x C x H x W at once (no per-image Python
loop) and takes its randomness from a ``numpy.random.Generator`` passed in,
so the caller decides the seeding (the loader seeds one per (seed, epoch,
batch)). Augmentation runs on the uint8 pixels, before normalisation, so the
padding is black (0), as in the usual CIFAR recipe.
"""
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def crop_at(images, padding, top, left):
    """Zero-pads each image by ``padding`` on all sides and cuts out the
    original-size window whose corner is at (``top[i]``, ``left[i]``) in the
    padded image (0 <= top, left <= 2 * padding)."""
    if padding == 0:
        return images.copy()
    n, _, height, width = images.shape
    top, left = np.asarray(top, np.intp), np.asarray(left, np.intp)
    if top.shape != (n,) or left.shape != (n,):
        raise ValueError(f"crop_at: need one offset per image ({n}), got {top.shape} and {left.shape}")
    if min(top.min(), left.min()) < 0 or max(top.max(), left.max()) > 2 * padding:
        raise ValueError(f"crop_at: offsets must lie in 0..{2 * padding}")
    padded = np.pad(images, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    windows = sliding_window_view(padded, (height, width), axis=(2, 3))  # N, C, 2p+1, 2p+1, H, W
    return windows[np.arange(n), :, top, left]


def random_crop(images, padding, rng):
    """Random crop after zero padding; draws the row offsets, then the column offsets."""
    n = images.shape[0]
    top = rng.integers(0, 2 * padding + 1, size=n)
    left = rng.integers(0, 2 * padding + 1, size=n)
    return crop_at(images, padding, top, left)


def flip_where(images, mask):
    """Mirrors (left-right) the images where ``mask`` is True, in place."""
    mask = np.asarray(mask, bool)
    images[mask] = images[mask][..., ::-1]
    return images


def random_horizontal_flip(images, rng, probability=0.5):
    """Mirrors each image with ``probability``, in place."""
    return flip_where(images, rng.random(images.shape[0]) < probability)


def normalize(images, mean, std):
    """float32 ``(x / 255 - mean) / std`` per channel for uint8 ``images``
    (``(x - mean) / std`` for float images, taken to be on a 0..1 scale)."""
    mean = np.asarray(mean, np.float64).reshape(-1, 1, 1)
    std = np.asarray(std, np.float64).reshape(-1, 1, 1)
    if np.any(std <= 0):
        raise ValueError(f"normalize: std must be positive, got {std.ravel()}")
    if mean.shape[0] not in (1, images.shape[1]) or std.shape[0] not in (1, images.shape[1]):
        raise ValueError(f"normalize: {images.shape[1]} channels but mean/std of length "
                         f"{mean.shape[0]}/{std.shape[0]}")
    unit = 255.0 if images.dtype == np.uint8 else 1.0
    scale = (1.0 / (unit * std)).astype(np.float32)
    shift = (-mean / std).astype(np.float32)
    out = np.multiply(images, scale, dtype=np.float32)
    out += shift
    return out


@dataclass(frozen=True)
class Augmentation:
    """Random crop with ``crop_padding`` zero pixels per side, then an
    optional horizontal flip (probability 1/2)."""
    crop_padding: int = 0
    horizontal_flip: bool = False

    def __post_init__(self):
        if not (isinstance(self.crop_padding, int) and self.crop_padding >= 0):
            raise ValueError(f"crop_padding must be a non-negative int, got {self.crop_padding!r}")

    def __call__(self, images, rng):
        """Augmented copy of the uint8 batch ``images``."""
        images = random_crop(images, self.crop_padding, rng) if self.crop_padding else images.copy()
        if self.horizontal_flip:
            random_horizontal_flip(images, rng)
        return images


# Signs and digits change meaning when mirrored (a "keep left" sign becomes
# "keep right", a 2 is no longer a 2), so those sets are never flipped.
_DEFAULTS = {
    "cifar10": Augmentation(crop_padding=4, horizontal_flip=True),
    "cifar100": Augmentation(crop_padding=4, horizontal_flip=True),
    "tiny-imagenet": Augmentation(crop_padding=8, horizontal_flip=True),
    "gtsrb": Augmentation(crop_padding=2, horizontal_flip=False),
    "digits": Augmentation(crop_padding=1, horizontal_flip=False),
}


def default_augmentation(dataset_name):
    """The training augmentation used for ``dataset_name`` (see the table above)."""
    key = str(dataset_name).lower().replace("_", "-")
    if key == "tinyimagenet":
        key = "tiny-imagenet"
    if key not in _DEFAULTS:
        raise ValueError(f"no default augmentation for {dataset_name!r}; known: {sorted(_DEFAULTS)}")
    return _DEFAULTS[key]
