"""The dynamic batcher's logic, with the deterministic hash backend (the real
model is exercised by the service and end-to-end tests)."""

import asyncio
import threading

import numpy as np
import pytest

from codeindex_common.errors import ResourceExhausted
from embed_svc.backends import HashBackend
from embed_svc.batcher import Batcher


class RecordingBackend(HashBackend):
    def __init__(self, delay: float = 0.0):
        super().__init__(dim=16)
        self.batches: list[int] = []
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()

    def launch(self, batch):
        self.gate.wait()
        self.batches.append(len(batch.texts))
        return super().launch(batch)


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_share_batches_and_get_their_own_vectors():
    backend = RecordingBackend()
    batcher = Batcher(backend, max_batch_size=64, max_wait_ms=50)
    batcher.start()

    async def main():
        texts = [[f"text {i}-{j}" for j in range(4)] for i in range(10)]
        results = await asyncio.gather(*(batcher.embed(t) for t in texts))
        for t, r in zip(texts, results):
            np.testing.assert_allclose(r, HashBackend(16).encode(t))

    try:
        run(main())
    finally:
        batcher.stop()
    assert sum(backend.batches) == 40
    assert max(backend.batches) > 4, f"requests were not batched together: {backend.batches}"


def test_batches_respect_size_and_token_caps():
    backend = RecordingBackend()
    backend.gate.clear()  # hold the first batch so the rest queue up
    batcher = Batcher(backend, max_batch_size=8, max_batch_tokens=10 * 27, max_wait_ms=1)
    batcher.start()

    async def main():
        task = asyncio.ensure_future(batcher.embed([f"{i:03d}" + "x" * 97 for i in range(30)]))  # ~27 tokens each
        await asyncio.sleep(0.05)
        backend.gate.set()
        return await task

    try:
        assert run(main()).shape == (30, 16)
    finally:
        batcher.stop()
    assert max(backend.batches) <= 8 and sum(backend.batches) == 30


def test_full_queue_is_refused_and_the_batcher_keeps_working():
    backend = RecordingBackend()
    backend.gate.clear()
    batcher = Batcher(backend, max_batch_size=4, max_wait_ms=1, max_queue=10)
    batcher.start()

    async def main():
        first = asyncio.ensure_future(batcher.embed([f"a{i}" for i in range(8)]))
        await asyncio.sleep(0.05)
        with pytest.raises(ResourceExhausted):
            await batcher.embed([f"b{i}" for i in range(20)])
        backend.gate.set()
        await first
        return await batcher.embed(["after"])

    try:
        assert run(main()).shape == (1, 16)
    finally:
        batcher.stop()


def test_cancelled_requests_are_dropped():
    backend = RecordingBackend()
    backend.gate.clear()
    batcher = Batcher(backend, max_batch_size=2, max_wait_ms=1)
    batcher.start()

    async def main():
        blocker = asyncio.ensure_future(batcher.embed(["x", "y"]))
        await asyncio.sleep(0.05)  # the first batch is now inside encode
        gone = asyncio.ensure_future(batcher.embed([f"gone{i}" for i in range(10)]))
        await asyncio.sleep(0.01)
        gone.cancel()
        await asyncio.sleep(0.01)
        backend.gate.set()
        await blocker
        return await batcher.embed(["kept"])

    try:
        run(main())
    finally:
        batcher.stop()
    assert sum(backend.batches) == 3, backend.batches  # 2 + 1: the 10 cancelled texts never ran


def test_identical_texts_are_embedded_once_cached_or_joined():
    backend = RecordingBackend()
    backend.gate.clear()  # hold the first batch: the duplicates below arrive while it runs
    batcher = Batcher(backend, max_batch_size=64, max_wait_ms=1)
    batcher.start()

    async def main():
        first = asyncio.ensure_future(batcher.embed(["licence header", "a", "b"]))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(batcher.embed(["a", "licence header", "c"]))  # joins the running texts
        await asyncio.sleep(0.05)
        backend.gate.set()
        one, two = await first, await second
        three = await batcher.embed(["b", "a"])  # from the cache: no model call
        return one, two, three

    try:
        one, two, three = run(main())
    finally:
        batcher.stop()
    expect = HashBackend(16).encode
    np.testing.assert_allclose(one, expect(["licence header", "a", "b"]))
    np.testing.assert_allclose(two, expect(["a", "licence header", "c"]))
    np.testing.assert_allclose(three, expect(["b", "a"]))
    assert sum(backend.batches) == 4, backend.batches  # licence header, a, b, c: each once


