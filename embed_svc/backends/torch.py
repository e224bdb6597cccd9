"""The torch backend: sentence-transformers on CPU or CUDA. No grpc here.

torch itself is imported when a backend is made, not with this module.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import DTYPES, Encoded, Steps, Tokenized, TokenCounter, normalize, padded_arrays, resolve_model


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
        if dtype not in DTYPES or dtype == "int8":
            raise ValueError(f"the torch backend runs {', '.join(d for d in DTYPES if d != 'int8')}, not {dtype!r}")
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
        # truncating on the side the model's tokenizer does: its encodings are what a FastPreprocess batch pads
        side = getattr(self.model.tokenizer, "truncation_side", "right")
        self._counter = TokenCounter(fast.to_str(), self.max_tokens, side) if fast is not None else None
        self._preprocess = FastPreprocess.checked(self.model, fast, self.max_tokens) or self.model.preprocess
        # see max_batch_size; on an H200, 256-text batches (65,536 tokens) embedded 49% more per second than 128
        self.preferred_batch = 256 if self.device.startswith("cuda") else 16
        self.preferred_batch_tokens = 0  # max_batch_size x the window
        self._torch = torch
        self._stream = torch.cuda.Stream(device=self.device) if self.device.startswith("cuda") else None

    def count_tokens(self, texts: list[str]) -> list[int] | None:
        return self._counter(texts) if self._counter is not None else None

    def encode_unpadded(self, texts: list[str]) -> list[Encoded] | None:
        """Only where the batch is made by FastPreprocess, which pads them (:meth:`FastPreprocess.from_encodings`)."""
        if self._counter is None or not isinstance(self._preprocess, FastPreprocess):
            return None
        return self._counter.encode(texts)

    def tokenize(self, texts: list[str], encodings: list | None = None) -> Tokenized:
        features = None
        if encodings is not None and isinstance(self._preprocess, FastPreprocess):
            features = self._preprocess.from_encodings(encodings)  # counted by the batcher: padded, not encoded
        if features is None:
            features = self._preprocess(texts)  # padded to the batch's longest, truncated to max_seq_length
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


# texts on which FastPreprocess must give what model.preprocess gives: lengths that pad, one past the window
# (truncated), accents, CJK, emoji, whitespace alone, nothing
PROBES = ["def parse_header(line):\n    return line.split(':', 1)", "x " * 600, "Café naïve — ünïcödé 東京 🙂",
          "   \n\t ", "", "class Router:\n    \"\"\"Pick a handler.\"\"\"\n    pass"]
ENCODING = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


class FastPreprocess:
    """``model.preprocess`` for a model whose tokenizer is a Hugging Face fast one, without transformers: its
    ``encode_batch`` (Rust, in parallel over the cores, the GIL released) and int64 arrays. 1.7x as many texts
    a second as ``preprocess`` on one core, 2.3x on two (docs/EMBEDDING.md): on a GPU the host side is the
    limit. Used only where it gives exactly what ``preprocess`` gives on :data:`PROBES` (:meth:`checked`), so
    the vectors stay what they are."""

    def __init__(self, model: Any, fast: Any, max_tokens: int):
        import torch
        from tokenizers import Tokenizer

        hf = model.tokenizer
        self._torch = torch
        self._tokenizer = Tokenizer.from_str(fast.to_str())
        self._tokenizer.enable_truncation(max_tokens, direction=getattr(hf, "truncation_side", "right"))
        self._tokenizer.enable_padding(direction=getattr(hf, "padding_side", "right"), pad_id=hf.pad_token_id,
                                       pad_token=hf.pad_token)
        probe = model.preprocess(PROBES[:1])
        self._keys = [k for k, v in probe.items() if isinstance(v, torch.Tensor)]
        self._rest = {k: v for k, v in probe.items() if not isinstance(v, torch.Tensor)}  # e.g. the modality

    @classmethod
    def checked(cls, model: Any, fast: Any, max_tokens: int) -> FastPreprocess | None:
        """One if the model's tokenizer is a fast one and this gives what ``preprocess`` gives, else None."""
        if fast is None or getattr(model[0], "do_lower_case", False):
            return None
        try:
            made = cls(model, fast, max_tokens)
            if not set(made._keys) <= set(ENCODING):
                return None
            want, got = model.preprocess(PROBES), made(PROBES)
        except Exception:  # noqa: BLE001 - any model this cannot mimic keeps preprocess
            return None
        same = all(made._torch.equal(want[k], got[k]) for k in made._keys) and want.keys() == got.keys()
        return made if same else None

    def from_encodings(self, encodings: list[Encoded]) -> dict[str, Any] | None:
        """What calling this gives, from the texts' unpadded encodings (the backend's token counter's, which
        truncates alike; None: a padding it cannot mimic)."""
        arrays = padded_arrays(encodings, {k: ENCODING[k] for k in self._keys}, self._tokenizer.padding)
        if arrays is None:
            return None
        return {**{k: self._torch.from_numpy(v) for k, v in arrays.items()}, **self._rest}

    def __call__(self, texts: list[str]) -> dict[str, Any]:
        encodings = self._tokenizer.encode_batch(texts)
        out = {k: self._torch.from_numpy(np.array([getattr(e, ENCODING[k]) for e in encodings], dtype=np.int64))
               for k in self._keys}
        return {**out, **self._rest}
