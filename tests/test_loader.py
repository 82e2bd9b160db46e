"""appealnet.data transforms and DataLoader: exact augmentation, normalisation,
determinism per (seed, epoch), background prefetch and its shutdown."""
import gc
import threading
import time

import numpy as np
import pytest

import appealnet as an
from appealnet.data import Augmentation, DataLoader, Digits, default_augmentation, normalize
from appealnet.data.transforms import crop_at, flip_where, random_crop


def reference_crop(image, padding, top, left):
    channels, height, width = image.shape
    padded = np.zeros((channels, height + 2 * padding, width + 2 * padding), image.dtype)
    padded[:, padding:padding + height, padding:padding + width] = image
    return padded[:, top:top + height, left:left + width]


def test_crop_and_flip_on_a_hand_made_image():
    image = np.arange(1, 17, dtype=np.uint8).reshape(1, 1, 4, 4)
    # Corner (0, 0) of the 2-padded image: two rows and columns of zeros, then the top-left 2x2.
    np.testing.assert_array_equal(crop_at(image, 2, [0], [0])[0, 0],
                                  [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 2], [0, 0, 5, 6]])
    np.testing.assert_array_equal(crop_at(image, 2, [2], [2]), image)  # centred: unchanged
    np.testing.assert_array_equal(crop_at(image, 2, [3], [4])[0, 0],
                                  [[7, 8, 0, 0], [11, 12, 0, 0], [15, 16, 0, 0], [0, 0, 0, 0]])
    flipped = flip_where(image.copy(), [True])
    np.testing.assert_array_equal(flipped[0, 0, 0], [4, 3, 2, 1])
    np.testing.assert_array_equal(flip_where(image.copy(), [False]), image)


def test_batched_crop_matches_per_image_reference():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(16, 3, 8, 6), dtype=np.uint8)
    top, left = rng.integers(0, 9, size=16), rng.integers(0, 9, size=16)
    cropped = crop_at(images, 4, top, left)
    for i in range(16):
        np.testing.assert_array_equal(cropped[i], reference_crop(images[i], 4, top[i], left[i]))
    # random_crop draws rows then columns from the generator it is given.
    drawn = random_crop(images, 4, np.random.default_rng(5))
    check = np.random.default_rng(5)
    np.testing.assert_array_equal(drawn, crop_at(images, 4, check.integers(0, 9, 16), check.integers(0, 9, 16)))
    with pytest.raises(ValueError, match=r"offsets must lie in 0\.\.8"):
        crop_at(images, 4, np.full(16, 9), left)


def test_normalize_values():
    images = np.array([[[[0, 255]], [[51, 102]]]], np.uint8)  # 1 x 2 x 1 x 2
    out = normalize(images, [0.5, 0.2], [0.25, 0.1])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0, 0], [(0 - 0.5) / 0.25, (1 - 0.5) / 0.25], rtol=1e-6)
    np.testing.assert_allclose(out[0, 1, 0], [(0.2 - 0.2) / 0.1, (0.4 - 0.2) / 0.1], atol=1e-6)
    with pytest.raises(ValueError, match="std must be positive"):
        normalize(images, [0, 0], [1, 0])
    with pytest.raises(ValueError, match="2 channels but mean/std of length 3/3"):
        normalize(images, [0, 0, 0], [1, 1, 1])


def test_default_augmentation_per_dataset():
    assert default_augmentation("cifar10") == Augmentation(4, True)
    assert default_augmentation("CIFAR100") == Augmentation(4, True)
    assert default_augmentation("gtsrb").horizontal_flip is False
    assert default_augmentation("digits").horizontal_flip is False
    with pytest.raises(ValueError, match="no default augmentation for 'mnist'"):
        default_augmentation("mnist")


def small_arrays(count=10):
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, size=(count, 3, 8, 8), dtype=np.uint8), np.arange(count) % 3


def test_loader_without_augmentation_yields_normalised_tensors():
    images, targets = small_arrays()
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    loader = DataLoader((images, targets), batch_size=4, mean=mean, std=std)
    batches = list(loader)
    assert len(loader) == 3 and [len(y) for _, y in batches] == [4, 4, 2]
    x, y = batches[0]
    assert isinstance(x, an.Tensor) and tuple(x.shape) == (4, 3, 8, 8) and y.dtype == np.int64
    reference = (images[:4] / 255.0 - np.reshape(mean, (3, 1, 1))) / np.reshape(std, (3, 1, 1))
    np.testing.assert_allclose(x.numpy(), reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), targets)
    assert len(DataLoader((images, targets), batch_size=4, drop_last=True)) == 2
    # Without explicit statistics a tuple is normalised with its own.
    x = next(iter(DataLoader((images, targets), batch_size=10)))[0].numpy()
    np.testing.assert_allclose(x.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(0, 2, 3)), 1, atol=1e-4)