def test_several_batches_are_in_flight_and_a_failing_batch_fails_only_its_callers():
    class Deferred(HashBackend):
        """launch returns at once (like a GPU or Triton); collect waits for a release."""

        def __init__(self):
            super().__init__(dim=8)
            self.launched = 0
            self.release = threading.Semaphore(0)

        def launch(self, batch):
            self.launched += 1
            if any(t.startswith("bad") for t in batch.texts):
                return None
            return super().launch(batch)

        def collect(self, handle):
            self.release.acquire()
            if handle is None:
                raise RuntimeError("the model failed")
            return handle

    backend = Deferred()
    batcher = Batcher(backend, max_batch_size=2, max_wait_ms=1, in_flight=2)
    batcher.start()

    async def main():
        good = asyncio.ensure_future(batcher.embed(["g1", "g2"]))
        await asyncio.sleep(0.05)
        bad = asyncio.ensure_future(batcher.embed(["bad1", "bad2"]))
        await asyncio.sleep(0.1)
        in_flight = backend.launched  # both launched before either was collected
        backend.release.release(2)
        with pytest.raises(RuntimeError, match="the model failed"):
            await bad
        backend.release.release(1)
        ok = await good
        after = asyncio.ensure_future(batcher.embed(["after"]))
        await asyncio.sleep(0.01)
        backend.release.release(1)
        return in_flight, ok, await after

    try:
        in_flight, ok, after = run(main())
    finally:
        batcher.stop()
    assert in_flight == 2
    assert ok.shape == (2, 8) and after.shape == (1, 8)


def test_runs_side_by_side_are_delivered_as_each_ends_and_stop_waits_for_every_run():
    """A backend whose handles say when they end (the onnx runs): a short batch launched after a long one is
    delivered first; the busy seconds count over the runs; stop returns once every run has been collected."""
    from concurrent.futures import Future, ThreadPoolExecutor

    from embed_svc import metrics

    class Handle:
        def __init__(self, future):
            self.future, self.seconds = future, 0.5

        def add_done_callback(self, fn):
            self.future.add_done_callback(lambda _f: fn())

    class Runs(HashBackend):
        runs = 2

        def __init__(self):
            super().__init__(dim=8)
            self.pool = ThreadPoolExecutor(2)
            self.hold = threading.Event()  # the "long" batch runs until this is set

        def launch(self, batch):
            def run():
                if batch.texts[0].startswith("long"):
                    self.hold.wait(10)
                return HashBackend.launch(self, batch)
            return Handle(self.pool.submit(run))

        def collect(self, handle):
            assert isinstance(handle.future, Future) and handle.future.done()
            return handle.future.result()

    backend = Runs()
    batcher = Batcher(backend, max_batch_size=1, max_wait_ms=1, in_flight=3)
    busy = metrics.BUSY_SECONDS.labels(*batcher.labels)
    busy_before = busy._value.get()
    batcher.start()

    async def main():
        long = asyncio.ensure_future(batcher.embed(["long one"]))
        await asyncio.sleep(0.05)
        short = await asyncio.wait_for(batcher.embed(["short one"], urgent=True), 5)  # while the long one runs
        assert not long.done()
        backend.hold.set()
        return short, await long

    try:
        short, long = run(main())
        backend.hold.clear()
        late = threading.Thread(target=lambda: asyncio.run(batcher.embed(["long two"])), daemon=True)
        late.start()
        threading.Timer(0.3, backend.hold.set).start()
        time_stopped = threading.Event()
        threading.Timer(0.1, lambda: (batcher.stop(), time_stopped.set())).start()
        late.join(10)
        assert time_stopped.wait(10)  # stop waited for the run still going, then returned
    finally:
        backend.hold.set()
        batcher.stop()
        backend.pool.shutdown()
    assert short.shape == (1, 8) and long.shape == (1, 8)
    assert busy._value.get() - busy_before == pytest.approx(3 * 0.5 / 2)  # three runs of 0.5 s, over 2 runs


