"""Checkpoint files: a nested structure of dicts/lists/numbers/strings and
numpy arrays, stored as one .npz (no pickle: loading never runs code).

The structure is encoded as JSON in the member ``__tree__``; every array
leaf is replaced by a reference to its own npz member.  Dicts are stored as
key/value pairs so integer keys (optimizer state) survive the round trip.
Files are written atomically: a temp file in the same folder, then a rename.
"""
import io
import json
import os

import numpy as np

from ._tensor import Tensor
from .serialization import atomic_write

FORMAT = "appealnet-checkpoint-1"


def _encode(value, arrays):
    if isinstance(value, Tensor):
        value = value.detach().numpy()
    if isinstance(value, np.ndarray):
        key = f"a{len(arrays)}"
        arrays[key] = value
        return {"__array__": key}
    if isinstance(value, dict):
        return {"__dict__": [[_encode(k, arrays), _encode(v, arrays)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, arrays) for v in value]}
    if isinstance(value, list):
        return [_encode(v, arrays) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"checkpoint: cannot store a value of type {type(value).__name__}")


def _decode(value, arrays):
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    if isinstance(value, dict):
        if "__array__" in value:
            return arrays[value["__array__"]]
        if "__dict__" in value:
            return {_decode(k, arrays): _decode(v, arrays) for k, v in value["__dict__"]}
        if "__tuple__" in value:
            return tuple(_decode(v, arrays) for v in value["__tuple__"])
    return value


def save_checkpoint(path, obj):
    """Writes obj atomically to path (an .npz file)."""
    arrays = {}
    tree = _encode(obj, arrays)
    header = json.dumps({"format": FORMAT, "tree": tree}, allow_nan=True).encode("utf-8")
    arrays["__tree__"] = np.frombuffer(header, dtype=np.uint8)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_checkpoint(path):
    """Reads a file written by save_checkpoint; ValueError when it is not one."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with open(path, "rb") as f:
            data = f.read()
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        header = json.loads(bytes(arrays.pop("__tree__")).decode("utf-8"))
    except Exception as exc:
        raise ValueError(f"{path} is not a readable appealnet checkpoint "
                         f"(truncated or corrupted?): {exc}") from exc
    if header.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown checkpoint format {header.get('format')!r}")
    return _decode(header["tree"], arrays)
