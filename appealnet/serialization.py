"""Saving and loading weights in appealnet's own file format (``.anw``).

    an.save(model, "edge.anw", metadata={"epoch": 30})
    model = an.load("edge.anw")                 # rebuilt from the recorded architecture
    an.load("edge.anw", model=my_model)          # or loaded into an existing model

File layout (all integers little-endian)::

    offset  size  field
    0       8     magic  b"\\x89ANW\\r\\n\\x1a\\n"   (the \\r\\n and \\x1a catch text-mode
                                                   transfers, as PNG's magic does)
    8       4     format version, uint32 (currently 1)
    12      4     CRC32 of the header bytes, uint32
    16      8     header length in bytes, uint64
    24      H     header: UTF-8 JSON object (below)
    D             tensor data; D = 24 + H rounded up to a multiple of 64

The header::

    {"format": "appealnet-weights",
     "kind": "model" | "state_dict",
     "arch": {"name": ..., "kwargs": {...}} | null,   # model.arch, to rebuild the model
     "appealnet_version": "...",
     "metadata": {...},                               # the caller's JSON-able metadata
     "data_length": total bytes after D,
     "tensors": [{"name": "features.0.weight", "dtype": "float32", "shape": [16, 3, 3, 3],
                  "offset": 0, "length": 1728, "crc32": 123456789}, ...]}

Each tensor is raw little-endian float32 in C order, at ``D + offset``; offsets are
multiples of 64 so that the data can be mapped and used in place.  Tensors appear in
state_dict order.  The file is exactly ``D + data_length`` bytes long.

Every way a file can be wrong raises ValueError with the reason: not our format (wrong
magic), a newer format version, truncation, header or tensor checksum mismatch (naming
the tensor), a header that does not describe its data, or weights that do not fit the
model (naming the first mismatched key and both shapes).  Writes are atomic: the file is
written to a temporary file in the same directory and moved over the target with
``os.replace``, so a failure leaves any previous file intact.
"""
import json
import os
import struct
import tempfile
import zlib
from collections import OrderedDict

import numpy as np

from . import _C

MAGIC = b"\x89ANW\r\n\x1a\n"
FORMAT_VERSION = 1
FORMAT_NAME = "appealnet-weights"
ALIGNMENT = 64
_PREFIX = struct.Struct("<8sIIQ")  # magic, version, header crc32, header length
# A header is a few hundred bytes per tensor; anything past this is corruption,
# and refusing it early avoids allocating gigabytes for a garbage length.
_MAX_HEADER_BYTES = 256 << 20

__all__ = ["save", "load", "save_state_dict", "load_state_dict_file", "read_header",
           "MAGIC", "FORMAT_VERSION"]


