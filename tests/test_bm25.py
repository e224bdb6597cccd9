"""BM25 over the keyword fields in memory (store_svc.bm25) against LanceDB's own full-text search of the same
rows, on a real LanceDB table with the store's index settings (``FTS()``): words LanceDB's analyzer treats
in its own way, its scores, and the order of ties."""

import lancedb
import numpy as np
import pyarrow as pa
import pytest
import Stemmer
from lancedb.index import FTS
from lancedb.query import MatchQuery, MultiMatchQuery

from store_svc.bm25 import _SEPARATORS, STOP_WORDS, KeywordIndex

BOOSTS = {"names": 3.0, "body": 1.0}

# rows whose words LanceDB's analyzer handles each in its own way
NAMES = ["parse list header parselistheader", "complète route", "having only onli", "கடையா சூப்பர் கடை",
         "x" * 39 + " " + "y" * 40, "error error errors", "v2 handler_v2 ß straße", "", None,
         "queryerror(value error valueerror): tree sitter treesitter-0 23 2 __init__", "ÆON œuvre Łódź",
         "the and of", "running runs ran runner", "HTTPAdapter http adapter httpadapter"]
BODIES = ["def parse_list_header(value): return [v.strip() for v in value.split(',')]",
          "plus complète le fond du génie français. A complete route to completion",
          "once before during very because", "தமிழ் உரை கடையா", "long " * 60, "raise error(error)", None,
          "only spaces   here  ", "the body of a row with no names", "  leading and trailing  ", "æon oeuvre lodz",
          "", "run running", "adapter mounts for http and https"]
QUERIES = ["parse list header", "complete route", "complète", "having only", "onli", "கடையா", "x" * 39,
           "y" * 40, "error error", "errors", "v2", "strasse", "straße", "tree sitter treesitter", "aeon oeuvre",
           "lodz", "the and of", "run", "runner", "http adapter", "HTTPAdapter", "no such word at all",
           "adapter adapter adapter route", "0 23 2", "mounts https"]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    n = len(NAMES)
    db = lancedb.connect(str(tmp_path_factory.mktemp("bm25")))
    t = db.create_table("rows", pa.table({"i": list(range(n)), "names": NAMES, "body": BODIES}))
    for column in BOOSTS:
        t.create_index(column, config=FTS(), replace=True)
    return t


def lancedb_search(t, text, k, columns=tuple(BOOSTS)):
    q = MultiMatchQuery(text, list(columns), boosts=[BOOSTS[c] for c in columns]) if len(columns) > 1 \
        else MatchQuery(text, columns[0])
    out = t.search(q, query_type="fts").limit(k).select(["i", "_score"]).to_arrow()
    return out.column("i").to_pylist(), out.column("_score").to_numpy()


def memory_index(t):
    data = t.to_arrow().sort_by("i")
    return KeywordIndex.build({c: data.column(c).combine_chunks() for c in BOOSTS}), np.arange(len(data))


@pytest.mark.parametrize("columns", [("names", "body"), ("names",), ("body",)])
def test_scores_and_order_are_lancedbs(table, columns):
    index, row_ids = memory_index(table)
    answered = 0
    for text in QUERIES:
        want_rows, want_scores = lancedb_search(table, text, 50, columns)
        boosts = {c: BOOSTS[c] for c in columns} if len(columns) > 1 else {columns[0]: 1.0}  # MatchQuery: no boost
        rows, scores = index.search(text, 50, boosts, row_ids)
        assert list(rows) == want_rows, text
        np.testing.assert_allclose(scores, want_scores, rtol=1e-5, err_msg=text)
        answered += bool(want_rows)
    print(columns, answered)
    assert answered >= 12  # most queries found rows to compare


def test_the_stop_words_are_lancedbs_and_dropped_after_stemming(tmp_path):
    """LanceDB's index finds a word of the list only where its stem is not on the list ("above" as "abov",
    not "having" as "have"), and words off the list always; so does the index in memory."""
    words = sorted(STOP_WORDS) + ["would", "get", "could", "also", "must"]
    stem = Stemmer.Stemmer("english").stemWord
    expected = {w for w in words if stem(w) not in STOP_WORDS}
    assert {"above", "only", "would"} <= expected and not {"having", "the", "doing"} & expected
    t = lancedb.connect(str(tmp_path)).create_table("w", pa.table({"names": [f"{w} filler" for w in words]}))
    t.create_index("names", config=FTS())
    assert {w for w in words if len(t.search(MatchQuery(w, "names"), query_type="fts").limit(1).to_arrow())} \
        == expected
    index = KeywordIndex.build({"names": t.to_arrow().column("names").combine_chunks()})
    assert {w for w in words if len(index.search(w, 1, {"names": 1.0}, np.arange(len(words)))[0])} == expected


