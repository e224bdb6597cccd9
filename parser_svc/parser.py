"""The Parser core: a pool of tree-sitter worker processes. No grpc here.

Workers are started with forkserver before the gRPC server. Each file goes
to a worker as it arrives and comes back as a serialized ParseResponse, so
the service process only forwards bytes: the cores go to parsing. A worker
that dies (a crashing grammar, out of memory) or runs past the per-file
timeout costs only its file, reported as failed; pebble replaces the worker.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace

import pebble

from codeindex_common.errors import InvalidArgument
from codeindex_common.keywords import FORMAT as KEYWORDS_FORMAT, body_field, names_field
from codeindex_common.model import PARSER_FAILURES

from . import metrics
from .chunker import FileResult, Limits, chunk_file, get_parser
from .languages import SPECS

log = logging.getLogger("codeindex.parser")

@dataclass(frozen=True)
class Parsed:
    """One file's ParseResponse, serialized, and what the metrics need from it."""

    payload: bytes
    skip_reason: str = ""
    chunks: dict[tuple[str, str], int] = field(default_factory=dict)  # (language, kind) -> count
    seconds: float = 0.0  # time in the worker


def _response(result: FileResult) -> bytes:
    """The answer for one file, with each chunk's keyword fields: computed here, in the workers, in
    parallel, rather than in the store's one process (about 95 µs a chunk there)."""
    pb = result.to_pb()
    for c, out in zip(result.chunks, pb.chunks):
        out.kw_names, out.kw_body, out.kw_format = names_field(c), body_field(c), KEYWORDS_FORMAT
    return pb.SerializeToString()


def parse_file(path: str, data: bytes, language: str, limits: Limits) -> Parsed:
    """Runs in a worker: chunk one file and serialize the answer there."""
    started = time.perf_counter()
    try:
        result = chunk_file(path, data, language, limits)
    except Exception as exc:  # noqa: BLE001 - a bug in chunking costs one file, not the run
        log.exception("parsing %s failed", path)
        result = FileResult(path, language, skip_reason="parse_failed", detail=f"{type(exc).__name__}: {exc}")
    return Parsed(_response(result), result.skip_reason, dict(Counter((c.language, c.kind) for c in result.chunks)),
                  time.perf_counter() - started)


def parse_files(files: list[tuple[str, bytes, str]], limits: Limits) -> list[Parsed]:
    """Runs in a worker: a group of small files, one task (less per-file overhead in the service)."""
    return [parse_file(path, data, language, limits) for path, data, language in files]


def _init_worker(memory_bytes: int) -> None:
    """Worker initializer: cap its memory, exit with the service, load every grammar once."""
    if memory_bytes > 0:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    parent = os.getppid()  # the forkserver, which exits when the service does

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="parent-watchdog").start()
    for spec in SPECS.values():
        try:
            get_parser(spec.grammar)
        except Exception:  # a grammar that fails to load fails its files later, with a reason
            log.exception("grammar %s failed to load", spec.grammar)


def _pid() -> int:
    return os.getpid()


@dataclass(eq=False)
class _Waiting:
    path: str
    data: bytes
    language: str
    future: asyncio.Future
    task: asyncio.Future | None = None  # the task parsing its group, once sent
    group: list[_Waiting] | None = None


