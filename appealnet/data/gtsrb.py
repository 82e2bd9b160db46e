"""The German Traffic Sign Recognition Benchmark (GTSRB) in its official layout.

Training set: ``GTSRB/Final_Training/Images/000NN/`` holds the PPM images of
class NN and ``GT-000NN.csv``. Test set: ``GTSRB/Final_Test/Images/*.ppm``
with the labelled ``GT-final_test.csv`` (from ``GTSRB_Final_Test_GT.zip``;
looked for in ``GTSRB/Final_Test/``, ``GTSRB/Final_Test/Images/``, ``GTSRB/``
and ``root``). The CSVs are semicolon-separated with the columns
``Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId``.

Each image is cropped to its region of interest (``Roi.X2``/``Roi.Y2`` are
inclusive pixel coordinates) and resized to ``size`` x ``size``. Training
files are named ``TTTTT_FFFFF.ppm`` (track, frame): the 30 frames of one
physical sign form one group, which :func:`train_val_split` keeps together.
"""
import csv
import os

import numpy as np

from . import download as _download
from .datasets import ArrayDataset
from .images import read_ppm, resize

GTSRB_CLASSES = (
    "Speed limit (20km/h)", "Speed limit (30km/h)", "Speed limit (50km/h)", "Speed limit (60km/h)",
    "Speed limit (70km/h)", "Speed limit (80km/h)", "End of speed limit (80km/h)", "Speed limit (100km/h)",
    "Speed limit (120km/h)", "No passing", "No passing for vehicles over 3.5 t",
    "Right-of-way at the next intersection", "Priority road", "Yield", "Stop", "No vehicles",
    "Vehicles over 3.5 t prohibited", "No entry", "General caution", "Dangerous curve to the left",
    "Dangerous curve to the right", "Double curve", "Bumpy road", "Slippery road",
    "Road narrows on the right", "Road work", "Traffic signals", "Pedestrians", "Children crossing",
    "Bicycles crossing", "Beware of ice/snow", "Wild animals crossing", "End of all speed and passing limits",
    "Turn right ahead", "Turn left ahead", "Ahead only", "Go straight or right", "Go straight or left",
    "Keep right", "Keep left", "Roundabout mandatory", "End of no passing",
    "End of no passing by vehicles over 3.5 t",
)

_COLUMNS = ("Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId")
_DOWNLOAD_HINT = ("Pass download=True, or get GTSRB_Final_Training_Images.zip, GTSRB_Final_Test_Images.zip "
                  "and GTSRB_Final_Test_GT.zip from " + _download._GTSRB + " and unzip them into root")


def _read_annotations(csv_path):
    """Rows of a GTSRB CSV as dicts with int fields, validated."""
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f, delimiter=";")
        header = reader.fieldnames or []
        missing = [column for column in _COLUMNS if column not in header]
        if missing == ["ClassId"]:
            raise ValueError(f"{csv_path} has no ClassId column: it is the unlabelled CSV of the test-image "
                             "archive; the labelled GT-final_test.csv comes in GTSRB_Final_Test_GT.zip")
        if missing:
            raise ValueError(f"{csv_path}: missing column(s) {missing}; expected {';'.join(_COLUMNS)}")
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                parsed = {column: int(row[column]) for column in _COLUMNS[1:]}
            except (TypeError, ValueError):
                raise ValueError(f"{csv_path}, line {line}: non-integer field in {row}") from None
            if not 0 <= parsed["ClassId"] < len(GTSRB_CLASSES):
                raise ValueError(f"{csv_path}, line {line}: ClassId {parsed['ClassId']} is out of range "
                                 f"0..{len(GTSRB_CLASSES) - 1}")
            parsed["Filename"] = row["Filename"]
            rows.append(parsed)
    return rows


def _load_image(path, row, size):
    with open(path, "rb") as f:
        pixels = read_ppm(f.read(), path)
    height, width = pixels.shape[:2]
    if (width, height) != (row["Width"], row["Height"]):
        raise ValueError(f"{path}: PPM is {width}x{height} but the CSV says {row['Width']}x{row['Height']}")
    x1, y1 = max(row["Roi.X1"], 0), max(row["Roi.Y1"], 0)
    x2, y2 = min(row["Roi.X2"], width - 1), min(row["Roi.Y2"], height - 1)
    if x2 < x1 or y2 < y1:
        raise ValueError(f"{path}: empty region of interest ({row['Roi.X1']},{row['Roi.Y1']})-"
                         f"({row['Roi.X2']},{row['Roi.Y2']})")
    return resize(pixels[y1:y2 + 1, x1:x2 + 1], size, size).transpose(2, 0, 1)


