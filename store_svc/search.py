"""Retrieval over the chunks table: the vector ranking (cosine, through the
ANN index when one is built), the keyword ranking (LanceDB's BM25 full-text
index over the chunk text, created on first use), exact symbol matches, and
rows by id. Each retrieval gives candidates; :func:`ChunkSearch.search` runs
the ones a query's mode asks for and passes them through the ranking stage
(:mod:`store_svc.ranking`) before they are returned."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from lancedb.index import FTS

from codeindex_common.errors import InvalidArgument
from codeindex_common.model import Chunk, Hit, Query

from .ann import AnnIndex
from .ranking import fuse, with_snippets
from .schema import CHUNK_COLUMNS, ID_ONLY, chunk_from_row
from .sql import in_list, symbol_is

_IDENTIFIER = re.compile(r"^[A-Za-z_$][\w$]*(?:(?:\.|::|#)[A-Za-z_$][\w$]*)*$")


class ChunkSearch:
    """The retrievals over one chunks table. ``ann`` says which ANN index
    vector searches probe; ``lock`` is held while the full-text index is
    created (with the table's other maintenance); ``pool`` runs a hybrid
    search's rankings at once."""

    def __init__(self, table, ann: AnnIndex, lock: threading.Lock, pool: ThreadPoolExecutor):
        self.table = table
        self._ann = ann
        self._lock = lock
        self._pool = pool
        self._fts_ready = False

    @property
    def dim(self) -> int:
        return self.table.schema.field("vector").type.list_size

    def search(self, vector: np.ndarray | None, q: Query, where: str) -> list[Hit]:
        """Top-k chunks by ``q.mode`` within the filter ``where``: "vector", "keyword" or "hybrid"."""
        if q.mode in ("vector", "hybrid") and (vector is None or vector.shape != (self.dim,)):
            size = 0 if vector is None else vector.size
            raise InvalidArgument(f"query vector has {size} dimensions, the index {self.dim}")
        if q.mode == "vector":
            hits = self.vector(vector, q.k, where, q.min_score, CHUNK_COLUMNS)
        elif q.mode == "keyword":
            hits = self.keyword(q.text, q.k, where, CHUNK_COLUMNS)
        else:
            hits = self._hybrid(vector, q, where)
        return with_snippets(hits, q.text)

    def _hybrid(self, vector: np.ndarray, q: Query, where: str) -> list[Hit]:
        """Three rankings of ids at once, fused; then the k winners' rows."""
        depth = max(q.k * 3, 30)
        rankings = [self._pool.submit(self.symbols, q.text, depth, where),
                    self._pool.submit(self.vector, vector, depth, where, q.min_score),
                    self._pool.submit(self.keyword, q.text, depth, where)]
        hits = fuse([r.result() for r in rankings], q.k)
        rows = self.rows([h.chunk.id for h in hits])
        return [Hit(rows[h.chunk.id], h.score) for h in hits if h.chunk.id in rows]

    def rows(self, ids: list[str]) -> dict[str, Chunk]:
        """The chunks of these ids, every column read."""
        if not ids:
            return {}
        rows = self.table.search().where(in_list("id", ids)).select(CHUNK_COLUMNS).limit(None).to_list()
        return {row["id"]: chunk_from_row(row) for row in rows}

    def vector(self, vector: np.ndarray, k: int, where: str, min_score: float | None,
               columns: list[str] = ID_ONLY) -> list[Hit]:
        """The k nearest chunks by cosine similarity (at least ``min_score``)."""
        q = self.table.search(vector.astype(np.float32)).distance_type("cosine").limit(k)
        ann = self._ann.current
        if ann is not None:
            q = q.nprobes(ann.nprobes)
            if ann.refine:
                q = q.refine_factor(ann.refine)
        if where:
            q = q.where(where, prefilter=True)
        hits = [Hit(chunk_from_row(row), 1.0 - float(row["_distance"]))
                for row in q.select([*columns, "_distance"]).to_list()]
        return [h for h in hits if min_score is None or h.score >= min_score]

    def keyword(self, text: str, k: int, where: str, columns: list[str] = ID_ONLY) -> list[Hit]:
        """The k best chunks by BM25 over their text."""
        self.ensure_fts()
        q = self.table.search(text, query_type="fts", fts_columns="text").limit(k)
        if where:
            q = q.where(where, prefilter=True)
        return [Hit(chunk_from_row(row), float(row["_score"])) for row in q.select([*columns, "_score"]).to_list()]

    def symbols(self, text: str, k: int, where: str) -> list[Hit]:
        """Chunks whose symbol or qualified name is exactly the query (an identifier)."""
        name = text.strip()
        if not _IDENTIFIER.match(name):
            return []
        match = symbol_is(name)
        rows = self.table.search().where(f"{match} AND {where}" if where else match).select(ID_ONLY).limit(k)
        return [Hit(chunk_from_row(row), 1.0) for row in rows.to_list()]

    def ensure_fts(self) -> None:
        """The full-text index, created on the first keyword search if a run has not made it yet
        (known once found: no index listing on every search)."""
        if self._fts_ready:
            return
        with self._lock:
            if not any(ix.index_type == "FTS" for ix in self.table.list_indices()):
                self.table.create_index("text", config=FTS(), replace=True)
            self._fts_ready = True
