"""Graceful shutdown of a real service: SIGTERM -> health NOT_SERVING -> new
calls refused -> calls in flight finish within the grace period -> exit 0."""

from __future__ import annotations

import queue
import signal
import threading

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from codeindex_common import vectors
from codeindex_common.pb import common_pb2, store_pb2, store_pb2_grpc
from tests.test_crash import read_chunks

pytestmark = pytest.mark.slow


def test_sigterm_drains_the_write_in_flight_and_exits_0(tmp_path, start_service):
    uri = str(tmp_path / "lancedb")
    store = start_service("store", "--uri", uri, "--grace-seconds", "20", "--flush-ms", "200")
    outbox: queue.Queue = queue.Queue()

    def records():
        while (item := outbox.get()) is not None:
            yield item

    vec = np.ones((1, 8), np.float32)
    with grpc.insecure_channel(store.address) as ch:
        stub = store_pb2_grpc.StoreStub(ch)
        statuses = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(), timeout=60)
        assert next(statuses).status == health_pb2.HealthCheckResponse.SERVING
        acks = stub.Write(records(), timeout=60)
        outbox.put(store_pb2.FileRecord(path="a.py", file_hash="h", dim=8, vectors=vectors.pack(vec), model_id="m",
                                        chunks=[common_pb2.Chunk(id="a#0", path="a.py", text="x",
                                                                 content_hash="ab")]))
        first = next(acks)  # committed before the signal
        assert first.path == "a.py"
        store.proc.send_signal(signal.SIGTERM)
        assert next(statuses).status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.RpcError) as refused:  # no new work
            store_pb2_grpc.StoreStub(ch).Stats(store_pb2.StatsRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        # the stream in flight still works during the grace period: a second file, then the end
        outbox.put(store_pb2.FileRecord(path="b.py", file_hash="h", dim=8, vectors=vectors.pack(vec), model_id="m",
                                        chunks=[common_pb2.Chunk(id="b#0", path="b.py", text="y",
                                                                 content_hash="cd")]))
        threading.Timer(0.5, outbox.put, args=(None,)).start()
        assert [a.path for a in acks] == ["b.py"]
    assert store.proc.wait(30) == 0
    assert sorted(p for p, _, _ in read_chunks(uri)) == ["a.py", "b.py"]  # no write lost
