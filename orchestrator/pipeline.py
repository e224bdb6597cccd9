"""The Pipeline core: walk the repository, then stream its files through
read -> parse -> reuse -> embed -> write with bounded queues, so that every
stage works at once; removed files go last. No grpc imports: it talks to the
stages through :mod:`orchestrator.clients`, in domain types.

:class:`Pipeline` is one index run from start to end (model check, walk,
the streaming part, removals, upkeep); :class:`IndexRun` is the streaming
part, a method per stage:

- ``read``: each file is read and hashed once; a file whose hash the index
  already holds is unchanged and goes no further;
- ``parse``: changed files to the parser, chunks back as each file is done;
- ``reuse``: each chunk's vector from this run's cache or the store (by
  content hash); the rest queued for embedding, each distinct text once;
- ``embed``: texts to the embedder, vectors back into their files;
- ``write``: each complete file to the store, which replaces its rows.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import itertools
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Container
from typing import Any
from dataclasses import dataclass, field

import numpy as np

from codeindex_common.errors import FailedPrecondition, InvalidArgument
from codeindex_common.memory import release_free_memory
from codeindex_common.model import (PARSER_FAILURES, EmbedInfo, FileRecord, Hit, IndexSummary,
                                    ProgressUpdate, Query, SymbolHit, SymbolQuery, embedding_text)
from codeindex_common.pb import parser_pb2

from . import metrics, settled
from .config import RunSettings
from .diff import Diff, Walked
from .statcache import StatCache
from .walker import Entry, IgnoreCache, read_batch, select, walk

log = logging.getLogger("codeindex.orchestrator")


# one file as the parser sent it: its message, read, and its bytes, passed on to the store (ParserClient.parse)
Parsed = tuple[parser_pb2.ParseResponse, memoryview]
Settings = RunSettings  # how a run streams: stream counts, request and queue sizes, the file size limit


PUBLISH_EVERY_S = 0.25  # the run's progress gauges, at most this often (and once at the end)


class Waits:
    """Time each stage spends starved (waiting for input) and blocked
    (waiting to hand its output on): what shows the bottleneck. Also what
    each queue holds (files; the embed queue: requests). Both reach the
    metrics in :meth:`publish`, not at every step."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, str], float] = {}
        self.started = time.perf_counter()
        self.finished: dict[str, float] = {}  # stage -> seconds into the run when it had no more work
        self.held: dict[str, int] = {}  # queue -> files (requests) in it
        self._published: dict[tuple[str, str], float] = {}  # the seconds the metrics have

    def finish(self, stage: str) -> None:
        self.finished[stage] = time.perf_counter() - self.started

    def add(self, stage: str, kind: str, seconds: float) -> None:
        self.seconds[(stage, kind)] = self.seconds.get((stage, kind), 0.0) + seconds

    async def get(self, queue: asyncio.Queue, name: str, stage: str):
        started = time.perf_counter()
        item = await queue.get()
        self.add(stage, "starved", time.perf_counter() - started)
        if item is not None:
            self.held[name] = self.held.get(name, 0) - (len(item) if isinstance(item, list) else 1)
        return item

    async def put(self, queue: asyncio.Queue, name: str, stage: str, item) -> None:
        """Put ``item`` (a list counts as its files) on ``queue``, waiting while it is full."""
        started = time.perf_counter()
        await queue.put(item)
        self.add(stage, "blocked", time.perf_counter() - started)
        self.held[name] = self.held.get(name, 0) + (len(item) if isinstance(item, list) else 1)

    async def drain(self, queue: asyncio.Queue, name: str, stage: str, first=None):
        """Yield ``first`` (when given), then queue items until the None sentinel."""
        if first is not None:
            yield first
        while (item := await self.get(queue, name, stage)) is not None:
            yield item

    def publish(self) -> None:
        """The waits and the queues' contents as metrics."""
        for key, seconds in self.seconds.items():
            if seconds > self._published.get(key, 0.0):
                metrics.STAGE_WAIT.labels(*key).inc(seconds - self._published.get(key, 0.0))
                self._published[key] = seconds
        for name, n in self.held.items():
            metrics.QUEUE_DEPTH.labels(name).set(n)

    def bottleneck(self, elapsed: float) -> str:
        """The stage that waited least: busy the longest (a finished stage stops counting)."""
        busy = {stage: min(elapsed, self.finished.get(stage, elapsed)) - self.seconds.get((stage, "starved"), 0.0)
                - self.seconds.get((stage, "blocked"), 0.0) for stage in ("parse", "embed", "write")}
        return max(busy, key=busy.get)


