"""The dynamic batcher, shared by every stream and client: the front door and its three threads. No grpc.

Requests go into one bounded queue of distinct texts, in two lanes: queries
(``urgent``: EmbedOnce, what a search waits for) and bulk texts (Embed
streams, what an index run sends by the thousand). A batch is taken from the
query lane whenever it holds a text, except right after a query batch while
bulk texts wait (batches alternate then): a search waits behind at most one
bulk batch besides those already tokenized or running, never behind an index
run's backlog, and an index run is slowed by searches, never stopped. The
queue, its lane rule and the choice of a batch are :mod:`embed_svc.lanes`;
the vector cache is :mod:`embed_svc.cache`. This module owns the threads and
the lock around both:

- the front door (:meth:`Batcher.embed`, on the event loop) answers texts
  from the cache, joins texts already queued or running, queues the rest, and
  refuses a request that would overfill the queue (ResourceExhausted);
- the **tokenizer** thread waits for texts (at most ``max_wait_ms`` for a
  batch to fill), takes a batch of similar lengths around the oldest text
  (less padding) within ``max_batch_size`` and ``max_batch_tokens``, and
  tokenizes it (bulk texts once: the encodings that counted their tokens
  are padded into the batch, not encoded again); with ``tokenizer_threads``
  2 or more, several do, each on its own batch (a thread may then take texts
  another is still counting, which it encodes anew; one batch encoded, the GIL
  released, while another is turned into arrays; on 2 cores slower than one
  thread, whose encoding uses every core already: docs/EMBEDDING.md);
- the **inference** thread launches the model on each tokenized batch; on a
  GPU, a remote Triton server or the onnx backend's CPU runs side by side
  the launch returns at once, and up to ``in_flight`` batches run while the
  next ones are tokenized;
- the **completion** thread waits for each batch's vectors, caches them and
  hands them to the waiting requests: in launch order, or as each ends where
  the backend's handle says so (``add_done_callback``: the onnx runs, where a
  query's short batch then need not wait for a long batch launched before it).

Texts of a request whose caller went away are dropped before they are
tokenized.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from codeindex_common.errors import ResourceExhausted, Unavailable

from . import metrics
from .backends import EmbeddingBackend, Tokenized, runs_of
from .cache import LRUCache, text_key
from .lanes import BULK, URGENT, Item, Lanes

log = logging.getLogger("codeindex.embed")


@dataclass(eq=False)
class _Request:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    out: np.ndarray
    remaining: int
    cancelled: bool = False


@dataclass(eq=False)
class _Launched:
    items: list[Item]
    batch: Tokenized
    handle: Any = None
    error: BaseException | None = None
    started: float = 0.0


_STOP = object()


class Batcher:
    """One per service: :meth:`embed` from any event loop, after :meth:`start` and until :meth:`stop`."""

    def __init__(self, backend: EmbeddingBackend, max_batch_size: int = 128, max_batch_tokens: int = 32768,
                 max_wait_ms: float = 5.0, max_queue: int = 65536, in_flight: int = 2, cache_size: int = 100_000,
                 tokenizer_threads: int = 1):
        self.backend = backend
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.in_flight = max(1, in_flight)
        self.runs = runs_of(backend)
        self.labels = (backend.name, backend.device)
        metrics.QUEUE_CAPACITY.set(max_queue)
        self._lanes = Lanes(backend.max_tokens, max_batch_size, max_batch_tokens)  # under _cond
        self._cache = LRUCache(cache_size)  # under _cond
        self._cond = threading.Condition()
        self._stopping = False
        self._tokenized: queue.Queue = queue.Queue(maxsize=self.in_flight)  # tokenizer -> inference
        self._launched: queue.Queue = queue.Queue()  # inference -> completion
        self._slots = threading.BoundedSemaphore(self.in_flight)  # batches launched and not yet collected
        self.tokenizer_threads = max(1, tokenizer_threads)
        self._tokenizers_left = self.tokenizer_threads  # under _cond: the last one to stop tells the inference thread
        tokenizers = [(f"tokenizer-{i}" if i else "tokenizer", self._tokenize_loop)
                      for i in range(self.tokenizer_threads)]
        self._threads = [threading.Thread(target=fn, name=f"embed-{name}", daemon=True) for name, fn in
                         (*tokenizers, ("inference", self._inference_loop), ("completion", self._completion_loop))]

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
        hits, joined = self._admit(req, texts, urgent)
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
            with self._cond:
                self._lanes.cancelled()
            metrics.REQUESTS.labels("cancelled").inc()
            raise
        metrics.REQUESTS.labels("ok").inc()
        return result

    def _admit(self, req: _Request, texts: list[str], urgent: bool) -> tuple[int, int]:
        """Under the lock: rows from the cache into ``req.out``, texts queued or running joined, the rest
        queued; (cache hits, joined). Refuses the whole request when its new texts would overfill the queue."""
        keys = [text_key(t) for t in texts]
        hits = joined = 0
        with self._cond:
            if self._stopping:
                raise Unavailable("the embedder is shutting down")
            new = {k for k in keys if not self._lanes.pending(k) and self._cache.get(k) is None}
            queued = len(self._lanes)
            if queued + len(new) > self.max_queue:
                metrics.REQUESTS.labels("queue_full").inc()
                metrics.FAILURES.labels("queue_full").inc(len(texts))
                raise ResourceExhausted(f"embed queue full ({queued} of {self.max_queue} texts queued, "
                                        f"{len(new)} more asked)")
            for i, (key, text) in enumerate(zip(keys, texts)):
                vec = self._cache.get(key)
                if vec is not None:
                    req.out[i] = vec
                    req.remaining -= 1
                    hits += 1
                elif self._lanes.add(key, text, (req, i), urgent):
                    joined += 1
            metrics.QUEUE_DEPTH.set(len(self._lanes))
            self._cond.notify()
        return hits, joined

    # ------------------------------------------------------------------ tokenizer thread
    def _take_batch(self) -> list[Item] | None:
        """Wait for work, then up to max_wait for a bulk batch to fill (a query arriving meanwhile
        takes over from it; queries never wait to be joined by more: a search waits for its own
        vector, and under load the queries queued meanwhile share the batch anyway); count the
        tokens of the texts a bulk batch is chosen from (outside the lock); then take the batch
        from the lane the queue's rule names (:meth:`Lanes.next_lane`). None once stopping."""
        lanes = self._lanes
        with self._cond:
            lane = self._wait_for_work()
            if lane is None:
                return None
            uncounted = lanes.uncounted(lane) if lane == BULK else []
        counted: list = []
        if uncounted:  # real lengths: batches of texts of one length waste less on padding
            texts = [it.text for it in uncounted]
            encodings = self.backend.encode_unpadded(texts)
            if encodings is not None:  # kept: the batch is padded from them, its texts not encoded twice
                counted = [(it, len(e.ids), e) for it, e in zip(uncounted, encodings)]
            else:
                counted = [(it, n, None) for it, n in zip(uncounted, self.backend.count_tokens(texts) or ())]
        with self._cond:
            if self._stopping:
                return None
            for it, n, e in counted:  # under the lock: another tokenizer thread may be choosing a batch
                if not it.counted:
                    it.tokens, it.counted, it.encoding = max(1, n), True, e
            batch, dropped = lanes.take(lane)
            if dropped:  # every caller of these went away
                metrics.FAILURES.labels("cancelled").inc(dropped)
            metrics.QUEUE_DEPTH.set(len(lanes))
            if lanes:  # texts left: another tokenizer thread (if any) takes the next batch meanwhile
                self._cond.notify()
            return batch

    def _wait_for_work(self) -> str | None:
        """Under the lock: the lane of the next batch, once it has texts (and a bulk one had time to fill)."""
        lanes = self._lanes
        while not lanes and not self._stopping:
            self._cond.wait()
        if self._stopping:
            return None
        lane = lanes.next_lane()
        deadline = lanes.oldest(lane) + (0.0 if lane == URGENT else self.max_wait)
        while lanes.size(lane) < self.max_batch_size and not self._stopping:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            self._cond.wait(left)
            if lane == BULK and lanes.next_lane() == URGENT:  # a query came while a bulk batch filled
                return URGENT
        return None if self._stopping else lane

    def _tokenize_loop(self) -> None:
        try:
            while (items := self._take_batch()) is not None:
                if not items:
                    continue
                now = time.perf_counter()
                for it in items:
                    metrics.QUEUE_WAIT.observe(now - it.enqueued)
                texts = [it.text for it in items]
                encodings = [it.encoding for it in items]
                for it in items:
                    it.encoding = None  # what the batch is padded from is not kept with the text after
                try:
                    if all(e is not None for e in encodings):
                        job = _Launched(items, self.backend.tokenize(texts, encodings))
                    else:
                        job = _Launched(items, self.backend.tokenize(texts))
                except Exception as exc:  # noqa: BLE001 - handed to the waiting callers
                    job = _Launched(items, Tokenized(texts), error=exc)
                self._tokenized.put(job)  # blocks while `in_flight` batches wait: the queue holds the rest
        finally:
            self._refuse_queued()
            with self._cond:
                self._tokenizers_left -= 1
                last = self._tokenizers_left == 0
            if last:  # the others have put their last batch: nothing comes after this
                self._tokenized.put(_STOP)

    def _refuse_queued(self) -> None:
        with self._cond:
            items = self._lanes.clear()
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
            when_done = getattr(job.handle, "add_done_callback", None)
            if job.error is None and when_done is not None:  # runs side by side: collected as each one ends
                when_done(lambda job=job: self._launched.put(job))
            else:
                self._launched.put(job)
        for _ in range(self.in_flight):  # every batch launched has been collected (a run may end after this)
            self._slots.acquire()
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
                try:
                    self._observe(job)
                except Exception:  # noqa: BLE001 - metrics must not stop the deliveries
                    log.exception("recording a batch's metrics failed")
            finally:
                self._slots.release()
            if job.error is not None:
                log.error("embedding a batch of %d texts failed: %s", len(job.items), job.error)
                metrics.FAILURES.labels("backend_error").inc(len(job.items))
            self._deliver(job.items, vectors, job.error)

    def _observe(self, job: _Launched) -> None:
        labels = self.labels
        if job.started:  # the backend's own time on the batch where it knows it (a run that waited for a free one)
            took = getattr(job.handle, "seconds", None) or time.perf_counter() - job.started
            metrics.INFERENCE_SECONDS.labels(*labels).observe(took)
            metrics.BUSY_SECONDS.labels(*labels).inc(took / self.runs)  # 1 a second: all runs busy
        if job.error is not None:
            return
        b = job.batch
        metrics.BATCH_SIZE.labels(*labels).observe(len(job.items))
        metrics.BATCH_TOKENS.labels(*labels).observe(b.padded)
        if b.padded:
            metrics.PADDING_RATIO.labels(*labels).observe(1 - b.tokens / b.padded)
        metrics.TEXTS.labels(*labels).inc(len(job.items))
        metrics.TOKENS.labels(*labels).inc(b.tokens)

    def _deliver(self, items: list[Item], vectors: np.ndarray | None, error: BaseException | None) -> None:
        """Under the lock: the front door also fills requests (from the cache) and joins texts."""
        with self._cond:
            for n, it in enumerate(items):
                self._lanes.done(it.key)
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
                        self._lanes.cancelled()
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
