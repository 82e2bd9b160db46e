"""In-memory image datasets: the common base, subsets, splits and UCI digits.

Every dataset holds its whole split in memory as

* ``images``: uint8 numpy array N x C x H x W (0..255),
* ``targets``: int64 numpy array N,
* ``classes``: list of class names (``targets`` index it),

and gives ``dataset[i] -> (image C x H x W uint8, target int)``. ``mean`` and
``std`` are the per-channel statistics of the *train* split on a 0..1 scale
(float32, shape C), whatever split the object holds, so a test set is
normalised with the statistics the model was trained with.
"""
import gzip
import os

import numpy as np


def channel_stats(images, chunk=4096):
    """Per-channel mean and std of uint8 N x C x H x W images on a 0..1 scale.

    Sums are accumulated in float64 chunk by chunk (exact: the sums of
    squares of a 50,000-image set stay far below 2**53), so the whole set is
    never copied to float at once.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"channel_stats: expected a non-empty N x C x H x W array, got shape {images.shape}")
    channels = images.shape[1]
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    for start in range(0, images.shape[0], chunk):
        rows = images[start:start + chunk].transpose(1, 0, 2, 3).reshape(channels, -1).astype(np.float64)
        total += rows.sum(axis=1)
        total_sq += np.einsum("ci,ci->c", rows, rows)
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    var = np.maximum(total_sq / count - mean * mean, 0.0)
    return (mean / 255.0).astype(np.float32), (np.sqrt(var) / 255.0).astype(np.float32)


class ArrayDataset:
    """Images and integer targets held in memory (see the module docstring).

    ``split`` is "train", "test", "val" or "all"; ``groups`` (optional, int64
    N) marks samples that must stay on one side of a train/validation split.
    """
    name = "arrays"

    def __init__(self, images, targets, classes, split="train", groups=None):
        images = np.asarray(images)
        targets = np.asarray(targets)
        what = f"{type(self).__name__} ({split})"
        if images.ndim != 4:
            raise ValueError(f"{what}: images must be N x C x H x W, got shape {images.shape}")
        if images.dtype != np.uint8:
            raise TypeError(f"{what}: images must be uint8, got {images.dtype}")
        if len(images) == 0:
            raise ValueError(f"{what}: the dataset holds no images")
        if targets.shape != (len(images),):
            raise ValueError(f"{what}: {len(images)} images but targets of shape {targets.shape}")
        if not np.issubdtype(targets.dtype, np.integer):
            raise TypeError(f"{what}: targets must be integers, got {targets.dtype}")
        targets = targets.astype(np.int64)
        if targets.min() < 0 or targets.max() >= len(classes):
            raise ValueError(f"{what}: targets must lie in 0..{len(classes) - 1}, "
                             f"found {targets.min()}..{targets.max()}")
        self.images = np.ascontiguousarray(images)
        self.targets = targets
        self.classes = list(classes)
        self.split = split
        self.groups = None if groups is None else np.asarray(groups, np.int64)
        self._stats = None

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        return self.images[index], int(self.targets[index])

    def __repr__(self):
        shape = "x".join(str(s) for s in self.images.shape[1:])
        return f"{type(self).__name__}(split={self.split!r}, n={len(self)}, image={shape}, classes={len(self.classes)})"

    def train_split(self):
        """The train split of the same data (used for normalisation statistics)."""
        return self

    def _train_stats(self):
        if self._stats is None:
            source = self.train_split()
            self._stats = channel_stats(source.images) if source is self else (source.mean, source.std)
        return self._stats

    @property
    def mean(self):
        """Per-channel mean of the train split, 0..1 scale, float32."""
        return self._train_stats()[0]

    @property
    def std(self):
        """Per-channel standard deviation of the train split, 0..1 scale, float32."""
        return self._train_stats()[1]


class Subset(ArrayDataset):
    """The samples ``indices`` of ``dataset`` (a copy of those images); keeps
    the parent's name and train-split statistics."""

    def __init__(self, dataset, indices):
        indices = np.asarray(indices, np.int64)
        groups = None if dataset.groups is None else dataset.groups[indices]
        super().__init__(dataset.images[indices], dataset.targets[indices], dataset.classes,
                         split=dataset.split, groups=groups)
        self.name = dataset.name
        self.parent = dataset
        self.indices = indices

    def train_split(self):
        return self.parent.train_split()

    def _train_stats(self):
        return self.parent.mean, self.parent.std


