"""NVIDIA Triton Inference Server embedding backend. No grpc servicer code here.

The model runs in a Triton server (``deploy/triton/model_repository``; started
by ``scripts/triton-serve.sh``, or in the official Triton container on a GPU):
this backend sends texts and gets back vectors over Triton's gRPC protocol with
``tritonclient.grpc.aio``. The client's event loop runs on a thread of its own,
so ``launch`` only schedules the requests and returns (several batches may be
at the server at once, where Triton's dynamic batcher joins them) and
``collect`` waits for the answer.

The server tokenizes. The local copy of the source model's fast tokenizer
(the packaged all-MiniLM-L6-v2 by default) only counts tokens, for the
batcher's budget and the metrics, and is handed to the parser to size chunks.

What the server says wins: the vector size comes from the model's metadata,
the window (``max_tokens``) and the model id from its config's parameters,
and the largest request from its ``max_batch_size`` (a bigger batch is split).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from concurrent.futures import Future
from typing import Any

import numpy as np

from codeindex_common.errors import CodeindexError, Unavailable

from .base import Steps, Tokenized, normalize, resolve_model

log = logging.getLogger("codeindex.embed")

INPUT, OUTPUT = "TEXT", "EMBEDDING"
# status codes after which the same request may well succeed later: the service answers UNAVAILABLE
_TRANSIENT = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "RESOURCE_EXHAUSTED", "ABORTED")


class TritonError(CodeindexError):
    """Triton refused a request or the model failed on it (INTERNAL)."""


class TritonUnavailable(Unavailable):
    """The server cannot be reached, is not ready, or is overloaded (UNAVAILABLE)."""


def _client_modules() -> tuple[Any, Any, Any]:
    try:
        import tritonclient.grpc as grpcclient
        import tritonclient.grpc.aio as aioclient
        from tritonclient.utils import InferenceServerException
    except (ImportError, RuntimeError) as e:
        raise ImportError(
            "the triton backend needs tritonclient's gRPC client: "
            "pip install --no-deps tritonclient==2.73.0 python-rapidjson==1.25 "
            f"(its [grpc] extra pins protobuf<7, which the generated code does not need) ({e})") from e
    return grpcclient, aioclient, InferenceServerException


def _load_tokenizer(path: str) -> Any:
    """The source model's fast tokenizer (``tokenizers.Tokenizer``)."""
    from tokenizers import Tokenizer

    if os.path.isfile(os.path.join(path, "tokenizer.json")):
        return Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    from transformers import AutoTokenizer  # a model without tokenizer.json, or a hub name

    fast = getattr(AutoTokenizer.from_pretrained(path), "backend_tokenizer", None)
    if fast is None:
        raise ValueError(f"{path}: the triton backend needs a model with a fast tokenizer")
    return Tokenizer.from_str(fast.to_str())


