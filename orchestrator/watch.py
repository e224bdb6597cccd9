"""The live index: file changes under a repository become incremental runs.

``watchfiles`` reports changes (inotify on Linux) in batches: a batch is
yielded once nothing more has changed for ``step_ms``, and never later than
``debounce_ms`` after its first change, so an editor's save (write, rename,
chmod) or a branch switch that touches hundreds of files arrives as one
batch. Paths the walk would skip (``.git``, the index's own folder, every
``.gitignore`` on the way) are left out. A changed ``.gitignore`` is read
again and makes the next run one over the whole repository: the files it
now ignores leave the index and those it no longer ignores join it, though
no event named them. Each other batch is indexed as one run over its paths
alone; changes that
arrive while a run goes are gathered and indexed by the next run, so an edit
made while its file is being indexed is indexed again, never lost. Once the
repository has been quiet for ``quiet_s`` after runs, the store compacts and
refreshes its indexes.

Nothing a watched tree does stops the watcher: an unreadable file is skipped
with its reason, a folder removed under it is a deletion, a symbolic link
loop is never followed, and a failing run (a stage down) is logged and
retried with the next change or after ``retry_s``."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable

import watchfiles

from codeindex_common.model import IndexSummary

from .walker import ALWAYS_SKIPPED_DIRS, IgnoreCache

log = logging.getLogger("codeindex.orchestrator")


EVERYTHING = ""  # a pending "path" that asks for a run over the whole repository


class Watcher:
    """Feeds changed paths of ``root`` into ``index(paths)`` (one run at a time); ``maintain()`` after a
    quiet spell. ``on_run(summary, seconds)`` hears of every run."""

    def __init__(self, root: str, index: Callable[[set[str] | None], Awaitable[IndexSummary]],
                 maintain: Callable[[], Awaitable[object]] | None = None, ignores: IgnoreCache | None = None,
                 step_ms: int = 50, debounce_ms: int = 800, quiet_s: float = 30.0, retry_s: float = 5.0,
                 on_run: Callable[[IndexSummary, float], None] | None = None):
        self.root = os.path.abspath(root)
        self._index, self._maintain = index, maintain
        self.ignores = ignores or IgnoreCache(self.root)
        self.step_ms, self.debounce_ms, self.quiet_s, self.retry_s = step_ms, debounce_ms, quiet_s, retry_s
        self.on_run = on_run or (lambda summary, seconds: None)
        self.pending: set[str] = set()
        self.runs = 0
        self.failures = 0
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()  # set once the first batch of changes can be seen

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        """Watch and index until ``stop()``."""
        indexing = asyncio.create_task(self._indexer())
        try:
            while not self._stop.is_set():
                try:
                    await self._watch()
                except (OSError, RuntimeError, ExceptionGroup) as exc:
                    # the tree moved under the watch, or watchfiles could not decode a path (a name that is
                    # not UTF-8, which it raises inside an exception group): watch again, and since changes
                    # made meanwhile were not seen, run over everything next
                    log.warning("watching %s failed (%s); watching again", self.root, exc)
                    await self._sleep(self.retry_s)
                    self.pending.add(EVERYTHING)
                    self._wake.set()
        finally:
            self.stop()
            await indexing

    async def _watch(self) -> None:
        watched = watchfiles.awatch(self.root, watch_filter=self._wanted, step=self.step_ms,
                                    debounce=self.debounce_ms, stop_event=self._stop, recursive=True,
                                    ignore_permission_denied=True, yield_on_timeout=True, rust_timeout=300)
        async for changes in watched:
            self.ready.set()  # the watch is in place once it has answered (changes, or a timeout's none)
            paths = {self._relative(path) for _, path in changes}
            paths.discard("")
            if not paths:
                continue
            if any(p == ".gitignore" or p.endswith("/.gitignore") for p in paths):
                self.ignores.forget()
                paths.add(EVERYTHING)  # files it now ignores, or no longer does, are known to no event
            self.pending |= paths
            self._wake.set()

    def _relative(self, path: str) -> str:
        rel = os.path.relpath(path, self.root)
        return "" if rel in (".", "..") or rel.startswith(".." + os.sep) else rel.replace(os.sep, "/")

    def _wanted(self, change: watchfiles.Change, path: str) -> bool:
        rel = self._relative(path)
        if not rel or any(part in ALWAYS_SKIPPED_DIRS for part in rel.split("/")):
            return False
        if rel == ".gitignore" or rel.endswith("/.gitignore"):  # unless it lies where nothing is indexed anyway
            folder = rel.rpartition("/")[0]
            return not folder or not self.ignores.skipped(folder, is_dir=True)
        try:
            return not self.ignores.skipped(rel, is_dir=change != watchfiles.Change.deleted and os.path.isdir(path))
        except OSError:
            return True

    async def _indexer(self) -> None:
        """Runs over the pending paths, one after another, then upkeep once quiet."""
        dirty = False
        while not self._stop.is_set():
            timeout = self.quiet_s if dirty else None
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                if dirty and self._maintain is not None and not self.pending:
                    await self._upkeep()
                    dirty = False
                continue
            self._wake.clear()
            while self.pending and not self._stop.is_set():
                batch, self.pending = self.pending, set()
                if await self._run(batch):
                    dirty = True
                else:
                    self.pending |= batch  # tried again with the next change, or after retry_s
                    await self._sleep(self.retry_s)

    async def _run(self, batch: set[str]) -> bool:
        started = time.perf_counter()
        try:
            summary = await self._index(None if EVERYTHING in batch else batch)
        except Exception as exc:  # noqa: BLE001 - a failing stage must not stop the watcher
            self.failures += 1
            log.error("indexing %d changed paths failed: %s", len(batch), exc)
            return False
        self.runs += 1
        seconds = time.perf_counter() - started
        log.info("indexed %d changed paths in %.2fs: %d files indexed, %d removed", len(batch), seconds,
                 summary.files_indexed, summary.files_removed)
        self.on_run(summary, seconds)
        return True

    async def _upkeep(self) -> None:
        try:
            await self._maintain()
        except Exception as exc:  # noqa: BLE001
            log.warning("index upkeep after watched runs failed: %s", exc)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            pass