@dataclass
class Progress:
    files_total: int = 0  # files the run looks at: every file it reads (unchanged ones are done once read)
    files_done: int = 0
    files_parsed: int = 0
    chunks_total: int = 0  # chunks of the files parsed so far
    chunks_done: int = 0
    chunks_embedded: int = 0
    started: float = field(default_factory=time.perf_counter)
    waits: Waits = field(default_factory=Waits)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def snapshot(self) -> ProgressUpdate:
        return ProgressUpdate(self.files_done, self.files_total, self.chunks_done)

    def publish(self) -> None:
        """The run's progress as gauges: done, remaining, rate, time left; the stages' waits."""
        self.waits.publish()
        rate = self.chunks_done / max(self.elapsed, 1e-9)
        remaining_files = max(self.files_total - self.files_done, 0)
        metrics.RUN_FILES.labels("total").set(self.files_total)
        metrics.RUN_FILES.labels("done").set(self.files_done)
        metrics.RUN_FILES.labels("remaining").set(remaining_files)
        metrics.RUN_CHUNKS.labels("done").set(self.chunks_done)
        metrics.RUN_CHUNKS.labels("embedded").set(self.chunks_embedded)
        metrics.RUN_CHUNKS.labels("remaining").set(max(self.chunks_total - self.chunks_done, 0))
        metrics.RUN_CHUNKS_PER_SECOND.set(rate)
        per_file = self.elapsed / self.files_done if self.files_done else 0.0
        metrics.RUN_ETA_SECONDS.set(per_file * remaining_files)


class _Job:
    """One parsed file waiting for its vectors."""

    def __init__(self, result: parser_pb2.ParseResponse, raw: memoryview, fhash: str, dim: int):
        self.path, self.raw = result.path, raw
        self.hash = fhash
        self.vectors = np.empty((len(result.chunks), dim), np.float32)
        self.missing = len(result.chunks)

    def fill(self, index: int, vector: np.ndarray) -> bool:
        """The vector of chunk ``index``; whether the file is complete now."""
        self.vectors[index] = vector
        self.missing -= 1
        return self.missing == 0

    def record(self, model_id: str) -> FileRecord:
        return FileRecord(self.path, self.hash, [], self.vectors, "", model_id, parsed=self.raw)


