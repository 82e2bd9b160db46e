"""Mini-batches for training: shuffling, augmentation, normalisation, and
preparation of the next batch in a background thread.

A thread, never a process: the engine's OpenMP runtime is not fork-safe, and
the numpy work of a batch (gather, crop, flip, normalise) and the engine's
compute both release the GIL, so the two overlap.

Reproducibility: the order of epoch ``e`` comes from a generator seeded with
``(seed, e, 0)`` and the augmentation of its batch ``b`` from one seeded with
``(seed, e, b + 1)``, so the batches depend only on (seed, epoch) and not on
timing or prefetch depth. Call ``set_epoch(e)`` before each epoch, as with
PyTorch's distributed sampler; without it every pass repeats epoch 0.
"""
import math
import queue
import threading

import numpy as np

from .._api import from_numpy
from .datasets import channel_stats
from .transforms import Augmentation, default_augmentation, normalize


def _resolve_augmentation(augment, name):
    if augment is None or augment is False:
        return None
    if augment is True:
        if name is None:
            raise ValueError("augment=True needs a dataset with a name; pass augment=<dataset name> "
                             "or an Augmentation")
        return default_augmentation(name)
    if isinstance(augment, str):
        return default_augmentation(augment)
    if isinstance(augment, Augmentation) or callable(augment):
        return augment
    raise TypeError(f"augment must be None, a bool, a dataset name or an Augmentation, got {augment!r}")


class DataLoader:
    """Iterates ``(appealnet.Tensor images float32 N x C x H x W, int64 targets)``.

    ``data`` is a dataset with ``images``/``targets`` arrays (the fast,
    vectorised path), a tuple ``(images, targets)``, or any object with
    ``__len__`` and ``__getitem__ -> (image, target)``. Images are normalised
    with ``mean``/``std`` (0..1 scale, per channel); by default those of the
    dataset's train split, or of the arrays themselves for a tuple (pass the
    training statistics explicitly when loading evaluation arrays).
    ``normalize=False`` only scales uint8 pixels to 0..1. ``augment`` is
    None/False, True (the dataset's default augmentation), a dataset name, or
    an :class:`~appealnet.data.transforms.Augmentation`. ``prefetch`` batches
    are prepared ahead in a background thread (0: no thread).
    """

    def __init__(self, data, batch_size, shuffle=False, seed=0, augment=None, drop_last=False, prefetch=1,
                 mean=None, std=None, normalize=True):
        if not (isinstance(batch_size, int) and batch_size > 0):
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not (isinstance(prefetch, int) and prefetch >= 0):
            raise ValueError(f"prefetch must be a non-negative int, got {prefetch!r}")
        if not (isinstance(seed, (int, np.integer)) and seed >= 0):
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.images, self.targets, self.dataset = self._arrays(data)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, int(seed)
        self.drop_last, self.prefetch = drop_last, prefetch
        if self._count() == 0:
            raise ValueError("DataLoader: the dataset is empty")
        if len(self) == 0:
            raise ValueError(f"DataLoader: drop_last with batch_size {batch_size} leaves no batch "
                             f"of the {self._count()} samples")
        self.augment = _resolve_augmentation(augment, getattr(data, "name", None))
        self.mean, self.std = self._statistics(data, mean, std, normalize)
        self.epoch = 0

    # -- setup --------------------------------------------------------------
    def _arrays(self, data):
        if isinstance(data, tuple):
            if len(data) != 2:
                raise ValueError("DataLoader: a tuple must be (images, targets)")
            images, targets = np.asarray(data[0]), np.asarray(data[1])
            if images.ndim != 4 or len(images) != len(targets):
                raise ValueError(f"DataLoader: images must be N x C x H x W with one target each, "
                                 f"got {images.shape} and {targets.shape}")
            return images, targets.astype(np.int64), None
        if hasattr(data, "images") and hasattr(data, "targets"):
            return np.asarray(data.images), np.asarray(data.targets, np.int64), None
        if hasattr(data, "__len__") and hasattr(data, "__getitem__"):
            return None, None, data
        raise TypeError(f"DataLoader: cannot load from {type(data).__name__}; pass a dataset or (images, targets)")

    def _count(self):
        return len(self.targets) if self.dataset is None else len(self.dataset)

    def _statistics(self, data, mean, std, normalize):
        if not normalize:
            return np.zeros(1, np.float32), np.ones(1, np.float32)
        if (mean is None) != (std is None):
            raise ValueError("pass both mean and std, or neither")
        if mean is not None:
            return np.asarray(mean, np.float32), np.asarray(std, np.float32)
        if hasattr(data, "mean") and hasattr(data, "std"):
            return np.asarray(data.mean, np.float32), np.asarray(data.std, np.float32)
        if self.images is not None:
            return channel_stats(self.images)
        raise ValueError("DataLoader: this dataset has no mean/std; pass mean= and std=, or normalize=False")

    # -- iteration ----------------------------------------------------------
    def set_epoch(self, epoch):
        """Selects the shuffle order and augmentation of the next pass."""
        if not (isinstance(epoch, (int, np.integer)) and epoch >= 0):
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        self.epoch = int(epoch)

    def __len__(self):
        count = self._count()
        return count // self.batch_size if self.drop_last else math.ceil(count / self.batch_size)

    def batch_indices(self, epoch):
        """The sample indices of every batch of ``epoch``."""
        count = self._count()
        order = (np.random.default_rng([self.seed, epoch, 0]).permutation(count) if self.shuffle
                 else np.arange(count))
        return [order[start:start + self.batch_size] for start in range(0, len(self) * self.batch_size,
                                                                        self.batch_size)]

    def _gather(self, indices):
        if self.dataset is None:
            return np.take(self.images, indices, axis=0), np.take(self.targets, indices)
        items = [self.dataset[int(i)] for i in indices]
        images = np.stack([np.asarray(image) for image, _ in items])
        return images, np.asarray([target for _, target in items], np.int64)

    def make_batch(self, epoch, batch, indices):
        """Numpy ``(float32 images, int64 targets)`` of batch ``batch`` of ``epoch``."""
        images, targets = self._gather(indices)
        if self.augment is not None:
            images = self.augment(images, np.random.default_rng([self.seed, epoch, batch + 1]))
        return normalize(images, self.mean, self.std), targets

    def __iter__(self):
        epoch, plan = self.epoch, self.batch_indices(self.epoch)

        def produce(batch):
            return self.make_batch(epoch, batch, plan[batch])

        if self.prefetch == 0:
            return (_deliver(produce(batch)) for batch in range(len(plan)))
        return _PrefetchIterator(produce, len(plan), self.prefetch)


