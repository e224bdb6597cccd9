"""gRPC clients of the three stages, exposing domain types only, so the
pipeline itself has no grpc imports. RPC failures become StageError naming
the stage."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator

import grpc
import numpy as np

from codeindex_common import vectors
from codeindex_common.errors import CodeindexError
from codeindex_common.model import Chunk, FileRecord, FileResult, Query, mode_to_pb
from codeindex_common.pb import embed_pb2, embed_pb2_grpc, parser_pb2, parser_pb2_grpc, store_pb2, store_pb2_grpc
from codeindex_common.server import CHANNEL_OPTIONS


class StageError(CodeindexError):
    """A stage failed; the message names it."""

    status = "UNAVAILABLE"

    def __init__(self, stage: str, address: str, err: Exception):
        if isinstance(err, grpc.aio.AioRpcError):
            detail = f"{err.code().name}: {err.details()}"
            if err.code() == grpc.StatusCode.FAILED_PRECONDITION:
                self.status = "FAILED_PRECONDITION"
            elif err.code() == grpc.StatusCode.INVALID_ARGUMENT:
                self.status = "INVALID_ARGUMENT"
        else:
            detail = f"{type(err).__name__}: {err}"
        super().__init__(f"the {stage} stage at {address} failed: {detail}")
        self.stage = stage


# round_robin: a name that resolves to several addresses (a headless Service,
# `dns:///parser.ns.svc:50051`) gets a subchannel per address, and each new
# call (each stream) goes to the next one
ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


def addresses(spec: str) -> list[str]:
    """A stage's targets: one address, a `dns:///name:port` target (every
    address it resolves to), or several of either separated by commas."""
    targets = [a.strip() for a in spec.split(",") if a.strip()]
    if not targets:
        raise CodeindexError(f"no address in {spec!r}")
    return targets


def channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address, options=[*CHANNEL_OPTIONS, ("grpc.service_config", ROUND_ROBIN)])


class _Client:
    """A stage's replicas: a channel per configured target; calls (a stream is
    one call) take the targets in turn, and within a target gRPC's round_robin
    policy takes the resolved addresses in turn."""

    stage = ""
    stub_class: type = object

    def __init__(self, address: str, timeout: float):
        self.address = address
        self.timeout = timeout
        self.channels = [channel(a) for a in addresses(address)]
        self._stubs = itertools.cycle([self.stub_class(ch) for ch in self.channels])

    @property
    def stub(self):
        """The next replica's stub."""
        return next(self._stubs)

    def error(self, err: Exception) -> StageError:
        return StageError(self.stage, self.address, err)

    async def close(self) -> None:
        for ch in self.channels:
            await ch.close()


class ParserClient(_Client):
    stage = "parser"
    stub_class = parser_pb2_grpc.ParserStub

    async def parse(self, files: AsyncIterator[tuple[str, bytes]], max_tokens: int = 0,
                    tokenizer_json: bytes = b"") -> AsyncIterator[FileResult]:
        """Chunks of each file, as each is done; chunks are sized for a model
        window of ``max_tokens`` counted with ``tokenizer_json`` (both from the
        embedder's Info)."""
        async def requests():
            options = parser_pb2.ChunkOptions(max_tokens=max_tokens, tokenizer_json=tokenizer_json)
            async for path, content in files:
                yield parser_pb2.ParseRequest(path=path, content=content, options=options)
                options = None

        try:
            async for r in self.stub.Parse(requests()):
                yield FileResult(r.path, r.language, tuple(map(Chunk.from_pb, r.chunks)), r.skip_reason,
                                 r.detail)
        except grpc.aio.AioRpcError as err:
            raise self.error(err) from err


class EmbedInfo:
    def __init__(self, pb: embed_pb2.InfoResponse):
        self.model_id, self.dim, self.max_tokens = pb.model_id, pb.dim, pb.max_tokens
        self.backend, self.device = pb.backend, pb.device
        self.tokenizer_json = pb.tokenizer_json