# ------------------------------------------------------------ atomic writes
def atomic_write(path, write_contents):
    """Calls ``write_contents(file)`` on a temporary file beside ``path`` and
    moves it over ``path`` only once everything is written and flushed to disk.
    On any exception the temporary file is removed and ``path`` is untouched."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {path!r}: directory {directory!r} does not exist")
    fd, temp_path = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                                     suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            write_contents(file)
            file.flush()
            os.fsync(file.fileno())
        # mkstemp creates the file 0600; give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp_path, 0o666 & ~umask)
        os.replace(temp_path, path)
    except BaseException:
        try:
            os.unlink(temp_path)
        except FileNotFoundError:
            pass
        raise


# ------------------------------------------------------------------ helpers
def _align(n):
    return -(-n // ALIGNMENT) * ALIGNMENT


def _to_float32_array(value, name):
    """A C-ordered little-endian float32 copy of a tensor/array/number."""
    if isinstance(value, _C.TensorBase):
        value = _C.detach(value).numpy()
    elif hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu().float().numpy()
    array = np.asarray(value)
    if array.dtype.kind not in "fiub":
        raise TypeError(f"tensor {name!r} has dtype {array.dtype}; only numbers can be saved")
    return np.asarray(array, dtype="<f4", order="C")


def _check_json(value, what):
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be JSON-serialisable (dicts, lists, str, int, float, "
                        f"bool, None): {exc}") from exc


def _arch_of(model):
    arch = getattr(model, "arch", None)
    if arch is None:
        return None
    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str) or \
            not isinstance(arch.get("kwargs", {}), dict):
        raise TypeError(f"model.arch must be a dict {{'name': str, 'kwargs': dict}}, got {arch!r}")
    return _check_json({"name": arch["name"], "kwargs": dict(arch.get("kwargs", {}))},
                       "model.arch")


def _version():
    return getattr(_C, "__version__", "unknown")


# ------------------------------------------------------------------ writing
def _write_file(path, state, kind, arch, metadata):
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    metadata = _check_json(metadata, "metadata")
    arrays, entries, offset = [], [], 0
    for name, value in state.items():
        if not isinstance(name, str):
            raise TypeError(f"state_dict keys must be strings, got {name!r}")
        array = _to_float32_array(value, name)
        raw = array.tobytes()
        entries.append({"name": name, "dtype": "float32", "shape": list(array.shape),
                        "offset": offset, "length": len(raw), "crc32": zlib.crc32(raw)})
        arrays.append((offset, raw))
        offset = _align(offset + len(raw))
    data_length = entries[-1]["offset"] + entries[-1]["length"] if entries else 0
    header = json.dumps({"format": FORMAT_NAME, "kind": kind, "arch": arch,
                         "appealnet_version": _version(), "metadata": metadata,
                         "data_length": data_length, "tensors": entries},
                        separators=(",", ":")).encode("utf-8")
    data_start = _align(_PREFIX.size + len(header))

    def write(file):
        file.write(_PREFIX.pack(MAGIC, FORMAT_VERSION, zlib.crc32(header), len(header)))
        file.write(header)
        file.write(b"\0" * (data_start - _PREFIX.size - len(header)))
        position = 0
        for tensor_offset, raw in arrays:
            file.write(b"\0" * (tensor_offset - position))
            file.write(raw)
            position = tensor_offset + len(raw)

    atomic_write(path, write)


def save(model, path, metadata=None):
    """Writes ``model``'s state_dict, its architecture (``model.arch``, when
    it has one) and ``metadata`` (a JSON-able dict) to ``path`` atomically."""
    if not hasattr(model, "state_dict"):
        raise TypeError(f"save expects a Module, got {type(model).__name__}; "
                        f"use save_state_dict for a plain dict")
    _write_file(path, model.state_dict(), "model", _arch_of(model), metadata)


def save_state_dict(state, path, metadata=None):
    """Writes a plain ``{name: array/tensor}`` dict (values stored as float32)."""
    if not hasattr(state, "items"):
        raise TypeError(f"save_state_dict expects a dict of arrays, got {type(state).__name__}")
    _write_file(path, state, "state_dict", None, metadata)


# ------------------------------------------------------------------ reading
def _read_bytes(path):
    path = os.fspath(path)
    with open(path, "rb") as file:
        return file.read()


def _parse_header(blob, path):
    """(header dict, data start) after checking magic, version and header checksum."""
    if len(blob) < len(MAGIC) or blob[:len(MAGIC)] != MAGIC:
        raise ValueError(f"{path!r} is not an appealnet weights file (wrong magic bytes "
                         f"{blob[:8]!r}, expected {MAGIC!r})")
    if len(blob) < _PREFIX.size:
        raise ValueError(f"{path!r} is truncated: {len(blob)} bytes, shorter than the "
                         f"{_PREFIX.size}-byte file prefix")
    _, version, header_crc, header_length = _PREFIX.unpack_from(blob)
    if version != FORMAT_VERSION:
        raise ValueError(f"{path!r} uses weights format version {version}; this appealnet "
                         f"({_version()}) reads version {FORMAT_VERSION} only")
    if header_length > _MAX_HEADER_BYTES:
        raise ValueError(f"{path!r} has a corrupt header length ({header_length} bytes)")
    header_end = _PREFIX.size + header_length
    if len(blob) < header_end:
        raise ValueError(f"{path!r} is truncated: the header needs {header_end} bytes, "
                         f"the file has {len(blob)}")
    header_bytes = blob[_PREFIX.size:header_end]
    if zlib.crc32(header_bytes) != header_crc:
        raise ValueError(f"{path!r} is corrupt: header checksum mismatch")
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path!r} has an unreadable header: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME or \
            not isinstance(header.get("tensors"), list) or \
            not isinstance(header.get("data_length"), int):
        raise ValueError(f"{path!r} has a header that does not describe appealnet weights")
    return header, _align(header_end)


def read_header(path):
    """The header of a weights file (architecture, metadata, tensor list)
    without reading the tensors' values."""
    path = os.fspath(path)
    with open(path, "rb") as file:
        prefix = file.read(_PREFIX.size)
        if len(prefix) == _PREFIX.size and prefix[:len(MAGIC)] == MAGIC:
            header_length = _PREFIX.unpack(prefix)[3]
            if header_length <= _MAX_HEADER_BYTES:
                prefix += file.read(header_length)
    return _parse_header(prefix, path)[0]


