"""The Pipeline core: walk, diff against the store's manifest, then stream
new and changed files through parser -> embedder -> store with bounded
queues, so that all three stages work at once. No grpc imports: it talks to
the stages through :mod:`orchestrator.clients`."""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from dataclasses import asdict, dataclass, field
from collections.abc import Callable

import numpy as np

from codeindex_common.errors import FailedPrecondition
from codeindex_common.model import Chunk, FileRecord, FileResult, Query

from . import metrics
from .walker import Entry, file_hash, read, walk

log = logging.getLogger("codeindex.orchestrator")


@dataclass
class Summary:
    files_seen: int = 0
    files_indexed: int = 0
    files_unchanged: int = 0
    files_removed: int = 0
    files_skipped: dict[str, int] = field(default_factory=dict)
    chunks_total: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    seconds: float = 0.0
    index_chunks: int = 0
    index_files: int = 0
    model_id: str = ""

    def skip(self, reason: str) -> None:
        self.files_skipped[reason] = self.files_skipped.get(reason, 0) + 1
        metrics.FILES_SKIPPED.labels(reason).inc()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["seconds"] = round(self.seconds, 3)
        return d


class Waits:
    """Time each stage spends starved (waiting for input) and blocked
    (waiting to hand its output on): what shows the bottleneck."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, str], float] = {}
        self.started = time.perf_counter()
        self.finished: dict[str, float] = {}  # stage -> seconds into the run when it had no more work

    def finish(self, stage: str) -> None:
        self.finished[stage] = time.perf_counter() - self.started

    def add(self, stage: str, kind: str, seconds: float) -> None:
        self.seconds[(stage, kind)] = self.seconds.get((stage, kind), 0.0) + seconds
        metrics.STAGE_WAIT.labels(stage, kind).inc(seconds)

    async def get(self, queue: asyncio.Queue, name: str, stage: str):
        started = time.perf_counter()
        item = await queue.get()
        self.add(stage, "starved", time.perf_counter() - started)
        metrics.QUEUE_DEPTH.labels(name).set(queue.qsize())
        return item

    async def put(self, queue: asyncio.Queue, name: str, stage: str, item) -> None:
        started = time.perf_counter()
        await queue.put(item)
        self.add(stage, "blocked", time.perf_counter() - started)
        metrics.QUEUE_DEPTH.labels(name).set(queue.qsize())

    async def drain(self, queue: asyncio.Queue, name: str, stage: str):
        """Yield queue items until the None sentinel."""
        while (item := await self.get(queue, name, stage)) is not None:
            yield item

    def bottleneck(self, elapsed: float) -> str:
        """The stage that waited least: busy the longest (a finished stage stops counting)."""
        busy = {stage: min(elapsed, self.finished.get(stage, elapsed)) - self.seconds.get((stage, "starved"), 0.0)
                - self.seconds.get((stage, "blocked"), 0.0) for stage in ("parse", "embed", "write")}
        return max(busy, key=busy.get)


@dataclass
class Progress:
    files_total: int = 0
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

    def publish(self) -> None:
        """The run's progress as gauges: done, remaining, rate, time left."""
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


@dataclass(frozen=True)
class Settings:
    parse_streams: int = 2
    embed_streams: int = 4
    write_streams: int = 2
    embed_request_texts: int = 32
    queue_size: int = 256
    max_file_bytes: int = 2_000_000


# Skips that say nothing about the file's content: not remembered in the index.
TRANSIENT_SKIPS = {"worker_died", "timeout", "parse_failed"}


class _Job:
    """One parsed file waiting for its vectors."""

    def __init__(self, result: FileResult, fhash: str, dim: int):
        self.result = result
        self.hash = fhash
        self.vectors = np.empty((len(result.chunks), dim), np.float32)
        self.missing = len(result.chunks)

    def fill(self, index: int, vector: np.ndarray) -> bool:
        self.vectors[index] = vector
        self.missing -= 1
        return self.missing == 0

    def record(self, model_id: str) -> FileRecord:
        return FileRecord(self.result.path, self.hash, list(self.result.chunks), self.vectors, "", model_id)


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