def _stratified_pick(keys, labels, fraction, rng):
    """Picks about ``fraction`` of the distinct ``keys`` of every label, at
    least one whenever a label has two keys or more."""
    picked = []
    for label in np.unique(labels):
        candidates = np.unique(keys[labels == label])
        count = int(round(fraction * len(candidates)))
        if len(candidates) >= 2:
            count = min(max(count, 1), len(candidates) - 1)
        else:
            count = 0
        picked.append(rng.permutation(candidates)[:count])
    return np.concatenate(picked) if picked else np.zeros(0, np.int64)


def train_val_split(dataset, val_fraction, seed=0):
    """Deterministic stratified split of a train set: ``(train_idx, val_idx)``.

    About ``val_fraction`` of every class goes to validation. When the dataset
    has ``groups`` (GTSRB: one group per physical sign track) whole groups are
    assigned, so near-identical frames of one sign never straddle the split.
    Official test sets are refused: they stay untouched.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}")
    if getattr(dataset, "split", "train") not in ("train", "all"):
        raise ValueError(f"train_val_split: refusing to split the official {dataset.split!r} set; "
                         "split the train set instead")
    targets = np.asarray(dataset.targets)
    rng = np.random.default_rng(seed)
    groups = getattr(dataset, "groups", None)
    if groups is None:
        keys = np.arange(len(targets))
        key_labels = targets
    else:
        keys, first = np.unique(groups, return_index=True)
        key_labels = targets[first]
        mixed = np.unique(np.stack([groups, targets]), axis=1).shape[1] != len(keys)
        if mixed:
            raise ValueError("train_val_split: a group holds samples of different classes")
    val_keys = _stratified_pick(keys, key_labels, val_fraction, rng)
    if groups is None:
        in_val = np.zeros(len(targets), bool)
        in_val[val_keys] = True
    else:
        in_val = np.isin(groups, val_keys)
    return np.flatnonzero(~in_val).astype(np.int64), np.flatnonzero(in_val).astype(np.int64)


_DIGITS_CSV = os.path.join(os.path.dirname(__file__), "digits.csv.gz")


class Digits(ArrayDataset):
    """The UCI optical handwritten digits (8x8) as scikit-learn ships them.

    The 1,797 images come bundled with the package, so no download is needed.
    Pixels (0..16 in the source) are scaled to uint8 as ``round(v * 255 / 16)``
    (0 -> 0, 16 -> 255), giving images of shape N x 1 x 8 x 8.

    The shipped file has no official train/test split, so one is drawn here:
    per class, a ``split_seed``-determined ``test_fraction`` of the samples
    goes to the test split. ``train=True`` gives the rest, ``train=False`` the
    test part, ``train=None`` all 1,797 images.
    """
    name = "digits"

    def __init__(self, train=True, split_seed=0, test_fraction=0.2, path=None):
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
        path = path or _DIGITS_CSV
        if not os.path.exists(path):
            raise FileNotFoundError(f"digits data not found at {path} (it ships with appealnet; reinstall the package)")
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
        if table.shape[1] != 65:
            raise ValueError(f"{path}: expected 65 columns (64 pixels + label), got {table.shape[1]}")
        pixels, labels = table[:, :64], table[:, 64]
        if pixels.min() < 0 or pixels.max() > 16:
            raise ValueError(f"{path}: pixel values must lie in 0..16, found {pixels.min()}..{pixels.max()}")
        images = np.rint(pixels * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 1, 8, 8)
        self.split_seed, self.test_fraction, self._path = split_seed, test_fraction, path
        if train is None:
            chosen, split = np.arange(len(labels)), "all"
        else:
            rng = np.random.default_rng(split_seed)
            test = np.sort(_stratified_pick(np.arange(len(labels)), labels, test_fraction, rng))
            chosen = np.setdiff1d(np.arange(len(labels)), test) if train else test
            split = "train" if train else "test"
        super().__init__(images[chosen], labels[chosen], [str(d) for d in range(10)], split=split)

    def train_split(self):
        if self.split == "test":
            return Digits(True, self.split_seed, self.test_fraction, self._path)
        return self
