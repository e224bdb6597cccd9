"""``python -m embed_svc``: run the embedding service."""

from __future__ import annotations

import asyncio
import logging
import sys

from codeindex_common import config, server
from codeindex_common.pb import embed_pb2, embed_pb2_grpc

from . import metrics
from .backends import EmbeddingBackend, make_backend, runs_of
from .batcher import Batcher
from .config import EmbedConfig
from .servicer import EmbedderServicer

SERVICE_NAME = embed_pb2.DESCRIPTOR.services_by_name["Embedder"].full_name
log = logging.getLogger("codeindex.embed")


def warm_up(backend: EmbeddingBackend, batch_size: int, batch_tokens: int) -> None:
    """Before SERVING: a small batch, then a full long one in each run at once, within the batcher's caps
    (kernels compiled, memory allocated as the runs will need it, no more)."""
    backend.encode(["def warm_up(): return 1", "warm up " * 64])
    longest = min(batch_size, 32, max(1, batch_tokens // max(1, backend.max_tokens)))
    batch = backend.tokenize(["def warm_up(x):\n    return x * 2\n" * 40] * longest)
    for handle in [backend.launch(batch) for _ in range(runs_of(backend))]:
        backend.collect(handle)


def in_flight(cfg: EmbedConfig, backend: EmbeddingBackend) -> int:
    """Batches launched and not yet collected: the setting, and at least one more than the backend's runs at
    once, so that a run that ends finds the next batch handed over already."""
    runs = runs_of(backend)
    return max(cfg.in_flight, runs + 1) if runs > 1 else cfg.in_flight


def build(cfg: EmbedConfig) -> server.Service:
    """The model loads in start(), after the server is up (health says
    NOT_SERVING until it is loaded and warmed up)."""
    servicer = EmbedderServicer(None, None, cfg.max_in_flight)  # type: ignore[arg-type]

    async def start() -> None:
        backend: EmbeddingBackend = await asyncio.to_thread(
            make_backend, cfg.backend, cfg.model, cfg.device, cfg.threads, cfg.dtype, quantize=cfg.onnx_quantize,
            cache_dir=cfg.onnx_cache, url=cfg.triton_url, model_name=cfg.triton_model, in_flight=cfg.in_flight,
            runs=cfg.runs)
        size = cfg.max_batch_size or backend.preferred_batch
        tokens = cfg.max_batch_tokens or backend.preferred_batch_tokens or size * backend.max_tokens
        await asyncio.to_thread(warm_up, backend, size, tokens)
        batcher = Batcher(backend, size, tokens, cfg.max_wait_ms, cfg.max_queue, in_flight(cfg, backend),
                          cfg.cache_size, cfg.tokenizer_threads)
        batcher.start()
        servicer.backend, servicer.batcher = backend, batcher
        metrics.INFO.labels(backend.model_id, backend.name, backend.device).set(1)
        log.info("model %s loaded on %s (dim %d, max tokens %d, %d run(s) at once)", backend.model_id,
                 backend.device, backend.dim, backend.max_tokens, runs_of(backend))

    async def stop() -> None:
        """The batcher first (it finishes the batches running), then the backend (a Triton client's connection
        and thread)."""
        if servicer.batcher is not None:
            await asyncio.to_thread(servicer.batcher.stop)
        if servicer.backend is not None:
            await asyncio.to_thread(servicer.backend.close)

    return server.Service(
        name="embed", service_names=[SERVICE_NAME],
        register=lambda s: embed_pb2_grpc.add_EmbedderServicer_to_server(servicer, s),
        start=start, stop=stop)


def main(argv: list[str] | None = None) -> None:
    cfg = config.load(EmbedConfig, "embed", argv, description="codeindex embedding service")
    server.main(build(cfg), cfg)


if __name__ == "__main__":
    main(sys.argv[1:])
