"""The public gRPC API (Index, Search, Status) over the Pipeline."""

from __future__ import annotations

import asyncio
import os
import time

from codeindex_common.errors import InvalidArgument, NotFound, PermissionDenied
from codeindex_common.model import Query, kind_to_pb, mode_from_pb
from codeindex_common.pb import orchestrator_pb2, orchestrator_pb2_grpc

from . import metrics
from .pipeline import Pipeline, Progress, Settings, Summary, search



def summary_to_pb(s: Summary) -> orchestrator_pb2.IndexSummary:
    return orchestrator_pb2.IndexSummary(
        files_seen=s.files_seen, files_indexed=s.files_indexed, files_unchanged=s.files_unchanged,
        files_removed=s.files_removed, files_skipped=s.files_skipped, chunks_total=s.chunks_total,
        chunks_embedded=s.chunks_embedded, chunks_reused=s.chunks_reused, seconds=s.seconds)


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServicer):
    def __init__(self, stages, settings: Settings, addresses: dict[str, str], allowed_roots: list[str]):
        self.stages = stages
        self.settings = settings
        self.addresses = addresses
        self.allowed_roots = [os.path.realpath(r) for r in allowed_roots]
        self._index_lock = asyncio.Lock()  # one index run at a time per store

    def _allowed(self, path: str) -> str:
        """The real path of ``path`` if it lies under an allowed root (symbolic
        links and `..` resolved first, so neither can lead outside)."""
        if not path or "\0" in path:
            raise InvalidArgument("the path is empty or contains a NUL byte")
        real = os.path.realpath(path)
        if not any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in self.allowed_roots):
            raise PermissionDenied(f"{path!r} is not under an allowed root (--allowed-roots)")
        return real

    async def Index(self, request, context):
        root = self._allowed(request.path)
        if not os.path.exists(root):
            raise NotFound(f"no such directory: {request.path!r}")
        if not os.path.isdir(root):
            raise InvalidArgument(f"not a directory: {request.path!r}")
        updates: asyncio.Queue = asyncio.Queue(maxsize=1)

        def on_progress(p: Progress) -> None:
            if updates.empty():  # drop intermediate updates a slow client has not read
                updates.put_nowait(orchestrator_pb2.IndexProgress(
                    files_done=p.files_done, files_total=p.files_total, chunks_done=p.chunks_done))

        async with self._index_lock:
            run = asyncio.create_task(Pipeline(self.stages, self.settings, on_progress).index(
                root, reindex=request.reindex))
            while not run.done():
                getter = asyncio.ensure_future(updates.get())
                await asyncio.wait({getter, run}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                else:
                    getter.cancel()
            summary = run.result()
        yield orchestrator_pb2.IndexProgress(done=True, summary=summary_to_pb(summary),
                                             files_total=summary.files_indexed, files_done=summary.files_indexed)

    async def Search(self, request, context):
        if not request.query.strip():
            raise InvalidArgument("the query is empty")
        started = time.perf_counter()
        hits = await search(self.stages, Query.from_pb(request, mode_from_pb(request.mode)))
        metrics.SEARCH_SECONDS.observe(time.perf_counter() - started)
        return orchestrator_pb2.QueryResponse(hits=[
            orchestrator_pb2.QueryHit(path=h.chunk.path, start_line=h.chunk.start_line, end_line=h.chunk.end_line,
                                      symbol=h.chunk.symbol, qualified_name=h.chunk.qualified_name,
                                      kind=kind_to_pb(h.chunk.kind), language=h.chunk.language, score=h.score,
                                      text=h.chunk.text, snippet=h.snippet)
            for h in hits])

    async def Status(self, request, context):
        stats = await self.stages.store.stats()
        return orchestrator_pb2.StatusResponse(chunks=stats.chunks, files=stats.files, model_id=stats.model_id,
                                               dim=stats.dim, index_uri=stats.uri, services=self.addresses)