class TritonBackend(Steps):
    """Embeddings from a model served by Triton (``model_name`` at ``url``).

    ``model``: the local copy of the source model (path or name, as for the
    torch backend; empty = the packaged all-MiniLM-L6-v2), for its tokenizer.
    ``in_flight``: requests this client keeps at the server at once (more wait
    in the client). ``ready_timeout``: seconds to wait for the server and the
    model to be ready. ``request_timeout``: seconds one request may take.
    """

    name = "triton"

    def __init__(self, model: str = "", url: str = "127.0.0.1:8001", model_name: str = "minilm", in_flight: int = 4,
                 ready_timeout: float = 60.0, request_timeout: float = 300.0):
        self._grpc, aio, self._exception = _client_modules()
        self.url, self.model_name = url, model_name
        self.device = f"triton:{url}"
        self.request_timeout = request_timeout
        self._in_flight = max(1, in_flight)
        self._where = f"Triton at {url}, model {model_name!r}"

        source, local_model_id = resolve_model(model)
        self._tokenizer = _load_tokenizer(source)
        self.tokenizer_json = self._tokenizer.to_str().encode("utf-8")  # what the parser counts tokens with

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="triton-client", daemon=True)
        self._thread.start()
        try:
            self._client = self._run(self._connect(aio))
            self._run(self._wait_ready(ready_timeout))
            metadata, config = self._run(self._describe())
        except BaseException:
            self.close()
            raise

        inputs = {t["name"]: t for t in metadata.get("inputs", [])}
        outputs = {t["name"]: t for t in metadata.get("outputs", [])}
        if inputs.get(INPUT, {}).get("datatype") != "BYTES" or outputs.get(OUTPUT, {}).get("datatype") != "FP32":
            self.close()
            raise TritonError(f"{self._where} is not a text embedding model: it needs input {INPUT} (BYTES) and "
                              f"output {OUTPUT} (FP32); it has {metadata.get('inputs')} -> {metadata.get('outputs')}")
        self.dim = int(outputs[OUTPUT]["shape"][-1])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.model_id = params.get("model_id") or local_model_id
        if self.model_id != local_model_id:  # a local copy, or another model: only the tokenizer comes from it
            log.info("triton backend: the server runs %s; the tokenizer (token counts, chunk sizes) comes from %s",
                     self.model_id, source)
        self.max_tokens = int(params.get("max_tokens") or self._local_max_tokens(source))
        self.max_request = int(config.get("max_batch_size") or 0)  # texts per request
        if self.max_request <= 0:
            self.close()
            raise TritonError(f"{self._where} has max_batch_size 0: the triton backend sends batches of texts "
                              "(TEXT [n, 1]) and needs a model config with max_batch_size > 0")
        self.preferred_batch = min(64, self.max_request)
        self.preferred_batch_tokens = 0  # max_batch_size x the window
        from tokenizers import Tokenizer

        self._counter = Tokenizer.from_str(self._tokenizer.to_str())  # a copy that truncates, for counting
        self._counter.no_padding()
        self._counter.enable_truncation(self.max_tokens)
        log.info("triton backend: %s (%s, dim %d, max tokens %d, batches of at most %d)", self._where,
                 self.model_id, self.dim, self.max_tokens, self.max_request)

    @staticmethod
    def _local_max_tokens(source: str) -> int:
        try:
            with open(os.path.join(source, "sentence_bert_config.json"), encoding="utf-8") as f:
                return int(json.load(f)["max_seq_length"])
        except (OSError, KeyError, TypeError, ValueError):
            return 512

    # ---------------------------------------------------------------- the client's event loop

    def _run(self, coro: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _connect(self, aio: Any) -> Any:
        self._slots = asyncio.Semaphore(self._in_flight)
        return aio.InferenceServerClient(self.url)

    async def _wait_ready(self, timeout: float) -> None:
        """Until the server and the model are ready; fails at once if the model failed to load."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            try:
                if not await self._client.is_server_live(client_timeout=5):
                    last = "the server is not live"
                elif await self._client.is_model_ready(self.model_name, client_timeout=5):
                    return
                else:
                    last = await self._model_state()
            except self._exception as e:
                last = f"{e.status() or ''} {e.message()}".strip()
            if time.monotonic() >= deadline:
                raise TritonUnavailable(f"{self._where} is not ready after {timeout:g} s ({last}); "
                                        "start it with scripts/triton-serve.sh (see deploy/triton/README.md)")
            await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    async def _model_state(self) -> str:
        index = await self._client.get_model_repository_index(as_json=True, client_timeout=5)
        models = {m.get("name"): m for m in index.get("models", [])}
        if self.model_name not in models:
            raise TritonError(f"{self._where}: the server has no such model (it has: {', '.join(sorted(models))})")
        state, reason = models[self.model_name].get("state", ""), models[self.model_name].get("reason", "")
        if state == "UNAVAILABLE" and reason:  # it failed to load; waiting will not help
            raise TritonError(f"{self._where} failed to load: {reason}")
        return f"the model is {state or 'not ready'}{': ' + reason if reason else ''}"

    async def _describe(self) -> tuple[dict, dict]:
        metadata = await self._client.get_model_metadata(self.model_name, as_json=True, client_timeout=30)
        config = await self._client.get_model_config(self.model_name, as_json=True, client_timeout=30)
        return metadata, config.get("config", {})

    async def _infer(self, texts: list[str]) -> np.ndarray:
        grpcclient = self._grpc
        data = np.array([t.encode("utf-8", "replace") for t in texts], dtype=np.object_).reshape(-1, 1)
        request = grpcclient.InferInput(INPUT, list(data.shape), "BYTES")
        request.set_data_from_numpy(data)
        async with self._slots:
            try:
                result = await self._client.infer(self.model_name, [request],
                                                  outputs=[grpcclient.InferRequestedOutput(OUTPUT)],
                                                  client_timeout=self.request_timeout)
            except self._exception as e:
                raise self._error(e, len(texts)) from e
        vectors = result.as_numpy(OUTPUT)
        if vectors is None or vectors.shape != (len(texts), self.dim):
            raise TritonError(f"{self._where} answered {len(texts)} texts with output of shape "
                              f"{None if vectors is None else vectors.shape}, not ({len(texts)}, {self.dim})")
        return vectors

    def _error(self, e: Any, n: int) -> CodeindexError:
        status = str(e.status() or "").removeprefix("StatusCode.")
        kind = TritonUnavailable if status in _TRANSIENT else TritonError
        return kind(f"{self._where} failed on {n} texts: {status or 'error'}: {e.message()}")

    # ---------------------------------------------------------------- the three steps

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self._counter.encode_batch(texts)]

    def tokenize(self, texts: list[str]) -> Tokenized:
        """Counts tokens only (the server tokenizes): real ones as the model sees them, truncated to its window."""
        if not texts:
            return Tokenized(texts, None, 0, 0)
        lengths = [len(e.ids) for e in self._counter.encode_batch(texts)]
        return Tokenized(texts, None, sum(lengths), len(texts) * max(lengths))

    def launch(self, batch: Tokenized) -> list[Future]:
        """Sends the batch (in requests of at most the model's max_batch_size texts); does not wait."""
        texts, step = batch.texts, self.max_request
        return [asyncio.run_coroutine_threadsafe(self._infer(texts[i:i + step]), self._loop)
                for i in range(0, len(texts), step)]

    def collect(self, handle: list[Future]) -> np.ndarray:
        parts = [future.result() for future in handle]
        if not parts:
            return np.empty((0, self.dim), dtype=np.float32)
        return normalize(np.concatenate(parts) if len(parts) > 1 else parts[0])

    def close(self) -> None:
        """Closes the connection and stops the client's thread (the backend is unusable after)."""
        if not self._loop.is_running():
            return
        client = getattr(self, "_client", None)
        if client is not None:
            try:
                self._run(client.close(), timeout=5)
            except Exception:  # closing anyway
                log.debug("closing the triton client failed", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