def test_a_backend_that_does_not_say_its_runs_runs_one_at_a_time():
    """A backend written to the protocol before it had ``runs`` (or a stand-in, as bench/tokenize.py's) is
    one run: its batches are answered (a missing ``runs`` once stopped the completion thread, and every
    caller waited for ever)."""

    class Bare:
        dim, max_tokens, device, name, model_id = 4, 256, "cpu", "bare", "bare"

        def tokenize(self, texts, encodings=None):
            return HashBackend(4).tokenize(texts)

        def launch(self, batch):
            return len(batch.texts)

        def collect(self, handle):
            return np.ones((handle, 4), np.float32)

        def count_tokens(self, texts):
            return None

        def encode_unpadded(self, texts):
            return None

    batcher = Batcher(Bare(), max_batch_size=4, max_wait_ms=1)
    batcher.start()
    try:
        assert run(asyncio.wait_for(batcher.embed([f"t{i}" for i in range(9)]), 10)).shape == (9, 4)
    finally:
        batcher.stop()


def test_the_query_lane_goes_first_but_alternates_with_waiting_bulk_texts_and_a_query_promotes_its_text():
    from embed_svc.lanes import BULK, URGENT, Lanes

    class Req:
        cancelled = False

    lanes = Lanes(max_tokens=256, max_batch_size=2, max_batch_tokens=10_000)
    for i in range(4):
        assert not lanes.add(f"b{i}".encode(), f"bulk {i}", (Req(), 0), urgent=False)
    assert lanes.next_lane() == BULK
    assert lanes.add(b"b3", "bulk 3", (Req(), 0), urgent=True)  # joined, and moved to the query lane
    assert lanes.add(b"q", "query", (Req(), 0), urgent=True) is False
    assert (len(lanes), lanes.size(URGENT), lanes.next_lane()) == (5, 2, URGENT)
    batch, dropped = lanes.take(URGENT)
    assert sorted(it.text for it in batch) == ["bulk 3", "query"] and dropped == 0
    assert lanes.add(b"q2", "query 2", (Req(), 0), urgent=True) is False
    assert lanes.next_lane() == BULK  # not two query batches in a row while bulk texts wait
    gone = Req()
    gone.cancelled = True
    lanes.add(b"b9", "bulk 9", (gone, 0), urgent=False)
    batch, dropped = lanes.take(BULK)  # nobody wants bulk 9 any more: dropped, not batched
    assert len(batch) == 2 and dropped == 1 and not lanes.pending(b"b9")
    assert lanes.next_lane() == URGENT
    lanes.take(URGENT)
    batch, dropped = lanes.take(BULK)
    assert [it.text for it in batch] == ["bulk 2"] and dropped == 0
    assert lanes.pending(b"b2")  # taken, not answered yet: a request for it still joins it
    lanes.done(b"b2")
    assert not lanes.pending(b"b2") and len(lanes) == 0


def test_the_service_stops_the_batcher_then_closes_the_backend(monkeypatch):
    """A Triton backend holds a connection and a thread: stop() must close it, after the batcher's last batch."""
    from embed_svc.__main__ import build
    from embed_svc.config import EmbedConfig

    calls: list[str] = []
    stop = Batcher.stop

    def stopping(self):
        stop(self)
        calls.append("batcher stopped" if not any(t.is_alive() for t in self._threads) else "batcher running")

    monkeypatch.setattr(Batcher, "stop", stopping)
    monkeypatch.setattr(HashBackend, "close", lambda self: calls.append("backend closed"), raising=False)
    service = build(EmbedConfig(backend="hash", max_wait_ms=1))

    async def main():
        await service.start()
        await service.stop()

    run(main())
    assert calls == ["batcher stopped", "backend closed"]


