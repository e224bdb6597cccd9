"""Thin gRPC layer over the :class:`embed_svc.batcher.Batcher`."""

from __future__ import annotations

from codeindex_common import vectors
from codeindex_common.errors import Unavailable
from codeindex_common.model import EmbedInfo
from codeindex_common.pb import embed_pb2, embed_pb2_grpc
from codeindex_common.streams import map_unordered

from . import metrics
from .backends import EmbeddingBackend
from .batcher import Batcher


class EmbedderServicer(embed_pb2_grpc.EmbedderServicer):
    def __init__(self, batcher: Batcher, backend: EmbeddingBackend, max_in_flight: int):
        self.batcher = batcher
        self.backend = backend
        self.max_in_flight = max_in_flight

    def _ready(self) -> None:
        if self.batcher is None or self.backend is None:
            raise Unavailable("the embedding model is still loading")

    async def _embed(self, req: embed_pb2.EmbedRequest, urgent: bool = False) -> embed_pb2.EmbedResponse:
        self._ready()
        vecs = await self.batcher.embed(list(req.texts), urgent)
        return embed_pb2.EmbedResponse(request_id=req.request_id, count=len(vecs), dim=self.backend.dim,
                                       vectors=vectors.pack(vecs))

    async def Embed(self, request_iterator, context):
        metrics.STREAMS.inc()
        try:
            async for response in map_unordered(request_iterator, self._embed, self.max_in_flight):
                yield response
        finally:
            metrics.STREAMS.dec()

    async def EmbedOnce(self, request, context):
        """Queries: batched before every text the Embed streams have queued (see Batcher)."""
        return await self._embed(request, urgent=True)

    async def Info(self, request, context):
        self._ready()
        b = self.backend
        return EmbedInfo(b.model_id, b.dim, b.max_tokens, b.name, b.device, b.tokenizer_json).to_pb()
