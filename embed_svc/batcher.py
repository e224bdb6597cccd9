"""The dynamic batcher: one bounded queue shared by every stream and client,
one inference thread that forms batches by size and token budget. No grpc."""

from __future__ import annotations

import asyncio
import collections
import itertools
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from codeindex_common.errors import ResourceExhausted, Unavailable

from . import metrics
from .backend import EmbeddingBackend


def estimate_tokens(text: str, max_tokens: int) -> int:
    return min(max_tokens, len(text) // 4 + 2)


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
    request: _Request
    index: int
    text: str
    tokens: int
    enqueued: float = field(default_factory=time.perf_counter)


class Batcher:
    def __init__(self, backend: EmbeddingBackend, max_batch_size: int = 128, max_batch_tokens: int = 32768,
                 max_wait_ms: float = 5.0, max_queue: int = 65536):
        self.backend = backend
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        metrics.QUEUE_CAPACITY.set(max_queue)
        self.group_window = 8 * max_batch_size  # how far ahead batches look for texts of similar length
        self._items: collections.deque[_Item] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="embed-batcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join()

    async def embed(self, texts: list[str]) -> np.ndarray:
        """Vectors for ``texts``; raises ResourceExhausted when the queue is full."""
        if not texts:
            return np.empty((0, self.backend.dim), dtype=np.float32)
        loop = asyncio.get_running_loop()
        req = _Request(loop, loop.create_future(), np.empty((len(texts), self.backend.dim), np.float32), len(texts))
        with self._cond:
            if self._stopping:
                raise Unavailable("the embedder is shutting down")
            if len(self._items) + len(texts) > self.max_queue:
                metrics.REQUESTS.labels("queue_full").inc()
                raise ResourceExhausted(f"embed queue full ({len(self._items)} of {self.max_queue} texts queued)")
            mt = self.backend.max_tokens
            self._items.extend(_Item(req, i, t, estimate_tokens(t, mt)) for i, t in enumerate(texts))
            metrics.QUEUE_DEPTH.set(len(self._items))
            self._cond.notify()
        try:
            result = await req.future
        except asyncio.CancelledError:
            req.cancelled = True  # the caller went away: its queued texts are dropped
            metrics.REQUESTS.labels("cancelled").inc()
            raise
        metrics.REQUESTS.labels("ok").inc()
        return result

    def _take_batch(self) -> list[_Item]:
        """Wait for work, then up to max_wait for the batch to fill; then
        pick texts of similar length (less padding) around the oldest one."""
        with self._cond:
            while not self._items and not self._stopping:
                self._cond.wait()
            if not self._items:
                return []
            deadline = self._items[0].enqueued + self.max_wait
            while len(self._items) < self.max_batch_size and not self._stopping:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cond.wait(left)
            while self._items and self._items[0].request.cancelled:
                self._items.popleft()  # the caller went away
            window = [it for it in itertools.islice(self._items, self.group_window) if not it.request.cancelled]
            batch = select_batch(window, self.max_batch_size, self.max_batch_tokens)
            chosen = {id(it) for it in batch}
            live = (it for it in self._items if id(it) not in chosen and not it.request.cancelled)
            self._items = collections.deque(live)
            metrics.QUEUE_DEPTH.set(len(self._items))
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            with self._cond:
                if self._stopping:  # the server drained in-flight RPCs already; what is left is refused
                    for item in self._items:
                        if item.request.remaining > 0:
                            item.request.remaining = 0
                            item.request.loop.call_soon_threadsafe(
                                _fail, item.request.future, Unavailable("the embedder is shutting down"))
                    self._items.clear()
                    if not batch:
                        return
            if not batch:
                continue
            now = time.perf_counter()
            for item in batch:
                metrics.QUEUE_WAIT.observe(now - item.enqueued)
            try:
                vectors = self.backend.encode([item.text for item in batch])
                if vectors.shape != (len(batch), self.backend.dim):
                    raise RuntimeError(f"the backend returned {vectors.shape} for {len(batch)} texts")
                error = None
            except Exception as exc:  # noqa: BLE001 - handed to every waiting caller
                vectors, error = None, exc
            took = time.perf_counter() - now
            metrics.INFERENCE_SECONDS.observe(took)
            metrics.BUSY_SECONDS.labels(self.backend.name, self.backend.device).inc(took)
            metrics.BATCH_SIZE.observe(len(batch))
            padded = len(batch) * max(item.tokens for item in batch)
            metrics.BATCH_TOKENS.observe(padded)
            metrics.PADDING_RATIO.observe(1 - sum(item.tokens for item in batch) / padded)
            metrics.TEXTS.inc(len(batch))
            metrics.TOKENS.inc(sum(item.tokens for item in batch))
            for i, item in enumerate(batch):
                req = item.request
                if error is not None:
                    if req.remaining > 0:
                        req.remaining = 0
                        req.cancelled = True  # its other queued texts are not embedded for nothing
                        metrics.REQUESTS.labels("failed").inc()
                        req.loop.call_soon_threadsafe(_fail, req.future, error)
                    continue
                req.out[item.index] = vectors[i]
                req.remaining -= 1
                if req.remaining == 0:
                    req.loop.call_soon_threadsafe(_resolve, req.future, req.out)


def _resolve(future: asyncio.Future, value) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
