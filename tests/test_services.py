"""Servicer tier: each service as a real process on a real socket, called
through its generated stub; health, reflection and metrics included."""

import re
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from codeindex_common import vectors
from codeindex_common.pb import embed_pb2, embed_pb2_grpc, parser_pb2, parser_pb2_grpc, store_pb2, store_pb2_grpc

pytestmark = pytest.mark.slow


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return resp.read().decode()


def counter(port: int, name: str) -> float:
    """The sum of a counter's samples (all labels) on a service's metrics page; 0 while it does not answer."""
    try:
        text = metrics_text(port)
    except OSError:
        return 0.0
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def reflected_services(channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                          timeout=10)
    return {s.name for r in responses for s in r.list_services_response.service}


def check_health_and_reflection(address: str, service: str) -> None:
    with grpc.insecure_channel(address) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for name in ("", service):
            resp = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        assert {service, "grpc.health.v1.Health"} <= reflected_services(ch)


FILES = {
    "a.py": b"def alpha():\n    return 1\n\n\nclass Beta:\n    def gamma(self):\n        return 2\n",
    "b.go": b"package b\n\nfunc Delta() int {\n\treturn 4\n}\n",
    "c.bin": b"\x00\x01\x02\x03",
    "d.txt": b"just some notes\n",
}


def test_parser_streams_every_file_back(start_service):
    svc = start_service("parser", "--workers", "2")
    check_health_and_reflection(svc.address, "codeindex.v1.Parser")
    with grpc.insecure_channel(svc.address) as ch:
        stub = parser_pb2_grpc.ParserStub(ch)
        reqs = [parser_pb2.ParseRequest(path=p, content=c) for p, c in FILES.items()]
        out = {r.path: r for r in stub.Parse(iter(reqs), timeout=60)}
    assert set(out) == set(FILES)
    assert {c.qualified_name for c in out["a.py"].chunks} >= {"alpha", "Beta", "Beta.gamma"}
    assert [c.symbol for c in out["b.go"].chunks if c.symbol] == ["Delta"]
    assert out["c.bin"].skip_reason == "binary" and not out["c.bin"].chunks
    assert out["d.txt"].language == "text" and len(out["d.txt"].chunks) == 1
    m = metrics_text(svc.metrics_port)
    assert 'parser_files_total{result="chunked"} 3.0' in m
    assert 'parser_files_total{result="binary"} 1.0' in m


def test_parse_many_answers_each_file_once_and_groups_those_done_together(start_service):
    svc = start_service("parser", "--workers", "2")
    files = {**FILES, **{f"m{i}.py": f"def f{i}(x):\n    return x + {i}\n".encode() for i in range(40)}}
    items = list(files.items())
    options = parser_pb2.ChunkOptions(max_tokens=64)  # the first message's options apply to the whole stream
    batches = [parser_pb2.ParseBatch(files=[parser_pb2.ParseRequest(path=p, content=c) for p, c in items[i:i + 16]],
                                     options=options if i == 0 else None) for i in range(0, len(items), 16)]
    with grpc.insecure_channel(svc.address) as ch:
        answers = list(parser_pb2_grpc.ParserStub(ch).ParseMany(iter(batches), timeout=60))
    out = [f for a in answers for f in a.files]
    assert sorted(f.path for f in out) == sorted(files)  # each file once
    assert len(answers) < len(files)  # the 16 small files of a message are parsed and answered together
    by_path = {f.path: f for f in out}
    assert {c.qualified_name for c in by_path["a.py"].chunks} >= {"alpha", "Beta", "Beta.gamma"}
    assert by_path["c.bin"].skip_reason == "binary"
    assert [c.qualified_name for c in by_path["m7.py"].chunks] == ["f7"]
    assert all(c.kw_names for f in out for c in f.chunks)  # the workers' answers, framed as they are


def test_embedder_matches_sentence_transformers(embed_service, model):
    check_health_and_reflection(embed_service.address, "codeindex.v1.Embedder")
    texts = [f"def function_{i}(x):\n    return x * {i}" for i in range(50)]
    with grpc.insecure_channel(embed_service.address) as ch:
        stub = embed_pb2_grpc.EmbedderStub(ch)
        info = stub.Info(embed_pb2.InfoRequest(), timeout=10)
        # the CPU default: ONNX Runtime's int8 graph with per-token scales, under its own model id
        assert (info.model_id, info.dim, info.max_tokens) == (
            "sentence-transformers/all-MiniLM-L6-v2+int8tok", 384, 256)
        reqs = [embed_pb2.EmbedRequest(request_id=str(i), texts=texts[i:i + 10]) for i in range(0, 50, 10)]
        got = {r.request_id: vectors.unpack(r.vectors, r.dim, r.count) for r in stub.Embed(iter(reqs), timeout=60)}
    vecs = np.concatenate([got[str(i)] for i in range(0, 50, 10)])
    expected = model.encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    assert (vecs * expected).sum(axis=1).min() > 0.99  # int8 against sentence-transformers' fp32
    assert "embed_texts_total" in metrics_text(embed_service.metrics_port)


