"""Weights in other frameworks' files: PyTorch ``.pt``/``.pth``, safetensors, numpy ``.npz``.

    an.import_state_dict(model, "resnet.pth")                    # a torch checkpoint
    an.import_state_dict(model, "edge.safetensors", rename={"fc.weight": "classifier.weight"})
    an.export_state_dict(model, "edge.safetensors")              # readable by safetensors/torch

safetensors is read and written here without the safetensors package.  Its layout:
an 8-byte little-endian header length N, N bytes of JSON mapping each tensor name to
``{"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}`` (offsets relative to
the byte after the header; an optional ``"__metadata__"`` maps str to str), then the
raw little-endian data.  F32, F16, BF16 and F64 tensors are converted to float32; an
integer ``num_batches_tracked`` (a BatchNorm counter) is accepted as well; any other
dtype is refused with the tensor's name.

PyTorch files need torch, which appealnet itself never requires: it is imported only
when a ``.pt``/``.pth`` file is read or written.
"""
import json
import os
import struct
from collections import OrderedDict, namedtuple

import numpy as np

from . import _C
from .serialization import atomic_write

__all__ = ["import_state_dict", "export_state_dict", "read_state_dict", "read_safetensors",
           "write_safetensors", "ImportResult"]

ImportResult = namedtuple("ImportResult", ["missing_keys", "unexpected_keys"])

_TORCH_SUFFIXES = (".pt", ".pth")
_COUNTER_SUFFIX = "num_batches_tracked"
_MAX_SAFETENSORS_HEADER = 100 << 20  # the safetensors library's own limit

# safetensors dtype name -> numpy dtype of the stored little-endian values
_SAFETENSORS_FLOATS = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "BF16": "<u2"}
_SAFETENSORS_INTEGERS = {"I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1"}


def _import_torch(purpose):
    try:
        import torch
    except ImportError as exc:
        raise ImportError(f"{purpose} needs PyTorch, which is not installed "
                          f"(pip install torch); appealnet itself does not depend on it") from exc
    return torch


