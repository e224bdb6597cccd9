"""The hash backend: a near-instant deterministic stand-in for tests and benchmarks. No grpc here."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from .base import Steps, Tokenized


class HashBackend(Steps):
    """A near-instant deterministic stand-in: a unit vector seeded by the
    text's hash. For unit tests of batching and for benchmarks that measure
    everything but the model; it has no notion of meaning."""

    name = "hash"
    preferred_batch = 128
    preferred_batch_tokens = 0

    def __init__(self, dim: int = 384):
        self.model_id = f"hash-{dim}"
        self.dim = dim
        self.max_tokens = 256
        self.device = "cpu"
        self.tokenizer_json = b""

    def tokenize(self, texts: list[str]) -> Tokenized:
        tokens = [min(self.max_tokens, len(t) // 4 + 2) for t in texts]
        return Tokenized(texts, None, sum(tokens), len(texts) * max(tokens, default=0))

    def launch(self, batch: Tokenized) -> Any:
        out = np.empty((len(batch.texts), self.dim), dtype=np.float32)
        for i, t in enumerate(batch.texts):
            seed = int.from_bytes(hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
            v = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            out[i] = v / np.linalg.norm(v)
        return out

    def collect(self, handle: Any) -> np.ndarray:
        return handle
