"""The public gRPC API (Index, Search, Status) over the Pipeline: it converts
and delegates."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

from codeindex_common.errors import InvalidArgument, NotFound, PermissionDenied
from codeindex_common.model import Query, SymbolQuery
from codeindex_common.pb import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc

from . import metrics
from .pipeline import ModelCheck, Pipeline, Progress, Settings, find_symbol, search


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServicer):
    def __init__(self, stages, settings: Settings, addresses: dict[str, str], allowed_roots: list[str],
                 index_lock: asyncio.Lock | None = None, stat_cache: str = ""):
        """``index_lock``: held by every index run on this store, theirs and those of others in this
        process (a Host's watcher, which also sets ``last_run_at``). ``stat_cache``: the stat cache's file
        (orchestrator.statcache; it keeps the files of one root: a run over another root starts it afresh)."""
        self.stages = stages
        self.stat_cache = stat_cache
        self.settings = settings
        self.addresses = addresses
        self.allowed_roots = [os.path.realpath(r) for r in allowed_roots]
        self._index_lock = index_lock or asyncio.Lock()  # one run at a time per store, held until it has ended
        self.last_run_at = 0.0  # when the last index run on this store ended (Unix time)
        self.model_check = ModelCheck()

    def _allowed(self, path: str) -> str:
        """The real path of ``path`` if it lies under an allowed root (symbolic
        links and `..` resolved first, so neither can lead outside)."""
        if not path or "\0" in path:
            raise InvalidArgument("the path is empty or contains a NUL byte")
        real = os.path.realpath(path)
        if not any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in self.allowed_roots):
            raise PermissionDenied(f"{path!r} is not under an allowed root (--allowed-roots)")
        return real

    def _directory(self, path: str) -> str:
        root = self._allowed(path)
        if not os.path.exists(root):
            raise NotFound(f"no such directory: {path!r}")
        if not os.path.isdir(root):
            raise InvalidArgument(f"not a directory: {path!r}")
        return root

    async def Index(self, request, context):
        """Progress while the run goes (intermediate updates a slow client has not read are dropped), then
        the summary. A client that goes away stops the run; the next run starts once it has ended."""
        root = self._directory(request.path)
        updates: asyncio.Queue = asyncio.Queue(maxsize=1)
        progress = Progress()

        def on_progress(p: Progress) -> None:
            nonlocal progress
            progress = p
            if updates.empty():
                updates.put_nowait(p.snapshot().to_pb())

        async with self._index_lock:
            run = asyncio.create_task(Pipeline(self.stages, self.settings, on_progress, self.stat_cache).index(
                root, reindex=request.reindex))
            try:
                while not run.done():
                    getter = asyncio.ensure_future(updates.get())
                    await asyncio.wait({getter, run}, return_when=asyncio.FIRST_COMPLETED)
                    if getter.done():
                        yield getter.result()
                    else:
                        getter.cancel()
            finally:
                if not run.done():  # the client went away: the run stops before the lock is let go
                    run.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await run
            summary = run.result()
        self.last_run_at = time.time()
        yield progress.snapshot().to_pb(summary)

    async def Search(self, request, context):
        started = time.perf_counter()
        hits = await search(self.stages, Query.from_query_pb(request), self.model_check)
        metrics.SEARCH_SECONDS.observe(time.perf_counter() - started)
        return orchestrator_pb2.QueryResponse(hits=[h.to_query_hit_pb() for h in hits])

    async def FindSymbol(self, request, context):
        found = await find_symbol(self.stages, SymbolQuery.from_pb(request))
        return common_pb2.FindSymbolResponse(definitions=[h.to_pb() for h in found])

    async def Status(self, request, context):
        stats = await self.stages.store.stats()
        return stats.to_status_pb(self.addresses, self.last_run_at)
