"""VectorStore on a real LanceDB directory."""

import time

import numpy as np
import pytest

from codeindex_common.errors import FailedPrecondition, InvalidArgument
from codeindex_common.model import FileRecord, Query, SymbolQuery
from parser_svc.chunker import Limits, chunk_file
from store_svc.store import VectorStore
from tests.conftest import ROOT

DIM = 8


def record(path, source, seed=0, file_hash="h1", dim=DIM, model="test-model"):
    chunks = list(chunk_file(path, source.encode(), limits=Limits(min_tokens=0)).chunks)  # one chunk a function
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((len(chunks), dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return FileRecord(path, file_hash, chunks, vecs, "", model)


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
    hits = store.search(rec.vectors[1], Query(k=2, mode="vector"))
    assert hits[0].chunk.qualified_name == "g" and hits[0].similarity == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(InvalidArgument):
        store.lookup_vectors(["not hex'"])
    with pytest.raises(InvalidArgument):
        store.search(np.zeros(3, np.float32), Query(k=2, mode="vector"))


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
    assert store.search(None, Query("rebuild_method", 5, "keyword"))[0].chunk.symbol == "rebuild_method"
    # hybrid: the exact symbol and the keyword ranking lift the identifier above a vector ranking that
    # prefers the other chunk
    assert store.search(rec.vectors[1], Query(k=1, mode="vector"))[0].chunk.symbol == "unrelated_helper"
    hits = store.search(rec.vectors[1], Query("rebuild_method", 2, "hybrid"))
    assert [h.chunk.symbol for h in hits] == ["rebuild_method", "unrelated_helper"]
    store.write([record("b.py", "def rebuild_method_two():\n    pass\n")])
    store.optimize()  # rows written after the index was built are found too
    assert "rebuild_method_two" in {h.chunk.symbol for h in store.search(None, Query("rebuild_method_two", 5,
                                                                                     "keyword"))}
    with pytest.raises(InvalidArgument):
        store.search(None, Query("", 5, "keyword"))
    with pytest.raises(InvalidArgument):
        store.search(None, Query("x", 5, "fuzzy"))



def test_a_name_is_matched_in_its_own_case_and_a_qualified_name_by_its_parts(tmp_path):
    from store_svc.ranking import name_match

    assert name_match(("Request.POST",), {"POST", "Rack.Request.Helpers.POST"}) == 2
    assert name_match(("Request.POST",), {"post", "Rack.MockRequest.post"}) == 0  # another class's
    assert name_match(("Reaction",), {"reaction"}) == 1 and name_match(("Reaction",), {"Reaction"}) == 2
    store = VectorStore(str(tmp_path / "db"))
    rec = record("lib/request.py", "class Request:\n    def POST(self):\n        return self.form\n\n"
                                   "class MockRequest:\n    def post(self):\n        return 1\n\n"
                                   "def reaction(fn):\n    return fn\n\nclass Reaction:\n    pass\n")
    store.write([rec])
    names = [c.qualified_name for c in rec.chunks]
    near = rec.vectors[names.index("MockRequest.post")]  # the vector ranking prefers the other case
    assert store.search(near, Query("Request#POST", 3, "hybrid"))[0].chunk.qualified_name == "Request.POST"
    near = rec.vectors[names.index("reaction")]
    assert store.search(near, Query("Reaction", 3, "hybrid"))[0].chunk.qualified_name == "Reaction"


def test_a_types_own_definition_comes_before_its_impl_blocks(tmp_path):
    """Rust impl blocks are named as their type: a search for the type's name lists its definition first
    (here the vector ranking prefers an impl block), the impls after; FindSymbol lists them all, by kind."""
    store = VectorStore(str(tmp_path / "db"))
    rec = record("src/lib.rs", "pub struct Comparator {\n    pub op: Op,\n}\n\nimpl Comparator {\n"
                               "    pub fn parse(text: &str) -> Self {\n        todo!()\n    }\n}\n\n"
                               "impl Display for Comparator {\n    fn fmt(&self, f: &mut Formatter) -> Result {\n"
                               "        Ok(())\n    }\n}\n")
    store.write([rec])
    kinds = [c.kind for c in rec.chunks]
    near = rec.vectors[kinds.index("impl")]
    hits = store.search(near, Query("Comparator", 3, "hybrid"))
    assert [(h.chunk.kind, h.chunk.start_line) for h in hits][:3] in ([("class", 1), ("impl", 5), ("impl", 11)],
                                                                      [("class", 1), ("impl", 11), ("impl", 5)])
    found = store.find_symbol(SymbolQuery("Comparator"))
    assert [(d.definition.kind, d.definition.start_line) for d in found] == [("class", 1), ("impl", 5), ("impl", 11)]


# ----------------------------------------------------------------------------- filters and injection

SOURCES = {
    "src/app/models.py": "class Invoice:\n    def total(self):\n        return 1\n",
    "src/app/views.py": "def render_invoice(invoice):\n    return str(invoice)\n",
    "src/lib/util.go": "package util\n\nfunc Total(a int) int {\n\treturn a\n}\n",
    "docs/readme.md": "# Invoices\n\nHow totals are computed.\n",
    "x' OR '1'='1.py": "def sneaky():\n    return 0\n",
}


@pytest.fixture
def filled(tmp_path):
    store = VectorStore(str(tmp_path / "db"))
    store.write([record(p, src, seed=i) for i, (p, src) in enumerate(SOURCES.items())])
    return store


def paths(hits):
    return sorted({h.chunk.path for h in hits})


@pytest.mark.parametrize("glob, expected", [
    ("*.py", ["src/app/models.py", "src/app/views.py", "x' OR '1'='1.py"]),
    ("src/**/*.py", ["src/app/models.py", "src/app/views.py"]),
    ("src/*/util.go", ["src/lib/util.go"]),
    ("src/", ["src/app/models.py", "src/app/views.py", "src/lib/util.go"]),
    ("docs/readme.m?", ["docs/readme.md"]),
    ("src/app", []),  # a directory name alone matches no file: write src/app/ or src/app/**
    ("*.[py]", []),  # brackets are literal characters, not a class
    ("x' OR '1'='1.py", ["x' OR '1'='1.py"]),
])
def test_path_glob(filled, glob, expected):
    assert paths(filled.search(np.ones(DIM, np.float32), Query(k=50, mode="vector", path_glob=glob))) == expected


def test_language_kind_and_symbol_filters(filled):
    vec = np.ones(DIM, np.float32)
    assert paths(filled.search(vec, Query(k=50, mode="vector", language="go"))) == ["src/lib/util.go"]
    methods = filled.search(vec, Query(k=50, mode="vector", kind="method"))
    assert [h.chunk.qualified_name for h in methods] == ["Invoice.total"]
    for symbol in ("total", "Invoice.total"):  # the symbol or the qualified name
        hits = filled.search(vec, Query(k=50, mode="vector", symbol=symbol))
        assert [h.chunk.qualified_name for h in hits] == ["Invoice.total"]
    both = filled.search(None, Query("invoice", 50, "keyword", language="python", path_glob="src/**"))
    assert paths(both) and set(paths(both)) <= {"src/app/models.py", "src/app/views.py"}
    with pytest.raises(InvalidArgument):
        Query(k=5, mode="vector", kind="table").validate()


@pytest.mark.parametrize("evil", ["x' OR '1'='1", "python' OR language != '", "') OR (1=1", "%", "_",
                                  ".*", "\\", "'; DROP TABLE chunks; --"])
def test_injection_strings_are_literal(filled, evil):
    vec = np.ones(DIM, np.float32)
    before = filled.stats().chunks
    for field in ("language", "kind", "symbol", "path_glob"):
        if field == "kind":
            with pytest.raises(InvalidArgument):
                filled.search(vec, Query(k=50, mode="vector", **{field: evil}))
            continue
        q = Query(k=50, mode="vector", **{field: evil})
        assert filled.search(vec, q) == [], (field, evil)
    assert filled.stats().chunks == before  # nothing dropped


def test_nul_bytes_are_refused(filled):
    with pytest.raises(InvalidArgument):
        filled.search(np.ones(DIM, np.float32), Query(k=5, mode="vector", language="py\0"))


def test_min_score_and_snippets(filled):
    rec = record("src/app/models.py", SOURCES["src/app/models.py"], seed=0)
    close = filled.search(rec.vectors[0], Query(k=50, mode="vector", min_score=0.99))
    assert [h.chunk.path for h in close] == ["src/app/models.py"] and close[0].similarity >= 0.99
    assert len(filled.search(rec.vectors[0], Query(k=50, mode="vector", min_score=-1.0))) == filled.stats().chunks
    with pytest.raises(InvalidArgument):
        Query("x", 5, "keyword", min_score=0.5).validate()
    hits = filled.search(None, Query("render_invoice", 5, "keyword"))
    assert hits[0].snippet.startswith("def render_invoice(invoice):")
    assert all(len(h.snippet.splitlines()) <= 3 for h in hits)



def test_hits_carry_their_whole_row_even_when_it_moved_after_the_retrieval(filled):
    """Retrievals read what the ranking needs; the hits' other columns are read after, by row id, and by
    chunk id for a row that a compaction has moved meanwhile (or that was seen without a row id)."""
    ranked = filled._search.candidates(None, Query("render_invoice", 5, "keyword"), "")[1]
    assert ranked and all(c.row_id is not None and not c.chunk.text for c in ranked)
    whole = {r["id"]: r for r in filled._chunks.to_arrow().to_pylist()}
    first = ranked[0].chunk.id
    gone = (10**6 << 32)  # a fragment the table does not have
    for found in ([(first, ranked[0].row_id)], [(first, gone)], [(first, None)]):
        chunk = filled._search.complete(found)[first]
        assert (chunk.text, chunk.signature, chunk.content_hash) == (
            whole[first]["text"], whole[first]["signature"], whole[first]["content_hash"]) and chunk.text
    hit = filled.search(None, Query("render_invoice", 5, "keyword"))[0]
    assert hit.chunk.text == whole[hit.chunk.id]["text"] and hit.chunk.content_hash

# ----------------------------------------------------------------------------- writes


def test_new_files_are_appended_and_known_files_replaced(tmp_path):
    from store_svc import metrics

    def written(how):
        return metrics.ROWS_WRITTEN.labels(how)._value.get()

    store = VectorStore(str(tmp_path / "db"))
    appended, replaced = written("append"), written("replace")
    store.write([record("a.py", "def f():\n    pass\n\ndef g():\n    pass\n")])
    assert (written("append") - appended, written("replace") - replaced) == (2, 0)
    store.write([record("a.py", "def f():\n    pass\n", file_hash="h2"), record("b.py", "def h():\n    pass\n")])
    assert (written("append") - appended, written("replace") - replaced) == (3, 1)
    assert rows(store) == [("a.py", "f"), ("b.py", "h")]


def test_concurrent_writers_lose_and_duplicate_nothing(tmp_path):
    """Eight threads append new files, replace known ones and delete others at once."""
    import threading

    store = VectorStore(str(tmp_path / "db"))
    store.write([record(f"keep/{i}.py", f"def k{i}():\n    pass\n") for i in range(20)])
    errors = []

    def work(t):
        try:
            for j in range(5):
                store.write([record(f"new/{t}_{j}.py", f"def n{t}_{j}():\n    pass\n\ndef m{t}_{j}():\n    pass\n")])
                store.write([record(f"keep/{(t * 5 + j) % 20}.py", f"def k{(t * 5 + j) % 20}():\n    return {t}\n",
                                    file_hash=f"t{t}")])
            store.delete([f"new/{t}_0.py"])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    got = rows(store)
    assert len(got) == len(set(got)), "duplicated rows"
    expected = sorted([(f"keep/{i}.py", f"k{i}") for i in range(20)]
                      + [(f"new/{t}_{j}.py", f"{n}{t}_{j}") for t in range(8) for j in range(1, 5) for n in "mn"])
    assert got == expected
    assert sorted(e.path for e in store.manifest()) == sorted({p for p, _ in expected})
    assert all(e.file_hash for e in store.manifest())


def test_a_crash_between_commits_leaves_the_file_pending_and_a_rewrite_converges(tmp_path, monkeypatch):
    store = VectorStore(str(tmp_path / "db"))
    store.write([record("a.py", "def f():\n    pass\n\ndef g():\n    pass\n")])
    real = VectorStore._upsert_files

    def crash_when_done(self, records, pending):
        if not pending:
            raise SystemExit("killed")  # the process dies after the chunks commit, before the manifest commit
        return real(self, records, pending)

    monkeypatch.setattr(VectorStore, "_upsert_files", crash_when_done)
    with pytest.raises(SystemExit):
        store.write([record("a.py", "def f():\n    return 2\n", file_hash="h2"),
                     record("b.py", "def h():\n    pass\n")])
    monkeypatch.undo()
    reopened = VectorStore(str(tmp_path / "db"))
    assert {e.path: e.file_hash for e in reopened.manifest()} == {"a.py": "", "b.py": ""}  # both pending
    reopened.write([record("a.py", "def f():\n    return 2\n", file_hash="h2"), record("b.py", "def h():\n    pass\n")])
    assert rows(reopened) == [("a.py", "f"), ("b.py", "h")]
    assert {e.path: e.file_hash for e in reopened.manifest()} == {"a.py": "h2", "b.py": "h1"}


def test_another_model_is_refused_and_reset_drops_everything(tmp_path):
    store = VectorStore(str(tmp_path / "db"))
    store.write([record("a.py", "def f():\n    pass\n")])
    other = record("b.py", "def g():\n    pass\n")
    other.model_id = "another-model"
    with pytest.raises(FailedPrecondition, match="--reindex"):
        store.write([other])
    assert store.reset() == 1
    assert (store.stats().chunks, store.manifest(), store.model_id()) == (0, [], "")
    store.write([other])
    assert store.stats().model_id == "another-model"
    assert VectorStore(str(tmp_path / "db")).model_id() == "another-model"


# ----------------------------------------------------------------------------- maintenance


def _clustered(n, dim, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((40, dim))
    v = centers[rng.integers(0, 40, n)] + 0.5 * rng.standard_normal((n, dim))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def _bulk(n, dim, start=0):
    from codeindex_common.model import Chunk

    vecs = _clustered(n, dim, seed=start)
    recs = []
    for f in range(0, n, 50):
        chunks = [Chunk(id=f"c{start + i}", path=f"f{start + f}.py", language="python", kind="function",
                        symbol=f"fn{start + i}", qualified_name=f"fn{start + i}", parent_id="", start_line=1,
                        end_line=2, start_byte=0, end_byte=10, text=f"def fn{start + i}(): pass",
                        content_hash=f"{start + i:032x}", embed_text="")
                  for i in range(f, min(f + 50, n))]
        recs.append(FileRecord(f"f{start + f}.py", "h", chunks, vecs[f:f + len(chunks)], "", "m"))
    return recs, vecs


def test_optimize_builds_indexes_and_the_ann_index_keeps_recall(tmp_path):
    from store_svc.store import StoreSettings

    dim = 32
    store = VectorStore(str(tmp_path / "db"), settings=StoreSettings(ann_min_rows=2000, keep_versions_seconds=0))
    recs, vecs = _bulk(1500, dim)
    store.write(recs)
    assert store.optimize().vector_index == ""  # below ann_min_rows: exact search
    names = {c for ix in store._chunks.list_indices() for c in ix.columns}
    assert {"path", "content_hash", "id", "kw_names", "kw_body", "language"} <= names
    assert "text" not in names  # the raw text's full-text index: only once a search asks for it
    from store_svc.ranking import PREVIOUS

    assert store.search(vecs[7], Query(text="fn7", k=3, mode="hybrid"), ranking=PREVIOUS)  # BM25 over the text
    assert "text" in {c for ix in store._chunks.list_indices() for c in ix.columns}
    more, more_vecs = _bulk(1500, dim, start=1500)
    store.write(more)
    stats = store.optimize()
    assert stats.vector_index == "vector_ivf_flat_p55"  # sqrt(3000) partitions
    assert stats.versions <= 2  # old versions removed
    queries = np.concatenate([vecs[:20], more_vecs[:20]]) + 0.05
    recall = []
    for qv in queries:
        ann = [h.chunk.id for h in store.search(qv, Query(k=10, mode="vector"))]
        exact = [r["id"] for r in store._chunks.search(qv).distance_type("cosine").bypass_vector_index()
                 .limit(10).select(["id"]).to_list()]
        recall.append(len(set(ann) & set(exact)) / 10)
    assert np.mean(recall) >= 0.95
    # rows added later are folded into the index, not searched flat
    extra, _ = _bulk(200, dim, start=3000)
    store.write(extra)
    store.optimize()
    ix = next(ix for ix in store._chunks.list_indices() if ix.name == stats.vector_index)
    assert (ix.num_indexed_rows, ix.num_unindexed_rows) == (3200, 0)


def test_a_large_table_defers_its_upkeep_until_it_is_due_and_misses_nothing(tmp_path):
    """Above upkeep_full_rows, a small write does not pay for a compaction and index refresh of the whole
    table; its rows are searched all the same (by vector and by keyword); the upkeep comes once the
    versions (or the unindexed rows) reach their bound, and takes the versions back down."""
    from store_svc.store import StoreSettings

    dim = 16
    settings = StoreSettings(ann_min_rows=500, keep_versions_seconds=0, upkeep_full_rows=1000,
                             upkeep_unindexed_share=0.05, upkeep_max_versions=12)
    store = VectorStore(str(tmp_path / "db"), settings=settings)
    recs, _ = _bulk(2000, dim)
    store.write(recs)
    assert store.upkeep_due()  # no index yet
    built = store.optimize()
    assert built.vector_index and built.versions <= 2 and not store.upkeep_due()
    for edits in range(settings.upkeep_max_versions):
        rec = record(f"edit{edits}.py", f"def edited_function_{edits}(x):\n    return x + {edits}\n", seed=edits,
                     dim=dim, model="m")
        store.write([rec])
        if store.upkeep_due():
            break
        stats = store.optimize()  # deferred: versions pile up (bounded), nothing is compacted
        assert stats.versions > built.versions + edits
        hits = store.search(rec.vectors[0], Query(text=f"edited_function_{edits}", k=3, mode="hybrid"))
        assert hits[0].chunk.path == f"edit{edits}.py", (edits, [h.chunk.path for h in hits])
        assert store.search(None, Query(text=f"edited_function_{edits}", k=3, mode="keyword"))[0].chunk.path == \
            f"edit{edits}.py"
    assert 0 < edits < settings.upkeep_max_versions - 1  # each write adds versions: their bound came first
    assert store.optimize().versions <= 2  # the upkeep, once due
    ix = next(ix for ix in store._chunks.list_indices() if ix.index_type == "FTS" and ix.columns == ["kw_names"])
    assert store._chunks.index_stats(ix.name).num_unindexed_rows == 0


def test_a_file_edited_again_while_the_upkeep_waits_has_one_current_copy(tmp_path):
    """Above upkeep_full_rows a run's upkeep waits, so the next edit of the same file replaces rows that lie
    outside the indexes: after each edit the file has its current chunks only, each found once by keyword,
    vector and name, and the table's count holds."""
    from store_svc.store import StoreSettings

    dim = 16
    store = VectorStore(str(tmp_path / "db"), settings=StoreSettings(ann_min_rows=500, keep_versions_seconds=0,
                                                                     upkeep_full_rows=1000))
    store.write(_bulk(2000, dim)[0])
    assert store.optimize().vector_index
    for n in range(3):
        rec = record("edited.py", f"def edited_function(x):\n    return x + {n}\n\ndef helper_{n}(y):\n    return y\n",
                     seed=100 + n, file_hash=f"h{n}", dim=dim, model="m")
        store.write([rec])
        stats = store.optimize()
        assert stats.unindexed_rows > 0, "the upkeep was due: this tests nothing"
        assert stats.chunks == 2002
        assert [r for r in rows(store) if r[0] == "edited.py"] == [("edited.py", "edited_function"),
                                                                    ("edited.py", f"helper_{n}")]
        hits = [h for h in store.search(None, Query(text="edited_function", k=10, mode="keyword"))
                if h.chunk.path == "edited.py"]
        assert [h.chunk.symbol for h in hits].count("edited_function") == 1
        assert f"x + {n}" in next(h for h in hits if h.chunk.symbol == "edited_function").chunk.text
        nearest = store.search(rec.vectors[0], Query(k=5, mode="vector"))
        assert (nearest[0].chunk.path, nearest[0].chunk.symbol) == ("edited.py", "edited_function")
        assert f"x + {n}" in nearest[0].chunk.text
        assert sum(h.chunk.path == "edited.py" and h.chunk.symbol == "edited_function" for h in nearest) == 1
        assert [(f.path, f.definition.symbol) for f in store.find_symbol(SymbolQuery("edited_function"))] == \
            [("edited.py", "edited_function")]
        assert store.find_symbol(SymbolQuery(f"helper_{n - 1}")) == []


def test_a_quiet_upkeep_brings_the_indexes_over_every_row_before_it_is_due(tmp_path):
    """A watcher's upkeep once the repository is quiet (optimize(quiet=True)) folds a deferred edit's rows
    into the indexes, which a run's upkeep of a large table leaves for later."""
    from store_svc.store import StoreSettings

    dim = 16
    settings = StoreSettings(ann_min_rows=500, keep_versions_seconds=0, upkeep_full_rows=1000,
                             upkeep_unindexed_share=0.05, upkeep_max_versions=50)
    store = VectorStore(str(tmp_path / "db"), settings=settings)
    store.write(_bulk(2000, dim)[0])
    store.optimize()
    store.write([record("edit.py", "def edited_function(x):\n    return x + 1\n", dim=dim, model="m")])
    store.optimize()  # a run's upkeep: not due, deferred
    assert not store.upkeep_due() and store.unindexed_rows() > 0
    store.optimize(quiet=True)
    assert store.unindexed_rows() == 0
    assert store.search(None, Query(text="edited_function", k=3, mode="keyword"))[0].chunk.path == "edit.py"


def test_a_quiet_upkeep_makes_the_ann_index_one_segment_again(tmp_path):
    """Each upkeep that folds new rows into the ANN index adds a segment that every search then probes; the
    quiet upkeep trains the index again as one once it has more than MAX_ANN_DELTAS, and search still
    finds every row."""
    from store_svc.ann import MAX_ANN_DELTAS
    from store_svc.store import StoreSettings

    dim = 16
    store = VectorStore(str(tmp_path / "db"), settings=StoreSettings(ann_min_rows=500, keep_versions_seconds=0,
                                                                     upkeep_full_rows=10_000))
    store.write(_bulk(1000, dim)[0])
    assert store.optimize().vector_index and store._ann.deltas(store._chunks) == 1
    edits = [record(f"edit{i}.py", f"def edited_{i}(x):\n    return x + {i}\n", seed=i, dim=dim, model="m")
             for i in range(MAX_ANN_DELTAS + 1)]
    for rec in edits:  # a run's upkeep each time (up to upkeep_full_rows it is always due)
        store.write([rec])
        store.optimize()
    assert store._ann.deltas(store._chunks) == MAX_ANN_DELTAS + 2 and store.unindexed_rows() == 0
    assert store.quiet_upkeep_wanted()
    store.optimize(quiet=True)
    assert store._ann.deltas(store._chunks) == 1 and not store.quiet_upkeep_wanted()
    for rec in edits:
        assert store.search(rec.vectors[0], Query(k=1, mode="vector"))[0].chunk.path == rec.path


def test_a_store_left_idle_with_rows_outside_its_indexes_folds_them_in_itself(tmp_path, start_service):
    """A run's deferred upkeep leaves an edit's rows outside the indexes; the store that serves searches
    next (here a real store service opened on that table) runs the upkeep itself once idle, and says
    through Stats how many rows wait until then."""
    import grpc

    from codeindex_common.pb import common_pb2, store_pb2, store_pb2_grpc
    from store_svc.store import StoreSettings

    dim, uri = 16, str(tmp_path / "db")
    store = VectorStore(uri, settings=StoreSettings(ann_min_rows=500, keep_versions_seconds=0, upkeep_full_rows=1000))
    store.write(_bulk(2000, dim)[0])
    store.optimize()
    store.write([record("edit.py", "def edited_function(x):\n    return x + 1\n", dim=dim, model="m")])
    assert store.optimize().unindexed_rows > 0  # deferred: not due at this size
    del store
    svc = start_service("store", "--uri", uri, "--ann-min-rows", "500", "--upkeep-full-rows", "1000",
                        "--upkeep-idle-s", "3")
    with grpc.insecure_channel(svc.address) as ch:
        stub = store_pb2_grpc.StoreStub(ch)
        assert stub.Stats(store_pb2.StatsRequest(), timeout=10).unindexed_rows > 0
        deadline = time.monotonic() + 60
        while (left := stub.Stats(store_pb2.StatsRequest(), timeout=10).unindexed_rows) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert left == 0
        hit = stub.Search(store_pb2.SearchRequest(query_text="edited_function", k=3,
                                                   mode=common_pb2.SEARCH_MODE_KEYWORD), timeout=10).hits[0]
        assert hit.chunk.path == "edit.py"
    assert "idle for 3s with" in svc.log.read_text() and " upkeep: " in svc.log.read_text()

def test_a_replace_leaves_no_tombstone_and_a_crash_between_its_commits_shows_none(tmp_path, monkeypatch):
    """A replace upserts the new chunks and overwrites the old ones with tombstones in one commit, then deletes
    the tombstones. Killed between the two, no search, symbol lookup or count shows a tombstone, and the next
    replace deletes them."""
    from store_svc.schema import IS_TOMBSTONE

    store = VectorStore(str(tmp_path / "db"))
    three = record("a.py", "def f():\n    return 1\n\ndef g():\n    return 2\n\ndef h():\n    return 3\n", seed=1)
    store.write([three, record("b.py", "def keep():\n    return 4\n", seed=2)])
    store.write([record("a.py", "def f():\n    return 10\n", file_hash="h2", seed=3)])  # g and h are gone
    assert rows(store) == [("a.py", "f"), ("b.py", "keep")]
    assert store._chunks.count_rows(IS_TOMBSTONE) == 0

    real_commit = store._commit

    def crash_before_the_purge(op, fn):
        if op == "purge":
            raise RuntimeError("killed between the replace and the purge")
        return real_commit(op, fn)

    monkeypatch.setattr(store, "_commit", crash_before_the_purge)
    with pytest.raises(RuntimeError, match="killed"):
        store.write([record("b.py", "def kept():\n    return 5\n\ndef more():\n    return 6\n", file_hash="h3", seed=4),
                     record("a.py", "def f2():\n    return 11\n", file_hash="h4", seed=5)])
    assert store._chunks.count_rows(IS_TOMBSTONE) == 2  # f and keep, overwritten
    assert store.stats().chunks == 3  # f2, kept, more
    for mode in ("vector", "hybrid", "keyword"):
        for q_vec, text in ((three.vectors[0], "def f return"), (np.eye(DIM, dtype=np.float32)[0], "keep")):
            hits = store.search(q_vec if mode != "keyword" else None, Query(text=text, k=10, mode=mode))
            assert all(h.chunk.kind != "~replaced" and h.chunk.path in ("a.py", "b.py") for h in hits), mode
    assert store.find_symbol(SymbolQuery(name="keep")) == []

    monkeypatch.setattr(store, "_commit", real_commit)
    store.write([record("b.py", "def kept():\n    return 5\n", file_hash="h5", seed=6)])
    assert store._chunks.count_rows(IS_TOMBSTONE) == 0
    assert rows(store) == [("a.py", "f2"), ("b.py", "kept")]


def test_lancedb_caches_stay_within_their_bounds(tmp_path):
    """The store's LanceDB session is bounded (its defaults are gigabytes, and the metadata cache grows with
    every version a run commits)."""
    from store_svc.store import StoreSettings

    def cached_after_writes(settings: StoreSettings) -> int:
        store = VectorStore(str(tmp_path / f"db{settings.metadata_cache_mb}"), settings=settings)
        for i in range(60):
            store.write([record(f"f{i}.py", f"def f{i}():\n    return {i}\n", seed=i)])
            store.search(np.eye(DIM, dtype=np.float32)[0], Query(text=f"f{i}", k=3, mode="hybrid"))
        return store._session.size_bytes

    unbounded = cached_after_writes(StoreSettings(index_cache_mb=4096, metadata_cache_mb=4096))
    bounded = cached_after_writes(StoreSettings(index_cache_mb=1, metadata_cache_mb=1))
    assert bounded <= 2 << 20 < unbounded, (bounded, unbounded)


def test_ivf_pq_is_built_and_searched(tmp_path):
    from store_svc.store import StoreSettings

    store = VectorStore(str(tmp_path / "db"), settings=StoreSettings(ann_min_rows=100, ann_index="ivf_pq"))
    recs, vecs = _bulk(1000, 16)
    store.write(recs)
    assert store.optimize().vector_index == "vector_ivf_pq_p1"  # one partition per 4,096 rows, at least one
    assert store.search(vecs[7], Query(k=1, mode="vector"))[0].chunk.id == "c7"  # refined with full vectors


def test_the_ann_index_is_derived_from_the_row_count():
    from store_svc.ann import derive_ann

    assert derive_ann(100_000, 384) == derive_ann(100_000, 384, "ivf_flat")
    assert (derive_ann(100_000, 384).partitions, derive_ann(100_000, 384).nprobes) == (316, 19)
    big = derive_ann(1_118_230, 384)  # the scale benchmark's table
    assert (big.kind, big.partitions, big.nprobes, big.refine) == ("ivf_pq", 273, 8, 10)
    assert derive_ann(40_000_000, 384).partitions == 4096
    assert derive_ann(10, 384, "none") is None


def test_an_index_of_an_older_schema_is_refused_until_reset(tmp_path):
    import lancedb
    import pyarrow as pa

    db = lancedb.connect(str(tmp_path / "db"))
    db.create_table("chunks", pa.table({"id": ["x"], "path": ["a.py"], "text": ["t"],
                                        "vector": pa.FixedSizeListArray.from_arrays(pa.array([0.0] * DIM,
                                                                                             pa.float32()), DIM)}))
    store = VectorStore(str(tmp_path / "db"))
    for call in (store.manifest, lambda: store.search(np.ones(DIM, np.float32), Query(k=1, mode="vector")),
                 lambda: store.lookup_vectors(["ab"]), lambda: store.write([record("a.py", "def f():\n    pass\n")])):
        with pytest.raises(FailedPrecondition, match="--reindex"):
            call()
    store.reset()
    store.write([record("a.py", "def f():\n    pass\n")])
    assert rows(store) == [("a.py", "f")]


def test_a_crash_inside_a_delete_leaves_the_file_pending(tmp_path, monkeypatch):
    store = VectorStore(str(tmp_path / "db"))
    store.write([record("a.py", "def f():\n    pass\n"), record("b.py", "def g():\n    pass\n")])
    files = store._files

    class Dying:  # the files table of a process killed before the manifest rows are deleted
        def __getattr__(self, name):
            return getattr(files, name)

        def delete(self, where):
            raise SystemExit("killed")

    monkeypatch.setattr(store, "_files", Dying())
    with pytest.raises(SystemExit):
        store.delete(["a.py"])
    reopened = VectorStore(str(tmp_path / "db"))
    assert rows(reopened) == [("b.py", "g")]
    # a.py's row no longer claims it is indexed: were the file back unchanged, the next run re-indexes it
    assert {e.path: e.file_hash for e in reopened.manifest()} == {"a.py": "", "b.py": "h1"}


def test_a_query_longer_than_the_limit_is_refused(filled):
    from codeindex_common.model import MAX_QUERY_CHARS

    with pytest.raises(InvalidArgument, match="longer than"):
        filled.search(None, Query("x" * (MAX_QUERY_CHARS + 1), 5, "keyword"))


# ----------------------------------------------------------------------------- identifiers and definitions

RUBY = """class Greeter
  def initialize(name)
    @name = name
  end
  def name
    @name
  end

  def greet(loud)
    text = "Hello, #{@name}"
    loud ? text.upcase : text
  end
end
"""


def test_keyword_search_understands_identifiers(tmp_path):
    """camelCase, snake_case and kebab-case are split for the keyword index, and the whole name is kept."""
    from store_svc.ranking import RankingOptions

    store = VectorStore(str(tmp_path / "db"))
    store.write([record("src/headers.py", "def parse_list_header(value):\n    return value.split(',')\n"),
                 record("src/http.ts", "export function sendRequestWithRetry(req) {\n  return fetch(req);\n}\n"),
                 record("src/other.py", "def unrelated(x):\n    return x\n")])
    store.optimize()
    for text, symbol in (("parse list header", "parse_list_header"), ("parseListHeader", "parse_list_header"),
                         ("send request with retry", "sendRequestWithRetry"),
                         ("sendrequestwithretry", "sendRequestWithRetry")):
        assert [h.chunk.symbol for h in store.search(None, Query(text, 3, "keyword"))][:1] == [symbol], text
    # over the raw text (the signal off), a camelCase name is one word: its words find nothing
    off = RankingOptions(identifiers=False)
    assert store.search(None, Query("send request with retry", 3, "keyword"), ranking=off) == []


def test_every_definition_of_a_name_even_merged_ones(tmp_path):
    """A two-line method merged with initialize into one chunk is found by its own name, with its own lines;
    hybrid search puts it first for its name, and --symbol filters on it."""
    from codeindex_common.model import SymbolQuery

    store = VectorStore(str(tmp_path / "db"))
    merged = FileRecord("lib/greeter.rb", "h", list(chunk_file("lib/greeter.rb", RUBY.encode()).chunks),
                        np.eye(4, DIM, dtype=np.float32)[:3], "", "test-model")
    assert any(", " in c.symbol for c in merged.chunks), "the small methods are merged"
    store.write([merged, record("b.py", "def name():\n    return 1\n")])
    found = store.find_symbol(SymbolQuery("name"))
    assert [(h.path, h.definition.qualified_name, h.definition.start_line, h.definition.end_line)
            for h in found] == [("b.py", "name", 1, 2), ("lib/greeter.rb", "Greeter.name", 5, 7)]
    assert [h.definition.kind for h in store.find_symbol(SymbolQuery("Greeter#name"))] == ["method"]
    assert store.find_symbol(SymbolQuery("Name")) == []  # exact: case and all
    assert [h.path for h in store.find_symbol(SymbolQuery("name", language="ruby"))] == ["lib/greeter.rb"]
    vec = np.ones(DIM, np.float32) / np.sqrt(DIM)
    assert {h.chunk.path for h in store.search(vec, Query("x", 10, "vector", symbol="Greeter.name"))} == {
        "lib/greeter.rb"}
    top = store.search(vec, Query("Greeter.name", 3, "hybrid"))[0]
    assert top.chunk.path == "lib/greeter.rb" and "Greeter.name" in top.chunk.qualified_name


def test_an_index_from_before_the_keyword_fields_is_upgraded_in_place(tmp_path):
    """Opening a table that lacks the derived columns adds them from its rows: nothing re-embedded."""
    import lancedb
    import pyarrow as pa

    from codeindex_common.model import SymbolQuery
    from store_svc.schema import DERIVED, chunk_rows

    rec = record("src/headers.py", "def parse_list_header(value):\n    return value.split(',')\n")
    old = chunk_rows([rec], DIM).drop_columns(list(DERIVED))
    db = lancedb.connect(str(tmp_path / "db"))
    db.create_table("chunks", old)
    db.create_table("files", pa.table({"path": ["src/headers.py"], "file_hash": ["h1"], "skip_reason": [""],
                                       "chunks": pa.array([1], pa.int32()), "model_id": ["test-model"]}))
    store = VectorStore(str(tmp_path / "db"))
    assert set(DERIVED) <= set(store._chunks.schema.names)
    assert [h.chunk.symbol for h in store.search(None, Query("parse list header", 3, "keyword"))] == [
        "parse_list_header"]
    assert [h.definition.start_line for h in store.find_symbol(SymbolQuery("parse_list_header"))] == [1]
    vec = store._chunks.to_arrow().column("vector").to_pylist()[0]
    assert np.allclose(vec, rec.vectors[0])  # the vectors are the ones written


def test_keyword_fields_sent_by_the_parser_are_the_ones_the_store_would_compute():
    """The parser's workers fill each chunk's keyword fields; rows written from those messages are the rows
    the store makes when it computes the fields itself (Chunk objects, or messages of an older writer)."""
    from codeindex_common.pb import parser_pb2
    from parser_svc.parser import _response
    from store_svc.schema import chunk_rows

    path = "store_svc/schema.py"
    result = chunk_file(path, (ROOT / path).read_bytes())
    sent = parser_pb2.ParseResponse.FromString(_response(result))
    assert len(sent.chunks) > 5 and all(c.kw_names and c.kw_body and c.kw_format for c in sent.chunks)
    assert any("chunk rows chunkrows" in c.kw_names for c in sent.chunks)
    vecs = np.zeros((len(sent.chunks), 8), np.float32)
    computed = chunk_rows([FileRecord(path, "h", list(result.chunks), vecs)], 8)
    assert chunk_rows([FileRecord(path, "h", list(sent.chunks), vecs)], 8).equals(computed)
    for c in sent.chunks:  # fields made by other rules (another version's parser) are not used
        c.kw_format += 1
        c.kw_body = "stale words"
    assert chunk_rows([FileRecord(path, "h", list(sent.chunks), vecs)], 8).equals(computed)
    for c in sent.chunks:  # nor are missing ones (an older writer)
        c.ClearField("kw_names")
        c.ClearField("kw_body")
        c.ClearField("kw_format")
    assert chunk_rows([FileRecord(path, "h", list(sent.chunks), vecs)], 8).equals(computed)


# ----------------------------------------------------------------------------- searches beside writes and upkeep


def _module(i, generation):
    return "".join(f"def func_{i}_{j}_{generation}(x):\n    return x + {j * generation}\n\n" for j in range(4))


def test_searches_beside_writes_and_the_upkeeps_cleanup_never_fail(tmp_path):
    """Searches of every mode, symbol lookups and Stats run while another thread edits files and runs the
    upkeep, whose cleanup keeps no old version (keep 0): none fails. Before the gate (store_svc/gate.py)
    the cleanup removed the files of a version a search was reading ("Not found: .../data/<file>.lance"),
    and a hit whose file was rewritten between its retrieval and the read of its row failed the search
    (KeyError): 12-16 failures in 30 s of this."""
    import threading

    from store_svc.store import StoreSettings

    dim, files = 16, 200
    store = VectorStore(str(tmp_path / "db"), settings=StoreSettings(keep_versions_seconds=0, ann_min_rows=10**6))
    store.write([record(f"m{i}.py", _module(i, 0), seed=i, dim=dim, model="m") for i in range(files)])
    store.optimize()
    stop = time.monotonic() + 15
    failures, reads, upkeeps = [], [0], [0]

    def read(seed):
        rng = np.random.default_rng(seed)
        while time.monotonic() < stop:
            v = rng.standard_normal(dim).astype(np.float32)
            v /= np.linalg.norm(v)
            calls = [(store.search, v, Query("func return x", 10, mode)) for mode in ("vector", "keyword", "hybrid")]
            for call, *args in [*calls, (store.find_symbol, SymbolQuery("func_3_0_0")), (store.stats,)]:
                try:
                    call(*args)
                    reads[0] += 1
                except Exception as exc:  # noqa: BLE001 - every failure is the finding
                    failures.append(f"{type(exc).__name__}: {exc}")

    def edit():
        generation = 1
        while time.monotonic() < stop:
            first = (5 * generation) % files
            store.write([record(f"m{i}.py", _module(i, generation), seed=generation * files + i, dim=dim,
                                model="m", file_hash=f"h{generation}") for i in range(first, first + 5)])
            store.optimize(quiet=True)
            upkeeps[0] += 1
            generation += 1

    threads = [threading.Thread(target=read, args=(s,)) for s in range(2)] + [threading.Thread(target=edit)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:5]
    assert reads[0] > 500 and upkeeps[0] >= 5, (reads, upkeeps)  # they did overlap, many times
    assert store.stats().versions == 1 and store.stats().chunks == 4 * files


def test_a_hit_whose_file_is_rewritten_during_the_search_is_searched_again_or_left_out(tmp_path, monkeypatch):
    """A file rewritten between a search's retrieval and the read of its hits' rows (here each time the
    retrieval finishes, the way a concurrent write can) takes away a chunk the ranking chose (its function
    renamed: another chunk id): the search is run once more, on the newer version, and finds the new chunk;
    rewritten again then, the chunk is left out of the answer instead of failing it."""
    from store_svc.search import ChunkSearch

    store = VectorStore(str(tmp_path / "db"))
    store.write([record("a.py", "def render_invoice(order):\n    return order.total\n", model="m"),
                 record("b.py", "def parse_header(line):\n    return line.split(':')\n", seed=1, model="m")])
    retrieve, rewrites, limit = ChunkSearch._candidates, [0], [1]

    def then_rewrite(self, *args, **kwargs):
        found = retrieve(self, *args, **kwargs)
        if rewrites[0] < limit[0]:
            rewrites[0] += 1
            store.write([record("a.py", f"def render_invoice_v{rewrites[0]}(order):\n    return order.total\n",
                                model="m", file_hash=f"h{rewrites[0] + 1}")])
        return found

    monkeypatch.setattr(ChunkSearch, "_candidates", then_rewrite)
    query = Query("render invoice", 5, "keyword")
    hits = store.search(None, query)
    assert rewrites[0] == 1 and hits[0].chunk.symbol == "render_invoice_v1" and hits[0].chunk.text  # searched again
    limit[0] = 3
    hits = store.search(None, query)
    assert rewrites[0] == 3 and "a.py" not in [h.chunk.path for h in hits]  # gone twice: left out
    assert store.search(None, query)[0].chunk.symbol == "render_invoice_v3"


def test_the_cleanup_leaves_a_table_written_after_its_compaction_to_the_next_upkeep(tmp_path, monkeypatch):
    """The cleanup's optimize would compact and index whatever was written since the upkeep's compaction,
    with the gate held exclusive (every search waiting): a table written in between keeps its old versions
    until the next upkeep, which removes them."""
    from store_svc import metrics
    from store_svc.store import StoreSettings

    store = VectorStore(str(tmp_path / "db"), settings=StoreSettings(keep_versions_seconds=0))
    store.write([record(f"m{i}.py", _module(i, 0), seed=i, model="m") for i in range(5)])
    cleanup, skipped = VectorStore._cleanup, metrics.CLEANUP_SKIPPED.labels("written")._value.get()

    def written_first(self, *args):
        store.write([record("late.py", _module(9, 1), seed=9, model="m")])
        return cleanup(self, *args)

    monkeypatch.setattr(VectorStore, "_cleanup", written_first)
    assert store.optimize().versions > 1  # both tables written since: neither cleaned
    assert metrics.CLEANUP_SKIPPED.labels("written")._value.get() == skipped + 2
    monkeypatch.setattr(VectorStore, "_cleanup", cleanup)
    s = store.optimize()
    assert s.versions == 1 and s.chunks == 6 * 4 and s.unindexed_rows == 0


def test_the_store_starts_without_the_namespace_rest_client_and_still_lends_it(tmp_path):
    """store_svc defers the REST client package's __init__ (its API modules: about 0.8 s of every start);
    a fresh interpreter opens, writes and reads a table without it, and the client's names still load on
    first use."""
    import subprocess
    import sys

    def fresh_interpreter(script: str) -> None:
        done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]

    script = f"""
import sys
import store_svc.store, lancedb, pyarrow as pa
db = lancedb.connect({str(tmp_path / "db")!r})
table = db.create_table("t", pa.table({{"a": [1, 2, 3]}}))
assert table.count_rows() == 3 and table.search().where("a > 1").to_arrow().num_rows == 2
assert "lance_namespace_urllib3_client.api" not in sys.modules, "the API modules were imported"
from lance_namespace_urllib3_client import ApiClient, Configuration
assert "lance_namespace_urllib3_client.api" in sys.modules and ApiClient.__name__ == "ApiClient"
import lance_namespace_urllib3_client as client
try:
    client.no_such_name
except AttributeError:
    print("ok")
"""
    fresh_interpreter(script)
    # a submodule of the client imported first (its own `from lance_namespace_urllib3_client import rest`
    # must not run the package's __init__ halfway through that import)
    script = """
import store_svc
from lance_namespace_urllib3_client.api.table_api import TableApi
import lance_namespace_urllib3_client.api_client as api_client
from lance_namespace_urllib3_client import ApiClient, rest
assert ApiClient is api_client.ApiClient and TableApi.__name__ == "TableApi" and rest.__name__.endswith(".rest")
print("ok")
"""
    fresh_interpreter(script)