def _tensors_from(blob, header, data_start, path):
    expected_size = data_start + header["data_length"]
    if len(blob) < expected_size:
        raise ValueError(f"{path!r} is truncated: expected {expected_size} bytes, "
                         f"the file has {len(blob)}")
    if len(blob) > expected_size:
        raise ValueError(f"{path!r} is corrupt: {len(blob) - expected_size} unexpected "
                         f"bytes after the tensor data")
    state = OrderedDict()
    for entry in header["tensors"]:
        try:
            name, shape = entry["name"], tuple(int(s) for s in entry["shape"])
            offset, length, crc = int(entry["offset"]), int(entry["length"]), entry["crc32"]
            dtype = entry["dtype"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path!r} has a malformed tensor entry {entry!r}") from exc
        if dtype != "float32":
            raise ValueError(f"{path!r}: tensor {name!r} has dtype {dtype!r}; "
                             f"only float32 is supported")
        if any(s < 0 for s in shape) or length != 4 * int(np.prod(shape, dtype=np.int64)) \
                or offset < 0 or offset + length > header["data_length"]:
            raise ValueError(f"{path!r}: tensor {name!r} entry (shape {list(shape)}, offset "
                             f"{offset}, length {length}) does not fit the data section")
        raw = blob[data_start + offset:data_start + offset + length]
        if zlib.crc32(raw) != crc:
            raise ValueError(f"{path!r} is corrupt: checksum mismatch in tensor {name!r}")
        if name in state:
            raise ValueError(f"{path!r} lists tensor {name!r} twice")
        state[name] = np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)
    return state


def _read(path):
    path = os.fspath(path)
    blob = _read_bytes(path)
    header, data_start = _parse_header(blob, path)
    return header, _tensors_from(blob, header, data_start, path)


def load_state_dict_file(path):
    """The ``{name: float32 numpy array}`` dict stored in a weights file
    (written by save or save_state_dict), in the order it was saved."""
    return _read(path)[1]


def check_compatible(model, state, source="file"):
    """Raises ValueError naming the first key where ``state`` and ``model``'s
    own state_dict differ (missing, unexpected, or a different shape)."""
    own = OrderedDict((k, tuple(np.shape(v))) for k, v in model.state_dict().items())
    for key, shape in own.items():
        if key not in state:
            raise ValueError(f"architecture mismatch: key {key!r} (shape {list(shape)}) is in "
                             f"the model but not in the {source}")
        theirs = tuple(np.shape(state[key]))
        if theirs != shape:
            raise ValueError(f"architecture mismatch at key {key!r}: shape {list(theirs)} in the "
                             f"{source}, {list(shape)} in the model")
    for key in state:
        if key not in own:
            raise ValueError(f"architecture mismatch: key {key!r} (shape "
                             f"{list(np.shape(state[key]))}) is in the {source} but not in "
                             f"the model")


def _build(arch, path):
    from . import models  # the model zoo imports nn; imported here to keep import order simple
    try:
        return models.create(arch["name"], **arch.get("kwargs", {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path!r}: cannot rebuild architecture {arch!r}: {exc}") from exc


def load(path, model=None):
    """Reads a file written by ``save`` and returns the model: ``model`` with
    the weights copied in, or (when None) a new model rebuilt through
    ``appealnet.models.create`` from the architecture recorded in the file.
    The model's train/eval mode is left as it is."""
    path = os.fspath(path)
    header, state = _read(path)
    if model is None:
        arch = header.get("arch")
        if not isinstance(arch, dict) or not isinstance(arch.get("name"), str):
            raise ValueError(f"{path!r} records no architecture (it was saved from a model "
                             f"without .arch, or by save_state_dict); pass model= to load "
                             f"into an existing model")
        model = _build(arch, path)
    check_compatible(model, state, source=f"file {path!r}")
    model.load_state_dict(state)
    return model