def test_store_write_search_manifest_delete(start_service, tmp_path):
    svc = start_service("store", "--uri", str(tmp_path / "db"))
    check_health_and_reflection(svc.address, "codeindex.v1.Store")
    from parser_svc.chunker import chunk_file

    dim = 4
    chunks = list(chunk_file("x.py", FILES["a.py"]).chunks)
    vecs = np.eye(len(chunks), dim, dtype=np.float32)
    rec = store_pb2.FileRecord(path="x.py", file_hash="abc", chunks=[c.to_pb() for c in chunks], dim=dim,
                               vectors=vectors.pack(vecs), model_id="m")
    empty = store_pb2.FileRecord(path="empty.py", file_hash="e", skip_reason="empty", model_id="m")
    with grpc.insecure_channel(svc.address) as ch:
        stub = store_pb2_grpc.StoreStub(ch)
        acks = list(stub.Write(iter([rec, empty]), timeout=60))
        assert [(a.path, a.rows) for a in acks] == [("x.py", len(chunks)), ("empty.py", 0)]
        pages = list(stub.Manifest(store_pb2.ManifestRequest(), timeout=10))
        assert [(p, h) for page in pages for p, h in zip(page.paths, page.file_hashes)] == [
            ("empty.py", "e"), ("x.py", "abc")]  # in path order
        after = list(stub.Manifest(store_pb2.ManifestRequest(after="empty.py"), timeout=10))
        assert [p for page in after for p in page.paths] == ["x.py"]
        hits = stub.Search(store_pb2.SearchRequest(query_vector=vectors.pack(vecs[1]), k=2), timeout=10).hits
        assert hits[0].chunk.qualified_name == chunks[1].qualified_name and hits[0].chunk.path == "x.py"
        assert hits[0].chunk.text == chunks[1].text
        with pytest.raises(grpc.RpcError) as err:
            stub.Search(store_pb2.SearchRequest(query_vector=b"\x00" * 12, k=2), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        stub.Delete(store_pb2.DeleteRequest(paths=["x.py"]), timeout=10)
        assert stub.Stats(store_pb2.StatsRequest(), timeout=10).chunks == 0
    assert "store_rows_written_total" in metrics_text(svc.metrics_port)
    assert svc.stop() == 0  # graceful shutdown exits 0


def test_store_write_many_takes_the_parsers_answers_as_they_came(start_service, tmp_path):
    """WriteMany: several files a message, each file's chunks as the parser's serialized answer
    (FileRecord.parsed, what the orchestrator sends), the acknowledgements of a commit in one answer."""
    from codeindex_common import wire
    from codeindex_common.model import FileRecord
    from parser_svc.chunker import chunk_file
    from parser_svc.parser import _response

    svc = start_service("store", "--uri", str(tmp_path / "db"))
    dim, records, rows = 4, [], {}
    for path in ("a.py", "b.go"):
        result = chunk_file(path, FILES[path])
        rows[path] = len(result.chunks)
        vecs = np.eye(len(result.chunks), dim, dtype=np.float32)
        records.append(FileRecord(path, "h-" + path, [], vecs, "", "m", parsed=memoryview(_response(result))))
    records.append(FileRecord("c.bin", "h-c", [], np.empty((0, dim), np.float32), "binary", "m"))
    message = b"".join(piece for r in records for piece in wire.framed(1, r.serialized()))
    with grpc.insecure_channel(svc.address) as ch:
        write_many = ch.stream_stream("/codeindex.v1.Store/WriteMany", request_serializer=None,
                                      response_deserializer=store_pb2.WriteAcks.FromString)
        answers = list(write_many(iter([message]), timeout=60))
        stub = store_pb2_grpc.StoreStub(ch)
        acks = [(a.path, a.rows) for answer in answers for a in answer.acks]
        assert sorted(acks) == [("a.py", 3), ("b.go", rows["b.go"]), ("c.bin", 0)]
        assert len(answers) == 1  # one commit, one answer
        hits = stub.Search(store_pb2.SearchRequest(query_vector=vectors.pack(np.eye(1, dim, 2, dtype=np.float32)[0]),
                                                   k=1, mode=1), timeout=10).hits
        assert (hits[0].chunk.path, hits[0].chunk.qualified_name) == ("a.py", "Beta.gamma")
        assert hits[0].chunk.text == "def gamma(self):\n        return 2"
        assert stub.Stats(store_pb2.StatsRequest(), timeout=10).files == 3
