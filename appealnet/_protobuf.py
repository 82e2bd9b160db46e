"""The few pieces of the protocol-buffer wire format that writing an ONNX
file needs, so that exporting requires no protobuf or onnx package.

A message is a concatenation of fields; each field is a key
``(field_number << 3) | wire_type`` written as a varint, then the value:

    wire type 0 (varint)            int32/int64/enum/bool, base-128, low groups first
    wire type 2 (length-delimited)  strings, bytes, embedded messages: varint length + bytes
    wire type 5 (32-bit)            float, little-endian

Negative integers are written as their 64-bit two's complement (ten bytes),
as protobuf does for int32/int64 fields.  Messages are built bottom-up as
``bytes``: ``message(field_string(1, "x"), field_message(2, inner))``; a message
holding large payloads can be kept as a list of chunks (``field_message_chunks``)
and written piece by piece.
"""
import struct

_VARINT = 0
_LENGTH_DELIMITED = 2
_FIXED32 = 5


def varint(value):
    """Base-128 encoding of an integer (negative values as 64-bit two's complement)."""
    value = int(value)
    if value < 0:
        value += 1 << 64
    if not 0 <= value < (1 << 64):
        raise ValueError(f"protobuf varint out of 64-bit range: {value}")
    out = bytearray()
    while True:
        low_bits = value & 0x7F
        value >>= 7
        if value:
            out.append(low_bits | 0x80)
        else:
            out.append(low_bits)
            return bytes(out)


def _key(field_number, wire_type):
    return varint((field_number << 3) | wire_type)


def field_int(field_number, value):
    """An int32/int64/enum field."""
    return _key(field_number, _VARINT) + varint(value)


def field_float(field_number, value):
    return _key(field_number, _FIXED32) + struct.pack("<f", float(value))


def field_bytes(field_number, value):
    """A bytes field or an embedded message already encoded as bytes."""
    value = bytes(value)
    return _key(field_number, _LENGTH_DELIMITED) + varint(len(value)) + value


def field_string(field_number, text):
    return field_bytes(field_number, str(text).encode("utf-8"))


field_message = field_bytes


def repeated_int(field_number, values):
    """A repeated integer field, one key per element (the unpacked form every
    parser accepts, whether the field is declared packed or not)."""
    return b"".join(field_int(field_number, v) for v in values)


def repeated_float(field_number, values):
    return b"".join(field_float(field_number, v) for v in values)


def message(*fields):
    return b"".join(fields)


def field_message_chunks(field_number, chunks):
    """An embedded message given as a list of byte-like chunks, returned as a
    list of chunks: large payloads (weights) are written once, never joined."""
    total = sum(memoryview(c).nbytes for c in chunks)
    return [_key(field_number, _LENGTH_DELIMITED) + varint(total)] + list(chunks)