def test_two_tokenizer_threads_tokenize_batches_side_by_side_and_answer_every_text():
    """With tokenizer_threads=2, a second batch is tokenized while the first one's tokenizing is still under
    way (here: held until the other starts), every text gets its own vector, and stop() ends every thread."""

    class SlowTokenizer(HashBackend):
        def __init__(self):
            super().__init__(dim=8)
            self.inside = 0
            self.most_inside = 0
            self.lock = threading.Lock()
            self.both = threading.Event()

        def tokenize(self, texts):
            with self.lock:
                self.inside += 1
                self.most_inside = max(self.most_inside, self.inside)
                if self.inside == 2:
                    self.both.set()
            self.both.wait(2.0)  # the first batch waits (at most 2 s) for a second to be tokenized beside it
            try:
                return super().tokenize(texts)
            finally:
                with self.lock:
                    self.inside -= 1

    backend = SlowTokenizer()
    batcher = Batcher(backend, max_batch_size=4, max_wait_ms=1, tokenizer_threads=2)
    batcher.start()

    async def main():
        texts = [f"text {i}" for i in range(40)]
        return texts, await batcher.embed(texts)

    try:
        texts, vectors = run(main())
    finally:
        batcher.stop()
    np.testing.assert_allclose(vectors, HashBackend(8).encode(texts))
    assert backend.most_inside == 2, "the two tokenizer threads never tokenized at once"
    assert not any(t.is_alive() for t in batcher._threads)


def test_one_tokenizer_thread_tokenizes_one_batch_at_a_time():
    class Counting(HashBackend):
        def __init__(self):
            super().__init__(dim=8)
            self.inside = self.most_inside = 0
            self.lock = threading.Lock()

        def tokenize(self, texts):
            with self.lock:
                self.inside += 1
                self.most_inside = max(self.most_inside, self.inside)
            try:
                threading.Event().wait(0.01)
                return super().tokenize(texts)
            finally:
                with self.lock:
                    self.inside -= 1

    backend = Counting()
    batcher = Batcher(backend, max_batch_size=4, max_wait_ms=1)
    batcher.start()
    try:
        run(batcher.embed([f"t {i}" for i in range(20)]))
    finally:
        batcher.stop()
    assert backend.most_inside == 1


def test_bulk_texts_are_encoded_once_the_batch_padded_from_the_encodings_that_counted_them():
    """A backend that can give unpadded encodings gets them back for the batch (none encoded a second
    time); queries, never counted, are tokenized from their texts."""

    class Encoding:
        def __init__(self, text):
            self.ids = list(range(len(text) // 4 + 2))

    class Encoding1(HashBackend):
        def __init__(self):
            super().__init__(dim=8)
            self.encoded: list[str] = []
            self.from_texts: list[str] = []

        def encode_unpadded(self, texts):
            self.encoded += texts
            return [Encoding(t) for t in texts]

        def tokenize(self, texts, encodings=None):
            if encodings is None:
                self.from_texts += texts
            else:
                assert [len(e.ids) for e in encodings] == [len(t) // 4 + 2 for t in texts]
            return super().tokenize(texts)

    backend = Encoding1()
    batcher = Batcher(backend, max_batch_size=8, max_wait_ms=1)
    batcher.start()
    bulk = [f"bulk text {i} " + "x" * i for i in range(30)]

    async def main():
        return await asyncio.gather(batcher.embed(bulk), batcher.embed(["a query"], urgent=True))

    try:
        vectors, query = run(main())
    finally:
        batcher.stop()
    np.testing.assert_allclose(vectors, HashBackend(8).encode(bulk))
    np.testing.assert_allclose(query, HashBackend(8).encode(["a query"]))
    assert sorted(backend.encoded) == sorted(bulk)  # each bulk text encoded once
    assert backend.from_texts == ["a query"]


def test_a_cancelled_requests_texts_leave_the_whole_queue_at_the_next_batch():
    """A batch looks at its window of the queue only, but once a request is cancelled the next batch drops
    every text of it nobody else waits for, however far back: they hold no room in the queue (max_queue) and
    are never tokenized."""
    from embed_svc.lanes import BULK, Lanes

    class Waiter:
        cancelled = False

    live, gone = Waiter(), Waiter()
    lanes = Lanes(max_tokens=256, max_batch_size=4, max_batch_tokens=4 * 256)  # a window of 32 texts
    for i in range(40):
        lanes.add(f"live {i}".encode(), f"live {i}", (live, i), urgent=False)
    for i in range(1000):
        lanes.add(f"gone {i}".encode(), f"gone {i}", (gone, i), urgent=False)
    gone.cancelled = True
    lanes.cancelled()
    batch, dropped = lanes.take(BULK)
    assert (len(batch), dropped, len(lanes)) == (4, 1000, 36)
    assert not lanes.pending(b"gone 999") and lanes.pending(b"live 39")
    assert all(it.text.startswith("live") for it in lanes.uncounted(BULK))