def test_ties_go_by_row_id_and_a_smaller_k_is_a_prefix():
    texts = pa.array(["alpha beta"] * 5 + ["alpha"] * 6 + ["gamma"])
    row_ids = np.array([90, 11, 50, 3, 70, 8, 1, 60, 2, 40, 9, 5])  # a compaction's order: not ascending
    index = KeywordIndex.build({"names": texts})
    rows, scores = index.search("alpha", 8, {"names": 1.0}, row_ids)
    assert [int(row_ids[r]) for r in rows] == [1, 2, 8, 9, 40, 60, 3, 11]  # the shorter rows score higher
    assert np.all(np.diff(scores) <= 0)
    for k in range(1, 8):
        assert list(index.search("alpha", k, {"names": 1.0}, row_ids)[0]) == list(rows[:k])


def test_no_rows_no_words_and_a_zero_k_find_nothing():
    index = KeywordIndex.build({"names": pa.array(["", None, "the"])})
    for text, k in (("anything", 5), ("", 5), ("the", 5), ("name", 0)):
        rows, scores = index.search(text, k, {"names": 1.0}, np.arange(3))
        assert len(rows) == len(scores) == 0
    empty = KeywordIndex.build({"names": pa.array([], pa.string())})
    assert len(empty.search("name", 5, {"names": 1.0}, np.arange(0))[0]) == 0


def test_searches_at_once_give_what_searches_in_turn_give(table):
    """The store answers searches on several threads at once, all through one index (and one stemmer)."""
    from concurrent.futures import ThreadPoolExecutor

    index, row_ids = memory_index(table)
    texts = [f"{q} {w}" for q in QUERIES for w in ("running", "complètement", "adapters")]

    def one(text):
        rows, scores = index.search(text, 10, BOOSTS, row_ids)
        return list(rows), list(scores)

    in_turn = [one(t) for t in texts]
    with ThreadPoolExecutor(8) as pool:
        for _ in range(5):
            assert list(pool.map(one, texts)) == in_turn
    assert sum(bool(rows) for rows, _ in in_turn) > len(texts) // 2


def test_letters_fold_and_lower_as_in_lancedb(tmp_path):
    """Each accented or otherwise marked Latin letter, Greek letter, fraction and circled number, written
    in a row of its own: the rows a search for each finds are LanceDB's (which folds after stemming, Lucene's
    way: "ħ" and "ǿ" too, "½" as "12"; Greek keeps its accents; a capital sigma ends a word as a sigma)."""
    letters = [chr(c) for lo, hi in ((0xC0, 0x250), (0x370, 0x400), (0x1E00, 0x1F00), (0x2150, 0x2190),
                                     (0x2460, 0x2474)) for c in range(lo, hi)]
    letters = [c for c in letters if len(_SEPARATORS.split(f"zq{c}")) == 1]  # those that are part of a word
    rows = [f"zq{c}" for c in letters] + [f"zq{a}" for a in "abcdefghijklmnopqrstuvwxyz"] + \
        [f"zq{a}{b}" for a in "0123456789" for b in "0123456789"] + ["ΟΔΟΣ", "οδος", "οδοσ"]
    t = lancedb.connect(str(tmp_path)).create_table("w", pa.table({"i": list(range(len(rows))), "names": rows}))
    t.create_index("names", config=FTS())
    index = KeywordIndex.build({"names": pa.array(rows)})
    differ = []
    for text in rows:
        want = sorted(t.search(MatchQuery(text, "names"), query_type="fts").limit(300).select(["i"]).to_arrow()
                      .column("i").to_pylist())
        if sorted(index.search(text, 300, {"names": 1.0}, np.arange(len(rows)))[0].tolist()) != want:
            differ.append(text)
    assert len(letters) > 700 and not differ
