"""Protobuf wire format: the two encoders trtlab uses to assemble ONNX messages from parts.

Serialized pieces of a model (nodes, tensors, a graph) are joined with their field keys and
lengths instead of copying the pieces into a new message and serializing it again; the bytes are
the same protobuf would write.
"""

from __future__ import annotations

__all__ = ["varint", "length_delimited"]


def varint(value: int) -> bytes:
    """``value`` (>= 0) as a protobuf base-128 varint."""
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    """Field ``number`` holding ``payload`` (wire type 2: key, length, payload)."""
    size = len(payload)
    if number < 16 and size < 128:
        return bytes((number << 3 | 2, size)) + payload
    return varint(number << 3 | 2) + varint(size) + payload
