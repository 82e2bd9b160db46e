"""Small image helpers in numpy: binary PPM (P6) decoding and resizing.

No imaging library is needed for GTSRB: its images are binary PPM files, and
the ROI crops are resized with separable resampling matrices (area averaging
when shrinking, bilinear interpolation when enlarging).
"""
import functools

import numpy as np

_WHITESPACE = b" \t\r\n\v\f"


def read_ppm(data, source="PPM"):
    """Decodes binary PPM (P6) bytes to a uint8 H x W x 3 array.

    Raises ValueError naming ``source`` for another format (ASCII P3,
    grayscale P5, ...), a 16-bit maxval, a bad header or missing pixels.
    """
    fields, position = [], 0
    while len(fields) < 4:
        while position < len(data) and data[position] in _WHITESPACE:
            position += 1
        if position < len(data) and data[position:position + 1] == b"#":
            while position < len(data) and data[position] not in b"\r\n":
                position += 1
            continue
        start = position
        while position < len(data) and data[position] not in _WHITESPACE and data[position:position + 1] != b"#":
            position += 1
        if start == position:
            raise ValueError(f"{source}: truncated PPM header ({len(data)} bytes)")
        fields.append(data[start:position])
    magic = fields[0]
    if magic != b"P6":
        kinds = {b"P1": "ASCII bitmap", b"P2": "ASCII grayscale", b"P3": "ASCII RGB",
                 b"P4": "binary bitmap", b"P5": "binary grayscale"}
        kind = kinds.get(magic, "not a PPM file")
        raise ValueError(f"{source}: expected a binary RGB PPM (magic P6), got {magic[:8]!r} ({kind})")
    try:
        width, height, maxval = (int(field) for field in fields[1:])
    except ValueError:
        raise ValueError(f"{source}: malformed PPM header {b' '.join(fields)!r}") from None
    if width <= 0 or height <= 0:
        raise ValueError(f"{source}: PPM size {width}x{height} is empty")
    if maxval != 255:
        raise ValueError(f"{source}: only 8-bit PPM (maxval 255) is supported, got maxval {maxval}")
    position += 1  # the single whitespace byte that ends the header
    expected = width * height * 3
    pixels = data[position:position + expected]
    if len(pixels) != expected:
        raise ValueError(f"{source}: PPM of {width}x{height} needs {expected} pixel bytes, "
                         f"found {len(pixels)} (the file is truncated)")
    return np.frombuffer(pixels, np.uint8).reshape(height, width, 3)


@functools.lru_cache(maxsize=1024)
def resize_matrix(in_size, out_size):
    """out_size x in_size float32 matrix mapping a row of pixels to its resized row.

    Shrinking averages the input pixels each output pixel covers, weighted by
    overlap (area interpolation); enlarging interpolates linearly between the
    two nearest input pixel centres (half-pixel convention, edges clamped).
    """
    if in_size <= 0 or out_size <= 0:
        raise ValueError(f"resize_matrix: sizes must be positive, got {in_size} -> {out_size}")
    weights = np.zeros((out_size, in_size), np.float64)
    scale = in_size / out_size
    if out_size <= in_size:
        for i in range(out_size):
            lo, hi = i * scale, (i + 1) * scale
            first, last = int(np.floor(lo)), min(int(np.ceil(hi)), in_size)
            for j in range(first, last):
                weights[i, j] = min(hi, j + 1) - max(lo, j)
        weights /= scale
    else:
        centres = np.clip((np.arange(out_size) + 0.5) * scale - 0.5, 0, in_size - 1)
        left = np.floor(centres).astype(np.int64)
        right = np.minimum(left + 1, in_size - 1)
        frac = centres - left
        rows = np.arange(out_size)
        np.add.at(weights, (rows, left), 1.0 - frac)
        np.add.at(weights, (rows, right), frac)
    return weights.astype(np.float32)


def resize(image, height, width):
    """Resizes a uint8 H x W x C image to ``height`` x ``width`` (rounded to uint8)."""
    rows = resize_matrix(image.shape[0], height)
    cols = resize_matrix(image.shape[1], width)
    out = np.einsum("oh,hwc,pw->opc", rows, image.astype(np.float32), cols, optimize=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
