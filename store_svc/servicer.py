"""Thin gRPC layer over :class:`store_svc.store.VectorStore`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from codeindex_common import vectors
from codeindex_common.errors import Unavailable
from codeindex_common.model import FileRecord, Query, SymbolQuery, manifest_to_pb
from codeindex_common.pb import common_pb2, store_pb2, store_pb2_grpc

from . import metrics
from .store import VectorStore

log = logging.getLogger("codeindex")


class StoreServicer(store_pb2_grpc.StoreServicer):
    def __init__(self, store: VectorStore | None, flush_rows: int, flush_ms: float, write_concurrency: int = 4):
        self._store = store
        self.flush_rows = flush_rows
        self.flush_seconds = flush_ms / 1000
        self._writes = asyncio.Semaphore(max(1, write_concurrency))  # commits at once, over all streams
        self.last_write = time.monotonic()  # the last write, delete, reset or upkeep asked for (or the start)

    @property
    def store(self) -> VectorStore:
        if self._store is None:
            raise Unavailable("the index is still opening")
        return self._store

    @store.setter
    def store(self, value: VectorStore) -> None:
        self._store = value

    async def upkeep_when_idle(self, idle_s: float) -> None:
        """Runs until cancelled: once nothing has been written for ``idle_s`` while some rows are not in
        the indexes yet (a run deferred its upkeep, or the store opened on such a table), the quiet upkeep
        (``optimize(quiet=True)``), which folds them in (and makes an ANN index of more than
        ``MAX_ANN_DELTAS`` segments one again); checked again only after the next write."""
        checked = None
        while True:
            await asyncio.sleep(max(0.05, min(idle_s / 4, 5.0)))
            since = self.last_write
            if self._store is None or since == checked or time.monotonic() - since < idle_s:
                continue
            checked = since
            try:
                if await asyncio.to_thread(self.store.quiet_upkeep_wanted):
                    log.info("idle for %.0fs with rows not in the indexes or an ANN index of several segments: "
                             "the upkeep", idle_s)
                    await asyncio.to_thread(self.store.optimize, True)
            except Exception as exc:  # noqa: BLE001 - tried again after the next write
                log.warning("the idle upkeep failed: %s", exc)

    async def _commit(self, batch: list[FileRecord]) -> list[store_pb2.WriteAck]:
        self.last_write = time.monotonic()
        async with self._writes:
            metrics.ACTIVE_WRITES.inc()
            try:
                await asyncio.to_thread(self.store.write, batch)
            finally:
                metrics.ACTIVE_WRITES.dec()
                self.last_write = time.monotonic()
        metrics.WRITE_FILES.observe(len(batch))
        return [store_pb2.WriteAck(path=r.path, rows=len(r.chunks)) for r in batch]

    async def Write(self, request_iterator, context):
        """Files are coalesced into one commit per ``flush_rows`` rows or
        ``flush_ms``, whichever comes first; each file is acknowledged once
        its commit is durable."""
        async for acks in self._coalesced(request_iterator):
            for ack in acks:
                yield ack

    async def WriteMany(self, request_iterator, context):
        """Write's, several files a message in, and a commit's acknowledgements in one message out."""
        async def records():
            async for pb in request_iterator:
                for record in pb.records:
                    yield record

        async for acks in self._coalesced(records()):
            yield store_pb2.WriteAcks(acks=acks)

    async def _coalesced(self, records) -> AsyncIterator[list[store_pb2.WriteAck]]:
        """The records (``store_pb2.FileRecord``) a stream brings, coalesced into commits: each commit's
        acknowledgements once it is durable."""
        incoming: asyncio.Queue = asyncio.Queue(maxsize=256)
        END = object()

        async def read() -> None:
            async for pb in records:
                await incoming.put(FileRecord.from_pb(pb, messages=True))
            await incoming.put(END)

        metrics.ACTIVE_STREAMS.inc()
        reader = asyncio.create_task(read())
        try:
            finished = False
            while not finished:
                first = await _next(incoming, reader)
                if first is END:
                    break
                batch, rows = [first], len(first.chunks)
                deadline = time.monotonic() + self.flush_seconds
                while rows < self.flush_rows:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    item = await _next(incoming, reader, left)
                    if item is _TIMEOUT:
                        break
                    if item is END:
                        finished = True
                        break
                    batch.append(item)
                    rows += len(item.chunks)
                yield await self._commit(batch)
        finally:
            reader.cancel()
            metrics.ACTIVE_STREAMS.dec()

    async def Delete(self, request, context):
        self.last_write = time.monotonic()
        n = await asyncio.to_thread(self.store.delete, list(request.paths))
        return store_pb2.DeleteResponse(files_deleted=n)

    async def Manifest(self, request, context):
        pages = await asyncio.to_thread(self.store.manifest_pages, request.after)
        while (page := await asyncio.to_thread(next, pages, None)) is not None:
            yield manifest_to_pb(*page)

    async def LookupVectors(self, request, context):
        hashes, vecs = await asyncio.to_thread(self.store.lookup_vectors, list(request.content_hashes))
        return store_pb2.LookupVectorsResponse(content_hashes=hashes, dim=self.store.dim, vectors=vectors.pack(vecs))

    async def Search(self, request, context):
        started = time.perf_counter()
        query, vector = Query.from_search_pb(request, self.store.dim)  # checked as it is made
        hits = await asyncio.to_thread(self.store.search, vector, query)
        metrics.SEARCH_SECONDS.labels(query.mode).observe(time.perf_counter() - started)
        return store_pb2.SearchResponse(hits=[h.to_pb() for h in hits])

    async def FindSymbol(self, request, context):
        found = await asyncio.to_thread(self.store.find_symbol, SymbolQuery.from_pb(request))
        return common_pb2.FindSymbolResponse(definitions=[h.to_pb() for h in found])

    async def Optimize(self, request, context):
        started, self.last_write = time.perf_counter(), time.monotonic()
        s = await asyncio.to_thread(self.store.optimize, request.quiet)
        return store_pb2.OptimizeResponse(seconds=time.perf_counter() - started, vector_index=s.vector_index,
                                          versions=s.versions)

    async def Reset(self, request, context):
        self.last_write = time.monotonic()
        dropped = await asyncio.to_thread(self.store.reset)
        return store_pb2.ResetResponse(chunks_dropped=dropped)

    async def Stats(self, request, context):
        stats = await asyncio.to_thread(self.store.stats)
        return stats.to_pb()


_TIMEOUT = object()


async def _next(queue: asyncio.Queue, reader: asyncio.Task, timeout: float | None = None):
    """The next queued item, or _TIMEOUT; raises if the reader failed first.
    Never loses an item: the getter is only cancelled while still waiting."""
    if not queue.empty() or reader.done():
        if queue.empty():
            reader.result()  # raises the reader's error
        return await queue.get()
    getter = asyncio.ensure_future(queue.get())
    try:
        await asyncio.wait({getter, reader}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not getter.done():
            getter.cancel()
    if getter.done() and not getter.cancelled():
        return getter.result()
    if reader.done():
        return await _next(queue, reader)
    return _TIMEOUT
