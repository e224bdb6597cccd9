"""The torch backend: sentence-transformers on CPU or CUDA. No grpc here.

torch itself is imported when a backend is made, not with this module.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import DTYPES, Steps, Tokenized, TokenCounter, normalize, resolve_model


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
        self._counter = TokenCounter(fast.to_str(), self.max_tokens) if fast is not None else None
        # see max_batch_size; on an H200, 256-text batches (65,536 tokens) embedded 49% more per second than 128
        self.preferred_batch = 256 if self.device.startswith("cuda") else 16
        self._torch = torch
        self._stream = torch.cuda.Stream(device=self.device) if self.device.startswith("cuda") else None

    def count_tokens(self, texts: list[str]) -> list[int] | None:
        return self._counter(texts) if self._counter is not None else None

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
