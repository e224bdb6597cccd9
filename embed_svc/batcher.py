"""The dynamic batcher, shared by every stream and client. No grpc.

Requests go into one bounded queue of texts, in two lanes: queries
(``urgent``: EmbedOnce, what a search waits for) and bulk texts (Embed
streams, what an index run sends by the thousand). A batch is taken from the
query lane whenever it holds a text, except right after a query batch while
bulk texts wait (batches alternate then): a search waits behind at most one
bulk batch besides those already tokenized or running, never behind an index
run's backlog, and an index run is slowed by searches, never stopped. Three
threads keep the model busy:

- the **tokenizer** thread waits for texts (at most ``max_wait_ms`` for a
  batch to fill), picks a batch of similar lengths around the oldest text
  (less padding) within ``max_batch_size`` and ``max_batch_tokens``, and
  tokenizes it;
- the **inference** thread launches the model on each tokenized batch; on a
  GPU or a remote Triton server the launch returns at once, and up to
  ``in_flight`` batches run while the next ones are tokenized;
- the **completion** thread waits for each batch's vectors and hands them to
  the waiting requests.

Identical texts are embedded once: a text whose vector is in the cache
(keyed by the text's content hash) is answered at the front door, and a text
already queued or running is joined, not queued again. Texts of a request
whose caller went away are dropped before they are tokenized. A full queue
is refused at the front door (ResourceExhausted).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from codeindex_common.errors import ResourceExhausted, Unavailable

from . import metrics
from .backend import EmbeddingBackend, Tokenized

log = logging.getLogger("codeindex.embed")


def estimate_tokens(text: str, max_tokens: int) -> int:
    """A cheap length estimate to group texts (the tokenizer gives the real count later)."""
    return min(max_tokens, len(text) // 4 + 2)


def text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def select_batch(window: list, max_size: int, max_tokens: int) -> list:
    """Pick a batch from ``window`` (oldest first): the items nearest in
    length to the oldest one, so that padding is small and the oldest item
    never starves. The token budget counts padding: size x longest."""
    if not window:
        return []
    order = sorted(range(len(window)), key=lambda i: window[i].tokens)
    pos = order.index(0)
    lo = hi = pos  # grow [lo, hi] around the oldest item, cheaper side first
    while hi - lo + 1 < max_size:
        left = window[order[lo - 1]].tokens if lo > 0 else None
        right = window[order[hi + 1]].tokens if hi + 1 < len(order) else None
        if left is None and right is None:
            break
        longest = window[order[hi]].tokens
        if right is not None and (left is None or right - window[order[pos]].tokens
                                  <= window[order[pos]].tokens - left):
            if (hi - lo + 2) * right > max_tokens:
                break
            hi += 1
        else:
            if (hi - lo + 2) * longest > max_tokens:
                break
            lo -= 1
    return [window[i] for i in order[lo:hi + 1]]


@dataclass(eq=False)
class _Request:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    out: np.ndarray
    remaining: int
    cancelled: bool = False


@dataclass(eq=False)
class _Item:
    """One distinct text, and every (request, row) waiting for its vector."""

    key: bytes
    text: str
    tokens: int
    waiters: list[tuple[_Request, int]]
    urgent: bool = False
    enqueued: float = field(default_factory=time.perf_counter)

    def wanted(self) -> bool:
        return any(not req.cancelled for req, _ in self.waiters)


@dataclass(eq=False)
class _Launched:
    items: list[_Item]
    batch: Tokenized
    handle: Any = None
    error: BaseException | None = None
    started: float = 0.0


_STOP = object()


class LRUCache:
    """Vectors by text key, least recently used evicted first (not thread-safe: callers hold a lock)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._data: collections.OrderedDict[bytes, np.ndarray] = collections.OrderedDict()

    def get(self, key: bytes) -> np.ndarray | None:
        vec = self._data.get(key)
        if vec is not None:
            self._data.move_to_end(key)
        return vec

    def put(self, key: bytes, vec: np.ndarray) -> None:
        if self.capacity <= 0:
            return
        self._data[key] = vec
        self._data.move_to_end(key)
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class Batcher:
    def __init__(self, backend: EmbeddingBackend, max_batch_size: int = 128, max_batch_tokens: int = 32768,
                 max_wait_ms: float = 5.0, max_queue: int = 65536, in_flight: int = 2, cache_size: int = 100_000):
        self.backend = backend
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.in_flight = max(1, in_flight)
        self.labels = (backend.name, backend.device)
        metrics.QUEUE_CAPACITY.set(max_queue)
        self.group_window = 8 * max_batch_size  # how far ahead batches look for texts of similar length
        self._items: collections.deque[_Item] = collections.deque()  # bulk texts (Embed streams)
        self._urgent: collections.deque[_Item] = collections.deque()  # queries (EmbedOnce): batched first
        self._last_urgent = False  # the last batch came from the query lane
        self._pending: dict[bytes, _Item] = {}  # queued or running, by text key
        self._cache = LRUCache(cache_size)
        self._cond = threading.Condition()
        self._stopping = False
        self._tokenized: queue.Queue = queue.Queue(maxsize=self.in_flight)  # tokenizer -> inference
        self._launched: queue.Queue = queue.Queue()  # inference -> completion
        self._slots = threading.BoundedSemaphore(self.in_flight)  # batches launched and not yet collected
        self._threads = [threading.Thread(target=fn, name=f"embed-{name}", daemon=True) for name, fn in
                         (("tokenizer", self._tokenize_loop), ("inference", self._inference_loop),
                          ("completion", self._completion_loop))]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Refuse queued texts, finish the batches already tokenized or running, stop the threads."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for t in self._threads:
            t.join()

    # ------------------------------------------------------------------ front door (event loop)
    async def embed(self, texts: list[str], urgent: bool = False) -> np.ndarray:
        """Vectors for ``texts``; raises ResourceExhausted when the queue is full.
        ``urgent`` texts (queries) are batched before every bulk text queued."""
        if not texts:
            return np.empty((0, self.backend.dim), dtype=np.float32)
        loop = asyncio.get_running_loop()
        req = _Request(loop, loop.create_future(), np.empty((len(texts), self.backend.dim), np.float32), len(texts))
        keys = [text_key(t) for t in texts]
        hits = joined = 0
        with self._cond:
            if self._stopping:
                raise Unavailable("the embedder is shutting down")
            new = {k for k in keys if k not in self._pending and self._cache.get(k) is None}
            queued = len(self._items) + len(self._urgent)
            if queued + len(new) > self.max_queue:
                metrics.REQUESTS.labels("queue_full").inc()
                metrics.FAILURES.labels("queue_full").inc(len(texts))
                raise ResourceExhausted(f"embed queue full ({queued} of {self.max_queue} texts queued, "
                                        f"{len(new)} more asked)")
            mt = self.backend.max_tokens
            for i, (key, text) in enumerate(zip(keys, texts)):
                vec = self._cache.get(key)
                if vec is not None:
                    req.out[i] = vec
                    req.remaining -= 1
                    hits += 1
                elif (item := self._pending.get(key)) is not None:
                    item.waiters.append((req, i))
                    joined += 1
                    if urgent and not item.urgent and item in self._items:  # still queued: a query now waits
                        self._items.remove(item)
                        item.urgent = True
                        self._urgent.append(item)
                else:
                    item = _Item(key, text, estimate_tokens(text, mt), [(req, i)], urgent)
                    self._pending[key] = item
                    (self._urgent if urgent else self._items).append(item)
            metrics.QUEUE_DEPTH.set(len(self._items) + len(self._urgent))
            self._cond.notify()
        metrics.CACHE.labels("hit").inc(hits)
        metrics.CACHE.labels("joined").inc(joined)
        metrics.CACHE.labels("miss").inc(len(texts) - hits - joined)
        if req.remaining == 0:
            metrics.REQUESTS.labels("ok").inc()
            return req.out
        try:
            result = await req.future
        except asyncio.CancelledError:
            req.cancelled = True  # the caller went away: its texts are dropped unless someone else wants them
            metrics.REQUESTS.labels("cancelled").inc()
            raise
        metrics.REQUESTS.labels("ok").inc()
        return result

    # ------------------------------------------------------------------ tokenizer thread
    def _lane(self) -> str:
        """The lane the next batch comes from: queries first, but not twice in a row while bulk texts wait."""
        return "_urgent" if self._urgent and not (self._last_urgent and self._items) else "_items"

    def _take_batch(self) -> list[_Item] | None:
        """Wait for work, then up to max_wait for the batch to fill; then
        pick texts of similar length (less padding) around the oldest one,
        from the lane :meth:`_lane` names. None once stopping."""
        with self._cond:
            while not (self._items or self._urgent) and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            lane = self._lane()
            deadline = getattr(self, lane)[0].enqueued + self.max_wait
            while len(getattr(self, lane)) < self.max_batch_size and not self._stopping:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cond.wait(left)
                if lane == "_items" and self._lane() == "_urgent":  # a query came while a bulk batch filled
                    lane = "_urgent"
                    break
            if self._stopping:
                return None
            items = getattr(self, lane)
            dropped = [it for it in items if not it.wanted()]
            for it in dropped:  # every caller of these went away
                self._pending.pop(it.key, None)
            if dropped:
                metrics.FAILURES.labels("cancelled").inc(len(dropped))
                items = collections.deque(it for it in items if it.wanted())
            window = list(itertools.islice(items, self.group_window))
            batch = select_batch(window, self.max_batch_size, self.max_batch_tokens)
            chosen = {id(it) for it in batch}
            setattr(self, lane, collections.deque(it for it in items if id(it) not in chosen))
            self._last_urgent = lane == "_urgent"
            metrics.QUEUE_DEPTH.set(len(self._items) + len(self._urgent))
            return batch

    def _tokenize_loop(self) -> None:
        try:
            while (items := self._take_batch()) is not None:
                if not items:
                    continue
                now = time.perf_counter()
                for it in items:
                    metrics.QUEUE_WAIT.observe(now - it.enqueued)
                texts = [it.text for it in items]
                try:
                    job = _Launched(items, self.backend.tokenize(texts))
                except Exception as exc:  # noqa: BLE001 - handed to the waiting callers
                    job = _Launched(items, Tokenized(texts), error=exc)
                self._tokenized.put(job)  # blocks while `in_flight` batches wait: the queue holds the rest
        finally:
            self._refuse_queued()
            self._tokenized.put(_STOP)

    def _refuse_queued(self) -> None:
        with self._cond:
            items = [*self._urgent, *self._items]
            self._items, self._urgent = collections.deque(), collections.deque()
            metrics.QUEUE_DEPTH.set(0)
        if items:
            metrics.FAILURES.labels("shutdown").inc(len(items))
        self._deliver(items, None, Unavailable("the embedder is shutting down"))

    # ------------------------------------------------------------------ inference thread
    def _inference_loop(self) -> None:
        while (job := self._tokenized.get()) is not _STOP:
            if not any(it.wanted() for it in job.items):  # every caller went away while it waited
                metrics.FAILURES.labels("cancelled").inc(len(job.items))
                self._deliver(job.items, None, None)
                continue
            self._slots.acquire()  # at most `in_flight` batches launched and not yet collected
            if job.error is None:
                job.started = time.perf_counter()
                try:
                    job.handle = self.backend.launch(job.batch)
                except Exception as exc:  # noqa: BLE001
                    job.error = exc
            self._launched.put(job)
        self._launched.put(_STOP)

    # ------------------------------------------------------------------ completion thread
    def _completion_loop(self) -> None:
        while (job := self._launched.get()) is not _STOP:
            try:
                vectors = None
                if job.error is None:
                    try:
                        vectors = self.backend.collect(job.handle)
                        if vectors.shape != (len(job.items), self.backend.dim):
                            raise RuntimeError(f"the backend returned {vectors.shape} for {len(job.items)} texts")
                    except Exception as exc:  # noqa: BLE001
                        job.error = exc
                self._observe(job)
            finally:
                self._slots.release()
            if job.error is not None:
                log.error("embedding a batch of %d texts failed: %s", len(job.items), job.error)
                metrics.FAILURES.labels("backend_error").inc(len(job.items))
            self._deliver(job.items, vectors, job.error)

    def _observe(self, job: _Launched) -> None:
        labels = self.labels
        if job.started:
            took = time.perf_counter() - job.started
            metrics.INFERENCE_SECONDS.labels(*labels).observe(took)
            metrics.BUSY_SECONDS.labels(*labels).inc(took)
        if job.error is not None:
            return
        b = job.batch
        metrics.BATCH_SIZE.labels(*labels).observe(len(job.items))
        metrics.BATCH_TOKENS.labels(*labels).observe(b.padded)
        if b.padded:
            metrics.PADDING_RATIO.labels(*labels).observe(1 - b.tokens / b.padded)
        metrics.TEXTS.labels(*labels).inc(len(job.items))
        metrics.TOKENS.labels(*labels).inc(b.tokens)

    def _deliver(self, items: list[_Item], vectors: np.ndarray | None, error: BaseException | None) -> None:
        """Under the lock: the front door also fills requests (from the cache) and joins texts."""
        with self._cond:
            for n, it in enumerate(items):
                self._pending.pop(it.key, None)
                if vectors is not None:
                    self._cache.put(it.key, vectors[n])
                elif error is None:
                    continue  # dropped: nobody waits for it
                for req, row in it.waiters:
                    if req.remaining <= 0:
                        continue
                    if error is not None:
                        req.remaining = 0
                        req.cancelled = True  # its other queued texts are not embedded for nothing
                        metrics.REQUESTS.labels("failed").inc()
                        req.loop.call_soon_threadsafe(_fail, req.future, error)
                        continue
                    req.out[row] = vectors[n]
                    req.remaining -= 1
                    if req.remaining == 0:
                        req.loop.call_soon_threadsafe(_resolve, req.future, req.out)
            metrics.CACHE_ENTRIES.set(len(self._cache))


def _resolve(future: asyncio.Future, value) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