class EmbedderClient(_Client):
    stage = "embed"
    stub_class = embed_pb2_grpc.EmbedderStub

    async def info(self) -> EmbedInfo:
        try:
            return EmbedInfo(await self.stub.Info(embed_pb2.InfoRequest(), timeout=self.timeout))
        except grpc.aio.AioRpcError as err:
            raise self.error(err) from err

    async def embed_once(self, texts: list[str]) -> np.ndarray:
        try:
            r = await self.stub.EmbedOnce(embed_pb2.EmbedRequest(texts=texts), timeout=self.timeout)
        except grpc.aio.AioRpcError as err:
            raise self.error(err) from err
        return vectors.unpack(r.vectors, r.dim, r.count)

    async def embed(self, requests: AsyncIterator[tuple[str, list[str]]]) -> AsyncIterator[tuple[str, np.ndarray]]:
        """(request id, texts) in; (request id, vectors) out, in any order."""
        async def pbs():
            async for rid, texts in requests:
                yield embed_pb2.EmbedRequest(request_id=rid, texts=texts)

        try:
            async for r in self.stub.Embed(pbs()):
                yield r.request_id, vectors.unpack(r.vectors, r.dim, r.count)
        except grpc.aio.AioRpcError as err:
            raise self.error(err) from err


class StoreClient(_Client):
    stage = "store"
    stub_class = store_pb2_grpc.StoreStub

    async def _call(self, method, request, timeout: float | None = None):
        try:
            return await method(request, timeout=timeout or self.timeout)
        except grpc.aio.AioRpcError as err:
            raise self.error(err) from err

    async def write(self, records: AsyncIterator[FileRecord]) -> AsyncIterator[tuple[str, int]]:
        """FileRecords in; (path, rows) acknowledgements out once committed."""
        async def pbs():
            async for r in records:
                yield store_pb2.FileRecord(
                    path=r.path, file_hash=r.file_hash, chunks=[c.to_pb() for c in r.chunks],
                    dim=r.vectors.shape[1] if r.vectors.ndim == 2 else 0, vectors=vectors.pack(r.vectors),
                    skip_reason=r.skip_reason, model_id=r.model_id)

        try:
            async for ack in self.stub.Write(pbs()):
                yield ack.path, ack.rows
        except grpc.aio.AioRpcError as err:
            raise self.error(err) from err

    async def manifest(self) -> dict[str, tuple[str, str]]:
        r = await self._call(self.stub.Manifest, store_pb2.ManifestRequest())
        return {e.path: (e.file_hash, e.skip_reason) for e in r.entries}

    async def delete(self, paths: list[str]) -> int:
        r = await self._call(self.stub.Delete, store_pb2.DeleteRequest(paths=paths))
        return r.files_deleted

    async def lookup_vectors(self, hashes: list[str]) -> dict[str, np.ndarray]:
        if not hashes:
            return {}
        r = await self._call(self.stub.LookupVectors, store_pb2.LookupVectorsRequest(content_hashes=hashes))
        if not r.content_hashes:
            return {}
        vecs = vectors.unpack(r.vectors, r.dim, len(r.content_hashes))
        return dict(zip(r.content_hashes, vecs))

    async def search(self, vector: np.ndarray | None, q: Query) -> list[tuple[Chunk, float, str]]:
        """(chunk, score, snippet) of the top hits."""
        r = await self._call(self.stub.Search, store_pb2.SearchRequest(
            query_vector=vectors.pack(vector) if vector is not None else b"", k=q.k, language=q.language,
            query_text=q.text, mode=mode_to_pb(q.mode), path_glob=q.path_glob, kind=q.kind, symbol=q.symbol,
            min_score=q.min_score))
        return [(Chunk.from_pb(h.chunk), h.score, h.snippet) for h in r.hits]

    async def optimize(self) -> store_pb2.OptimizeResponse:
        # building the vector index of a large table takes minutes, not the usual deadline
        return await self._call(self.stub.Optimize, store_pb2.OptimizeRequest(), timeout=max(self.timeout, 3600))

    async def reset(self) -> int:
        return (await self._call(self.stub.Reset, store_pb2.ResetRequest())).chunks_dropped

    async def stats(self) -> store_pb2.StatsResponse:
        return await self._call(self.stub.Stats, store_pb2.StatsRequest())


class Stages:
    """The three stage clients of one run."""

    def __init__(self, parser_addr: str, embed_addr: str, store_addr: str, timeout: float = 60.0):
        self.parser = ParserClient(parser_addr, timeout) if parser_addr else None
        self.embedder = EmbedderClient(embed_addr, timeout)
        self.store = StoreClient(store_addr, timeout)

    async def close(self) -> None:
        for c in (self.parser, self.embedder, self.store):
            if c is not None:
                await c.close()
