"""Retrieval over the chunks table, and the search that puts it through the
ranking stage. Three retrievals give candidates: the vector ranking (cosine,
through the ANN index when one is built), the keyword ranking (LanceDB's
BM25 full-text index: over the identifier-split names and body fields, names
weighing more, or over the raw text when that signal is off) and exact
definition names (the ``names_folded`` list column: every definition a chunk
holds, merged small functions included). :meth:`ChunkSearch.search` runs the
ones a query's mode asks for at once, each reading what the ranking needs of
its candidates (and the vectors of those the vector search did not find, for
their cosine), ranks them (:mod:`store_svc.ranking`) and reads the rest of the
top k's rows (:meth:`ChunkSearch.complete`). Also here:
:meth:`ChunkSearch.definitions`, every definition of a name."""

from __future__ import annotations

import functools
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from lancedb.index import FTS
from lancedb.query import MultiMatchQuery

from codeindex_common.errors import InvalidArgument
from codeindex_common.model import Chunk, Definition, Hit, Query

from . import ranking
from .ann import AnnIndex
from codeindex_common.keywords import query_terms
from .ranking import Candidate, QueryInfo, RankingOptions
from .resident import Resident, Snapshot
from .schema import CHUNK_COLUMNS, META_COLUMNS, TOMBSTONE, chunk_from_row
from .sql import filters, names_include, sql_str

# what a retrieval reads of each candidate: what the ranking stage looks at, and a keyword or name candidate's
# vector too, for its cosine. The rest of a hit's row (its text above all) is read for the top k alone, by row
# id (:meth:`ChunkSearch.complete`): at a million rows each column read costs about 0.1 ms a row, and a
# hybrid search has up to 150 candidates.
RANK_COLUMNS = ["id", "path", "language", "kind", "symbol", "qualified_name", "start_line", "end_line", "names"]
CANDIDATE_COLUMNS = [*RANK_COLUMNS, "vector"]
ROW_COLUMNS = [*CHUNK_COLUMNS, "names"]  # all a hit shows

NAMES_BOOST = 3.0  # a word in a chunk's names (symbol, qualified name, signature, path) against one in its body
DEPTH = 50  # candidates each retrieval gives the ranking stage, at least


