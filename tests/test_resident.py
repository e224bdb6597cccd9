"""Searches over the rows held in memory (store_svc.resident) against the same searches reading the table:
a real LanceDB directory holding this repository's own code, chunked by the parser."""

import numpy as np
import pyarrow as pa
import pytest

from codeindex_common.errors import InvalidArgument
from codeindex_common.model import FileRecord, Query, Stats
from parser_svc.chunker import Limits, chunk_file
from store_svc import metrics, ranking
from store_svc.resident import Snapshot
from store_svc.store import StoreSettings, VectorStore
from tests.conftest import ROOT

DIM = 16
FILES = sorted([*(ROOT / "store_svc").glob("*.py"), *(ROOT / "parser_svc").glob("*.py")])
QUERIES = ["ChunkSearch", "derive_ann", "Snapshot.nearest", "where the ANN index is trained again",
           "split camelCase identifiers", "_commit", "VectorStore.optimize", "gate held exclusive", "no such name"]


def records(files, seed=0, dim=DIM):
    rng = np.random.default_rng(seed)
    out = []
    for path in files:
        rel = str(path.relative_to(ROOT))
        chunks = list(chunk_file(rel, path.read_bytes(), limits=Limits(min_tokens=0)).chunks)
        vecs = rng.standard_normal((len(chunks), dim)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        out.append(FileRecord(rel, f"h{seed}", chunks, vecs, "", "m"))
    return out


def query_vector(store, i):
    """Near one stored chunk's vector, so that vector search has a clear neighbourhood."""
    table = store._chunks.to_arrow()
    base = table.column("vector")[i % table.num_rows].values.to_numpy()
    v = base + 0.3 * np.random.default_rng(i).standard_normal(len(base)).astype(np.float32)
    return (v / np.linalg.norm(v)).astype(np.float32)


def hold(store):
    """A search, and the snapshot it starts read (settle time 0), in place. (A table's first keyword search
    makes its full-text index: a new version, so the snapshot read beside it may be outdated at once.)"""
    for _ in range(3):
        store.search(query_vector(store, 0), Query("x", 1, "hybrid"))
        store._search.resident.wait(30)
        held = store._search.resident.current(store._chunks)
        if held is not None:
            return held
    raise AssertionError("no snapshot held")


def everything(hits):
    """Every field of each hit, and its score and similarity apart (float32 sums in another order: equal to
    about 1e-7)."""
    c = [h.chunk for h in hits]
    return [((x.id, x.path, x.qualified_name, x.text, x.signature, x.start_byte, x.end_byte, x.start_line,
              x.end_line, x.kind, x.language, x.docstring, x.parent_id, x.content_hash, x.definitions, h.snippet,
              h.snippet_line), (h.score, h.similarity)) for x, h in zip(c, hits)]


def assert_same_hits(a, b):
    assert [[fields for fields, _ in hits] for hits in a] == [[fields for fields, _ in hits] for hits in b]
    for x, y in zip(a, b):
        for (_, (score, sim)), (_, (score2, sim2)) in zip(x, y):
            assert score == pytest.approx(score2, abs=1e-5)
            assert (sim is None and sim2 is None) or sim == pytest.approx(sim2, abs=1e-5)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = VectorStore(str(tmp_path_factory.mktemp("resident") / "db"), settings=StoreSettings(resident_settle_s=0))
    s.write(records(FILES))
    return s


FILTERS = [{}, {"language": "python"}, {"kind": "function"}, {"path_glob": "store_svc/*.py"},
           {"path_glob": "parser_svc/"}, {"path_glob": "**/search.py", "kind": "method"}, {"symbol": "search"},
           {"symbol": "ChunkSearch.search", "language": "python"}, {"language": "rust"}]


def test_searches_from_memory_give_what_searches_of_the_table_give(store, monkeypatch):
    """Unfiltered and filtered (language, kind, path glob, symbol: a mask over the rows held)."""
    resident = store._search.resident
    searches = [(query_vector(store, i), Query(text, k, mode, min_score=floor, **f))
                for i, text in enumerate(QUERIES) for mode in ("hybrid", "vector", "keyword")
                for k, floor in ((10, None), (3, None), (10, 0.2)) for f in FILTERS
                if not (floor is not None and mode == "keyword") and not (f and k == 3)]
    resident.max_rows = 0
    from_table = [everything(store.search(v, q)) for v, q in searches]
    assert resident.current(store._chunks) is None
    resident.max_rows = 250_000
    held = hold(store)
    assert held.rows == store._chunks.count_rows() and metrics.RESIDENT_ROWS._value.get() == held.rows
    used = []
    for name in ("nearest", "named", "keyword"):
        real = getattr(Snapshot, name)
        monkeypatch.setattr(Snapshot, name, lambda self, *a, _real=real, _name=name, **k: used.append(_name)
                            or _real(self, *a, **k))
    masked = []
    real_mask = Snapshot.mask
    monkeypatch.setattr(Snapshot, "mask", lambda self, **f: masked.append(f) or real_mask(self, **f))
    from_memory = [everything(store.search(v, q)) for v, q in searches]
    assert_same_hits(from_memory, from_table)
    assert {tuple(sorted(f.items())) for f in FILTERS if f} <= {  # every filtered search from memory
        tuple(sorted((k, v) for k, v in f.items() if v)) for f in masked}
    assert {"nearest", "named", "keyword"} <= set(used)
    assert sum(len(hits) for hits in from_table) > 200  # the searches found things to compare
    filtered = [hits for (_, q), hits in zip(searches, from_table) if q.language or q.kind or q.path_glob or q.symbol]
    assert sum(len(hits) for hits in filtered) > 200 and any(not hits for hits in filtered)


def test_a_filters_rows_in_memory_are_those_lancedb_keeps(store):
    """Each filter's mask over the rows held against the rows LanceDB's filter keeps."""
    from store_svc.sql import filters

    held = hold(store)
    for f in [*FILTERS, {"path_glob": "*.md"}, {"path_glob": "store_svc/**/re*.py"}, {"symbol": "no_such_name"},
              {"path_glob": "?arser_svc/[x]"}, {"symbol": "it's"}]:
        where = filters(**f) or "true"
        want = set(store._chunks.search().where(where).select(["id"]).limit(None).to_arrow().column("id").to_pylist())
        mask = held.mask(**f)
        assert set(held.fields.column("id").filter(pa.array(mask)).to_pylist()) == want, f
        assert mask is held.mask(**f)  # kept for the next search with these filters


def test_the_name_lookup_and_the_keyword_candidates_from_memory_match_the_tables(store):
    search, held = store._search, hold(store)
    for text in QUERIES:
        info = ranking.analyze(text)
        for k in (2, 50):
            assert _same(search.exact(info, k, "", held=held), search.exact(info, k, ""))
        assert _same(search.keyword(text, 50, "", held=held), search.keyword(text, 50, ""))


def _same(a, b):
    """The retrieval's rows from memory (``a``: whole rows) hold what the table's (``b``) do, equal."""
    assert [r["id"] for r in a] == [r["id"] for r in b]
    for x, y in zip(a, b):
        assert y.keys() <= x.keys()
        assert {k: x[k] for k in y if k not in ("vector", "_score")} == {
            k: v for k, v in y.items() if k not in ("vector", "_score")}
        if "_score" in y:  # BM25 from memory: LanceDB's, summed in another order (float32)
            assert x["_score"] == pytest.approx(y["_score"], rel=1e-5)
        np.testing.assert_allclose(x["vector"], y["vector"], atol=1e-6)  # both unit length
    return True


def test_nearest_is_the_exact_cosine_ranking_whatever_the_vectors_length(tmp_path):
    store = VectorStore(str(tmp_path / "db"), settings=StoreSettings(resident_settle_s=0))
    recs = records([ROOT / "store_svc" / name for name in ("ann.py", "gate.py", "sql.py", "schema.py")], seed=3)
    rng = np.random.default_rng(5)
    for r in recs:  # lengths other than 1, and one zero vector
        r.vectors = r.vectors * rng.uniform(0.1, 10, (len(r.vectors), 1)).astype(np.float32)
    recs[0].vectors[0] = 0
    store.write(recs)
    held = hold(store)
    stored = np.concatenate([r.vectors for r in recs])
    ids = [c.id for r in recs for c in r.chunks]
    norms = np.linalg.norm(stored, axis=1)
    for _ in range(5):
        q = rng.standard_normal(DIM).astype(np.float32) * 3
        cos = stored @ q / np.where(norms > 0, norms, 1) / np.linalg.norm(q)
        want = [ids[i] for i in np.argsort(-cos, kind="stable")]
        got = held.nearest(q, 7)
        assert [r["id"] for r in got] == want[:7]
        np.testing.assert_allclose([1 - r["_distance"] for r in got], np.sort(cos)[::-1][:7], atol=1e-5)
        assert len(held.nearest(q, 10_000)) == len(ids)  # k beyond the rows: all of them
        floor = float(np.sort(cos)[::-1][3])
        assert [r["id"] for r in held.nearest(q, 10, min_score=floor - 1e-6)] == want[:4]
    assert held.nearest(np.zeros(DIM, np.float32), 3)  # a zero query finds rows, all at distance 1
    # and LanceDB's own exact search orders them the same
    q = rng.standard_normal(DIM).astype(np.float32)
    table = [r["id"] for r in store._search.vector(q, 20, "", columns=["id"])]
    assert [r["id"] for r in held.nearest(q, 20)] == table


def test_a_write_sends_searches_back_to_the_table_until_its_version_is_held(tmp_path):
    store = VectorStore(str(tmp_path / "db"), settings=StoreSettings(resident_settle_s=0))
    store.write(records(FILES[:6]))
    old = hold(store)
    source = "def reconcile_ledger_entries(ledger):\n    return sorted(ledger)\n"
    chunks = list(chunk_file("new.py", source.encode(), limits=Limits(min_tokens=0)).chunks)
    vec = np.random.default_rng(9).standard_normal((1, DIM)).astype(np.float32)
    store.write([FileRecord("new.py", "h", chunks, vec / np.linalg.norm(vec), "", "m")])
    # the next search reads the table (the snapshot is of the version before): it finds the new function
    hits = store.search(vec[0] / np.linalg.norm(vec), Query("reconcile_ledger_entries", 3, "hybrid"))
    assert hits[0].chunk.qualified_name == "reconcile_ledger_entries"
    assert store._search.resident._snapshot is not old  # the old version's rows let go
    # retrievals given the old snapshot (a write raced their version check) answer as of its version, when
    # the search began: neither the keyword nor the name retrieval knows the new function; the table's does
    search, info = store._search, ranking.analyze("reconcile_ledger_entries")
    assert "new.py" not in {r["path"] for r in search.keyword("reconcile ledger entries", 10, "", held=old)}
    assert search.keyword("reconcile ledger entries", 10, "")[0]["path"] == "new.py"
    assert [r["id"] for r in search.exact(info, 5, "", held=old)] == []  # the old rows hold no such name
    held = hold(store)
    assert held.version != old.version and held.rows == old.rows + 1
    stats = Stats.from_pb(store.stats().to_pb())  # what `orchestrator status` shows
    assert stats.resident_rows == held.rows == stats.chunks
    store.write([FileRecord("new.py", "h2", chunks, vec / np.linalg.norm(vec), "", "m")])
    assert store.stats().resident_rows == 0  # held rows of an older version are not counted
    assert held.named(["reconcile_ledger_entries"], 5)[0]["path"] == "new.py"


def test_a_table_above_the_limit_is_not_held(tmp_path, monkeypatch):
    store = VectorStore(str(tmp_path / "db"), settings=StoreSettings(resident_settle_s=0, resident_rows=10))
    store.write(records(FILES[:3]))
    store.optimize()  # its indexes made: a search commits nothing
    reads, real = [], Snapshot.read.__func__
    monkeypatch.setattr(Snapshot, "read", classmethod(lambda cls, *a: reads.append(1) or real(cls, *a)))
    resident = store._search.resident
    for _ in range(2):
        store.search(query_vector(store, 0), Query("x", 1, "hybrid"))
        resident.wait(30)
    assert store._chunks.count_rows() > 10 and resident._skip == store._chunks.version and not reads
    assert resident.current(store._chunks) is None
    resident.max_rows, resident._skip = 250_000, None
    hold(store)
    assert reads


def test_an_outdated_snapshot_brings_back_no_deleted_or_moved_row(tmp_path):
    """Rows held from an older version, given to the retrievals as a race could (the table written between
    the version check and the reads): deleted rows are not read back, and rows compacted elsewhere are
    found again by chunk id: the read of the top k gives what the table gives now."""
    store = VectorStore(str(tmp_path / "db"), settings=StoreSettings(resident_settle_s=0))
    store.write(records(FILES[:6]))
    old = hold(store)
    gone = old.fields.column("path")[0].as_py()
    store.delete([gone])
    store.optimize()  # compaction: the rows left are moved to new row ids
    assert store._chunks.version != old.version
    search = store._search
    for text in QUERIES:  # the keyword retrieval from memory: the old rows, of which the read drops the deleted
        found = search.keyword(text, 50, "", held=old)
        kept = search.complete([(r["id"], r["_rowid"]) for r in found], held=old)
        assert set(kept) == {r["id"] for r in found if r["path"] != gone}
    assert any(r["path"] == gone for text in QUERIES for r in search.keyword(text, 50, "", held=old))
    pairs = list(zip(old.fields.column("id").to_pylist(), old.fields.column("_rowid").to_pylist()))
    from_memory, from_table = search.complete(pairs, held=old), search.complete(pairs)
    assert from_memory == from_table
    assert gone not in {c.path for c in from_memory.values()} and len(from_memory) == len(pairs) - sum(
        1 for p in old.fields.column("path").to_pylist() if p == gone)
    hits = store.search(query_vector(store, 0), Query("ChunkSearch", 10, "hybrid"))
    assert hits and gone not in {h.chunk.path for h in hits}


def test_the_store_service_keeps_openblas_threads_from_spinning_after_a_product():
    """numpy's products (the exact vector search) run on OpenBLAS's threads, which by default spin about 0.1 s
    after each one (118 ms of CPU in the 0.3 s after, measured): the store service sets them to stop at once."""
    import os
    import subprocess
    import sys

    code = ("import store_svc.__main__, time, numpy as np\n"
            "m = np.random.default_rng(0).standard_normal((20000, 384)).astype(np.float32)\n"
            "for _ in range(20):\n    m @ m[0]\n"
            "t = time.process_time(); time.sleep(0.3); print(time.process_time() - t)\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert float(out.stdout.split()[-1]) < 0.02, out.stdout


def test_a_vector_not_finite_is_refused_and_a_filter_not_the_querys_reads_the_table(store, monkeypatch):
    """A NaN would rank the rows a filter leaves out first (and a search of the table finds nothing): the
    store refuses it. A retrieval given a filter that is not in a mask reads the table."""
    held = hold(store)
    for bad in (np.nan, np.inf):
        v = query_vector(store, 0).copy()
        v[3] = bad
        for mode in ("vector", "hybrid"):
            with pytest.raises(InvalidArgument, match="NaN or infinite"):
                store.search(v, Query("x", 5, mode, path_glob="parser_svc/config.py"))
    called = []
    monkeypatch.setattr(Snapshot, "nearest", lambda *a, **k: called.append(1))
    rows = store._search.vector(query_vector(store, 1), 5, "language = 'python'", held=held)
    assert rows and all(r["language"] == "python" for r in rows) and not called