def collect(loader):
    return [(x.numpy().copy(), y) for x, y in loader]


def test_loader_is_reproducible_per_seed_and_epoch():
    digits = Digits()
    make = lambda seed, prefetch: DataLoader(digits, 64, shuffle=True, seed=seed, augment=True, prefetch=prefetch)
    first = collect(make(7, 1))
    for other in (collect(make(7, 1)), collect(make(7, 0)), collect(make(7, 3))):
        for (x1, y1), (x2, y2) in zip(first, other):
            np.testing.assert_array_equal(x1, x2)
            np.testing.assert_array_equal(y1, y2)
    loader = make(7, 1)
    loader.set_epoch(1)
    next_epoch = collect(loader)
    assert not np.array_equal(next_epoch[0][1], first[0][1])  # another order
    assert sorted(np.concatenate([y for _, y in next_epoch])) == sorted(digits.targets)
    # Same order, another augmentation: compare one sample's image across epochs.
    a, b = DataLoader(digits, 64, seed=7, augment=True), DataLoader(digits, 64, seed=7, augment=True)
    b.set_epoch(1)
    assert not np.array_equal(collect(a)[0][0], collect(b)[0][0])
    assert not np.array_equal(collect(make(8, 1))[0][1], first[0][1])


def test_loader_augmentation_is_the_documented_crop_and_flip():
    images, targets = small_arrays(6)
    loader = DataLoader((images, targets), 3, seed=2, augment=Augmentation(2, True), mean=[0] * 3, std=[1] * 3)
    loader.set_epoch(5)
    batches = collect(loader)
    for batch in range(2):
        rng = np.random.default_rng([2, 5, batch + 1])
        part = images[3 * batch:3 * batch + 3]
        top, left = rng.integers(0, 5, 3), rng.integers(0, 5, 3)
        flip = rng.random(3) < 0.5
        expected = np.stack([reference_crop(part[i], 2, top[i], left[i]) for i in range(3)])
        expected[flip] = expected[flip][..., ::-1]
        np.testing.assert_allclose(batches[batch][0], expected / np.float32(255), rtol=1e-6)


class SlowDataset:
    """A per-item dataset that sleeps, to show the prefetch thread overlapping."""

    def __init__(self, count, delay):
        self.count, self.delay = count, delay

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        time.sleep(self.delay)
        return np.full((1, 2, 2), index, np.uint8), index


def test_prefetch_overlaps_with_the_consumer():
    def run(prefetch):
        loader = DataLoader(SlowDataset(8, 0.025), 2, normalize=False, prefetch=prefetch)  # 50 ms a batch
        start = time.perf_counter()
        seen = []
        for x, y in loader:
            time.sleep(0.05)  # the "training step"
            seen += list(y)
        assert seen == list(range(8))
        return time.perf_counter() - start
    serial, overlapped = run(0), run(1)
    assert serial > 0.38
    assert overlapped < serial * 0.8, (serial, overlapped)


def test_worker_exception_is_raised_in_the_main_thread():
    class Broken(SlowDataset):
        def __getitem__(self, index):
            if index == 5:
                raise RuntimeError("sample 5 is unreadable")
            return super().__getitem__(index)
    loader = DataLoader(Broken(8, 0.0), 2, normalize=False)
    iterator = iter(loader)
    next(iterator), next(iterator)
    with pytest.raises(RuntimeError, match="sample 5 is unreadable"):
        next(iterator)
    assert not iterator._thread.is_alive()


def test_abandoned_iterator_stops_its_thread():
    before = threading.active_count()
    loader = DataLoader(SlowDataset(40, 0.001), 2, normalize=False, prefetch=2)
    for _, y in loader:
        if y[0] == 4:
            break
    gc.collect()
    deadline = time.time() + 2
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before
    assert not any(t.name == "appealnet-data-loader" for t in threading.enumerate())


def test_loader_bad_arguments():
    images, targets = small_arrays(4)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        DataLoader((images, targets), 0)
    with pytest.raises(ValueError, match="the dataset is empty"):
        DataLoader((images[:0], targets[:0]), 2)
    with pytest.raises(ValueError, match="drop_last with batch_size 8 leaves no batch of the 4 samples"):
        DataLoader((images, targets), 8, drop_last=True)
    with pytest.raises(ValueError, match="augment=True needs a dataset with a name"):
        DataLoader((images, targets), 2, augment=True)
    with pytest.raises(ValueError, match="has no mean/std; pass mean= and std="):
        DataLoader(SlowDataset(2, 0), 2)
    with pytest.raises(ValueError, match="epoch must be a non-negative int"):
        DataLoader((images, targets), 2).set_epoch(-1)
