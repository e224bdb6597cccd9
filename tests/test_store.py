"""VectorStore on a real LanceDB directory."""

import numpy as np
import pytest

from codeindex_common.errors import FailedPrecondition, InvalidArgument
from codeindex_common.model import FileRecord
from parser_svc.chunker import Limits, chunk_file
from store_svc.store import VectorStore

DIM = 8


def record(path, source, seed=0, file_hash="h1"):
    chunks = list(chunk_file(path, source.encode(), limits=Limits(min_tokens=0)).chunks)  # one chunk a function
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((len(chunks), DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return FileRecord(path, file_hash, chunks, vecs, "", "test-model")


def rows(store):
    return sorted((r["path"], r["qualified_name"]) for r in store._chunks.to_arrow().to_pylist())


def test_write_replace_delete_and_manifest(tmp_path):
    store = VectorStore(str(tmp_path / "db"))
    store.write([record("a.py", "def f():\n    return 1\n\ndef g():\n    return 2\n"),
                 record("b.py", "def h():\n    return 3\n")])
    assert rows(store) == [("a.py", "f"), ("a.py", "g"), ("b.py", "h")]
    # a changed file's rows are replaced as a whole
    store.write([record("a.py", "def f():\n    return 10\n", file_hash="h2")])
    assert rows(store) == [("a.py", "f"), ("b.py", "h")]
    assert {e.path: e.file_hash for e in store.manifest()} == {"a.py": "h2", "b.py": "h1"}
    store.delete(["b.py"])
    assert rows(store) == [("a.py", "f")]
    assert [e.path for e in store.manifest()] == ["a.py"]
    s = store.stats()
    assert (s.chunks, s.files, s.dim, s.model_id) == (1, 1, DIM, "test-model")


def test_quotes_in_paths_are_literal(tmp_path):
    store = VectorStore(str(tmp_path / "db"))
    evil = "x' OR '1'='1.py"
    store.write([record(evil, "def f():\n    pass\n"), record("y.py", "def g():\n    pass\n")])
    store.delete([evil])
    assert rows(store) == [("y.py", "g")]


def test_lookup_and_search(tmp_path):
    store = VectorStore(str(tmp_path / "db"))
    rec = record("a.py", "def f():\n    return 1\n\ndef g():\n    return 2\n")
    store.write([rec])
    hashes, vecs = store.lookup_vectors([c.content_hash for c in rec.chunks] + ["0" * 32])
    got = dict(zip(hashes, vecs))
    assert set(got) == {c.content_hash for c in rec.chunks}
    for c, v in zip(rec.chunks, rec.vectors):
        np.testing.assert_allclose(got[c.content_hash], v)
    hits = store.search(rec.vectors[1], 2)
    assert hits[0].chunk.qualified_name == "g" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(InvalidArgument):
        store.lookup_vectors(["not hex'"])
    with pytest.raises(InvalidArgument):
        store.search(np.zeros(3, np.float32), 2)


def test_a_different_dimension_is_refused(tmp_path):
    store = VectorStore(str(tmp_path / "db"))
    store.write([record("a.py", "def f():\n    pass\n")])
    other = record("b.py", "def g():\n    pass\n")
    other.vectors = np.ones((1, DIM * 2), np.float32)
    with pytest.raises(FailedPrecondition):
        store.write([other])


def test_reopening_sees_the_same_index(tmp_path):
    VectorStore(str(tmp_path / "db")).write([record("a.py", "def f():\n    pass\n")])
    assert VectorStore(str(tmp_path / "db")).stats().chunks == 1


def test_keyword_and_hybrid_modes_find_identifiers(tmp_path):
    store = VectorStore(str(tmp_path / "db"))
    rec = record("a.py", "def rebuild_method(request):\n    return request.method\n\n"
                         "def unrelated_helper():\n    return 42\n")
    store.write([rec])
    assert store.search(None, 5, text="rebuild_method", mode="keyword")[0].chunk.symbol == "rebuild_method"
    # hybrid: the keyword ranking lifts the identifier above a vector ranking that prefers the other chunk
    assert store.search(rec.vectors[1], 1, mode="vector")[0].chunk.symbol == "unrelated_helper"
    hits = store.search(rec.vectors[1], 2, text="rebuild_method", mode="hybrid")
    assert [h.chunk.symbol for h in hits] == ["rebuild_method", "unrelated_helper"]
    store.write([record("b.py", "def rebuild_method_two():\n    pass\n")])
    store.optimize()  # rows written after the index was built are found too
    assert "rebuild_method_two" in {h.chunk.symbol for h in store.search(None, 5, text="rebuild_method_two",
                                                                         mode="keyword")}
    with pytest.raises(InvalidArgument):
        store.search(None, 5, mode="keyword")
    with pytest.raises(InvalidArgument):
        store.search(None, 5, text="x", mode="fuzzy")
