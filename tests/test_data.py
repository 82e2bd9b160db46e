"""appealnet.data datasets, downloads and splits, on small files written in
each official format, on the bundled digits and on the real CIFAR-10 copy."""
import functools
import hashlib
import http.server
import io
import os
import pickle
import sys
import tarfile
import threading
import zipfile

import numpy as np
import pytest

from appealnet import data as D
from appealnet.data import download as dl
from appealnet.data.images import read_ppm, resize, resize_matrix
from appealnet.data.tiny_imagenet import tiny_imagenet_files

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
SHARED = os.environ.get("APPEALNET_DATA", SHARED if os.path.isdir(SHARED) else "/work/shared/data")


# -- writers of the official formats ------------------------------------------------------------

def random_split(rng, count, classes):
    images = rng.integers(0, 256, size=(count, 3, 32, 32), dtype=np.uint8)
    return images, rng.integers(0, classes, size=count)


def write_cifar10(root, version, per_batch=4, seed=0):
    """Writes cifar-10-batches-{bin,py}; returns {train|test: (images, labels)}."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "cifar-10-batches-bin" if version == "bin" else "cifar-10-batches-py")
    os.makedirs(folder)
    expected = {}
    for split, names in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        parts = []
        for name in names:
            images, labels = random_split(rng, per_batch, 10)
            parts.append((images, labels))
            if version == "bin":
                records = np.concatenate([labels.astype(np.uint8)[:, None], images.reshape(per_batch, -1)], 1)
                with open(os.path.join(folder, name + ".bin"), "wb") as f:
                    f.write(records.tobytes())
            else:
                batch = {b"batch_label": b"batch", b"labels": [int(v) for v in labels],
                         b"data": images.reshape(per_batch, -1), b"filenames": [b"x.png"] * per_batch}
                with open(os.path.join(folder, name), "wb") as f:
                    pickle.dump(batch, f, protocol=2)
        expected[split] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return expected


def write_cifar100(root, version, test_count=2, seed=1):
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "cifar-100-binary" if version == "bin" else "cifar-100-python")
    os.makedirs(folder)
    expected = {}
    for split, count in (("train", 5 * test_count), ("test", test_count)):
        images, fine = random_split(rng, count, 100)
        coarse = rng.integers(0, 20, size=count)
        expected[split] = (images, fine, coarse)
        if version == "bin":
            records = np.concatenate([coarse.astype(np.uint8)[:, None], fine.astype(np.uint8)[:, None],
                                      images.reshape(count, -1)], 1)
            with open(os.path.join(folder, split + ".bin"), "wb") as f:
                f.write(records.tobytes())
        else:
            batch = {b"fine_labels": [int(v) for v in fine], b"coarse_labels": [int(v) for v in coarse],
                     b"data": images.reshape(count, -1)}
            with open(os.path.join(folder, split), "wb") as f:
                pickle.dump(batch, f, protocol=2)
    return expected


def make_tarball(root, folder, tarball):
    with tarfile.open(os.path.join(root, tarball), "w:gz") as tar:
        tar.add(os.path.join(root, folder), arcname=folder)


def ppm_bytes(image, magic=b"P6"):
    height, width = image.shape[:2]
    return magic + b"\n# made by a test\n%d %d\n255\n" % (width, height) + image.tobytes()


GT_HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"


def write_gtsrb(root, seed=2):
    """Two classes x two tracks x two frames of training PPMs, three test PPMs."""
    rng = np.random.default_rng(seed)
    base = os.path.join(root, "GTSRB")
    train = []
    for class_id in (0, 1):
        folder = os.path.join(base, "Final_Training", "Images", f"{class_id:05d}")
        os.makedirs(folder)
        lines = [GT_HEADER]
        for track in (0, 1):
            for frame in (0, 1):
                image = rng.integers(0, 256, size=(6 + frame, 5 + track, 3), dtype=np.uint8)
                name = f"{track:05d}_{frame:05d}.ppm"
                with open(os.path.join(folder, name), "wb") as f:
                    f.write(ppm_bytes(image))
                h, w = image.shape[:2]
                lines.append(f"{name};{w};{h};1;1;{w - 2};{h - 2};{class_id}\n")
                train.append((image[1:h - 1, 1:w - 1], class_id, track))
        with open(os.path.join(folder, f"GT-{class_id:05d}.csv"), "w") as f:
            f.writelines(lines)
    test_folder = os.path.join(base, "Final_Test", "Images")
    os.makedirs(test_folder)
    lines, test = [GT_HEADER], []
    for number, class_id in enumerate((1, 0, 1)):
        image = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        name = f"{number:05d}.ppm"
        with open(os.path.join(test_folder, name), "wb") as f:
            f.write(ppm_bytes(image))
        lines.append(f"{name};4;4;0;0;3;3;{class_id}\n")
        test.append((image, class_id))
    with open(os.path.join(base, "Final_Test", "GT-final_test.csv"), "w") as f:
        f.writelines(lines)
    return train, test


def write_tiny_imagenet(root, jpeg=True):
    folder = os.path.join(root, "tiny-imagenet-200")
    wnids = ["n02", "n01"]  # deliberately unsorted, as in the official wnids.txt
    os.makedirs(os.path.join(folder, "val", "images"))
    with open(os.path.join(folder, "wnids.txt"), "w") as f:
        f.write("\n".join(wnids) + "\n")
    with open(os.path.join(folder, "words.txt"), "w") as f:
        f.write("n01\tgoldfish, Carassius auratus\nn02\tsalamander\nn99\tunused\n")
    images = {}
    rng = np.random.default_rng(3)
    for wnid in wnids:
        os.makedirs(os.path.join(folder, "train", wnid, "images"))
        for k in range(2):
            images[f"train/{wnid}/images/{wnid}_{k}.JPEG"] = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    with open(os.path.join(folder, "val", "val_annotations.txt"), "w") as f:
        f.write("val_0.JPEG\tn02\t0\t0\t10\t10\nval_1.JPEG\tn01\t1\t1\t20\t20\n")
    images["val/images/val_0.JPEG"] = np.full((64, 64, 3), 200, np.uint8)
    images["val/images/val_1.JPEG"] = np.full((64, 64), 50, np.uint8)  # a grayscale one
    if jpeg:
        from PIL import Image
        for path, pixels in images.items():
            Image.fromarray(pixels).save(os.path.join(folder, path), format="JPEG", quality=95)
    else:
        for path in images:
            open(os.path.join(folder, path), "wb").close()
    return folder


# -- CIFAR ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["bin", "py"])
@pytest.mark.parametrize("from_tarball", [False, True])
def test_cifar10_reads_both_versions_from_folder_and_tarball(tmp_path, version, from_tarball):
    expected = write_cifar10(tmp_path, version)
    if from_tarball:
        folder = "cifar-10-batches-bin" if version == "bin" else "cifar-10-batches-py"
        make_tarball(tmp_path, folder, "cifar-10-binary.tar.gz" if version == "bin" else "cifar-10-python.tar.gz")
        os.rename(tmp_path / folder, tmp_path / "moved-away")
    for train, split in ((True, "train"), (False, "test")):
        dataset = D.CIFAR10(tmp_path, train=train)
        np.testing.assert_array_equal(dataset.images, expected[split][0])
        np.testing.assert_array_equal(dataset.targets, expected[split][1])
        assert dataset.images.dtype == np.uint8 and dataset.targets.dtype == np.int64
        assert len(dataset) == len(expected[split][1]) and dataset.split == split
        image, target = dataset[3]
        np.testing.assert_array_equal(image, expected[split][0][3])
        assert target == expected[split][1][3]
    assert dataset.classes[0] == "airplane" and dataset.classes[9] == "truck"


@pytest.mark.parametrize("version", ["bin", "py"])
@pytest.mark.parametrize("from_tarball", [False, True])
def test_cifar100_fine_and_coarse_labels(tmp_path, version, from_tarball):
    expected = write_cifar100(tmp_path, version)
    if from_tarball:
        folder = "cifar-100-binary" if version == "bin" else "cifar-100-python"
        make_tarball(tmp_path, folder, folder.replace("cifar-100-", "cifar-100-") + ".tar.gz")
        os.rename(tmp_path / folder, tmp_path / "moved-away")
    for train, split in ((True, "train"), (False, "test")):
        fine = D.CIFAR100(tmp_path, train=train)
        coarse = D.CIFAR100(tmp_path, train=train, label="coarse")
        np.testing.assert_array_equal(fine.images, expected[split][0])
        np.testing.assert_array_equal(fine.targets, expected[split][1])
        np.testing.assert_array_equal(coarse.targets, expected[split][2])
    assert len(fine.classes) == 100 and len(coarse.classes) == 20
    assert fine.classes[:3] == ["apple", "aquarium_fish", "baby"] and coarse.classes[-1] == "vehicles_2"
    with pytest.raises(ValueError, match="label must be 'fine' or 'coarse'"):
        D.CIFAR100(tmp_path, label="medium")


def test_cifar_mean_std_of_test_split_come_from_train_split(tmp_path):
    expected = write_cifar10(tmp_path, "bin")
    test = D.CIFAR10(tmp_path, train=False)
    train_images = expected["train"][0].astype(np.float64) / 255
    np.testing.assert_allclose(test.mean, train_images.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(test.std, train_images.std(axis=(0, 2, 3)), rtol=1e-5)
    assert test.mean.dtype == np.float32 and test.mean.shape == (3,)


def test_cifar_missing_files_name_expected_path_and_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-bin.*download=True.*cifar-10-binary\.tar\.gz"):
        D.CIFAR10(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"CIFAR-100 not found.*cifar-100-binary"):
        D.CIFAR100(tmp_path, train=False)
    write_cifar10(tmp_path, "bin")
    os.remove(tmp_path / "cifar-10-batches-bin" / "data_batch_4.bin")
    with pytest.raises(FileNotFoundError, match=r"missing CIFAR file .*data_batch_4\.bin"):
        D.CIFAR10(tmp_path)


def test_cifar_truncated_batches_are_named(tmp_path):
    write_cifar10(tmp_path, "bin")
    path = tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin"
    raw = path.read_bytes()
    path.write_bytes(raw[:-100])  # a partial record
    with pytest.raises(ValueError, match=r"data_batch_3\.bin: .* not a whole number of 3073-byte records "
                                         r"\(3 records and 2973 stray bytes"):
        D.CIFAR10(tmp_path)
    path.write_bytes(raw[:-3073])  # cut at a record boundary
    with pytest.raises(ValueError, match=r"data_batch_3\.bin: record count mismatch: it holds 3 records, expected 4"):
        D.CIFAR10(tmp_path)
    path.write_bytes(raw)
    test_path = tmp_path / "cifar-10-batches-bin" / "test_batch.bin"
    test_path.write_bytes(test_path.read_bytes()[:3073])
    with pytest.raises(ValueError, match=r"test_batch\.bin: record count mismatch: it holds 1 records, expected 4"):
        D.CIFAR10(tmp_path, train=False)


def test_cifar100_truncated_train_file_is_named(tmp_path):
    write_cifar100(tmp_path, "bin")
    path = tmp_path / "cifar-100-binary" / "train.bin"
    path.write_bytes(path.read_bytes()[:-3074])
    with pytest.raises(ValueError, match=r"train\.bin: record count mismatch: it holds 9 records, expected 10"):
        D.CIFAR100(tmp_path)


def test_cifar_pickle_with_mismatched_labels_is_refused(tmp_path):
    write_cifar10(tmp_path, "py")
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch = pickle.loads(path.read_bytes(), encoding="bytes")
    batch[b"labels"] = batch[b"labels"][:-1]
    path.write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(ValueError, match=r"record count mismatch: 4 images but 3 b'labels'"):
        D.CIFAR10(tmp_path, train=False)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar_pickle_cannot_run_code(tmp_path):
    write_cifar10(tmp_path, "py")
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps({b"data": _Exploit(), b"labels": []}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match=r"test_batch: refusing to load (posix|os|nt)\.system"):
        D.CIFAR10(tmp_path, train=False)
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    for protocol in (2, 4, 5):
        np.testing.assert_array_equal(D.load_restricted_pickle(pickle.dumps(array, protocol=protocol)), array)


def test_empty_cifar_file_is_refused(tmp_path):
    write_cifar10(tmp_path, "bin")
    (tmp_path / "cifar-10-batches-bin" / "test_batch.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"test_batch\.bin is empty: it holds no records"):
        D.CIFAR10(tmp_path, train=False)


def test_array_dataset_refuses_empty_and_bad_input():
    with pytest.raises(ValueError, match="holds no images"):
        D.ArrayDataset(np.zeros((0, 3, 4, 4), np.uint8), np.zeros(0, np.int64), ["a"])
    with pytest.raises(TypeError, match="images must be uint8, got float32"):
        D.ArrayDataset(np.zeros((1, 3, 4, 4), np.float32), [0], ["a"])
    with pytest.raises(ValueError, match=r"targets must lie in 0\.\.1, found 0\.\.2"):
        D.ArrayDataset(np.zeros((2, 1, 4, 4), np.uint8), [0, 2], ["a", "b"])


@pytest.fixture(scope="module")
def real_cifar10():
    if not os.path.isdir(os.path.join(SHARED, "cifar-10-batches-bin")):
        pytest.skip(f"the CIFAR-10 copy is not at {SHARED}")
    return D.CIFAR10(SHARED, train=True), D.CIFAR10(SHARED, train=False)


def test_real_cifar10_counts_balance_and_mean(real_cifar10):
    train, test = real_cifar10
    assert train.images.shape == (50000, 3, 32, 32) and test.images.shape == (10000, 3, 32, 32)
    np.testing.assert_array_equal(np.bincount(train.targets), [5000] * 10)
    np.testing.assert_array_equal(np.bincount(test.targets), [1000] * 10)
    np.testing.assert_allclose(train.mean, [0.4913, 0.4821, 0.4465], atol=1e-3)
    np.testing.assert_allclose(train.std, [0.2452, 0.2428, 0.2606], atol=1e-3)
    test._stats = None
    test.train_split = lambda: train  # reuse the loaded train split instead of reading it again
    np.testing.assert_array_equal(test.mean, train.mean)


def test_real_cifar10_split_is_stratified_and_deterministic(real_cifar10):
    train, _ = real_cifar10
    train_idx, val_idx = D.train_val_split(train, 0.1, seed=3)
    assert len(val_idx) == 5000 and len(train_idx) == 45000
    assert np.intersect1d(train_idx, val_idx).size == 0
    np.testing.assert_array_equal(np.bincount(train.targets[val_idx]), [500] * 10)
    again = D.train_val_split(train, 0.1, seed=3)
    np.testing.assert_array_equal(again[1], val_idx)
    assert not np.array_equal(D.train_val_split(train, 0.1, seed=4)[1], val_idx)


# -- digits ---------------------------------------------------------------------------------------

def test_digits_bundled_scaled_and_split():
    everything = D.Digits(train=None)
    assert everything.images.shape == (1797, 1, 8, 8) and everything.images.dtype == np.uint8
    assert set(np.unique(everything.targets)) == set(range(10))
    # The first row of the UCI file, scaled from 0..16 to 0..255.
    first_row = [0, 0, 5, 13, 9, 1, 0, 0]
    np.testing.assert_array_equal(everything.images[0, 0, 0], np.rint(np.array(first_row) * 255 / 16))
    assert everything.images.max() == 255
    train, test = D.Digits(train=True), D.Digits(train=False)
    assert len(train) + len(test) == 1797 and abs(len(test) - 0.2 * 1797) < 10
    joined = np.concatenate([train.images, test.images]).reshape(1797, -1)
    assert len(np.unique(joined, axis=0)) == len(np.unique(everything.images.reshape(1797, -1), axis=0))
    np.testing.assert_array_equal(D.Digits(train=False).images, test.images)  # deterministic
    other = D.Digits(train=False, split_seed=1)
    assert not np.array_equal(other.images, test.images)
    np.testing.assert_array_equal(test.mean, train.mean)
    with pytest.raises(ValueError, match="test_fraction must lie strictly between 0 and 1"):
        D.Digits(test_fraction=1.0)


def test_train_val_split_refuses_official_test_set():
    with pytest.raises(ValueError, match="refusing to split the official 'test' set"):
        D.train_val_split(D.Digits(train=False), 0.1)
    with pytest.raises(ValueError, match="val_fraction must lie strictly between 0 and 1"):
        D.train_val_split(D.Digits(), 0.0)


# -- GTSRB ----------------------------------------------------------------------------------------

def test_ppm_reader_and_errors():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    np.testing.assert_array_equal(read_ppm(ppm_bytes(image)), image)
    with pytest.raises(ValueError, match=r"x\.ppm: expected a binary RGB PPM \(magic P6\), got b'P5' \(binary grayscale\)"):
        read_ppm(ppm_bytes(image[..., 0], magic=b"P5"), "x.ppm")
    with pytest.raises(ValueError, match=r"x\.ppm: PPM of 3x2 needs 18 pixel bytes, found 17"):
        read_ppm(ppm_bytes(image)[:-1], "x.ppm")
    with pytest.raises(ValueError, match=r"only 8-bit PPM \(maxval 255\) is supported, got maxval 65535"):
        read_ppm(b"P6 1 1 65535\n" + b"\0" * 6)
    with pytest.raises(ValueError, match="truncated PPM header"):
        read_ppm(b"P6 12")


def test_resize_matches_area_and_bilinear_references():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(8, 6, 3), dtype=np.uint8)
    # Shrinking by an integer factor is the mean of each block.
    block_means = image.astype(np.float64).reshape(4, 2, 3, 2, 3).mean(axis=(1, 3))
    np.testing.assert_array_equal(resize(image, 4, 3), np.rint(block_means).astype(np.uint8))
    # Enlarging 2 -> 4 with half-pixel centres: weights 1, 3/4+1/4, 1/4+3/4, 1.
    np.testing.assert_allclose(resize_matrix(2, 4), [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    # Non-integer area shrink 3 -> 2: each output covers 1.5 input pixels.
    np.testing.assert_allclose(resize_matrix(3, 2), [[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]], rtol=1e-6)
    np.testing.assert_allclose(resize_matrix(5, 3).sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_array_equal(resize(image, 8, 6), image)


def test_gtsrb_roi_crop_resize_and_tracks(tmp_path):
    train_rows, test_rows = write_gtsrb(tmp_path)
    train = D.GTSRB(tmp_path, train=True, size=4)
    assert train.images.shape == (8, 3, 4, 4) and len(train.classes) == 43
    for k, (crop, class_id, _) in enumerate(train_rows):
        np.testing.assert_array_equal(train.images[k], resize(crop, 4, 4).transpose(2, 0, 1))
        assert train.targets[k] == class_id
    # Frames of one track share a group; the same track number in another class does not.
    np.testing.assert_array_equal(train.groups, [0, 0, 1, 1, 2, 2, 3, 3])
    test = D.GTSRB(tmp_path, train=False, size=4)
    np.testing.assert_array_equal(test.targets, [1, 0, 1])
    np.testing.assert_array_equal(test.images[1], test_rows[1][0].transpose(2, 0, 1))
    np.testing.assert_array_equal(test.mean, train.mean)


def test_gtsrb_split_keeps_tracks_together(tmp_path):
    write_gtsrb(tmp_path)
    train = D.GTSRB(tmp_path, size=4)
    train_idx, val_idx = D.train_val_split(train, 0.5, seed=0)
    assert len(val_idx) == 4 and len(train_idx) == 4
    assert not set(train.groups[train_idx]) & set(train.groups[val_idx])
    np.testing.assert_array_equal(np.bincount(train.targets[val_idx]), [2, 2])
    mixed = D.ArrayDataset(np.zeros((2, 1, 2, 2), np.uint8), [0, 1], ["a", "b"], groups=[0, 0])
    with pytest.raises(ValueError, match="a group holds samples of different classes"):
        D.train_val_split(mixed, 0.5)


def test_gtsrb_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"GTSRB/Final_Training/Images.*download=True.*sid\.erda\.dk"):
        D.GTSRB(tmp_path)
    write_gtsrb(tmp_path)
    csv_path = tmp_path / "GTSRB" / "Final_Training" / "Images" / "00001" / "GT-00001.csv"
    good_csv = csv_path.read_text()
    csv_path.write_text(good_csv.replace(";1\n", ";43\n", 1))
    with pytest.raises(ValueError, match=r"GT-00001\.csv, line 2: ClassId 43 is out of range 0\.\.42"):
        D.GTSRB(tmp_path)
    csv_path.write_text(good_csv.replace(";1\n", ";0\n", 1))
    with pytest.raises(ValueError, match="has ClassId 0 but lies in the folder of class 1"):
        D.GTSRB(tmp_path)
    csv_path.write_text(good_csv.replace("00000_00000.ppm;5;6", "00000_00000.ppm;9;9"))
    with pytest.raises(ValueError, match=r"00000_00000\.ppm: PPM is 5x6 but the CSV says 9x9"):
        D.GTSRB(tmp_path)
    csv_path.write_text(good_csv)
    ppm_path = csv_path.parent / "00001_00000.ppm"
    ppm_path.write_bytes(ppm_bytes(np.zeros((6, 6), np.uint8), magic=b"P5"))
    with pytest.raises(ValueError, match=r"00001_00000\.ppm: expected a binary RGB PPM .*grayscale"):
        D.GTSRB(tmp_path)
    test_csv = tmp_path / "GTSRB" / "Final_Test" / "GT-final_test.csv"
    test_csv.write_text(GT_HEADER.replace(";ClassId", "") + "00000.ppm;4;4;0;0;3;3\n")
    with pytest.raises(ValueError, match="has no ClassId column.*GTSRB_Final_Test_GT.zip"):
        D.GTSRB(tmp_path, train=False)
    test_csv.write_text(GT_HEADER)
    with pytest.raises(ValueError, match="lists no images: the GTSRB test set is empty"):
        D.GTSRB(tmp_path, train=False)
    os.remove(test_csv)
    with pytest.raises(FileNotFoundError, match=r"GTSRB test labels not found: expected .*GT-final_test\.csv"):
        D.GTSRB(tmp_path, train=False)


# -- Tiny-ImageNet --------------------------------------------------------------------------------

def test_tiny_imagenet_layout_parsing(tmp_path):
    folder = write_tiny_imagenet(tmp_path, jpeg=False)
    paths, targets, wnids, names = tiny_imagenet_files(folder, "train")
    assert wnids == ["n01", "n02"] and names == ["goldfish, Carassius auratus", "salamander"]
    assert [os.path.relpath(p, folder) for p in paths] == [
        "train/n01/images/n01_0.JPEG", "train/n01/images/n01_1.JPEG",
        "train/n02/images/n02_0.JPEG", "train/n02/images/n02_1.JPEG"]
    np.testing.assert_array_equal(targets, [0, 0, 1, 1])
    paths, targets, _, _ = tiny_imagenet_files(folder, "val")
    assert [os.path.basename(p) for p in paths] == ["val_0.JPEG", "val_1.JPEG"]
    np.testing.assert_array_equal(targets, [1, 0])
    with open(os.path.join(folder, "val", "val_annotations.txt"), "a") as f:
        f.write("val_2.JPEG\tn77\t0\t0\t1\t1\n")
    with pytest.raises(ValueError, match=r"val_annotations\.txt, line 3: class 'n77' is not in wnids\.txt"):
        tiny_imagenet_files(folder, "val")
    with pytest.raises(ValueError, match="split must be 'train' or 'val'"):
        D.TinyImageNet(tmp_path, split="test")
    with pytest.raises(FileNotFoundError, match=r"wnids\.txt not found.*tiny-imagenet-200\.zip"):
        D.TinyImageNet(tmp_path / "elsewhere")


def test_tiny_imagenet_without_pillow_names_the_install(tmp_path, monkeypatch):
    write_tiny_imagenet(tmp_path, jpeg=False)
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match="needs Pillow.*pip install pillow"):
        D.TinyImageNet(tmp_path)


def test_tiny_imagenet_decodes_jpeg(tmp_path):
    image_module = pytest.importorskip("PIL.Image")
    folder = write_tiny_imagenet(tmp_path)
    train = D.TinyImageNet(tmp_path, split="train")
    assert train.images.shape == (4, 3, 64, 64) and train.classes[1] == "salamander"
    decoded = np.asarray(image_module.open(os.path.join(folder, "train/n01/images/n01_1.JPEG")))
    np.testing.assert_array_equal(train.images[1], decoded.transpose(2, 0, 1))
    val = D.TinyImageNet(tmp_path, split="val")
    np.testing.assert_array_equal(val.targets, [1, 0])
    assert abs(int(val.images[0].mean()) - 200) <= 1
    assert (val.images[1] == val.images[1, 0]).all() and abs(int(val.images[1, 0, 0, 0]) - 50) <= 1
    image_module.fromarray(np.zeros((64, 64, 4), np.uint8)).save(os.path.join(folder, "val/images/val_0.JPEG.png"))
    os.replace(os.path.join(folder, "val/images/val_0.JPEG.png"), os.path.join(folder, "val/images/val_0.JPEG"))
    with pytest.raises(ValueError, match=r"val_0\.JPEG: image mode 'RGBA' is not RGB or grayscale"):
        D.TinyImageNet(tmp_path, split="val")
    image_module.fromarray(np.zeros((32, 64, 3), np.uint8)).save(os.path.join(folder, "val/images/val_0.JPEG"),
                                                                 format="JPEG")
    with pytest.raises(ValueError, match=r"val_0\.JPEG: image is 64x32, expected 64x64"):
        D.TinyImageNet(tmp_path, split="val")


# -- downloads (from a local HTTP server only) ----------------------------------------------------

class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(_CountingHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}/", httpd.requests
    httpd.shutdown()
    httpd.server_close()


def md5_of(path):
    return hashlib.md5(open(path, "rb").read()).hexdigest()


def test_cifar10_download_verifies_extracts_and_never_redownloads(tmp_path, server, monkeypatch):
    served, url, requests = server
    expected = write_cifar10(served, "bin")
    make_tarball(served, "cifar-10-batches-bin", "cifar-10-binary.tar.gz")
    tarball = served / "cifar-10-binary.tar.gz"
    resource = dl.Resource(url + "cifar-10-binary.tar.gz", "cifar-10-binary.tar.gz", md5_of(tarball),
                           (("cifar-10-batches-bin", "cifar-10-batches-bin"),))
    monkeypatch.setitem(dl.RESOURCES, "cifar10", (resource,))
    root = tmp_path / "root"
    dataset = D.CIFAR10(root, train=False, download=True)
    np.testing.assert_array_equal(dataset.images, expected["test"][0])
    assert requests == ["/cifar-10-binary.tar.gz"]
    assert sorted(os.listdir(root)) == ["cifar-10-batches-bin", "cifar-10-binary.tar.gz"]  # no temp left
    D.CIFAR10(root, train=True, download=True)
    # The extracted folder is gone but the archive verifies: extracted again, not downloaded.
    import shutil
    shutil.rmtree(root / "cifar-10-batches-bin")
    dl.fetch("cifar10", root, progress=False)
    assert requests == ["/cifar-10-binary.tar.gz"]
    assert (root / "cifar-10-batches-bin" / "data_batch_5.bin").exists()


def test_download_with_wrong_checksum_is_discarded(tmp_path, server, monkeypatch):
    served, url, requests = server
    (served / "cifar-10-binary.tar.gz").write_bytes(b"not the real archive")
    resource = dl.Resource(url + "cifar-10-binary.tar.gz", "cifar-10-binary.tar.gz",
                           "c32a1d4ab5d03f1284b67883e8d87530", (("cifar-10-batches-bin", "cifar-10-batches-bin"),))
    monkeypatch.setitem(dl.RESOURCES, "cifar10", (resource,))
    root = tmp_path / "root"
    with pytest.raises(D.ChecksumError, match=r"checksum mismatch for http://127\.0\.0\.1:\d+/cifar-10-binary"
                                              r"\.tar\.gz: expected MD5 c32a1d4ab5d03f1284b67883e8d87530, got "
                                              + md5_of(served / "cifar-10-binary.tar.gz")):
        D.CIFAR10(root, download=True)
    assert os.listdir(root) == []
    # A corrupted archive already on disk is replaced by a fresh download, which is checked again.
    (root / "cifar-10-binary.tar.gz").write_bytes(b"corrupted")
    with pytest.raises(D.ChecksumError):
        dl.fetch("cifar10", root, progress=False)
    assert len(requests) == 2


def test_gtsrb_download_of_three_zips_and_trust_on_first_use(tmp_path, server, monkeypatch):
    served, url, requests = server
    source = tmp_path / "source"
    write_gtsrb(source)
    with zipfile.ZipFile(served / "train.zip", "w") as z:
        for folder, _, files in os.walk(source / "GTSRB" / "Final_Training"):
            for name in files:
                path = os.path.join(folder, name)
                z.write(path, os.path.relpath(path, source))
    with zipfile.ZipFile(served / "test.zip", "w") as z:
        for name in os.listdir(source / "GTSRB" / "Final_Test" / "Images"):
            z.write(source / "GTSRB" / "Final_Test" / "Images" / name, f"GTSRB/Final_Test/Images/{name}")
    with zipfile.ZipFile(served / "gt.zip", "w") as z:
        z.write(source / "GTSRB" / "Final_Test" / "GT-final_test.csv", "GT-final_test.csv")
    table = tuple(dl.Resource(url + name, name, md5, members) for name, md5, members in (
        ("train.zip", md5_of(served / "train.zip"), (("GTSRB/Final_Training", "GTSRB/Final_Training"),)),
        ("test.zip", None, (("GTSRB/Final_Test/Images", "GTSRB/Final_Test/Images"),)),
        ("gt.zip", md5_of(served / "gt.zip"), (("GT-final_test.csv", "GTSRB/Final_Test/GT-final_test.csv"),))))
    monkeypatch.setitem(dl.RESOURCES, "gtsrb", table)
    root = tmp_path / "root"
    test = D.GTSRB(root, train=False, download=True, size=4)
    np.testing.assert_array_equal(test.targets, [1, 0, 1])
    assert len(requests) == 3
    record = (root / "test.zip.sha256.json").read_text()
    assert hashlib.sha256((served / "test.zip").read_bytes()).hexdigest() in record
    import shutil
    shutil.rmtree(root / "GTSRB" / "Final_Test" / "Images")
    dl.fetch("gtsrb", root, progress=False)  # the recorded sha256 verifies: no new request
    assert len(requests) == 3
    (root / "test.zip").write_bytes(b"tampered")
    shutil.rmtree(root / "GTSRB" / "Final_Test" / "Images")
    dl.fetch("gtsrb", root, progress=False)  # fails the record: fetched again
    assert len(requests) == 4


def test_extraction_refuses_paths_outside_root(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(ValueError, match=r"refusing member '\.\./escaped\.txt'"):
        dl.extract_members(str(archive), str(root), (("x", "x"),))
    assert not (tmp_path / "escaped.txt").exists() and os.listdir(root) == []
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as z:
        z.writestr("folder/file.txt", "ok")
    with pytest.raises(ValueError, match=r"good\.zip does not contain the expected 'other'"):
        dl.extract_members(str(good), str(root), (("other", "other"),))
    assert os.listdir(root) == []


def test_unknown_dataset_download():
    with pytest.raises(KeyError, match="no download known for dataset 'mnist'"):
        dl.fetch("mnist", "unused")
