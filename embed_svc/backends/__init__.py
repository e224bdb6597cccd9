"""Embedding backends behind one interface (:mod:`.base`), and :func:`make_backend`, which picks one by name.

- :mod:`.base`: the ``EmbeddingBackend`` interface, ``Tokenized``, ``Steps`` and shared helpers;
- :mod:`.torch`: sentence-transformers on CPU or CUDA;
- :mod:`.onnx`: the same model exported to ONNX, on ONNX Runtime (``python -m embed_svc.backends.onnx export``);
- :mod:`.triton`: a model served by a Triton Inference Server;
- :mod:`.hash`: a deterministic stand-in for tests and benchmarks.

The backends import :mod:`.base` only, never each other. Importing this package imports neither
torch, onnxruntime nor tritonclient: the torch, onnx and triton modules load on first use (when a
backend is made, or when one of their names is asked of this package).
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import TYPE_CHECKING, Any

from .base import (DEFAULT_MODEL_ID, DTYPES, EmbeddingBackend, Steps, Tokenized, default_model_path, normalize,
                   resolve_model, runs_of)
from .hash import HashBackend

if TYPE_CHECKING:
    from .onnx import OnnxBackend
    from .torch import TorchBackend
    from .triton import TritonBackend, TritonError, TritonUnavailable

__all__ = ["BACKENDS", "DEFAULT_MODEL_ID", "DTYPES", "EmbeddingBackend", "HashBackend", "OnnxBackend", "Steps",
           "Tokenized", "TorchBackend", "TritonBackend", "TritonError", "TritonUnavailable", "default_model_path",
           "make_backend", "normalize", "resolve_model", "runs_of"]

BACKENDS = ("auto", "torch", "onnx", "triton", "hash")

_LAZY = {"TorchBackend": "torch", "OnnxBackend": "onnx", "TritonBackend": "triton", "TritonError": "triton",
         "TritonUnavailable": "triton"}  # name -> the submodule that defines it, imported when asked for


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def gpu_present() -> bool:
    """Whether CUDA can be used here. torch is asked only where an NVIDIA driver is installed: importing it
    costs a CPU-only embedder about 350 MB of memory it would never use."""
    if not (os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")):
        return False
    import torch

    return torch.cuda.is_available()


def make_backend(name: str, model: str = "", device: str = "", threads: int = 0, dtype: str = "auto",
                 **options: Any) -> EmbeddingBackend:
    """``options``: backend-specific settings (onnx: quantize, cache_dir, runs; triton: url, model_name,
    in_flight)."""
    if name == "auto":  # the fastest with the model's own vectors: torch on a GPU, ONNX Runtime on a CPU
        name = "torch" if device.startswith("cuda") or (not device and gpu_present()) else "onnx"
    if (options.get("runs") or 0) > 1 and name != "onnx":  # 1 (one batch at a time) is what every backend does
        logging.getLogger("codeindex.embed").warning("runs: only the onnx backend runs batches side by side; "
                                                     "the %s backend runs one at a time", name)
    if name == "torch":
        from .torch import TorchBackend

        return TorchBackend(model, device, threads, dtype)
    if name == "onnx":
        from .onnx import OnnxBackend

        onnx_options = {k: v for k, v in options.items() if k in ("quantize", "cache_dir", "runs")}
        return OnnxBackend(model, threads, dtype, **onnx_options)
    if name == "triton":
        from .triton import TritonBackend

        return TritonBackend(model, **{k: v for k, v in options.items() if k in ("url", "model_name", "in_flight")})
    if name == "hash":
        return HashBackend()
    from codeindex_common.errors import InvalidArgument

    raise InvalidArgument(f"unknown embedding backend {name!r} (expected one of {', '.join(BACKENDS)})")
