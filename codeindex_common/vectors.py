"""Vectors travel as packed little-endian float32 bytes."""

from __future__ import annotations

import numpy as np

from .errors import InvalidArgument

F32 = np.dtype("<f4")


def pack(vectors: np.ndarray) -> bytes:
    return np.ascontiguousarray(vectors, dtype=F32).tobytes()


def packed_view(vectors: np.ndarray) -> memoryview:
    """:func:`pack`'s bytes as a view of the array's memory where it is laid out so already (no copy)."""
    return memoryview(np.ascontiguousarray(vectors, dtype=F32)).cast("B")


def unpack(data: bytes, dim: int, count: int | None = None) -> np.ndarray:
    """Read ``data`` as a (count, dim) float32 matrix, checking its size."""
    if dim <= 0:
        raise InvalidArgument(f"vector dimension must be positive, got {dim}")
    if len(data) % (4 * dim):
        raise InvalidArgument(f"{len(data)} vector bytes are not a whole number of {dim}-dim float32 vectors")
    arr = np.frombuffer(data, dtype=F32).reshape(-1, dim)
    if count is not None and arr.shape[0] != count:
        raise InvalidArgument(f"expected {count} vectors, got {arr.shape[0]}")
    return arr