def _first_error(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


async def _all(*coros) -> None:
    """Run coroutines together; one failing cancels the others."""
    try:
        async with asyncio.TaskGroup() as tg:
            for c in coros:
                tg.create_task(c)
    except BaseExceptionGroup as group:
        raise _first_error(group) from None


async def _supervise(tasks: dict[str, asyncio.Task]) -> None:
    """Wait for every task; the first failure cancels the rest and is raised."""
    pending = set(tasks.values())
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                if t.exception() is not None:
                    raise _first_error(t.exception())
    finally:
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


READ_BATCH_FILES = 64
PARSE_LIST_FILES = 16  # the files of a read batch go to the parse streams in lists of this many
READ_BATCH_BYTES = 4 * 1024 * 1024


class IndexRun:
    """The streaming part of one index run: a method per stage, joined by
    bounded queues (a full queue blocks its producer). ``run`` takes the
    files to read from the diff (orchestrator.diff); ``unreadable`` then
    holds the indexed ones that could not be read."""

    def __init__(self, stages, settings: Settings, info: EmbedInfo, summary: IndexSummary, progress: Progress,
                 on_progress: Callable[[Progress], None], stat_cache: StatCache):
        self.stages, self.settings, self.info = stages, settings, info
        self.stat_cache = stat_cache
        self.summary, self.progress = summary, progress
        self.on_progress = on_progress
        self.waits = progress.waits
        # files travel between the stages a list at a time (a read batch, a parser's answer, the records that
        # became complete together): a step a file cost about as much as the file's own work
        size = settings.queue_size
        lists = max(4, size // PARSE_LIST_FILES)
        self.files_q: asyncio.Queue = asyncio.Queue(lists)  # read -> parse: [(path, bytes)]
        self.parsed_q: asyncio.Queue = asyncio.Queue(lists)  # parse -> reuse: [Parsed]
        self.embed_q: asyncio.Queue = asyncio.Queue(size)  # reuse -> embed: (request id, texts)
        self.write_q: asyncio.Queue = asyncio.Queue(lists)  # reuse, embed -> write: [FileRecord]
        self._parsed_files = metrics.STAGE_FILES.labels("parse")
        self._written_files = metrics.STAGE_FILES.labels("write")
        self.unreadable: list[str] = []  # indexed files that could not be read now (their rows go)
        self.sent = 0  # files sent to the parser
        self.hashes: dict[str, str] = {}  # path -> content hash, of files between read and reuse
        self.cache: dict[str, np.ndarray] = {}  # content hash -> vector, this run
        self.waiting: dict[str, list[tuple[_Job, int]]] = collections.defaultdict(list)  # hash -> (file, row)
        self.requests: dict[str, list[str]] = {}  # embed request id -> its texts' hashes
        self._ids = itertools.count()
        self._published = 0.0  # when the progress gauges were last set
        self.hashed_before: Container[str] = ()  # files this run hashed before it streamed (counted once)

    def skip(self, reason: str) -> None:
        self.summary.skip(reason)
        metrics.FILES_SKIPPED.labels(reason).inc()

    def report(self) -> None:
        now = time.perf_counter()
        if now - self._published >= PUBLISH_EVERY_S:
            self._published = now
            self.progress.publish()
        self.on_progress(self.progress)

    def unchanged(self) -> None:
        """A file the stat cache and the manifest agree on: not read."""
        self.summary.files_unchanged += 1
        self.progress.files_done += 1

    async def run(self, to_read: AsyncIterator[tuple[Entry, str | None]]) -> None:
        reusing = asyncio.create_task(self.reuse())
        embedding = asyncio.create_task(self.embed())

        async def close_writes() -> None:  # once nothing more can reach the write queue
            await asyncio.gather(reusing, embedding)
            for _ in range(self.settings.write_streams):
                await self.write_q.put(None)

        await _supervise({"read": asyncio.create_task(self.read(to_read)),
                          "parse": asyncio.create_task(self.parse()), "reuse": reusing, "embed": embedding,
                          "write": asyncio.create_task(self.write()), "close": asyncio.create_task(close_writes())})
        metrics.CHUNKS_REUSED.inc(self.summary.chunks_reused)

    # ------------------------------------------------------------------ read

    async def read(self, to_read: AsyncIterator[tuple[Entry, str | None]]) -> None:
        """Read and hash each file the diff sends (with the hash the index has for it), in batches of at most
        READ_BATCH_FILES files and about READ_BATCH_BYTES bytes, off the event loop; send the changed ones
        on."""
        batch: list[tuple[Entry, str | None]] = []
        size = 0
        async for item in to_read:
            batch.append(item)
            size += item[0].size
            if len(batch) >= READ_BATCH_FILES or size >= READ_BATCH_BYTES:
                await self._read(batch)
                batch, size = [], 0
        if batch:
            await self._read(batch)
        self.report()
        for _ in range(self.settings.parse_streams):
            await self.files_q.put(None)

    async def _read(self, batch: list[tuple[Entry, str | None]]) -> None:
        read_back = await asyncio.to_thread(read_batch, [e for e, _ in batch])
        changed: list[tuple[str, bytes]] = []
        for (entry, fhash, data, hashed_at), (_, old) in zip(read_back, batch):
            if data is None:
                self.skip("unreadable")
                self.progress.files_done += 1
                if old is not None:
                    self.unreadable.append(entry.path)
                continue
            self.summary.files_hashed += entry.path not in self.hashed_before
            self.stat_cache.record(entry, fhash, hashed_at)
            if fhash == old:
                self.unchanged()
                continue
            self.hashes[entry.path] = fhash
            changed.append((entry.path, data))
        self.sent += len(changed)
        # lists that every parse stream (and so every parser replica) gets some of, however few the files
        step = max(1, min(PARSE_LIST_FILES, -(-len(changed) // self.settings.parse_streams)))
        for start in range(0, len(changed), step):
            await self.waits.put(self.files_q, "files", "read", changed[start:start + step])
        self.report()

    # ------------------------------------------------------------------ parse

    async def parse(self) -> None:
        await _all(*(self._parse_stream() for _ in range(self.settings.parse_streams)))
        self.waits.finish("parse")
        await self.parsed_q.put(None)

    async def _parse_stream(self) -> None:
        """One Parse stream, opened once it has a file to send."""
        first = await self.waits.get(self.files_q, "files", "parse")
        if first is None:
            return
        await self.stages.up("parser")  # a local parser starts when the first file needs it
        files = self.waits.drain(self.files_q, "files", "parse", first)
        async for done in self.stages.parser.parse(files, self.info.max_tokens, self.info.tokenizer_json):
            self._parsed_files.inc(len(done))
            self.progress.files_parsed += len(done)
            self.progress.chunks_total += sum(len(pb.chunks) for pb, _ in done)
            await self.waits.put(self.parsed_q, "parsed", "parse", done)

    # ------------------------------------------------------------------ reuse

    async def reuse(self) -> None:
        """Fill each file's vectors from this run's cache and the store; queue
        the rest for embedding (each distinct text once)."""
        done = False
        while not done:
            batch, done = await self._take_parsed()
            hashed = [(result, raw, [c.content_hash for c in result.chunks]) for result, raw in batch]
            cache, waiting = self.cache, self.waiting  # (a set minus a dict's keys walks the whole dict)
            unknown = {h for _, _, hashes in hashed for h in hashes if h not in cache and h not in waiting}
            found = await self.stages.store.lookup_vectors(sorted(unknown))
            new_texts: list[tuple[str, str]] = []
            records = [r for r in (self._assign(*file, found, new_texts) for file in hashed) if r is not None]
            if records:
                await self.waits.put(self.write_q, "write", "reuse", records)
            await self._request_embeddings(new_texts)
        for _ in range(self.settings.embed_streams):
            await self.embed_q.put(None)

    async def _take_parsed(self) -> tuple[list[Parsed], bool]:
        """The next parsed files and more already waiting, up to about 64 files (one vector lookup for
        all); whether the parser is done."""
        first = await self.waits.get(self.parsed_q, "parsed", "reuse")
        if first is None:
            return [], True
        batch = list(first)
        while len(batch) < 64 and not self.parsed_q.empty():
            more = await self.waits.get(self.parsed_q, "parsed", "reuse")
            if more is None:
                return batch, True
            batch.extend(more)
        return batch, False

    def _assign(self, result: parser_pb2.ParseResponse, raw: memoryview, hashes: list[str],
                found: dict[str, np.ndarray], new_texts: list[tuple[str, str]]) -> FileRecord | None:
        """Give each chunk of ``result`` (whose content hashes are ``hashes``) its vector, or a place in line
        for one (``new_texts`` gets the texts nobody embeds yet); the file's record when it is complete
        already."""
        fhash, dim, model_id = self.hashes.pop(result.path), self.info.dim, self.info.model_id
        if result.skip_reason in PARSER_FAILURES:
            self.skip(result.skip_reason)  # not recorded: the next run tries the file again
            self.progress.files_done += 1
            return None
        if result.skip_reason:
            self.skip(result.skip_reason)
            return FileRecord(result.path, fhash, [], np.empty((0, dim), np.float32), result.skip_reason, model_id)
        self.summary.chunks_total += len(hashes)
        job = _Job(result, raw, fhash, dim)
        cache, waiting = self.cache, self.waiting
        filled = queued = 0
        for i, h in enumerate(hashes):  # the loop of every chunk of the run: kept lean
            vec = cache.get(h)
            if vec is None:
                vec = found.get(h)
                if vec is not None:
                    cache[h] = vec
            if vec is not None:
                job.vectors[i] = vec
                filled += 1
                continue
            if h in waiting:
                queued += 1  # the same text is already being embedded
            else:
                new_texts.append((h, result.chunks[i].embed_text))
            waiting[h].append((job, i))
        self.summary.chunks_reused += filled + queued
        job.missing -= filled
        return job.record(model_id) if job.missing == 0 else None

    async def _request_embeddings(self, texts: list[tuple[str, str]]) -> None:
        step = self.settings.embed_request_texts
        for start in range(0, len(texts), step):
            part = texts[start:start + step]
            rid = str(next(self._ids))
            self.requests[rid] = [h for h, _ in part]
            await self.waits.put(self.embed_q, "embed", "reuse", (rid, [t for _, t in part]))

    # ------------------------------------------------------------------ embed

    async def embed(self) -> None:
        await _all(*(self._embed_stream() for _ in range(self.settings.embed_streams)))
        self.waits.finish("embed")

    async def _embed_stream(self) -> None:
        """One Embed stream, opened once it has texts to send."""
        first = await self.waits.get(self.embed_q, "embed", "embed")
        if first is None:
            return
        async for rid, vecs in self.stages.embedder.embed(self.waits.drain(self.embed_q, "embed", "embed", first)):
            hashes = self.requests.pop(rid)
            self.summary.chunks_embedded += len(hashes)
            self.progress.chunks_embedded += len(hashes)
            metrics.CHUNKS_EMBEDDED.inc(len(hashes))
            complete = []
            for h, v in zip(hashes, vecs):
                self.cache[h] = v
                for job, i in self.waiting.pop(h):
                    if job.fill(i, v):
                        complete.append(job.record(self.info.model_id))
            if complete:
                await self.waits.put(self.write_q, "write", "embed", complete)

    # ------------------------------------------------------------------ write

    async def write(self) -> None:
        await _all(*(self._write_stream() for _ in range(self.settings.write_streams)))

    async def _write_stream(self) -> None:
        """One Write stream, opened once it has a file to write."""
        first = await self.waits.get(self.write_q, "write", "write")
        if first is None:
            return
        async for acks in self.stages.store.write(self.waits.drain(self.write_q, "write", "write", first)):
            for _path, rows in acks:
                self.progress.chunks_done += rows
                self.summary.files_indexed += rows > 0
            self.progress.files_done += len(acks)
            self._written_files.inc(len(acks))
            self.report()


class Pipeline:
    """Index runs and searches over the three stages."""

    def __init__(self, stages, settings: Settings = Settings(),
                 on_progress: Callable[[Progress], None] | None = None, stat_cache: str = "",
                 settle: bool = False):
        """``stat_cache``: the file that keeps each file's stat and hash between runs (orchestrator.statcache;
        "": none, every file is read and hashed). ``settle``: a whole walk that changes nothing may be
        answered by the last complete run's marker, and a complete one writes it (orchestrator.settled;
        only where every stage is local, its embedder started here)."""
        self.stages = stages
        self.settings = settings
        self.on_progress = on_progress or (lambda p: None)
        self.stat_cache = stat_cache
        self.settle = settle and bool(stat_cache)

    async def index(self, root: str, reindex: bool = False, paths: set[str] | None = None,
                    maintain: bool = True, ignores: IgnoreCache | None = None) -> IndexSummary:
        """Bring the index up to date with ``root``; ``reindex`` drops it first
        (the way to move an index to another model). ``paths`` (relative;
        a directory stands for what lies under it): look at those alone, as a
        watcher asks, instead of walking the whole repository; a path that is
        gone takes its rows, and those of whatever was under it, along.
        ``maintain``: compact and refresh the indexes after a run that wrote
        something (a watcher does it when the repository goes quiet)."""
        started = time.perf_counter()
        summary = IndexSummary()
        cache = StatCache(self.stat_cache, root)
        where = os.path.dirname(self.stat_cache)
        walked = Walked(root, cache, self.settings.max_file_bytes, where or None)
        settle = self.settle and paths is None and not reindex
        fingerprint = settled.embedder_fingerprint() if settle else ""
        marker = self._marker(where, fingerprint, cache.root) if settle else None
        hashed: dict[str, str] = {}  # files read while the marker was asked (a normal run does not read them again)
        try:
            found, looking = await self._walk(walked, root, paths, ignores, marker, hashed)
            if found is not None:
                return self._answered(summary, walked, marker, found, started)
            if where:
                settled.clear(where)  # the index may change from here on
            summary.files_hashed = len(hashed)
            try:
                await self.stages.up("embed", "store")
                info = await self._embedder_for(reindex)
            finally:
                removable, kept = await looking
            summary.model_id = info.model_id
            summary.files_seen = walked.files
            progress = Progress()
            progress.files_total = walked.readable
            run = IndexRun(self.stages, self.settings, info, summary, progress, self.on_progress, cache)
            run.hashed_before = hashed
            diff = Diff(walked, self.stages.store.manifest(), removable, run.skip, run.unchanged, hashed)
            run.report()
            try:
                await run.run(diff.to_read())
            finally:  # what was hashed stays true of the files, whatever became of the run
                progress.publish()  # the gauges as the run left them (report sets them at most every 0.25 s)
                await asyncio.to_thread(cache.save, kept())
        finally:
            walked.close()
        # parsing and embedding are over: stages started for this run alone stop now, before the upkeep
        # (the store's peak of memory) rather than after it, and this process gives back what it freed
        await self.stages.release("parser", "embed")
        release_free_memory()
        progress.publish()
        await self._remove_and_upkeep(sorted(diff.removed + run.unreadable), maintain, run.sent > 0, summary)
        if settle:
            await self._settle(where, cache, fingerprint, summary)
        summary.seconds = time.perf_counter() - started
        metrics.RUN_SECONDS.observe(summary.seconds)
        return summary

    async def _remove_and_upkeep(self, removed: list[str], maintain: bool, wrote: bool,
                                 summary: IndexSummary) -> None:
        """Removed files go last, so that a moved file reuses their vectors: those the walk did not find (a
        selection: those looked at that are gone, and what lay under a gone directory), those skipped now,
        those that could not be read. Then the upkeep (``maintain``, if the run wrote or removed something)
        and the index's counts."""
        if removed:
            await self.stages.store.delete(removed)
        summary.files_removed = len(removed)
        metrics.FILES_REMOVED.inc(len(removed))
        if maintain and (wrote or removed):
            await self.stages.store.optimize()  # compaction, index refresh, old versions removed
        after = await self.stages.store.stats()
        summary.index_chunks, summary.index_files = after.chunks, after.files

    def _marker(self, where: str, fingerprint: str, root: str) -> settled.Settled | None:
        """The last complete run's marker, if it still holds."""
        marker = settled.Settled.read(where)
        return marker if marker is not None and marker.holds(where, self.stat_cache, fingerprint, root) else None

    async def _walk(self, walked: Walked, root: str, paths: set[str] | None, ignores: IgnoreCache | None,
                    marker: settled.Settled | None, hashed: dict[str, str]) -> tuple[settled.Answer | None, Any]:
        """Start the walk: (what the ``marker`` answers, or None: a normal run; an awaitable of _look's
        result). The local embedder and store are spawned at once, or with a marker once the walk finds
        what the stat cache cannot vouch for."""
        if marker is None:
            self.stages.spawn("embed", "store")
            # the walk needs no stage: it overlaps the start of local ones
            return None, asyncio.ensure_future(asyncio.to_thread(self._look, walked, root, paths, ignores))
        spawn = functools.partial(self.stages.spawn, "embed", "store")
        looked = await asyncio.to_thread(self._look, walked, root, paths, ignores, spawn, marker.racy)
        return await settled.answer(walked, marker, hashed, spawn), asyncio.ensure_future(asyncio.sleep(0, looked))

    def _answered(self, summary: IndexSummary, walked: Walked, marker: settled.Settled, found: settled.Answer,
                  started: float) -> IndexSummary:
        """The summary of a run the marker answered; the stat cache keeps what it hashed, and the marker
        says so (nothing else changed)."""
        summary.files_seen, summary.files_unchanged, summary.files_hashed = walked.files, found.unchanged, found.hashed
        for reason, n in sorted(found.skipped.items()):
            summary.files_skipped[reason] = n
            metrics.FILES_SKIPPED.labels(reason).inc(n)
        summary.index_chunks, summary.index_files, summary.model_id = marker.chunks, marker.files, marker.model_id
        cache, where = walked.cache, os.path.dirname(self.stat_cache)
        if cache.updates or cache.dropped:
            cache.save(walked.kept())
            if len(cache.racy) > settled.MAX_RACY:
                settled.clear(where)
            else:
                dataclasses.replace(marker, stat_cache=settled.file_identity(cache.path), racy=dict(cache.racy)
                                    ).write(where)
        summary.seconds = time.perf_counter() - started
        metrics.RUN_SECONDS.observe(summary.seconds)
        return summary

    async def _settle(self, where: str, cache: StatCache, fingerprint: str, summary: IndexSummary) -> None:
        """Write the marker if the store's manifest is exactly what the stat cache and this run's racy files
        say it is (orchestrator.settled)."""
        if not fingerprint or len(cache.racy) > settled.MAX_RACY:
            return
        # what the marker will say is read before the manifest (which the store reads at its latest commit)
        # and checked after it: a commit or a cache written meanwhile leaves no marker
        versions, identity = settled.table_versions(where), settled.file_identity(cache.path)
        same = await settled.manifest_is(self.stages.store.manifest(), cache, cache.racy)
        if same and (versions, identity) == (settled.table_versions(where), settled.file_identity(cache.path)):
            settled.Settled(fingerprint, cache.root, versions, identity, summary.index_chunks, summary.index_files,
                            summary.model_id, dict(cache.racy)).write(where)
        else:
            log.info("the index's manifest is not the stat cache's: no marker (the next run asks the store)")

    @staticmethod
    def _look(walked: Walked, root: str, paths: set[str] | None, ignores: IgnoreCache | None,
              on_change: Callable[[], None] | None = None, vouched: Container[str] = ()):
        """Fill ``walked`` (in a thread; ``on_change``, ``vouched``: see Walked.fill). Returns
        ``removable(path)``, whether a path the manifest has and the walk has not is to be removed, and
        ``kept()``, the stat cache's records that still hold."""
        if paths is None:
            walked.fill(walk(root), on_change=on_change, vouched=vouched)
            return (lambda path: True), walked.kept
        entries, gone = select(root, paths, ignores or IgnoreCache(root))
        walked.fill(entries, keep_cached=True)
        walked.cache.dropped += len(gone)  # their records go (and those under them)
        looked = {e.path for e in entries} | gone
        under = tuple(g + "/" for g in gone)

        def removable(path: str) -> bool:
            return path in looked or path.startswith(under)

        def kept():  # the cache's other files stay as they were; the selection's where the cache knew them
            return (r for r in walked.cache.recorded() if not removable(r[0]) or r[0] in walked.cached)

        return removable, kept

    async def _embedder_for(self, reindex: bool) -> EmbedInfo:
        """The embedder's model, checked against the index's (``reindex``: the index is dropped first)."""
        info = await self.stages.embedder.info()
        if reindex:
            await self.stages.store.reset()
        stats = await self.stages.store.stats()
        _same_model(stats, info, "; vectors of two models are never mixed: run again with --reindex to rebuild it "
                                 "with the new model, or index into a new directory (--index-dir)")
        if stats.chunks and stats.dim and stats.dim != info.dim:
            raise FailedPrecondition(f"the index holds {stats.dim}-dim vectors, the embedder gives {info.dim}: "
                                     "run again with --reindex to rebuild it")
        return info


def _same_model(stats, info: EmbedInfo, advice: str) -> None:
    """FailedPrecondition, with ``advice`` (and how to keep the index in another precision), where the index
    holds vectors of another model than the embedder serves."""
    if stats.model_id and stats.model_id != info.model_id:
        raise FailedPrecondition(f"the index at {stats.uri} was built with model {stats.model_id!r} but the embedder "
                                 f"serves {info.model_id!r}{advice}" + _precision_hint(stats.model_id, info.model_id))


def _precision_hint(index_model: str, served_model: str) -> str:
    """For an index of the served model in another precision (the onnx backend's ``+int8tok``, or the model's
    own fp32 vectors): how to keep it."""
    if index_model.partition("+")[0] != served_model.partition("+")[0]:
        return ""  # another model altogether
    dtype = {"": "fp32", "int8tok": "int8"}.get(index_model.partition("+")[2], "")
    return f"; or keep this index by running the embedder with --dtype {dtype} (CODEINDEX_EMBED_DTYPE)" if dtype else ""


class ModelCheck:
    """Makes sure the embedder serves the index's model before a search embeds a query with it (an index of
    another model would answer with nonsense): asked again at most every ``every_s`` seconds, so that a
    server's searches do not each pay two more calls, while an embedder or index changed under it is still
    caught."""

    def __init__(self, every_s: float = 10.0):
        self.every_s = every_s
        self._checked_at = -math.inf

    async def __call__(self, stages) -> None:
        if time.monotonic() - self._checked_at < self.every_s:
            return
        info, stats = await asyncio.gather(stages.embedder.info(), stages.store.stats())
        _same_model(stats, info, ": its vectors and the query's would not be comparable. Search with the embedder "
                                 "of the index's model (--embed-addr, or the CODEINDEX_EMBED_* settings it was "
                                 "indexed with), search in --mode keyword, or index again with --reindex")
        self._checked_at = time.monotonic()


async def search(stages, q: Query, model_check: ModelCheck | None = None) -> list[Hit]:
    """Embed the query (unless keyword mode) and search the store. ``q`` was
    checked when it was made; a search here needs its text besides. ``model_check``: the embedder's model
    is checked against the index's first."""
    if not q.text.strip():
        raise InvalidArgument("the query is empty")
    if model_check is not None and q.mode != "keyword":
        await model_check(stages)
    vec = (await stages.embedder.embed_once([embedding_text(q.text)]))[0] if q.mode != "keyword" else None
    return await stages.store.search(vec, q)


async def find_symbol(stages, q: SymbolQuery) -> list[SymbolHit]:
    """Every definition of a name (the store looks it up; nothing is embedded)."""
    return await stages.store.find_symbol(q)
