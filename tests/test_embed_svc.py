"""The embedding service under load, with the real model: overload is
refused at the front door, identical texts are embedded once."""

from __future__ import annotations

import concurrent.futures

import grpc
import numpy as np
import psutil
import pytest

from codeindex_common import vectors
from codeindex_common.pb import embed_pb2, embed_pb2_grpc
from codeindex_common.channels import wait_for_serving

from tests.test_services import metrics_text

pytestmark = pytest.mark.slow


def metric(text: str, name: str) -> float:
    """The sum of a metric's samples (all label sets)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#") and line[len(name)] in " {")


def test_ten_times_the_queue_gets_resource_exhausted_for_the_excess_and_the_service_keeps_serving(start_service):
    svc = start_service("embed", "--max-queue", "64", "--max-batch-size", "16", "--cache-size", "0")
    process = psutil.Process(svc.proc.pid)
    rss_before = process.memory_info().rss
    texts = [f"def handler_{i}(request):\n    return respond(request, code={i})\n" for i in range(640)]
    with grpc.insecure_channel(svc.address) as ch:
        stub = embed_pb2_grpc.EmbedderStub(ch)

        def one(i: int):
            try:
                r = stub.EmbedOnce(embed_pb2.EmbedRequest(request_id=str(i), texts=texts[i * 8:(i + 1) * 8]),
                                   timeout=120)
                return i, vectors.unpack(r.vectors, r.dim, r.count)
            except grpc.RpcError as exc:
                return i, exc.code()

        with concurrent.futures.ThreadPoolExecutor(80) as pool:  # 640 texts at once into a queue of 64
            results = dict(pool.map(one, range(80)))
        refused = [i for i, r in results.items() if r is grpc.StatusCode.RESOURCE_EXHAUSTED]
        answered = [i for i, r in results.items() if isinstance(r, np.ndarray)]
        assert len(refused) + len(answered) == 80, {r for r in results.values() if not isinstance(r, np.ndarray)}
        assert refused and answered, (len(refused), len(answered))
        assert all(results[i].shape == (8, 384) for i in answered)
        wait_for_serving(svc.address, 5)
        after = stub.EmbedOnce(embed_pb2.EmbedRequest(request_id="after", texts=["def still_serving(): pass"]),
                               timeout=60)
        assert after.count == 1
    m = metrics_text(svc.metrics_port)
    assert metric(m, "embed_failures_total") == 8 * len(refused)
    assert 'embed_failures_total{reason="queue_full"}' in m
    assert process.memory_info().rss - rss_before < 300 * 2**20  # nothing piles up


def test_identical_texts_are_embedded_once_and_metrics_carry_backend_and_device(start_service):
    svc = start_service("embed")
    licence = "# Licensed under the Apache License, Version 2.0 (the \"License\");\n" * 3
    texts = [licence, "def unique_a(): pass", licence, "def unique_b(): pass"]
    with grpc.insecure_channel(svc.address) as ch:
        stub = embed_pb2_grpc.EmbedderStub(ch)
        first = stub.EmbedOnce(embed_pb2.EmbedRequest(request_id="1", texts=texts), timeout=60)
        second = stub.EmbedOnce(embed_pb2.EmbedRequest(request_id="2", texts=[licence, "def unique_a(): pass"]),
                                timeout=60)
    a = vectors.unpack(first.vectors, first.dim, first.count)
    b = vectors.unpack(second.vectors, second.dim, second.count)
    np.testing.assert_allclose(a[0], a[2])
    np.testing.assert_allclose(b, a[:2])
    m = metrics_text(svc.metrics_port)
    assert 'embed_texts_total{backend="onnx",device="cpu"} 3.0' in m  # the CPU default; licence, unique_a, unique_b
    assert 'embed_cache_texts_total{result="hit"} 2.0' in m
    assert 'embed_cache_texts_total{result="joined"} 1.0' in m  # the licence's second copy in one request
    assert metric(m, "embed_tokens_total") > 3 * 5
    assert 'embed_padding_ratio_count{backend="onnx",device="cpu"}' in m


def test_long_texts_are_batched_within_the_default_token_budget(start_service):
    """The onnx default caps a model call at 1,024 tokens (padding counted), or 512 where it runs a batch on
    each of several cores at once, the warm-up's batches too: what a batch allocates stays in ONNX Runtime's
    arena for the life of the process (docs/EMBEDDING.md)."""
    budget = 512  # two threads: two runs at once
    svc = start_service("embed", env={"CODEINDEX_EMBED_THREADS": "2"})
    texts = [f"def long_function_{i}(value):\n" + f"    value = value * {i} + 1  # step\n" * 60 for i in range(24)]
    with grpc.insecure_channel(svc.address) as ch:
        stub = embed_pb2_grpc.EmbedderStub(ch)
        replies = list(stub.Embed(iter([embed_pb2.EmbedRequest(request_id="long", texts=texts)]), timeout=120))
    assert sum(r.count for r in replies) == 24
    m = metrics_text(svc.metrics_port)
    labels = '{backend="onnx",device="cpu"'
    calls = metric(m, "embed_batch_tokens_count")
    within = next(float(line.rsplit(" ", 1)[1]) for line in m.splitlines()
                  if line.startswith("embed_batch_tokens_bucket" + labels) and f'le="{budget}.0"' in line)
    assert calls >= 24 / (budget // 256) and within == calls  # 256-token texts, two or four at a time at most
