"""The torch backend on CUDA (fp16, its own stream, batches in flight). Runs
only where a CUDA device is present (`make bench-gpu` machines); CI has none."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

TEXTS = [f"def handler_{i}(request):\n    return respond(request, code={i})\n" * (1 + i % 7) for i in range(200)]


def test_cuda_fp16_vectors_match_cpu_and_batches_overlap():
    from embed_svc.backends import TorchBackend
    from embed_svc.batcher import Batcher

    cpu = TorchBackend(device="cpu").encode(TEXTS[:40])
    gpu = TorchBackend(device="cuda")
    assert gpu.dtype == "fp16" and gpu.preferred_batch == 256
    got = gpu.encode(TEXTS[:40])
    assert (got * cpu).sum(axis=1).min() > 0.999
    batcher = Batcher(gpu, max_batch_size=16, max_wait_ms=1, in_flight=2)
    batcher.start()

    async def main():
        return await asyncio.gather(*(batcher.embed(TEXTS[i:i + 10]) for i in range(0, 200, 10)))

    try:
        out = np.concatenate(asyncio.run(main()))
    finally:
        batcher.stop()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-3)
    assert (out[:40] * cpu).sum(axis=1).min() > 0.999
