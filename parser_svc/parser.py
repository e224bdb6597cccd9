"""The Parser core: a pool of tree-sitter worker processes. No grpc here."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from . import metrics
from .chunker import FileResult, Limits, chunk_file, get_parser
from .languages import SPECS

log = logging.getLogger("codeindex.parser")


def _warm() -> None:
    """Worker initializer: load every grammar once, up front."""
    for spec in SPECS.values():
        try:
            get_parser(spec.grammar)
        except Exception:  # a grammar that fails to load fails its files later, with a reason
            log.exception("grammar %s failed to load", spec.grammar)


def _pid(_: int = 0) -> int:
    import os

    return os.getpid()


class Parser:
    """Chunks files in a process pool (started with forkserver, before the
    gRPC server). A worker that dies costs only the file it was parsing."""

    def __init__(self, workers: int, limits: Limits):
        self.workers = workers
        self.limits = limits
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        ctx = multiprocessing.get_context("forkserver")
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=_warm)

    def start(self) -> None:
        metrics.WORKERS.set(self.workers)
        self._pool = self._new_pool()
        # start every worker now, so the first files do not pay for it
        list(self._pool.map(_pid, range(self.workers * 2)))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    async def _run(self, path: str, data: bytes, language: str) -> FileResult:
        """One try in the current pool; a broken pool is replaced (once, by
        whoever notices first) and BrokenProcessPool re-raised."""
        pool = self._pool
        assert pool is not None, "Parser.start() first"
        try:
            return await asyncio.get_running_loop().run_in_executor(
                pool, chunk_file, path, data, language, self.limits)
        except BrokenProcessPool:
            if self._pool is pool:
                log.error("a parser worker died (while parsing %s?); replacing the pool", path)
                metrics.WORKER_RESTARTS.inc()
                self._pool = self._new_pool()
                pool.shutdown(wait=False, cancel_futures=True)
            raise

    async def parse(self, path: str, data: bytes, language: str = "") -> FileResult:
        started = time.perf_counter()
        metrics.IN_FLIGHT.inc()
        try:
            try:
                result = await self._run(path, data, language)
            except BrokenProcessPool:  # maybe another file killed the worker: one more try in the new pool
                result = await self._run(path, data, language)
        except BrokenProcessPool:
            result = FileResult(path, language, skip_reason="worker_died",
                                detail="the worker process parsing this file died, twice")
        except Exception as exc:  # noqa: BLE001 - a bug in chunking costs one file, not the run
            log.exception("parsing %s failed", path)
            result = FileResult(path, language, skip_reason="parse_failed", detail=f"{type(exc).__name__}: {exc}")
        finally:
            metrics.IN_FLIGHT.dec()
        metrics.PARSE_SECONDS.observe(time.perf_counter() - started)
        metrics.BYTES.inc(len(data))
        metrics.FILES.labels(result.skip_reason or "chunked").inc()
        for c in result.chunks:
            metrics.CHUNKS.labels(c.language, c.kind).inc()
        return result
