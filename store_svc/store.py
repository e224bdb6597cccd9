"""The VectorStore core over LanceDB. No grpc here.

Two tables: ``chunks`` (one row per chunk, with its vector) and ``files``
(one row per file: its hash, how it was indexed, the model). A batch of files
is written as: chunks replaced in one merge_insert scoped to those paths, then
the files rows upserted. A crash between the two leaves the files row old or
missing, so the next run re-indexes the file: the index converges.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

import lancedb
import numpy as np
import pyarrow as pa

from codeindex_common.errors import FailedPrecondition, InvalidArgument
from codeindex_common.model import MODES, Chunk, FileRecord

from . import metrics

CHUNKS, FILES = "chunks", "files"
_HEX = re.compile(r"^[0-9a-f]{1,128}$")
CHUNK_COLUMNS = ["id", "path", "language", "kind", "symbol", "qualified_name", "parent_id", "start_line",
                 "end_line", "start_byte", "end_byte", "text", "content_hash", "docstring", "signature"]


RRF_K = 60  # reciprocal rank fusion constant


def fuse(rankings: list[list[Hit]], k: int) -> list[Hit]:
    """Reciprocal rank fusion: score = sum over rankings of 1 / (RRF_K + rank)."""
    scores: dict[str, float] = {}
    chunks: dict[str, Chunk] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.chunk.id] = scores.get(hit.chunk.id, 0.0) + 1.0 / (RRF_K + rank)
            chunks.setdefault(hit.chunk.id, hit.chunk)
    best = sorted(scores, key=lambda cid: -scores[cid])[:k]
    return [Hit(chunks[cid], scores[cid]) for cid in best]


def _chunk(row: dict) -> Chunk:
    return Chunk(embed_text="", **{name: row[name] for name in CHUNK_COLUMNS})


def sql_str(value: str) -> str:
    """A SQL string literal; user text never reaches a filter unquoted."""
    if "\0" in value:
        raise InvalidArgument("a filter value contains a NUL byte")
    return "'" + value.replace("'", "''") + "'"


def in_list(column: str, values: list[str]) -> str:
    return f"{column} IN ({', '.join(sql_str(v) for v in values)})"


def chunks_schema(dim: int) -> pa.Schema:
    s, i32, i64 = pa.string(), pa.int32(), pa.int64()
    return pa.schema([
        ("id", s), ("path", s), ("language", s), ("kind", s), ("symbol", s), ("qualified_name", s),
        ("parent_id", s), ("start_line", i32), ("end_line", i32), ("start_byte", i64), ("end_byte", i64),
        ("text", s), ("content_hash", s), ("docstring", s), ("signature", s), ("vector", pa.list_(pa.float32(), dim)),
    ])


FILES_SCHEMA = pa.schema([("path", pa.string()), ("file_hash", pa.string()), ("skip_reason", pa.string()),
                          ("chunks", pa.int32()), ("model_id", pa.string())])


@dataclass
class Hit:
    chunk: Chunk
    score: float


@dataclass
class ManifestEntry:
    path: str
    file_hash: str
    skip_reason: str = ""


@dataclass
class Stats:
    chunks: int = 0
    files: int = 0
    dim: int = 0
    model_id: str = ""
    uri: str = ""


@dataclass
class VectorStore:
    uri: str
    storage_options: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()  # replaces and deletes are serialised
        self._fts_ready = False
        self._db = lancedb.connect(self.uri, storage_options=self.storage_options or None)
        self._chunks = self._open(CHUNKS)
        self._files = self._open(FILES)

    def _open(self, name: str):
        try:
            return self._db.open_table(name)
        except (FileNotFoundError, ValueError):
            return None

    @property
    def dim(self) -> int:
        if self._chunks is None:
            return 0
        return self._chunks.schema.field("vector").type.list_size

    def model_id(self) -> str:
        if self._files is None:
            return ""
        rows = self._files.search().where("model_id != ''").select(["model_id"]).limit(1).to_list()
        return rows[0]["model_id"] if rows else ""

    def _ensure_tables(self, dim: int) -> None:
        if self._chunks is None:
            self._chunks = self._db.create_table(CHUNKS, schema=chunks_schema(dim), exist_ok=True)
        if self._files is None:
            self._files = self._db.create_table(FILES, schema=FILES_SCHEMA, exist_ok=True)
        missing = set(chunks_schema(dim).names) - set(self._chunks.schema.names)
        if missing:
            raise FailedPrecondition(
                f"this index was written by an older codeindex (no {', '.join(sorted(missing))} columns): "
                "index into a new directory, or delete this one and index again")
        if self.dim != dim:
            raise FailedPrecondition(
                f"this index holds {self.dim}-dimensional vectors but the embedder gives {dim}: "
                "index into a new directory, or re-index from scratch")

    def write(self, records: list[FileRecord]) -> int:
        """Replace every given file's rows; returns chunk rows written. A crash
        at any point leaves each file either as it was, or marked pending."""
        if not records:
            return 0
        dims = {r.vectors.shape[1] for r in records if len(r.chunks)}
        if len(dims) > 1:
            raise InvalidArgument(f"vectors of several dimensions in one write: {sorted(dims)}")
        for r in records:
            if len(r.chunks) != len(r.vectors):
                raise InvalidArgument(f"{r.path}: {len(r.chunks)} chunks but {len(r.vectors)} vectors")
            if r.path.startswith("/") or ".." in r.path.split("/"):
                raise InvalidArgument(f"paths must be relative and inside the repository: {r.path!r}")
        # a path given twice in one batch: the last one wins
        latest = {r.path: r for r in records}
        records = list(latest.values())
        with self._lock:
            dim = dims.pop() if dims else (self.dim or 0)
            if dim == 0:  # nothing to embed yet: only files rows; tables wait for a dimension
                if self._files is None:
                    self._files = self._db.create_table(FILES, schema=FILES_SCHEMA, exist_ok=True)
            else:
                self._ensure_tables(dim)
            ids: dict[str, Chunk] = {}
            vecs: dict[str, np.ndarray] = {}
            for r in records:
                for c, v in zip(r.chunks, r.vectors):
                    ids[c.id] = c
                    vecs[c.id] = v
            scope = in_list("path", list(latest))
            # 1. files rows marked pending (empty hash): a crash before step 3 leaves each file to be
            #    re-indexed, or its rows to be deleted if the file is gone by then
            self._upsert_files(records, pending=True)
            # 2. every file's chunks replaced in one transaction
            if self._chunks is not None:
                if ids:
                    table = self._chunk_table(list(ids.values()), np.stack(list(vecs.values())), dim)
                    (self._chunks.merge_insert("id").when_matched_update_all().when_not_matched_insert_all()
                     .when_not_matched_by_source_delete(scope).execute(table))
                else:
                    self._chunks.delete(scope)
            # 3. the files rows, with their hashes: now the manifest says these files are done
            self._upsert_files(records, pending=False)
            metrics.ROWS_WRITTEN.inc(len(ids))
            metrics.FILES_WRITTEN.inc(len(records))
            if self._chunks is not None:
                metrics.TABLE_ROWS.set(self._chunks.count_rows())
            return len(ids)

    def _upsert_files(self, records: list[FileRecord], pending: bool) -> None:
        files = pa.table({
            "path": [r.path for r in records], "file_hash": ["" if pending else r.file_hash for r in records],
            "skip_reason": [r.skip_reason for r in records], "chunks": [len(r.chunks) for r in records],
            "model_id": [r.model_id for r in records],
        }, schema=FILES_SCHEMA)
        self._files.merge_insert("path").when_matched_update_all().when_not_matched_insert_all().execute(files)

    @staticmethod
    def _chunk_table(chunks: list[Chunk], vectors: np.ndarray, dim: int) -> pa.Table:
        cols = {name: [getattr(c, name) for c in chunks] for name in CHUNK_COLUMNS}
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
        cols["vector"] = pa.FixedSizeListArray.from_arrays(flat, dim)
        return pa.table(cols, schema=chunks_schema(dim))

    def delete(self, paths: list[str]) -> int:
        if not paths:
            return 0
        with self._lock:
            scope = in_list("path", paths)
            if self._chunks is not None:
                self._chunks.delete(scope)
            if self._files is not None:
                self._files.delete(scope)  # last: a crash before it leaves the file to be deleted again
        metrics.FILES_DELETED.inc(len(paths))
        return len(paths)

    def manifest(self) -> list[ManifestEntry]:
        """Every file's (path, hash), from one scan."""
        if self._files is None:
            return []
        t = self._files.to_arrow().select(["path", "file_hash", "skip_reason"]).to_pydict()
        return [ManifestEntry(p, h, s) for p, h, s in zip(t["path"], t["file_hash"], t["skip_reason"])]

    def lookup_vectors(self, content_hashes: list[str]) -> tuple[list[str], np.ndarray]:
        """Stored vectors for the given content hashes (each found hash once)."""
        wanted = sorted(set(content_hashes))
        bad = [h for h in wanted if not _HEX.match(h)]
        if bad:
            raise InvalidArgument(f"content hashes must be lowercase hex: {bad[0]!r}")
        if self._chunks is None or not wanted:
            metrics.VECTORS_LOOKED_UP.labels("missing").inc(len(wanted))
            return [], np.empty((0, self.dim), np.float32)
        found: dict[str, np.ndarray] = {}
        for i in range(0, len(wanted), 500):
            part = wanted[i:i + 500]
            t = (self._chunks.search().where(in_list("content_hash", part)).select(["content_hash", "vector"])
                 .limit(None).to_arrow())
            hashes = t.column("content_hash").to_pylist()
            vecs = t.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, self.dim)
            for h, v in zip(hashes, vecs):
                found.setdefault(h, v)
        metrics.VECTORS_LOOKED_UP.labels("found").inc(len(found))
        metrics.VECTORS_LOOKED_UP.labels("missing").inc(len(wanted) - len(found))
        keys = list(found)
        return keys, (np.stack([found[k] for k in keys]).astype(np.float32) if keys
                      else np.empty((0, self.dim), np.float32))

    def search(self, vector: np.ndarray | None, k: int, language: str = "", text: str = "",
               mode: str = "vector") -> list[Hit]:
        """Top-k chunks by ``mode``: "vector" (cosine similarity), "keyword"
        (full-text BM25 over the chunk text) or "hybrid" (both, fused by
        reciprocal rank)."""
        if k <= 0 or k > 1000:
            raise InvalidArgument(f"k must be between 1 and 1000, got {k}")
        if mode not in MODES:
            raise InvalidArgument(f"unknown search mode {mode!r}")
        if mode in ("keyword", "hybrid") and not text.strip():
            raise InvalidArgument(f"{mode} search needs the query text")
        if self._chunks is None:
            return []
        if mode in ("vector", "hybrid") and (vector is None or vector.shape != (self.dim,)):
            size = 0 if vector is None else vector.size
            raise InvalidArgument(f"query vector has {size} dimensions, the index {self.dim}")
        where = f"language = {sql_str(language)}" if language else ""
        if mode == "vector":
            return self._vector(vector, k, where)
        if mode == "keyword":
            return self._keyword(text, k, where)
        depth = max(k * 3, 30)
        return fuse([self._vector(vector, depth, where), self._keyword(text, depth, where)], k)

    def _vector(self, vector: np.ndarray, k: int, where: str) -> list[Hit]:
        q = self._chunks.search(vector.astype(np.float32)).distance_type("cosine").limit(k)
        if where:
            q = q.where(where, prefilter=True)
        return [Hit(_chunk(row), 1.0 - float(row["_distance"])) for row in q.select(CHUNK_COLUMNS).to_list()]

    def _keyword(self, text: str, k: int, where: str) -> list[Hit]:
        self._ensure_fts()
        q = self._chunks.search(text, query_type="fts", fts_columns="text").limit(k)
        if where:
            q = q.where(where, prefilter=True)
        return [Hit(_chunk(row), float(row["_score"])) for row in q.select(CHUNK_COLUMNS).to_list()]

    def _ensure_fts(self) -> None:
        if self._fts_ready:
            return
        with self._lock:
            if not any(ix.index_type == "FTS" for ix in self._chunks.list_indices()):
                self._chunks.create_fts_index("text", replace=True)
            self._fts_ready = True

    def optimize(self) -> None:
        """After a run: (re)build the full-text index so new rows are indexed."""
        if self._chunks is None:
            return
        with self._lock:
            self._chunks.create_fts_index("text", replace=True)
            self._fts_ready = True

    def stats(self) -> Stats:
        return Stats(
            chunks=self._chunks.count_rows() if self._chunks is not None else 0,
            files=self._files.count_rows() if self._files is not None else 0,
            dim=self.dim, model_id=self.model_id(), uri=self.uri)
