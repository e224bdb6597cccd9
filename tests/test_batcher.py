"""The dynamic batcher's logic, with the deterministic hash backend (the real
model is exercised by the service and end-to-end tests)."""

import asyncio
import threading

import numpy as np
import pytest

from codeindex_common.errors import ResourceExhausted
from embed_svc.backend import HashBackend
from embed_svc.batcher import Batcher


class RecordingBackend(HashBackend):
    def __init__(self, delay: float = 0.0):
        super().__init__(dim=16)
        self.batches: list[int] = []
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()

    def encode(self, texts):
        self.gate.wait()
        self.batches.append(len(texts))
        return super().encode(texts)


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
        task = asyncio.ensure_future(batcher.embed(["x" * 100] * 30))  # ~27 estimated tokens each
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