class ChunkSearch:
    """The retrievals over one chunks table. ``ann`` says which ANN index
    vector searches probe; ``lock`` is held while a full-text index is
    created (with the table's other maintenance); ``pool`` runs a hybrid
    search's retrievals at once; ``resident`` holds the table's vectors and
    rows in memory, which searches use (a filter as a mask over them) while
    the table is at the version they were read at (:mod:`store_svc.resident`)."""

    def __init__(self, table, ann: AnnIndex, lock: threading.Lock, pool: ThreadPoolExecutor,
                 resident: Resident | None = None):
        self.table = table
        self._ann = ann
        self._lock = lock
        self._pool = pool
        self.resident = resident
        self._fts_ready: set[str] = set()

    @functools.cached_property
    def dim(self) -> int:
        """The vectors' dimension: fixed when the table is made (read once: each schema read costs a call into
        LanceDB's event loop)."""
        return self.table.schema.field("vector").type.list_size

    def search(self, vector: np.ndarray | None, q: Query, where: str,
               options: RankingOptions = ranking.DEFAULT) -> list[Hit]:
        """Top-k chunks by ``q.mode`` within the filter ``where``: "vector", "keyword" or "hybrid".

        A file written while the search runs may take a top-k chunk away between its retrieval and the
        read of its row (the file's new chunks are in a newer version than the one retrieved from): the
        search is run once more, on the newer version, and a chunk that vanishes again is left out. From
        the rows held in memory (the table unchanged since they were read) the answer is the
        table as it was when the search began: nothing is read again."""
        for _ in range(2):
            held, mask = self._held(q, where)
            info, candidates = self._candidates(vector, q, where, options, held, mask)
            hits = ranking.rank(candidates, info, q.k, options, q.mode)
            rows = {c.chunk.id: c.row_id for c in candidates if not c.whole}
            full = self.complete([(h.chunk.id, rows[h.chunk.id]) for h in hits if h.chunk.id in rows], held)
            gone = {h.chunk.id for h in hits if h.chunk.id in rows and h.chunk.id not in full}
            if not gone:
                break
        hits = [h for h in hits if h.chunk.id not in gone]
        for h in hits:
            if h.chunk.id in rows:
                h.chunk = full[h.chunk.id]
        return ranking.with_snippets(hits, q.text)

    def candidates(self, vector: np.ndarray | None, q: Query, where: str,
                   options: RankingOptions = ranking.DEFAULT) -> tuple[QueryInfo, list[Candidate]]:
        """What the ranking stage gets: the query read, and every chunk the mode's retrievals found (run at
        once), with what each saw of it."""
        return self._candidates(vector, q, where, options, *self._held(q, where))

    def _held(self, q: Query, where: str) -> tuple[Snapshot | None, np.ndarray | None]:
        """The rows in memory, if they are the table's now, and which of them the search's filters keep
        (None: no filter). A filter other than the query's own (``where`` not made from it) reads the
        table."""
        held = self.resident.current(self.table) if self.resident is not None else None
        if held is None or not where:
            return held, None
        if where != filters(q.language, q.kind, q.path_glob, q.symbol):
            return None, None
        return held, held.mask(language=q.language, kind=q.kind, path_glob=q.path_glob, symbol=q.symbol)

    def _candidates(self, vector: np.ndarray | None, q: Query, where: str, options: RankingOptions,
                    held: Snapshot | None, mask: np.ndarray | None = None) -> tuple[QueryInfo, list[Candidate]]:
        if q.mode in ("vector", "hybrid") and (vector is None or vector.shape != (self.dim,)):
            size = 0 if vector is None else vector.size
            raise InvalidArgument(f"query vector has {size} dimensions, the index {self.dim}")
        if q.mode in ("vector", "hybrid") and not np.isfinite(vector).all():
            raise InvalidArgument("query vector holds a NaN or infinite value")
        info = ranking.analyze(q.text)
        depth = max(DEPTH, 5 * q.k) if q.mode == "hybrid" else q.k
        jobs = {}
        if q.mode == "vector" and held is None:  # its k candidates are the hits: whole rows at once, one read
            jobs["vector"] = functools.partial(self.vector, vector, depth, where, q.min_score, ROW_COLUMNS)
        elif q.mode in ("vector", "hybrid"):
            jobs["vector"] = functools.partial(self.vector, vector, depth, where, q.min_score, held=held, mask=mask)
        if q.mode in ("keyword", "hybrid"):
            jobs["keyword"] = functools.partial(self.keyword, q.text, depth, where, options.identifiers, held=held,
                                                mask=mask)
        if q.mode == "hybrid":
            jobs["exact"] = functools.partial(self.exact, info, depth, where, held=held, mask=mask)
        if held is None and len(jobs) > 1:  # LanceDB's searches side by side
            running = {name: self._pool.submit(job) for name, job in jobs.items()}
            found = {name: job.result() for name, job in running.items()}
        else:  # from memory only the keyword search is LanceDB's: in turn costs less than the threads' hand-offs
            found = {name: job() for name, job in jobs.items()}
        candidates = self._merge(found, vector)
        if q.min_score is not None:  # a cosine floor, in the modes that have one
            candidates = [c for c in candidates if c.cosine is not None and c.cosine >= q.min_score]
        texts = [c for c in candidates if not c.whole and ranking.reads_text(c.chunk)]
        if texts:  # the few the ranking reads the text of (one a write took away since is left out)
            full = self.complete([(c.chunk.id, c.row_id) for c in texts], held)
            gone = {c.chunk.id for c in texts if c.chunk.id not in full}
            candidates = [c for c in candidates if c.chunk.id not in gone]
            for c in texts:
                if c.chunk.id in full:
                    c.chunk, c.whole = full[c.chunk.id], True
        return info, candidates

    def complete(self, found: list[tuple[str, int | None]], held: Snapshot | None = None) -> dict[str, Chunk]:
        """The whole chunk of each (chunk id, row id the retrieval saw): read by row id, and by chunk id
        (through its index) for any whose row is gone since (compacted into another fragment: a row id
        names a fragment and an offset, and LanceDB reads no row for one that is gone) or was not seen.
        A chunk that a write has taken away since (deleted, or a tombstone now) is not in the answer.
        With ``held`` (of the table's version now), the fields held in memory are not read again (each
        column read costs); of an older version, those it holds of a row still there are taken from it."""
        out: dict[str, Chunk] = {}
        by_row = [(cid, rid) for cid, rid in found if rid is not None]
        if by_row and held is not None:
            known = {row["id"]: row for row in held.attach([{"id": cid, "_rowid": rid} for cid, rid in by_row])[0]}
            unheld = [c for c in ROW_COLUMNS if c not in held.fields.column_names]
            if known and not unheld and held.version == self.table.version:  # all of it in memory, and current
                out = {cid: chunk_from_row(row) for cid, row in known.items()}
            elif known:  # what memory lacks, or (all held but outdated) only whether each row is still there
                rows = self.table.take_row_ids([known[cid]["_rowid"] for cid, _ in by_row if cid in known])
                for row in rows.select(["id", *(unheld or ["kind"])]).to_list():
                    if row["id"] in known:
                        out[row["id"]] = chunk_from_row({**known[row["id"]], **row})
            by_row = []  # the rest by chunk id, below
        if by_row:
            rows = self.table.take_row_ids([rid for _, rid in by_row]).select(ROW_COLUMNS).to_list()
            wanted = {cid for cid, _ in by_row}
            out = {row["id"]: chunk_from_row(row) for row in rows
                   if row["id"] in wanted and row["kind"] != TOMBSTONE}
        missing = [cid for cid, _ in found if cid not in out]
        if missing:
            match = f"id IN ({', '.join(sql_str(cid) for cid in missing)})"
            rows = self.table.search().where(match).select(ROW_COLUMNS).limit(len(missing)).to_list()
            out.update((row["id"], chunk_from_row(row)) for row in rows if row["kind"] != TOMBSTONE)
        return out

    def _merge(self, found: dict[str, list[dict]], vector: np.ndarray | None) -> list[Candidate]:
        """One candidate per chunk any retrieval found, with what each saw of it; the cosine of those the
        vector search did not return is computed from their stored vectors."""
        by_id: dict[str, Candidate] = {}

        def get(row: dict) -> Candidate:
            c = by_id.get(row["id"])
            if c is None:
                c = by_id[row["id"]] = Candidate(chunk_from_row(row), names=tuple(row.get("names") or ()),
                                                 row_id=row.get("_rowid"), whole="text" in row)
                if vector is not None and row.get("vector") is not None:
                    c.cosine = float(np.dot(row["vector"], vector))
            return c

        found = {name: [row for row in rows if row.get("kind") != TOMBSTONE] for name, rows in found.items()}
        for r, row in enumerate(found.get("vector", ()), start=1):
            c = get(row)
            c.cosine, c.vector_rank = 1.0 - float(row["_distance"]), r
        for r, row in enumerate(found.get("keyword", ()), start=1):
            c = get(row)
            c.keyword_score, c.keyword_rank = float(row["_score"]), r
        for row in found.get("exact", ()):  # its name match is the ranking's to judge (ranking.name_match)
            get(row)
        return list(by_id.values())

    def vector(self, vector: np.ndarray, k: int, where: str, min_score: float | None = None,
               columns: list[str] = RANK_COLUMNS, held: Snapshot | None = None,
               mask: np.ndarray | None = None) -> list[dict]:
        """The k nearest chunks by cosine similarity (at least ``min_score``), with ``_distance`` and
        ``_rowid``: exactly, over the rows held in memory (``held``, of the table's version, with ``mask``
        the rows ``where`` keeps: the columns it holds), or through the table's ANN index."""
        if _in_memory(held, where, mask):
            return held.nearest(vector, k, min_score, mask)
        q = self.table.search(vector.astype(np.float32)).distance_type("cosine").limit(k).with_row_id(True)
        ann = self._ann.current
        if ann is not None:
            q = q.nprobes(ann.nprobes)
            if ann.refine:
                q = q.refine_factor(ann.refine)
        if where:
            q = q.where(where, prefilter=True)
        rows = _rows(q.select([*columns, "_distance"]))
        return [r for r in rows if min_score is None or 1.0 - float(r["_distance"]) >= min_score]

    def keyword(self, text: str, k: int, where: str, identifiers: bool = True,
                columns: list[str] = CANDIDATE_COLUMNS, held: Snapshot | None = None,
                mask: np.ndarray | None = None) -> list[dict]:
        """The k best chunks by BM25, with ``_score`` and ``_rowid``: over the split names and body (names
        weighing more), or over the raw text. With ``held``, the names and body are searched in memory
        (:mod:`store_svc.bm25`, LanceDB's scores), and the raw text's hits' rows come from memory."""
        if identifiers and _in_memory(held, where, mask):
            return held.keyword(query_terms(text), k, {"kw_names": NAMES_BOOST, "kw_body": 1.0}, mask)
        if identifiers:
            self.ensure_fts("kw_names", "kw_body")
            query = MultiMatchQuery(query_terms(text), ["kw_names", "kw_body"], boosts=[NAMES_BOOST, 1.0])
            q = self.table.search(query, query_type="fts").limit(k)
        else:
            self.ensure_fts("text")
            q = self.table.search(text, query_type="fts", fts_columns="text").limit(k)
        if where:
            q = q.where(where, prefilter=True)
        if held is not None:
            return self._attach(held, _rows(q.with_row_id(True).select(["id", "_score"])), columns)
        return _rows(q.with_row_id(True).select([*columns, "_score"]))

    def exact(self, info: QueryInfo, k: int, where: str, columns: list[str] = CANDIDATE_COLUMNS,
              held: Snapshot | None = None, mask: np.ndarray | None = None) -> list[dict]:
        """Chunks holding a definition named as one of the query's identifiers (any case), with ``_rowid``
        (with ``held``: from memory)."""
        if not info.identifiers:
            return []
        # a qualified name (``Request.POST``) also by its last part: the ranking keeps the definitions whose
        # qualified names hold the rest (``Rack.Request.Helpers.POST``)
        wanted = dict.fromkeys(x.lower() for n in info.identifiers for x in (n, n.rsplit(".", 1)[-1]))
        if _in_memory(held, where, mask):
            return held.named(list(wanted), k, mask)
        folded = ", ".join(sql_str(n) for n in wanted)
        match = f"array_has_any(names_folded, [{folded}])"
        q = self.table.search().where(f"({match}) AND ({where})" if where else match)
        return _rows(q.with_row_id(True).select(columns).limit(k))

    def _attach(self, held: Snapshot, found: list[dict], columns: list[str]) -> list[dict]:
        """Rows a retrieval found by id, completed from memory; those memory does not hold (written since
        it was read) are read from the table by chunk id. In the retrieval's order."""
        done, missing = held.attach(found)
        if missing:
            match = f"id IN ({', '.join(sql_str(row['id']) for row in missing)})"
            read = {row["id"]: row for row in _rows(self.table.search().where(match).with_row_id(True)
                                                    .select(columns).limit(len(missing)))}
            for row in missing:
                if row["id"] in read:
                    read[row["id"]].update((key, value) for key, value in row.items() if key != "_rowid")
            done += [read[row["id"]] for row in missing if row["id"] in read]
            order = {row["id"]: i for i, row in enumerate(found)}
            done.sort(key=lambda row: order[row["id"]])
        return done

    def definitions(self, name: str, where: str, limit: int) -> list[tuple[Chunk, Definition]]:
        """Every definition named ``name`` (bare or qualified), with the chunk that holds it; by path and line."""
        match = names_include([name])
        q = self.table.search().where(f"({match}) AND ({where})" if where else match)
        rows = q.select([*META_COLUMNS, "signature", "definitions"]).limit(max(limit * 4, 100)).to_list()
        seen, out = set(), []
        for row in rows:
            chunk = chunk_from_row(row)
            for d in json.loads(row.get("definitions") or "[]"):
                definition = Definition(**d)
                key = (chunk.path, definition.qualified_name, definition.start_line)
                if name in (definition.symbol, definition.qualified_name) and key not in seen:
                    seen.add(key)
                    out.append((chunk, definition))
        out.sort(key=lambda cd: (cd[0].path, cd[1].start_line))
        return out[:limit]

    def ensure_fts(self, *columns: str) -> None:
        """The full-text indexes of these columns, created on first use if a run has not made them yet
        (known once found: no index listing on every search)."""
        if all(c in self._fts_ready for c in columns):
            return
        with self._lock:
            have = {ix.columns[0] for ix in self.table.list_indices() if ix.index_type == "FTS"}
            for column in columns:
                if column not in have:
                    self.table.create_index(column, config=FTS(), replace=True)
                self._fts_ready.add(column)


def _in_memory(held: Snapshot | None, where: str, mask: np.ndarray | None) -> bool:
    """Whether a retrieval reads the rows held: there are some, and the filter, if any, is in ``mask``."""
    return held is not None and (not where or mask is not None)


def _rows(query) -> list[dict]:
    """A query's rows as dicts, its vectors (if selected) as rows of one numpy array: converting a vector to
    a Python list costs more than the search."""
    table = query.to_arrow()
    vectors = None
    if "vector" in table.column_names:
        column = table.column("vector").combine_chunks()
        if len(column):
            vectors = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1)
        table = table.drop_columns(["vector"])
    rows = table.to_pylist()
    if vectors is not None:
        for row, vec in zip(rows, vectors):
            row["vector"] = vec
    return rows