# ------------------------------------------------------------ safetensors
def _bfloat16_to_float32(bits):
    """bfloat16 is the upper half of a float32: shift the 16 bits back into place."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def read_safetensors(path):
    """(``{name: numpy array}`` in file order, metadata dict) from a .safetensors file.
    Floating tensors come back as float32, integer ones as int64."""
    path = os.fspath(path)
    with open(path, "rb") as file:
        blob = file.read()
    if len(blob) < 8:
        raise ValueError(f"{path!r} is not a safetensors file: {len(blob)} bytes, too short "
                         f"for the 8-byte header length")
    (header_length,) = struct.unpack_from("<Q", blob)
    if header_length > min(_MAX_SAFETENSORS_HEADER, len(blob) - 8):
        raise ValueError(f"{path!r} is not a safetensors file or is truncated: header length "
                         f"{header_length} does not fit in {len(blob)} bytes")
    try:
        header = json.loads(blob[8:8 + header_length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path!r} is not a safetensors file: unreadable JSON header "
                         f"({exc})") from exc
    if not isinstance(header, dict):
        raise ValueError(f"{path!r} is not a safetensors file: the header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data = memoryview(blob)[8 + header_length:]
    tensors = OrderedDict()
    for name, entry in header.items():
        try:
            dtype, shape = entry["dtype"], tuple(int(s) for s in entry["shape"])
            begin, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path!r}: malformed safetensors entry for {name!r}: "
                             f"{entry!r}") from exc
        if dtype in _SAFETENSORS_FLOATS:
            stored = np.dtype(_SAFETENSORS_FLOATS[dtype])
        elif dtype in _SAFETENSORS_INTEGERS and name.endswith(_COUNTER_SUFFIX):
            stored = np.dtype(_SAFETENSORS_INTEGERS[dtype])
        else:
            raise ValueError(f"{path!r}: tensor {name!r} has dtype {dtype}; appealnet reads "
                             f"F32, F16, BF16 and F64 tensors only")
        count = int(np.prod(shape, dtype=np.int64))
        if any(s < 0 for s in shape) or not 0 <= begin <= end <= len(data) or \
                end - begin != count * stored.itemsize:
            raise ValueError(f"{path!r} is corrupt or truncated: tensor {name!r} (shape "
                             f"{list(shape)}, {dtype}) claims bytes [{begin}, {end}) of a "
                             f"{len(data)}-byte data section")
        values = np.frombuffer(data[begin:end], dtype=stored).reshape(shape)
        if dtype == "BF16":
            tensors[name] = _bfloat16_to_float32(values)
        else:
            tensors[name] = values.astype(np.float32 if dtype in _SAFETENSORS_FLOATS else np.int64)
    return tensors, metadata


def write_safetensors(state, path, metadata=None):
    """Writes ``{name: array}`` as float32 safetensors, atomically."""
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str)
                                        for k, v in metadata.items()):
        raise TypeError("safetensors metadata must map str to str")
    header, chunks, offset = OrderedDict(), [], 0
    if metadata:
        header["__metadata__"] = dict(metadata)
    for name, value in state.items():
        array = _as_numeric_array(value, name).astype("<f4")
        raw = array.tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # Padding the header with spaces to 8 bytes keeps the data aligned, as the
    # reference writer does.
    header_bytes += b" " * (-len(header_bytes) % 8)

    def write(file):
        file.write(struct.pack("<Q", len(header_bytes)))
        file.write(header_bytes)
        for raw in chunks:
            file.write(raw)

    atomic_write(path, write)


# ------------------------------------------------------------ any source
def _as_numeric_array(value, name):
    """A numpy view/copy of an appealnet/torch tensor, numpy array or number."""
    if isinstance(value, _C.TensorBase):
        return np.asarray(_C.detach(value).numpy())
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()
        return value.numpy()
    array = np.asarray(value)
    if array.dtype.kind not in "fiub":
        raise TypeError(f"tensor {name!r} has dtype {array.dtype}; expected numbers")
    return array


def _torch_state_dict(path):
    torch = _import_torch(f"reading {path!r}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ...
        raise ValueError(f"cannot read {path!r} as a PyTorch weights file (torch.load with "
                         f"weights_only=True; save model.state_dict(), not the model): "
                         f"{exc}") from exc
    if isinstance(loaded, dict):
        # A training checkpoint keeps the weights under one of these keys.
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict) or not all(hasattr(v, "shape") for v in loaded.values()):
        raise ValueError(f"{path!r} does not hold a state_dict (a dict of tensors)")
    return OrderedDict((k, _as_numeric_array(v, k)) for k, v in loaded.items())


def read_state_dict(source):
    """``{name: numpy array}`` from a .pt/.pth/.safetensors/.npz/appealnet
    weights path, or from a dict of arrays/tensors."""
    if hasattr(source, "items"):
        return OrderedDict((str(k), _as_numeric_array(v, k)) for k, v in source.items())
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a path or a dict of arrays, got "
                        f"{type(source).__name__}")
    path = os.fspath(source)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such weights file: {path!r}")
    suffix = os.path.splitext(path)[1].lower()
    if suffix in _TORCH_SUFFIXES:
        return _torch_state_dict(path)
    if suffix == ".safetensors":
        return read_safetensors(path)[0]
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                return OrderedDict((name, archive[name]) for name in archive.files)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read {path!r} as a numpy .npz archive: {exc}") from exc
    if suffix == ".anw":
        from .serialization import load_state_dict_file
        return load_state_dict_file(path)
    raise ValueError(f"unknown weights file type {suffix!r} for {path!r}; expected .pt, .pth, "
                     f".safetensors, .npz or .anw")


def _renamed(state, rename):
    """Strips DataParallel's "module." prefix, then applies ``rename``: a dict
    (old -> new, unlisted names kept) or a callable (name -> new name, or None
    to drop the tensor)."""
    if state and all(k.startswith("module.") for k in state):
        state = OrderedDict((k[len("module."):], v) for k, v in state.items())
    if rename is None:
        return state
    if isinstance(rename, dict):
        def mapper(name):
            return rename.get(name, name)
    elif callable(rename):
        mapper = rename
    else:
        raise TypeError(f"rename must be a dict or a callable, got {type(rename).__name__}")
    out = OrderedDict()
    for name, value in state.items():
        new_name = mapper(name)
        if new_name is None:
            continue
        if new_name in out:
            raise ValueError(f"rename maps two tensors to the same name {new_name!r}")
        out[new_name] = value
    return out


def import_state_dict(model, source, rename=None, strict=True):
    """Loads weights from ``source`` (a path to .pt/.pth/.safetensors/.npz/.anw,
    or a dict of arrays/tensors) into ``model`` and returns
    ``ImportResult(missing_keys, unexpected_keys)``.

    Names are matched after stripping a "module." prefix (DataParallel) and
    applying ``rename``.  Floating values are converted to float32; an integer
    ``num_batches_tracked`` is accepted.  With ``strict`` (the default),
    missing or unexpected keys raise ValueError listing them; shape mismatches
    always do.  Nothing is written unless every checked key fits.
    """
    state = _renamed(read_state_dict(source), rename)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"missing keys (in the model, not in the source): {missing}")
        if unexpected:
            parts.append(f"unexpected keys (in the source, not in the model): {unexpected}")
        raise ValueError(f"cannot import weights into {type(model).__name__}: "
                         + "; ".join(parts) + " (use rename= to map names, or strict=False)")
    matched = OrderedDict()
    for key, expected in own.items():
        if key not in state:
            continue
        value = state[key]
        if value.dtype.kind not in "f" and not key.endswith(_COUNTER_SUFFIX):
            raise ValueError(f"tensor {key!r} has dtype {value.dtype}; expected floating point")
        if tuple(value.shape) != tuple(expected.shape):
            raise ValueError(f"shape mismatch for {key!r}: {list(value.shape)} in the source, "
                             f"{list(expected.shape)} in the model")
        matched[key] = np.asarray(value, dtype=np.float32)
    model.load_state_dict(matched, strict=False)
    return ImportResult(missing, unexpected)


# ----------------------------------------------------------------- export
def export_state_dict(model, path, metadata=None):
    """Writes ``model``'s state_dict (or a dict of arrays) by the suffix of
    ``path``: .safetensors, .npz, .pt/.pth (needs torch) or .anw; atomically.
    ``metadata`` (str -> str) goes into a safetensors header."""
    state = model.state_dict() if hasattr(model, "state_dict") else model
    if not hasattr(state, "items"):
        raise TypeError(f"export_state_dict expects a Module or a dict of arrays, got "
                        f"{type(model).__name__}")
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".safetensors":
        write_safetensors(state, path, metadata)
        return
    if metadata is not None and suffix != ".anw":
        raise ValueError(f"metadata can be stored in .safetensors and .anw files, not {suffix!r}")
    arrays = OrderedDict((k, _as_numeric_array(v, k).astype(np.float32)) for k, v in
                         state.items())
    if suffix == ".npz":
        atomic_write(path, lambda file: np.savez(file, **arrays))
    elif suffix in _TORCH_SUFFIXES:
        torch = _import_torch(f"writing {path!r}")
        tensors = OrderedDict((k, torch.from_numpy(np.array(v))) for k, v in arrays.items())
        atomic_write(path, lambda file: torch.save(tensors, file))
    elif suffix == ".anw":
        from .serialization import save_state_dict
        save_state_dict(arrays, path, metadata)
    else:
        raise ValueError(f"unknown weights file type {suffix!r} for {path!r}; expected "
                         f".safetensors, .npz, .pt, .pth or .anw")
