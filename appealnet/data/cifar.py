"""CIFAR-10 and CIFAR-100 in their official layouts.

Both the binary version (``cifar-10-batches-bin``, ``cifar-100-binary``) and
the python version (``cifar-10-batches-py``, ``cifar-100-python``) are read,
from the extracted folder or straight from the official tarball in ``root``
(looked for in that order: binary folder, python folder, binary tarball,
python tarball). ``download=True`` fetches the binary tarball.

The python version is a pickle, and unpickling can run arbitrary code; it is
read with an unpickler that only rebuilds numpy arrays and plain containers,
so a tampered file raises instead of executing anything.
"""
import io
import os
import pickle
import tarfile

import numpy as np

from . import download as _download
from .datasets import ArrayDataset

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

CIFAR100_FINE_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger",
    "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)

CIFAR100_COARSE_CLASSES = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
    "vehicles_1", "vehicles_2",
)

_PIXELS = 3 * 32 * 32


class _Layout:
    """Where one CIFAR variant keeps its files, in both official versions."""

    def __init__(self, title, bin_folder, bin_tarball, bin_train, bin_test, label_bytes,
                 py_folder, py_tarball, py_train, py_test):
        self.title = title
        self.bin = (bin_folder, bin_tarball, bin_train, bin_test)
        self.py = (py_folder, py_tarball, py_train, py_test)
        self.label_bytes = label_bytes