class Parser:
    """Chunks files in a pebble process pool. A large file is one task; small
    files (under ``group_below`` bytes) that arrive together travel in groups
    (up to GROUP_FILES files and GROUP_BYTES bytes, gathered for at most one
    event-loop turn, so nothing waits for a batch to fill). A group whose
    worker dies or times out is parsed again one file per task, so only the
    guilty file fails."""

    GROUP_FILES = 16
    GROUP_BYTES = 128 * 1024

    def __init__(self, workers: int, limits: Limits, timeout: float = 60.0, memory_mb: int = 0,
                 group_below: int = 32 * 1024):
        self.workers, self.limits, self.timeout = workers, limits, timeout
        self.group_below = group_below  # files smaller than this travel in groups
        self._waiting: dict[Limits, list[_Waiting]] = {}  # small files not yet sent, by their stream's limits
        self._flush_soon = False
        self.memory_bytes = memory_mb * 1024 * 1024
        self._pool: pebble.ProcessPool | None = None
        self._tokenizers = ""  # a directory of tokenizer.json files, by hash

    def start(self) -> None:
        metrics.WORKERS.set(self.workers)
        self._tokenizers = tempfile.mkdtemp(prefix="codeindex-parser-")
        self._pool = pebble.ProcessPool(self.workers, initializer=_init_worker, initargs=(self.memory_bytes,),
                                        context=multiprocessing.get_context("forkserver"))
        # start every worker now, so the first files do not pay for it
        for f in [self._pool.schedule(_pid) for _ in range(self.workers * 2)]:
            f.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            try:
                self._pool.join(timeout=10)
            except TimeoutError:
                pass  # a worker still busy: stopped below
            finally:
                self._pool.stop()
                self._pool = None
        if self._tokenizers:
            shutil.rmtree(self._tokenizers, ignore_errors=True)

    def limits_for(self, max_tokens: int, tokenizer_json: bytes) -> Limits:
        """Limits for a stream whose client named the embedding model's window and tokenizer."""
        if max_tokens and not 16 <= max_tokens <= 1_000_000:
            raise InvalidArgument(f"max_tokens must be 0 or between 16 and 1,000,000, not {max_tokens}")
        path = ""
        if tokenizer_json:
            path = os.path.join(self._tokenizers, hashlib.sha256(tokenizer_json).hexdigest() + ".json")
            if not os.path.exists(path):
                from tokenizers import Tokenizer

                try:
                    Tokenizer.from_str(tokenizer_json.decode("utf-8"))
                except Exception as exc:  # noqa: BLE001 - any reason it does not load
                    raise InvalidArgument(f"tokenizer_json is not a Hugging Face tokenizer: {exc}") from None
                fd, tmp = tempfile.mkstemp(dir=self._tokenizers, suffix=".tmp")  # streams may race here
                with os.fdopen(fd, "wb") as fh:
                    fh.write(tokenizer_json)
                os.replace(tmp, path)
        return replace(self.limits, max_tokens=max_tokens, tokenizer=path)

    async def parse(self, path: str, data: bytes, language: str = "", limits: Limits | None = None) -> Parsed:
        assert self._pool is not None, "Parser.start() first"
        limits = limits or self.limits
        started = time.perf_counter()
        metrics.IN_FLIGHT.inc()
        try:
            if len(data) < self.group_below:
                parsed = await self._grouped(path, data, language, limits)
            else:
                parsed = await self._one(path, data, language, limits)
        finally:
            metrics.IN_FLIGHT.dec()
        metrics.PARSE_SECONDS.observe(time.perf_counter() - started)
        if parsed.seconds:
            metrics.WORKER_SECONDS.observe(parsed.seconds)
        metrics.BYTES.inc(len(data))
        metrics.FILES.labels(parsed.skip_reason or "chunked").inc()
        if parsed.skip_reason in PARSER_FAILURES:
            metrics.FAILURES.labels(parsed.skip_reason).inc()
        for (lang, kind), n in parsed.chunks.items():
            metrics.CHUNKS.labels(lang, kind).inc(n)
        return parsed

    async def _one(self, path: str, data: bytes, language: str, limits: Limits) -> Parsed:
        """One file, one task."""
        future = self._pool.schedule(parse_file, args=(path, data, language, limits), timeout=self.timeout)
        try:
            return await asyncio.wrap_future(future)
        except pebble.ProcessExpired as exc:
            log.error("the worker parsing %s died (exit code %s); it is replaced", path, exc.exitcode)
            return self._failed(path, language, "worker_died",
                                f"the worker process parsing this file died (exit code {exc.exitcode})")
        except TimeoutError:
            log.error("parsing %s took over %.0f s; its worker is replaced", path, self.timeout)
            return self._failed(path, language, "timeout", f"parsing took over {self.timeout:g} s")
        except asyncio.CancelledError:
            future.cancel()  # a running file's worker is stopped (and replaced)
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. a file the worker could not receive
            log.exception("parsing %s failed", path)
            return self._failed(path, language, "parse_failed", f"{type(exc).__name__}: {exc}")

    async def _grouped(self, path: str, data: bytes, language: str, limits: Limits) -> Parsed:
        loop = asyncio.get_running_loop()
        waiting = self._waiting.setdefault(limits, [])
        me = _Waiting(path, data, language, loop.create_future())
        waiting.append(me)
        if len(waiting) >= self.GROUP_FILES or sum(len(w.data) for w in waiting) >= self.GROUP_BYTES:
            self._send(limits)
        elif not self._flush_soon:
            self._flush_soon = True
            loop.call_soon(self._flush_all)  # after the files that arrived in this turn
        try:
            return await me.future
        except asyncio.CancelledError:
            if me.task is None:  # not sent yet
                waiting = self._waiting.get(limits, [])
                if me in waiting:
                    waiting.remove(me)
            elif all(w.future.done() for w in me.group or ()):
                me.task.cancel()  # nobody waits for this group any more: stop its worker
            raise

    def _flush_all(self) -> None:
        self._flush_soon = False
        for limits in list(self._waiting):
            self._send(limits)

    def _send(self, limits: Limits) -> None:
        group = self._waiting.pop(limits, [])
        if not group:
            return
        if len(group) == 1:
            task = asyncio.ensure_future(self._one(group[0].path, group[0].data, group[0].language, limits))
        else:
            task = asyncio.ensure_future(self._group(group, limits))
        for w in group:
            w.task, w.group = task, group
        task.add_done_callback(lambda t: self._deliver(t, group))

    async def _group(self, group: list[_Waiting], limits: Limits) -> list[Parsed]:
        files = [(w.path, w.data, w.language) for w in group]
        future = self._pool.schedule(parse_files, args=(files, limits), timeout=self.timeout)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - a worker died or timed out: find the file, one per task
            if isinstance(exc, (pebble.ProcessExpired, TimeoutError)):
                metrics.WORKER_RESTARTS.inc()
            log.warning("a group of %d files failed (%s); parsing them one by one", len(group), type(exc).__name__)
            return list(await asyncio.gather(*(self._one(*f, limits) for f in files)))

    @staticmethod
    def _deliver(task: asyncio.Future, group: list[_Waiting]) -> None:
        if task.cancelled():
            results: list | BaseException = asyncio.CancelledError()
        else:
            results = task.exception() or task.result()
        if not isinstance(results, list):
            results = [results]
        for i, w in enumerate(group):
            if w.future.done():
                continue  # its caller went away
            if isinstance(results[0], BaseException):
                w.future.set_exception(results[0])
            else:
                w.future.set_result(results[i])

    @staticmethod
    def _failed(path: str, language: str, reason: str, detail: str) -> Parsed:
        if reason in ("worker_died", "timeout"):
            metrics.WORKER_RESTARTS.inc()
        return Parsed(_response(FileResult(path, language, skip_reason=reason, detail=detail)), reason)