class Pipeline:
    def __init__(self, stages, settings: Settings = Settings(),
                 on_progress: Callable[[Progress], None] | None = None):
        self.stages = stages
        self.settings = settings
        self.on_progress = on_progress or (lambda p: None)

    async def index(self, root: str, reindex: bool = False) -> Summary:
        """Bring the index up to date with ``root``; ``reindex`` drops it first
        (the way to move an index to another model)."""
        started = time.perf_counter()
        summary = Summary()
        info = await self.stages.embedder.info()
        summary.model_id = info.model_id
        if reindex:
            await self.stages.store.reset()
        stats = await self.stages.store.stats()
        if stats.model_id and stats.model_id != info.model_id:
            raise FailedPrecondition(
                f"the index at {stats.uri} was built with model {stats.model_id!r} but the embedder serves "
                f"{info.model_id!r}; vectors of two models are never mixed: run again with --reindex to rebuild "
                f"it with the new model, or index into a new directory (--index-dir)")
        if stats.chunks and stats.dim and stats.dim != info.dim:
            raise FailedPrecondition(f"the index holds {stats.dim}-dim vectors, the embedder gives {info.dim}: "
                                     "run again with --reindex to rebuild it")

        entries, manifest = await asyncio.gather(asyncio.to_thread(lambda: list(walk(root))),
                                                 self.stages.store.manifest())
        summary.files_seen = len(entries)
        todo: list[Entry] = []
        present: set[str] = set()
        hashes = await asyncio.to_thread(self._hash_all, entries, summary)
        for e in entries:
            if e.path not in hashes:
                continue
            present.add(e.path)
            old = manifest.get(e.path)
            if old is not None and old[0] == hashes[e.path]:
                summary.files_unchanged += 1
            else:
                todo.append(e)
        progress = Progress(files_total=len(todo))
        progress.publish()
        self.on_progress(progress)
        if todo:
            await self._run(todo, info, summary, progress)
        progress.publish()
        # removed files go last, so that a moved file reuses their vectors
        removed = sorted(p for p in manifest if p not in present)
        if removed:
            await self.stages.store.delete(removed)
        summary.files_removed = len(removed)
        metrics.FILES_REMOVED.inc(len(removed))
        if todo or removed:
            await self.stages.store.optimize()  # compaction, index refresh, old versions removed
        after = await self.stages.store.stats()
        summary.index_chunks, summary.index_files = after.chunks, after.files
        summary.seconds = time.perf_counter() - started
        metrics.RUN_SECONDS.observe(summary.seconds)
        return summary

    def _hash_all(self, entries: list[Entry], summary: Summary) -> dict[str, str]:
        hashes = {}
        for e in entries:
            if e.skip_reason:
                summary.skip(e.skip_reason)
            elif e.size > self.settings.max_file_bytes:
                summary.skip("too_large")
            else:
                try:
                    hashes[e.path] = file_hash(read(e))
                except OSError:
                    summary.skip("unreadable")
        return hashes

    async def _run(self, todo: list[Entry], info, summary: Summary, progress: Progress) -> None:
        s = self.settings
        files_q: asyncio.Queue = asyncio.Queue(s.queue_size)
        parsed_q: asyncio.Queue = asyncio.Queue(s.queue_size)
        embed_q: asyncio.Queue = asyncio.Queue(s.queue_size)
        write_q: asyncio.Queue = asyncio.Queue(s.queue_size)
        file_hashes: dict[str, str] = {}
        cache: dict[str, np.ndarray] = {}  # content hash -> vector, this run
        waiting: dict[str, list[tuple[_Job, int]]] = collections.defaultdict(list)
        requests: dict[str, list[str]] = {}
        ids = itertools.count()
        dim, model_id = info.dim, info.model_id
        waits = progress.waits

        async def read_files() -> None:
            for e in todo:
                try:
                    data = await asyncio.to_thread(read, e)
                except OSError:
                    summary.skip("unreadable")
                    progress.files_done += 1
                    continue
                file_hashes[e.path] = file_hash(data)
                await waits.put(files_q, "files", "read", (e.path, data))
            for _ in range(s.parse_streams):
                await files_q.put(None)

        async def parse_stream() -> None:
            async for result in self.stages.parser.parse(waits.drain(files_q, "files", "parse"), info.max_tokens,
                                                         info.tokenizer_json):
                metrics.STAGE_FILES.labels("parse").inc()
                progress.files_parsed += 1
                progress.chunks_total += len(result.chunks)
                await waits.put(parsed_q, "parsed", "parse", result)

        async def parse_all() -> None:
            await _all(*(parse_stream() for _ in range(s.parse_streams)))
            waits.finish("parse")
            await parsed_q.put(None)

        async def reuse() -> None:
            """Fill each file's vectors from this run's cache and the store;
            queue the rest for embedding (each distinct text once)."""
            done = False
            while not done:
                batch = [await waits.get(parsed_q, "parsed", "reuse")]
                while not parsed_q.empty() and len(batch) < 64:
                    batch.append(parsed_q.get_nowait())
                if batch[-1] is None:
                    batch.pop()
                    done = True
                unknown = {c.content_hash for r in batch for c in r.chunks} - cache.keys() - waiting.keys()
                found = await self.stages.store.lookup_vectors(sorted(unknown))
                new_texts: list[tuple[str, str]] = []
                for result in batch:
                    fhash = file_hashes[result.path]
                    if result.skip_reason in TRANSIENT_SKIPS:
                        summary.skip(result.skip_reason)  # not recorded: the next run tries the file again
                        progress.files_done += 1
                        continue
                    if result.skip_reason:
                        summary.skip(result.skip_reason)
                        await waits.put(write_q, "write", "reuse", FileRecord(
                            result.path, fhash, [], np.empty((0, dim), np.float32),
                                                     result.skip_reason, model_id))
                        continue
                    summary.chunks_total += len(result.chunks)
                    job = _Job(result, fhash, dim)
                    complete = not result.chunks
                    for i, c in enumerate(result.chunks):
                        vec = cache.get(c.content_hash)
                        if vec is None and c.content_hash in found:
                            vec = cache[c.content_hash] = found[c.content_hash]
                        if vec is not None:
                            summary.chunks_reused += 1
                            complete = job.fill(i, vec)
                        elif c.content_hash in waiting:
                            summary.chunks_reused += 1  # the same text is already being embedded
                            waiting[c.content_hash].append((job, i))
                        else:
                            waiting[c.content_hash].append((job, i))
                            new_texts.append((c.content_hash, c.embed_text))
                    if complete:
                        await waits.put(write_q, "write", "reuse", job.record(model_id))
                for start in range(0, len(new_texts), s.embed_request_texts):
                    part = new_texts[start:start + s.embed_request_texts]
                    rid = str(next(ids))
                    requests[rid] = [h for h, _ in part]
                    await waits.put(embed_q, "embed", "reuse", (rid, [t for _, t in part]))
            for _ in range(s.embed_streams):
                await embed_q.put(None)

        async def embed_stream() -> None:
            async for rid, vecs in self.stages.embedder.embed(waits.drain(embed_q, "embed", "embed")):
                hashes = requests.pop(rid)
                summary.chunks_embedded += len(hashes)
                progress.chunks_embedded += len(hashes)
                metrics.CHUNKS_EMBEDDED.inc(len(hashes))
                for h, v in zip(hashes, vecs):
                    cache[h] = v
                    for job, i in waiting.pop(h):
                        if job.fill(i, v):
                            await waits.put(write_q, "write", "embed", job.record(model_id))

        async def embed_all() -> None:
            await _all(*(embed_stream() for _ in range(s.embed_streams)))
            waits.finish("embed")

        async def write_stream() -> None:
            async for _path, rows in self.stages.store.write(waits.drain(write_q, "write", "write")):
                progress.files_done += 1
                progress.chunks_done += rows
                if rows:
                    summary.files_indexed += 1
                metrics.STAGE_FILES.labels("write").inc()
                progress.publish()
                self.on_progress(progress)

        async def write_all() -> None:
            await _all(*(write_stream() for _ in range(s.write_streams)))

        async def after_embed_and_reuse() -> None:
            await asyncio.gather(reuse_task, embed_task)
            for _ in range(s.write_streams):
                await write_q.put(None)

        reuse_task = asyncio.create_task(reuse())
        embed_task = asyncio.create_task(embed_all())
        await _supervise({
            "read": asyncio.create_task(read_files()),
            "parse": asyncio.create_task(parse_all()),
            "reuse": reuse_task,
            "embed": embed_task,
            "write": asyncio.create_task(write_all()),
            "close": asyncio.create_task(after_embed_and_reuse()),
        })
        metrics.CHUNKS_REUSED.inc(summary.chunks_reused)


@dataclass
class Hit:
    chunk: Chunk
    score: float
    snippet: str = ""


async def search(stages, q: Query) -> list[Hit]:
    """Embed the query (unless keyword mode) and search the store."""
    q.validate()
    vec = (await stages.embedder.embed_once([q.text]))[0] if q.mode != "keyword" else None
    return [Hit(c, score, snip) for c, score, snip in await stages.store.search(vec, q)]