def _track_id(filename, csv_path):
    stem = os.path.splitext(filename)[0]
    track, _, frame = stem.partition("_")
    if not (track.isdigit() and frame.isdigit()):
        raise ValueError(f"{csv_path}: training file name {filename!r} is not TTTTT_FFFFF.ppm (track_frame)")
    return int(track)


def _training_set(root, size):
    images_dir = os.path.join(root, "GTSRB", "Final_Training", "Images")
    class_dirs = sorted(d for d in os.listdir(images_dir) if os.path.isdir(os.path.join(images_dir, d)))
    images, labels, tracks = [], [], []
    for class_dir in class_dirs:
        csv_path = os.path.join(images_dir, class_dir, f"GT-{class_dir}.csv")
        if not os.path.exists(csv_path):
            raise FileNotFoundError(f"missing annotation file {csv_path}. {_DOWNLOAD_HINT}")
        for row in _read_annotations(csv_path):
            if class_dir.isdigit() and row["ClassId"] != int(class_dir):
                raise ValueError(f"{csv_path}: {row['Filename']} has ClassId {row['ClassId']} "
                                 f"but lies in the folder of class {int(class_dir)}")
            images.append(_load_image(os.path.join(images_dir, class_dir, row["Filename"]), row, size))
            labels.append(row["ClassId"])
            tracks.append(_track_id(row["Filename"], csv_path))
    if not images:
        raise ValueError(f"GTSRB training set under {images_dir} holds no images")
    labels, tracks = np.asarray(labels, np.int64), np.asarray(tracks, np.int64)
    # A track number is only unique within its class.
    _, groups = np.unique(np.stack([labels, tracks], axis=1), axis=0, return_inverse=True)
    return np.stack(images), labels, groups.reshape(-1)


def _find_test_csv(root):
    candidates = [os.path.join(root, "GTSRB", "Final_Test", "GT-final_test.csv"),
                  os.path.join(root, "GTSRB", "Final_Test", "Images", "GT-final_test.csv"),
                  os.path.join(root, "GTSRB", "GT-final_test.csv"),
                  os.path.join(root, "GT-final_test.csv")]
    for path in candidates:
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"GTSRB test labels not found: expected {candidates[0]} (from "
                            f"GTSRB_Final_Test_GT.zip). {_DOWNLOAD_HINT}")


def _test_set(root, size):
    images_dir = os.path.join(root, "GTSRB", "Final_Test", "Images")
    csv_path = _find_test_csv(root)
    rows = _read_annotations(csv_path)
    if not rows:
        raise ValueError(f"{csv_path} lists no images: the GTSRB test set is empty")
    images = [_load_image(os.path.join(images_dir, row["Filename"]), row, size) for row in rows]
    return np.stack(images), np.asarray([row["ClassId"] for row in rows], np.int64)


class GTSRB(ArrayDataset):
    """GTSRB: 39,209 training and 12,630 test images of 43 traffic-sign classes.

    ``root`` holds the ``GTSRB/`` folder of the official archives. Images are
    ROI-cropped and resized to ``size`` x ``size`` (uint8, N x 3 x size x size).
    ``groups`` (train split) numbers the physical sign tracks.
    """
    name = "gtsrb"

    def __init__(self, root, train=True, download=False, size=32):
        root = os.fspath(root)
        if not (isinstance(size, int) and size > 0):
            raise ValueError(f"size must be a positive int, got {size!r}")
        expected = os.path.join(root, "GTSRB", "Final_Training" if train else "Final_Test", "Images")
        if download:
            _download.fetch("gtsrb", root)
        if not os.path.isdir(expected):
            raise FileNotFoundError(f"GTSRB {'training' if train else 'test'} images not found: expected "
                                    f"the folder {expected}. {_DOWNLOAD_HINT}")
        self.root, self.size = root, size
        if train:
            images, labels, groups = _training_set(root, size)
            super().__init__(images, labels, GTSRB_CLASSES, split="train", groups=groups)
        else:
            images, labels = _test_set(root, size)
            super().__init__(images, labels, GTSRB_CLASSES, split="test")

    def train_split(self):
        return self if self.split == "train" else GTSRB(self.root, train=True, size=self.size)