_CIFAR10 = _Layout("CIFAR-10", "cifar-10-batches-bin", "cifar-10-binary.tar.gz",
                   [f"data_batch_{i}.bin" for i in range(1, 6)], ["test_batch.bin"], 1,
                   "cifar-10-batches-py", "cifar-10-python.tar.gz",
                   [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"])
_CIFAR100 = _Layout("CIFAR-100", "cifar-100-binary", "cifar-100-binary.tar.gz", ["train.bin"], ["test.bin"], 2,
                    "cifar-100-python", "cifar-100-python.tar.gz", ["train"], ["test"])


class _FolderSource:
    def __init__(self, folder):
        self.folder = folder

    def describe(self, name):
        return os.path.join(self.folder, name)

    def size(self, name):
        path = os.path.join(self.folder, name)
        return os.path.getsize(path) if os.path.exists(path) else None

    def read(self, name):
        path = os.path.join(self.folder, name)
        if not os.path.exists(path):
            raise FileNotFoundError(f"missing CIFAR file {path}")
        with open(path, "rb") as f:
            return f.read()


class _TarballSource:
    """Reads the wanted members of an official tarball in one pass (a
    gzip stream cannot seek backwards without decompressing again)."""

    def __init__(self, tarball, folder):
        self.tarball, self.folder = tarball, folder
        self._sizes, self._contents = {}, {}

    def load(self, wanted):
        prefix = self.folder + "/"
        with tarfile.open(self.tarball, "r:*") as tar:
            for member in tar:
                if not (member.isfile() and member.name.startswith(prefix)):
                    continue
                name = member.name[len(prefix):]
                self._sizes[name] = member.size
                if name in wanted:
                    self._contents[name] = tar.extractfile(member).read()

    def describe(self, name):
        return f"{self.tarball}:{self.folder}/{name}"

    def size(self, name):
        return self._sizes.get(name)

    def read(self, name):
        if name not in self._contents:
            raise FileNotFoundError(f"{self.tarball} has no file {self.folder}/{name}")
        return self._contents[name]


def _array_rebuilders():
    """The only globals a CIFAR pickle may name: numpy's array/dtype rebuilders and inert builtins."""
    import numpy
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric
    import _codecs
    allowed = {("numpy", "ndarray"): numpy.ndarray, ("numpy", "dtype"): numpy.dtype,
               # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(text, "latin1").
               ("_codecs", "encode"): _codecs.encode}
    for builtins_module in ("builtins", "__builtin__"):
        for name, value in (("bytearray", bytearray), ("set", set), ("frozenset", frozenset)):
            allowed[(builtins_module, name)] = value
    for package in ("numpy.core", "numpy._core"):
        allowed[(package + ".multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(package + ".multiarray", "scalar")] = multiarray.scalar
        if hasattr(numeric, "_frombuffer"):
            allowed[(package + ".numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def __init__(self, data, source):
        super().__init__(io.BytesIO(data), encoding="bytes")
        self._source = source
        self._allowed = _array_rebuilders()

    def find_class(self, module, name):
        found = self._allowed.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(
                f"{self._source}: refusing to load {module}.{name}: a CIFAR pickle only holds numpy "
                "arrays, lists, bytes and numbers (the file is not an official CIFAR batch)")
        return found


def load_restricted_pickle(data, source="pickle"):
    """Unpickles ``data`` (Python 2 pickles too) allowing only numpy arrays and builtins."""
    return _ArrayOnlyUnpickler(data, source).load()


def _binary_records(raw, label_bytes, source):
    record = label_bytes + _PIXELS
    if len(raw) == 0:
        raise ValueError(f"{source} is empty: it holds no records")
    if len(raw) % record:
        raise ValueError(f"{source}: {len(raw)} bytes is not a whole number of {record}-byte records "
                         f"({len(raw) // record} records and {len(raw) % record} stray bytes; the file is truncated)")
    table = np.frombuffer(raw, np.uint8).reshape(-1, record)
    images = table[:, label_bytes:].reshape(-1, 3, 32, 32)
    return images, [table[:, i].astype(np.int64) for i in range(label_bytes)]


def _pickle_records(raw, label_keys, source):
    batch = load_restricted_pickle(raw, source)
    if not isinstance(batch, dict) or b"data" not in batch:
        raise ValueError(f"{source}: expected a dict with b'data' and {', '.join(map(repr, label_keys))}")
    data = np.asarray(batch[b"data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
        raise ValueError(f"{source}: b'data' must be uint8 N x {_PIXELS}, got {data.dtype} {data.shape}")
    if len(data) == 0:
        raise ValueError(f"{source} holds no records")
    labels = []
    for key in label_keys:
        if key not in batch:
            raise ValueError(f"{source}: missing the key {key!r}")
        values = np.asarray(batch[key], np.int64)
        if len(values) != len(data):
            raise ValueError(f"{source}: record count mismatch: {len(data)} images but {len(values)} {key!r}")
        labels.append(values)
    return data.reshape(-1, 3, 32, 32), labels


def _locate(root, layout):
    """(source, version) for the first CIFAR copy found under ``root``, or None."""
    for version in ("bin", "py"):
        folder = os.path.join(root, getattr(layout, version)[0])
        if os.path.isdir(folder):
            return _FolderSource(folder), version
    for version in ("bin", "py"):
        folder, tarball = getattr(layout, version)[:2]
        path = os.path.join(root, tarball)
        if os.path.isfile(path):
            return _TarballSource(path, folder), version
    return None


def _not_found(root, layout, resource):
    bin_folder, bin_tar = layout.bin[:2]
    py_folder, py_tar = layout.py[:2]
    return FileNotFoundError(
        f"{layout.title} not found under {root!r}: expected the folder {os.path.join(root, bin_folder)} "
        f"(binary version) or {os.path.join(root, py_folder)} (python version), or the official tarball "
        f"{bin_tar} / {py_tar} in it. Pass download=True, or download {resource.url} into {root}")


def _load(root, layout, train, download, resource_name):
    root = os.fspath(root)
    found = _locate(root, layout)
    if found is None and download:
        _download.fetch(resource_name, root)
        found = _locate(root, layout)
    if found is None:
        raise _not_found(root, layout, _download.RESOURCES[resource_name][0])
    source, version = found
    if isinstance(source, _TarballSource):
        files = getattr(layout, version)
        source.load(set(files[2] if train else files[3]))
    return _read_split(source, version, layout, train)


def _check_counts(source, layout, version, counts):
    """Catches a file truncated at a record boundary, which the byte count
    alone cannot show: in the official release every CIFAR-10 batch holds the
    same number of records and the CIFAR-100 train file five times as many as
    its test file. Compares the files just read with each other and, for the
    binary version, with the sizes of the other files of the set."""
    weights = {name: 1 for name in counts}
    if version == "bin":
        train_files, test_files = layout.bin[2], layout.bin[3]
        weights = {name: (5 if len(train_files) == 1 and name in train_files else 1)
                   for name in train_files + test_files}
    record = layout.label_bytes + _PIXELS
    units = {}
    for name, weight in weights.items():
        count = counts.get(name)
        if count is None:
            size = source.size(name)
            if size is None or size % record:
                continue
            count = size // record
        units[name] = count / weight
    reference = max(units.values())
    for name, count in counts.items():
        if units[name] != reference:
            expected = int(reference * weights[name])
            raise ValueError(f"{source.describe(name)}: record count mismatch: it holds {count} records, "
                             f"expected {expected} from the other files of the set (the file is truncated)")


def _read_split(source, version, layout, train):
    folder, _, train_files, test_files = getattr(layout, version)
    names = train_files if train else test_files
    images, labels, counts = [], [], {}
    for name in names:
        raw = source.read(name)
        if version == "bin":
            part, part_labels = _binary_records(raw, layout.label_bytes, source.describe(name))
        else:
            keys = [b"labels"] if layout is _CIFAR10 else [b"coarse_labels", b"fine_labels"]
            part, part_labels = _pickle_records(raw, keys, source.describe(name))
        counts[name] = len(part)
        images.append(part)
        labels.append(part_labels)
    _check_counts(source, layout, version, counts)
    stacked = [np.concatenate([part[i] for part in labels]) for i in range(len(labels[0]))]
    return np.concatenate(images), stacked


class CIFAR10(ArrayDataset):
    """CIFAR-10: 50,000 train / 10,000 test RGB images of 32x32 in 10 classes.

    ``root`` is the folder holding ``cifar-10-batches-bin/`` (or
    ``cifar-10-batches-py/``, or one of the official tarballs).
    """
    name = "cifar10"

    def __init__(self, root, train=True, download=False):
        images, (labels,) = _load(root, _CIFAR10, train, download, "cifar10")
        self.root = os.fspath(root)
        super().__init__(images, labels, CIFAR10_CLASSES, split="train" if train else "test")

    def train_split(self):
        return self if self.split == "train" else CIFAR10(self.root, train=True)


class CIFAR100(ArrayDataset):
    """CIFAR-100: 50,000 train / 10,000 test RGB images of 32x32.

    ``label="fine"`` gives the 100 classes, ``label="coarse"`` the 20
    superclasses. ``root`` holds ``cifar-100-binary/`` (or
    ``cifar-100-python/``, or one of the official tarballs).
    """
    name = "cifar100"

    def __init__(self, root, train=True, download=False, label="fine"):
        if label not in ("fine", "coarse"):
            raise ValueError(f"label must be 'fine' or 'coarse', got {label!r}")
        images, (coarse, fine) = _load(root, _CIFAR100, train, download, "cifar100")
        self.root, self.label = os.fspath(root), label
        classes = CIFAR100_FINE_CLASSES if label == "fine" else CIFAR100_COARSE_CLASSES
        super().__init__(images, fine if label == "fine" else coarse, classes,
                         split="train" if train else "test")

    def train_split(self):
        return self if self.split == "train" else CIFAR100(self.root, train=True, label=self.label)
