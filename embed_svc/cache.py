"""The embedder's vector cache: vectors by the text's content hash, so identical texts are embedded once.

Owns :func:`text_key` (the content hash every text is known by, in the cache and in the
batcher's queue) and :class:`LRUCache`. No threads and no lock of its own: the batcher holds
its lock around every call.
"""

from __future__ import annotations

import collections
import hashlib

import numpy as np


def text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class LRUCache:
    """Vectors by text key, least recently used evicted first (not thread-safe: callers hold a lock)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._data: collections.OrderedDict[bytes, np.ndarray] = collections.OrderedDict()

    def get(self, key: bytes) -> np.ndarray | None:
        vec = self._data.get(key)
        if vec is not None:
            self._data.move_to_end(key)
        return vec

    def put(self, key: bytes, vec: np.ndarray) -> None:
        if self.capacity <= 0:
            return
        self._data[key] = vec
        self._data.move_to_end(key)
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)
