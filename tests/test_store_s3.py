"""The store on object storage: VectorStore and the store service on an ``s3://``
URI, against a real ``moto_server`` subprocess on a loopback port.

LanceDB (object_store) needs three storage options for such an endpoint:
``endpoint`` (the server's URL), ``allow_http=true`` (the endpoint is plain
http; without it every request is refused with BadScheme) and ``region``
(moto takes any; real S3-compatible stores want theirs). Path-style requests
are object_store's default once an endpoint is given, which is what moto wants
(``aws_virtual_hosted_style_request=true`` would address BUCKET.127.0.0.1).
Credentials come from the environment or from --storage-options-file, never
from the command line."""

from __future__ import annotations

import json
import os
import threading

import grpc
import numpy as np
import pytest

from codeindex_common import vectors
from codeindex_common.model import FileRecord, Query, mode_to_pb
from codeindex_common.pb import store_pb2, store_pb2_grpc
from store_svc.ann import derive_ann
from store_svc.store import StoreSettings, VectorStore
from tests.moto import BUCKET, CREDENTIALS, MotoServer
from tests.test_store import DIM, _bulk, record, rows

MODEL = "test-model"


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


@pytest.fixture
def aws_env(monkeypatch):
    """Dummy credentials in this process's environment (boto3 and LanceDB read them)."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)


def _tables(keys: list[str], prefix: str) -> set[str]:
    return {k[len(prefix):].split("/", 1)[0] for k in keys}


def _manifests(keys: list[str], table: str) -> list[str]:
    return [k for k in keys if f"/{table}.lance/_versions/" in k and k.endswith(".manifest")]


# ----------------------------------------------------------------------------- the core class


def test_vector_store_on_s3(moto, aws_env):
    uri, prefix = f"s3://{BUCKET}/core", "core/"
    settings = StoreSettings(ann_min_rows=500, keep_versions_seconds=0)
    store = VectorStore(uri, storage_options=moto.storage_options(), settings=settings)
    assert store.stats().chunks == 0 and store.manifest() == []

    # writes, a per-file replace and a delete
    a = record("a.py", "def rebuild_method(request):\n    return request.method\n\n"
                       "def unrelated_helper():\n    return 42\n", seed=1)
    b = record("b.py", "def h():\n    return 3\n", seed=2)
    store.write([a, b])
    assert rows(store) == [("a.py", "rebuild_method"), ("a.py", "unrelated_helper"), ("b.py", "h")]
    a2 = record("a.py", "def rebuild_method(request):\n    return request.method\n", seed=3, file_hash="h2")
    store.write([a2])
    assert rows(store) == [("a.py", "rebuild_method"), ("b.py", "h")]
    assert {e.path: e.file_hash for e in store.manifest()} == {"a.py": "h2", "b.py": "h1"}
    assert store.delete(["b.py"]) == 1
    assert rows(store) == [("a.py", "rebuild_method")]
    assert [(e.path, e.file_hash) for e in store.manifest()] == [("a.py", "h2")]
    stats = store.stats()
    assert (stats.chunks, stats.files, stats.dim, stats.model_id, stats.uri) == (1, 1, DIM, MODEL, uri)

    # the objects are really in the bucket, under the URI's prefix
    keys = moto.keys(prefix)
    assert {"chunks.lance", "files.lance"} <= _tables(keys, prefix)
    assert any("/chunks.lance/data/" in k for k in keys) and _manifests(keys, "chunks")

    # stored vectors by content hash
    hashes, vecs = store.lookup_vectors([a2.chunks[0].content_hash, a.chunks[1].content_hash, "0" * 32])
    assert hashes == [a2.chunks[0].content_hash]  # the deleted chunk's vector went with it
    np.testing.assert_allclose(vecs[0], a2.vectors[0])

    # a few hundred more rows, then the three search modes
    bulk, bulk_vecs = _bulk(600, DIM)
    for r in bulk:
        r.model_id = MODEL
    store.write(bulk)
    assert store.stats().chunks == 601
    hits = store.search(a2.vectors[0], Query(k=3, mode="vector"))
    assert hits[0].chunk.symbol == "rebuild_method" and hits[0].similarity == pytest.approx(1.0, abs=1e-5)
    assert [h.chunk.symbol for h in store.search(None, Query("rebuild_method", 5, "keyword"))][:1] == ["rebuild_method"]
    hybrid = store.search(bulk_vecs[5], Query("rebuild_method", 2, "hybrid"))
    assert {h.chunk.symbol for h in hybrid} == {"rebuild_method", "fn5"}  # the exact symbol and the nearest vector

    # maintenance on S3: scalar and full-text indexes, the ANN index, compaction and version cleanup
    before = len(_manifests(moto.keys(prefix), "chunks"))
    stats = store.optimize()
    expected_ann = derive_ann(601, DIM).name
    assert stats.vector_index == expected_ann == "vector_ivf_flat_p25"  # sqrt(601) partitions
    indexed = {c for ix in store._chunks.list_indices() for c in ix.columns}
    assert {"path", "content_hash", "id", "symbol", "kw_names", "kw_body", "vector"} <= indexed
    ann = next(ix for ix in store._chunks.list_indices() if ix.name == expected_ann)
    assert (ann.num_indexed_rows, ann.num_unindexed_rows) == (601, 0)
    manifests = _manifests(moto.keys(prefix), "chunks")
    assert stats.versions == len(manifests) <= 2 < before  # old versions' manifests deleted from the bucket
    assert any("/chunks.lance/_indices/" in k for k in moto.keys(prefix))
    for i in (0, 123, 599):  # through the ANN index: a stored vector finds its own chunk
        top = store.search(bulk_vecs[i], Query(k=1, mode="vector"))[0]
        assert top.chunk.id == f"c{i}" and top.similarity == pytest.approx(1.0, abs=1e-5)
    assert store.search(None, Query("fn123", 3, "keyword"))[0].chunk.id == "c123"  # the full-text index

    # rows written after the indexes were built: found, and folded in by the next optimize
    late = record("late.py", "def written_after_optimize():\n    pass\n", seed=9)
    store.write([late])
    assert store.search(None, Query("written_after_optimize", 3, "keyword"))[0].chunk.path == "late.py"
    store.optimize()
    ann = next(ix for ix in store._chunks.list_indices() if ix.name == expected_ann)
    assert (ann.num_indexed_rows, ann.num_unindexed_rows) == (602, 0)

    # a fresh VectorStore on the same URI sees the same index
    again = VectorStore(uri, storage_options=moto.storage_options(), settings=settings)
    s1, s2 = store.stats(), again.stats()
    assert (s2.chunks, s2.files, s2.dim, s2.model_id, s2.vector_index) == (602, 14, DIM, MODEL, expected_ann)
    assert (s1.chunks, s1.files, s1.versions) == (s2.chunks, s2.files, s2.versions)
    assert sorted((e.path, e.file_hash) for e in again.manifest()) == sorted(
        (e.path, e.file_hash) for e in store.manifest())
    assert again.search(late.vectors[0], Query(k=1, mode="vector"))[0].chunk.path == "late.py"
    assert again.lookup_vectors([late.chunks[0].content_hash])[0] == [late.chunks[0].content_hash]


def test_plain_http_needs_allow_http(moto, aws_env):
    options = {k: v for k, v in moto.storage_options().items() if k != "allow_http"}
    with pytest.raises(Exception, match="BadScheme"):
        VectorStore(f"s3://{BUCKET}/no-http", storage_options=options)
    assert moto.keys("no-http/") == []


def test_concurrent_writers_on_s3_lose_nothing(moto, aws_env):
    """Two VectorStores (two replicas, say) on one URI, two threads each: every
    commit lands (S3 commits are conditional puts, retried on conflict)."""
    uri = f"s3://{BUCKET}/concurrent"
    stores = [VectorStore(uri, storage_options=moto.storage_options()) for _ in range(2)]
    stores[0].write([record("seed.py", "def seed():\n    pass\n")])
    errors: list[BaseException] = []

    def work(store: VectorStore, t: int) -> None:
        try:
            for j in range(3):
                store.write([record(f"t{t}/{j}.py", f"def n{t}_{j}():\n    pass\n", seed=t * 10 + j)])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(stores[t % 2], t)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    expected = sorted([("seed.py", "seed")] + [(f"t{t}/{j}.py", f"n{t}_{j}") for t in range(4) for j in range(3)])
    fresh = VectorStore(uri, storage_options=moto.storage_options())
    assert rows(fresh) == expected
    assert sorted(e.path for e in fresh.manifest()) == [p for p, _ in expected]
    assert all(e.file_hash == "h1" for e in fresh.manifest())


# ----------------------------------------------------------------------------- the service


def _pb(r: FileRecord) -> store_pb2.FileRecord:
    return store_pb2.FileRecord(path=r.path, file_hash=r.file_hash, chunks=[c.to_pb() for c in r.chunks], dim=DIM,
                                vectors=vectors.pack(r.vectors), skip_reason=r.skip_reason, model_id=r.model_id)


def _search(stub, vector=None, text="", k=5, mode="vector") -> list[store_pb2.SearchHit]:
    req = store_pb2.SearchRequest(query_vector=vectors.pack(vector) if vector is not None else b"", query_text=text,
                                  k=k, mode=mode_to_pb(mode))
    return list(stub.Search(req, timeout=30).hits)


@pytest.mark.slow
def test_store_service_on_s3(moto, aws_env, start_service):
    uri, prefix = f"s3://{BUCKET}/svc", "svc/"
    args = ("--uri", uri, "--storage-options", moto.flag(), "--ann-min-rows", "100", "--keep-versions-seconds", "0",
            "--flush-ms", "20")
    svc = start_service("store", *args, env=CREDENTIALS)
    a = record("a.py", "def rebuild_method(request):\n    return request.method\n\n"
                       "def unrelated_helper():\n    return 42\n", seed=1)
    bulk, bulk_vecs = _bulk(150, DIM)
    for r in bulk:
        r.model_id = MODEL
    with grpc.insecure_channel(svc.address) as channel:
        stub = store_pb2_grpc.StoreStub(channel)
        acks = {ack.path: ack.rows for ack in stub.Write(iter(map(_pb, [a, *bulk])), timeout=60)}
        assert acks == {"a.py": 2, **{r.path: len(r.chunks) for r in bulk}}
        stats = stub.Stats(store_pb2.StatsRequest(), timeout=30)
        assert (stats.chunks, stats.files, stats.dim, stats.model_id, stats.uri) == (152, 4, DIM, MODEL, uri)
        assert {"chunks.lance", "files.lance"} <= _tables(moto.keys(prefix), prefix)

        hits = _search(stub, a.vectors[1], k=1)
        assert hits[0].chunk.symbol == "unrelated_helper" and hits[0].similarity == pytest.approx(1.0, abs=1e-5)
        assert _search(stub, text="rebuild_method", mode="keyword")[0].chunk.symbol == "rebuild_method"
        assert _search(stub, a.vectors[1], "rebuild_method", k=2, mode="hybrid")[0].chunk.symbol == "rebuild_method"

        opt = stub.Optimize(store_pb2.OptimizeRequest(), timeout=120)
        assert opt.vector_index == derive_ann(152, DIM).name == "vector_ivf_flat_p12"
        assert opt.versions == len(_manifests(moto.keys(prefix), "chunks")) <= 2
        assert _search(stub, bulk_vecs[42], k=1)[0].chunk.id == "c42"  # through the ANN index
        assert stub.Delete(store_pb2.DeleteRequest(paths=["a.py"]), timeout=30).files_deleted == 1
        assert "a.py" not in [p for page in stub.Manifest(store_pb2.ManifestRequest(), timeout=30) for p in page.paths]
    svc.stop()

    # another process on the same URI: the same index
    again = start_service("store", *args, env=CREDENTIALS)
    with grpc.insecure_channel(again.address) as channel:
        stub = store_pb2_grpc.StoreStub(channel)
        stats = stub.Stats(store_pb2.StatsRequest(), timeout=30)
        assert (stats.chunks, stats.files, stats.vector_index) == (150, 3, "vector_ivf_flat_p12")
        assert _search(stub, bulk_vecs[7], k=1)[0].chunk.id == "c7"


@pytest.mark.slow
def test_store_service_takes_credentials_from_the_options_file(tmp_path, monkeypatch, start_service):
    """With moto checking signatures, the service (no AWS_* variable in its
    environment) gets in with the key in --storage-options-file, and a wrong key
    in the environment alone is refused."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)  # for moto and the setup calls below
    server = MotoServer(tmp_path / "moto-auth.log")
    try:
        iam = server.client("iam")
        iam.create_user(UserName="store")
        iam.put_user_policy(UserName="store", PolicyName="s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="store")["AccessKey"]
        server.enable_auth()
        secret = {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}
        options_file = tmp_path / "s3.json"
        options_file.write_text(json.dumps(secret))
        options_file.chmod(0o600)
        uri = f"s3://{BUCKET}/file-creds"
        args = ("--uri", uri, "--storage-options", server.flag())

        # the dummy key in the environment is not one moto knows: the store cannot open the index
        with pytest.raises(RuntimeError, match="InvalidAccessKeyId"):
            start_service("store", *args, env=CREDENTIALS)

        for name in [n for n in os.environ if n.startswith("AWS_")]:
            monkeypatch.delenv(name)
        svc = start_service("store", *args, "--storage-options-file", str(options_file))
        rec = record("a.py", "def f():\n    return 1\n", seed=4)
        with grpc.insecure_channel(svc.address) as channel:
            stub = store_pb2_grpc.StoreStub(channel)
            assert [(ack.path, ack.rows) for ack in stub.Write(iter([_pb(rec)]), timeout=60)] == [("a.py", 1)]
            assert stub.Stats(store_pb2.StatsRequest(), timeout=30).chunks == 1
            assert _search(stub, rec.vectors[0], k=1)[0].chunk.symbol == "f"
        keys = server.keys("file-creds/", **secret)
        assert {"chunks.lance", "files.lance"} <= _tables(keys, "file-creds/")
    finally:
        server.stop()