def _deliver(batch):
    images, targets = batch
    return from_numpy(images), targets


def _produce_into(produce, count, out, stop):
    """Worker thread: puts ("batch", b) or ("error", exc) items until done or stopped."""
    for batch in range(count):
        if stop.is_set():
            return
        try:
            item = ("batch", produce(batch))
        except BaseException as error:  # handed to the main thread, which re-raises it
            item = ("error", error)
        while not stop.is_set():
            try:
                out.put(item, timeout=0.05)
                break
            except queue.Full:
                continue
        if item[0] == "error":
            return


class _PrefetchIterator:
    """Yields batches prepared by a background thread, ``depth`` ahead.

    The thread holds no reference to this object, so abandoning the iterator
    (``break`` out of a loop) lets it be collected, which stops the thread.
    """

    def __init__(self, produce, count, depth):
        self._queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._remaining = count
        self._thread = threading.Thread(target=_produce_into, args=(produce, count, self._queue, self._stop),
                                        name="appealnet-data-loader", daemon=True)
        self._thread.start()

    def __iter__(self):
        return self

    def __next__(self):
        if self._remaining <= 0 or self._stop.is_set():
            self.close()
            raise StopIteration
        kind, payload = self._queue.get()
        if kind == "error":
            self.close()
            raise payload
        self._remaining -= 1
        return _deliver(payload)

    def close(self):
        """Stops the worker thread and waits for it (it finishes the batch it is on)."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if hasattr(self, "_thread"):
            self.close()
