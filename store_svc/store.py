"""The VectorStore core over LanceDB. No grpc here.

Two tables: ``chunks`` (one row per chunk, with its vector and the model
that made it) and ``files`` (one row per file: its hash, how it was indexed,
the model). A batch of files is written in three steps:

1. their ``files`` rows are marked pending (empty hash);
2. their chunks are written in one LanceDB transaction: files the index has
   never seen are *appended* (appends from several streams run at once),
   files it holds are *replaced* by one ``merge_insert`` scoped to their
   paths (replaces and deletes are serialised);
3. their ``files`` rows get the files' hashes.

A crash anywhere leaves each file fully old, fully new or pending, and a
pending file is re-indexed (or deleted) by the next run: the index converges
to what a fresh full index gives. A file's chunks are always committed
together, so a search never sees half a file.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

import lancedb
import numpy as np
import pyarrow as pa
from lancedb.index import FTS, Bitmap, BTree, IvfFlat, IvfHnswSq, IvfPq
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from codeindex_common.errors import FailedPrecondition, InvalidArgument
from codeindex_common.model import Chunk, FileRecord, Query

from . import metrics

log = logging.getLogger("codeindex.store")

CHUNKS, FILES = "chunks", "files"
_HEX = re.compile(r"^[0-9a-f]{1,128}$")
_IDENTIFIER = re.compile(r"^[A-Za-z_$][\w$]*(?:(?:\.|::|#)[A-Za-z_$][\w$]*)*$")
CHUNK_COLUMNS = ["id", "path", "language", "kind", "symbol", "qualified_name", "parent_id", "start_line",
                 "end_line", "start_byte", "end_byte", "text", "content_hash", "docstring", "signature"]
SCALAR_INDEXES = {"path": BTree, "content_hash": BTree, "id": BTree, "symbol": BTree, "qualified_name": BTree,
                  "language": Bitmap, "kind": Bitmap}
ANN_KINDS = ("auto", "ivf_flat", "ivf_pq", "ivf_hnsw_sq", "none")
MAX_GLOB = 1000
RRF_K = 60  # reciprocal rank fusion constant
SNIPPET_LINES = 3


@dataclass(frozen=True)
class StoreSettings:
    ann_min_rows: int = 10_000
    ann_index: str = "auto"
    keep_versions_seconds: float = 60.0
    commit_attempts: int = 8
    consistency_seconds: float = 5.0


@dataclass
class Hit:
    chunk: Chunk
    score: float
    snippet: str = ""


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
    versions: int = 0
    vector_index: str = ""


@dataclass(frozen=True)
class Ann:
    """An ANN index configuration, derived from the row count. Its name on the
    table records the partition count it was trained with."""

    kind: str
    partitions: int
    nprobes: int
    refine: int = 0

    @property
    def name(self) -> str:
        return f"vector_{self.kind}_p{self.partitions}"

    @classmethod
    def from_name(cls, name: str) -> Ann | None:
        m = re.fullmatch(r"vector_(ivf_flat|ivf_pq|ivf_hnsw_sq)_p(\d+)", name)
        return derive_ann(0, 0, m.group(1), partitions=int(m.group(2))) if m else None

    def config(self, dim: int):
        if self.kind == "ivf_pq":
            return IvfPq(distance_type="cosine", num_partitions=self.partitions, num_sub_vectors=_sub_vectors(dim))
        if self.kind == "ivf_hnsw_sq":
            return IvfHnswSq(distance_type="cosine", num_partitions=self.partitions)
        return IvfFlat(distance_type="cosine", num_partitions=self.partitions)


def _sub_vectors(dim: int) -> int:
    """PQ sub-vectors of 8 dimensions (or the nearest divisor of dim)."""
    for width in (8, 4, 16, 2, 1):
        if dim % width == 0:
            return dim // width
    return 1


def derive_ann(rows: int, dim: int, kind: str = "auto", partitions: int = 0) -> Ann | None:
    """The ANN index for a table of ``rows`` rows. ``auto``: IVF_FLAT (exact
    within the probed partitions; cheap to refresh) below a million rows,
    IVF_PQ (compressed, refined) above. Partitions: sqrt(rows), so that a
    partition holds about as many rows as there are partitions."""
    if kind == "none":
        return None
    if kind == "auto":
        kind = "ivf_flat" if rows < 1_000_000 else "ivf_pq"
    if not partitions:
        partitions = max(1, min(4096, round(math.sqrt(rows)))) if kind != "ivf_hnsw_sq" else max(1, rows // 25_000)
    if kind == "ivf_hnsw_sq":
        return Ann(kind, partitions, nprobes=max(1, partitions), refine=5)
    nprobes = min(partitions, max(16, partitions // 16))
    return Ann(kind, partitions, nprobes, refine=10 if kind == "ivf_pq" else 0)


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


_EMPTY = {name: "" for name in CHUNK_COLUMNS} | {n: 0 for n in ("start_line", "end_line", "start_byte", "end_byte")}
ID_ONLY = ["id"]


def _chunk(row: dict) -> Chunk:
    """A Chunk from a result row; columns a ranking did not read stay empty."""
    return Chunk(embed_text="", **{name: row.get(name, blank) for name, blank in _EMPTY.items()})


def sql_str(value: str) -> str:
    """A SQL string literal; user text never reaches a filter unquoted."""
    if "\0" in value:
        raise InvalidArgument("a filter value contains a NUL byte")
    return "'" + value.replace("'", "''") + "'"


def in_list(column: str, values: list[str]) -> str:
    return f"{column} IN ({', '.join(sql_str(v) for v in values)})"


def glob_regex(glob: str) -> str:
    """A path glob as an anchored regular expression: ``*`` matches within one
    directory, ``**`` across directories, ``?`` one character; a pattern
    without ``/`` matches the file name in any directory, a trailing ``/``
    everything under a directory. Every other character is literal: written
    as ``\\x{..}`` unless it is a letter, digit, ``_`` or ``/``."""
    if len(glob) > MAX_GLOB:
        raise InvalidArgument(f"path_glob is longer than {MAX_GLOB} characters")
    g = glob.strip()
    anchored = "/" in g.rstrip("/")
    g = g.lstrip("/")
    if g.endswith("/"):
        g += "**"
    out, i = [], 0
    while i < len(g):
        if g.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif g.startswith("**", i):
            out.append(".*")
            i += 2
        elif g[i] == "*":
            out.append("[^/]*")
            i += 1
        elif g[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            c = g[i]
            out.append(c if (c.isascii() and (c.isalnum() or c in "_/")) else f"\\x{{{ord(c):x}}}")
            i += 1
    return "^" + ("" if anchored else "(?:.*/)?") + "".join(out) + "$"


def where_clause(q: Query) -> str:
    """The LanceDB filter for a query's filters; every value quoted."""
    parts = []
    if q.language:
        parts.append(f"language = {sql_str(q.language)}")
    if q.kind:
        parts.append(f"kind = {sql_str(q.kind)}")
    if q.symbol:
        parts.append(f"(symbol = {sql_str(q.symbol)} OR qualified_name = {sql_str(q.symbol)})")
    if q.path_glob.strip():
        parts.append(f"regexp_like(path, {sql_str(glob_regex(q.path_glob))})")
    return " AND ".join(parts)


def snippet(text: str, query: str) -> str:
    """Up to three lines of a chunk: around the first line that contains a
    word of the query, else its first non-blank lines."""
    lines = text.splitlines()
    words = [w for w in re.findall(r"\w+", query.lower()) if len(w) > 1]
    start = next((i for i, line in enumerate(lines) if any(w in line.lower() for w in words)), None)
    if start is None:
        start = next((i for i, line in enumerate(lines) if line.strip()), 0)
    else:
        start = max(0, start - 1)
    return "\n".join(line[:200] for line in lines[start:start + SNIPPET_LINES])


def chunks_schema(dim: int) -> pa.Schema:
    s, i32, i64 = pa.string(), pa.int32(), pa.int64()
    return pa.schema([
        ("id", s), ("path", s), ("language", s), ("kind", s), ("symbol", s), ("qualified_name", s),
        ("parent_id", s), ("start_line", i32), ("end_line", i32), ("start_byte", i64), ("end_byte", i64),
        ("text", s), ("content_hash", s), ("docstring", s), ("signature", s), ("model_id", s),
        ("vector", pa.list_(pa.float32(), dim)),
    ])


FILES_SCHEMA = pa.schema([("path", pa.string()), ("file_hash", pa.string()), ("skip_reason", pa.string()),
                          ("chunks", pa.int32()), ("model_id", pa.string())])


def _is_conflict(exc: BaseException) -> bool:
    return "conflict" in str(exc).lower()


@dataclass
class VectorStore:
    uri: str
    storage_options: dict[str, str] = field(default_factory=dict)
    settings: StoreSettings = field(default_factory=StoreSettings)

    def __post_init__(self) -> None:
        if self.settings.ann_index not in ANN_KINDS:
            raise InvalidArgument(f"unknown ANN index {self.settings.ann_index!r}; one of {', '.join(ANN_KINDS)}")
        self._replace_lock = threading.Lock()  # chunk replaces, deletes and maintenance, one at a time
        self._files_lock = threading.Lock()  # the small files-table commits, one at a time
        self._schema_lock = threading.Lock()
        self._claims = threading.Condition()  # paths being written: a path is written by one thread at a time
        self._claimed: set[str] = set()
        self._fts_ready = False
        self._pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="search")  # a hybrid's three rankings
        self._db = lancedb.connect(self.uri, storage_options=self.storage_options or None,
                                   read_consistency_interval=timedelta(seconds=self.settings.consistency_seconds))
        self._chunks = self._open(CHUNKS)
        self._files = self._open(FILES)
        self._model_id = self._read_model_id()
        self._ann = self._current_ann()

    def _open(self, name: str):
        try:
            return self._db.open_table(name)
        except (FileNotFoundError, ValueError):
            return None

    # ------------------------------------------------------------------ helpers

    def _commit(self, op: str, fn):
        """One LanceDB commit, retried with backoff on a commit conflict."""
        started = time.perf_counter()

        def count_retry(state) -> None:
            metrics.COMMIT_RETRIES.labels(op).inc()
            log.warning("commit conflict on %s (attempt %d), retrying", op, state.attempt_number)

        for attempt in Retrying(retry=retry_if_exception(_is_conflict), reraise=True,
                                stop=stop_after_attempt(self.settings.commit_attempts),
                                wait=wait_exponential_jitter(multiplier=0.05, max=2.0), before_sleep=count_retry):
            with attempt:
                result = fn()
        metrics.COMMIT_SECONDS.labels(op).observe(time.perf_counter() - started)
        return result

    @contextlib.contextmanager
    def _claim(self, paths):
        """Wait until no other thread writes any of these paths, then hold them."""
        paths = set(paths)
        with self._claims:
            self._claims.wait_for(lambda: not (paths & self._claimed))
            self._claimed |= paths
        try:
            yield
        finally:
            with self._claims:
                self._claimed -= paths
                self._claims.notify_all()

    @property
    def dim(self) -> int:
        if self._chunks is None:
            return 0
        return self._chunks.schema.field("vector").type.list_size

    def _read_model_id(self) -> str:
        if self._files is None:
            return ""
        rows = self._files.search().where("model_id != ''").select(["model_id"]).limit(1).to_list()
        return rows[0]["model_id"] if rows else ""

    def model_id(self) -> str:
        return self._model_id

    def _current_ann(self) -> Ann | None:
        if self._chunks is None:
            return None
        for ix in self._chunks.list_indices():
            ann = Ann.from_name(ix.name)
            if ann is not None:
                return ann
        return None

    def _ensure_tables(self, dim: int) -> None:
        with self._schema_lock:
            if self._files is None:
                self._files = self._db.create_table(FILES, schema=FILES_SCHEMA, exist_ok=True)
            if dim == 0:  # nothing embedded yet: the chunks table waits for a dimension
                return
            if self._chunks is None:
                self._chunks = self._db.create_table(CHUNKS, schema=chunks_schema(dim), exist_ok=True)
            self._check_schema()
            if self.dim != dim:
                raise FailedPrecondition(
                    f"this index holds {self.dim}-dimensional vectors but the embedder gives {dim}: "
                    "index again with --reindex, or into a new directory")

    def _check_schema(self) -> None:
        """An index an older codeindex wrote is refused, never half used."""
        if self._chunks is None:
            return
        missing = set(chunks_schema(self.dim).names) - set(self._chunks.schema.names)
        if missing:
            raise FailedPrecondition(
                f"this index was written by an older codeindex (no {', '.join(sorted(missing))} columns): "
                "index again with --reindex, or into a new directory")

    def _check_model(self, records: list[FileRecord]) -> None:
        models = {r.model_id for r in records if r.model_id}
        if len(models) > 1:
            raise InvalidArgument(f"vectors of several models in one write: {sorted(models)}")
        if models and self._model_id and models != {self._model_id}:
            raise FailedPrecondition(
                f"this index holds vectors of model {self._model_id!r}, not {models.pop()!r}; vectors of two "
                "models are never mixed: index again with --reindex, or into a new directory")

    # ------------------------------------------------------------------ writes

    def write(self, records: list[FileRecord]) -> int:
        """Replace every given file's rows; returns chunk rows written. A crash
        at any point leaves each file either as it was, new, or marked pending."""
        if not records:
            return 0
        dims = {r.vectors.shape[1] for r in records if len(r.chunks)}
        if len(dims) > 1:
            raise InvalidArgument(f"vectors of several dimensions in one write: {sorted(dims)}")
        for r in records:
            if len(r.chunks) != len(r.vectors):
                raise InvalidArgument(f"{r.path}: {len(r.chunks)} chunks but {len(r.vectors)} vectors")
            if not r.path or r.path.startswith("/") or ".." in r.path.split("/"):
                raise InvalidArgument(f"paths must be relative and inside the repository: {r.path!r}")
            if "\0" in r.path:
                raise InvalidArgument("a path contains a NUL byte")
        latest = {r.path: r for r in records}  # a path given twice in one batch: the last one wins
        records = list(latest.values())
        self._check_model(records)
        started = time.perf_counter()
        with self._claim(latest):
            dim = dims.pop() if dims else self.dim
            self._ensure_tables(dim)
            known = self._known(list(latest))
            new = [r for r in records if r.path not in known]
            old = [r for r in records if r.path in known]
            # 1. pending: a crash before step 3 leaves these files to be re-indexed (or deleted if gone)
            self._upsert_files(records, pending=True)
            # 2. the chunks, in one transaction each for new and known files
            rows = sum(len(r.chunks) for r in records)
            new_rows = [r for r in new if r.chunks]
            if new_rows:
                table = self._chunk_table(new_rows, dim)
                self._commit("append", lambda: self._chunks.add(table))
            if old and self._chunks is not None:
                scope = in_list("path", [r.path for r in old])
                old_rows = [r for r in old if r.chunks]
                with self._replace_lock:
                    if old_rows:
                        table = self._chunk_table(old_rows, dim)
                        self._commit("replace", lambda: (
                            self._chunks.merge_insert("id").when_matched_update_all().when_not_matched_insert_all()
                            .when_not_matched_by_source_delete(scope).execute(table)))
                    else:
                        self._commit("replace", lambda: self._chunks.delete(scope))
            # 3. done: the manifest now has these files' hashes
            self._upsert_files(records, pending=False)
            if not self._model_id:
                self._model_id = next((r.model_id for r in records if r.model_id and r.chunks), "")
        metrics.WRITE_SECONDS.observe(time.perf_counter() - started)
        metrics.WRITE_ROWS.observe(rows)
        metrics.ROWS_WRITTEN.labels("append").inc(sum(len(r.chunks) for r in new))
        metrics.ROWS_WRITTEN.labels("replace").inc(sum(len(r.chunks) for r in old))
        metrics.FILES_WRITTEN.inc(len(records))
        return rows

    def _known(self, paths: list[str]) -> set[str]:
        """Which of these paths have a files row (only those can have chunk rows)."""
        if self._files is None:
            return set()
        found: set[str] = set()
        for i in range(0, len(paths), 500):
            t = self._files.search().where(in_list("path", paths[i:i + 500])).select(["path"]).limit(None).to_arrow()
            found.update(t.column("path").to_pylist())
        return found

    def _upsert_files(self, records: list[FileRecord], pending: bool) -> None:
        files = pa.table({
            "path": [r.path for r in records], "file_hash": ["" if pending else r.file_hash for r in records],
            "skip_reason": [r.skip_reason for r in records], "chunks": [len(r.chunks) for r in records],
            "model_id": [r.model_id for r in records],
        }, schema=FILES_SCHEMA)
        with self._files_lock:
            self._commit("pending" if pending else "done", lambda: (
                self._files.merge_insert("path").when_matched_update_all().when_not_matched_insert_all()
                .execute(files)))

    @staticmethod
    def _chunk_table(records: list[FileRecord], dim: int) -> pa.Table:
        chunks = [c for r in records for c in r.chunks]
        cols = {name: [getattr(c, name) for c in chunks] for name in CHUNK_COLUMNS}
        cols["model_id"] = [r.model_id for r in records for _ in r.chunks]
        vectors = np.concatenate([np.asarray(r.vectors, dtype=np.float32).reshape(-1, dim) for r in records])
        cols["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(vectors).reshape(-1)), dim)
        return pa.table(cols, schema=chunks_schema(dim))

    def delete(self, paths: list[str]) -> int:
        """Remove the files' rows in three commits, like a write: manifest rows
        pending, chunks deleted, manifest rows deleted. A crash in between
        leaves the file pending (the next run re-indexes or deletes it), never
        a manifest row that claims chunks the table no longer has."""
        if not paths:
            return 0
        with self._claim(paths), self._replace_lock:
            for i in range(0, len(paths), 500):
                scope = in_list("path", paths[i:i + 500])
                if self._files is not None:
                    with self._files_lock:
                        self._commit("pending", lambda s=scope: self._files.update(where=s, values={"file_hash": ""}))
                if self._chunks is not None:
                    self._commit("delete", lambda s=scope: self._chunks.delete(s))
                if self._files is not None:
                    with self._files_lock:
                        self._commit("delete", lambda s=scope: self._files.delete(s))
        metrics.FILES_DELETED.inc(len(paths))
        return len(paths)

    def reset(self) -> int:
        """Drop both tables (a rebuild, for example with another model). Every
        file is marked pending first, so that a crash between the two drops
        leaves a manifest that re-indexes everything, not one that calls the
        files indexed."""
        with self._replace_lock, self._files_lock, self._schema_lock:
            dropped = self._chunks.count_rows() if self._chunks is not None else 0
            if self._files is not None:
                self._commit("pending", lambda: self._files.update(values={"file_hash": ""}))
            for name in (CHUNKS, FILES):
                with contextlib.suppress(FileNotFoundError, ValueError):
                    self._db.drop_table(name)
            self._chunks = self._files = None
            self._model_id = ""
            self._ann = None
            self._fts_ready = False
        metrics.TABLE_ROWS.set(0)
        return dropped

    # ------------------------------------------------------------------ reads

    def manifest(self) -> list[ManifestEntry]:
        """Every file's (path, hash), from one scan."""
        self._check_schema()
        if self._files is None:
            return []
        t = self._files.to_arrow().select(["path", "file_hash", "skip_reason"]).to_pydict()
        return [ManifestEntry(p, h, s) for p, h, s in zip(t["path"], t["file_hash"], t["skip_reason"])]

    def lookup_vectors(self, content_hashes: list[str]) -> tuple[list[str], np.ndarray]:
        """Stored vectors for the given content hashes (each found hash once)."""
        wanted = sorted(set(content_hashes))
        bad = [h for h in wanted if not _HEX.match(h)]
        if bad:
            raise InvalidArgument(f"content hashes must be lowercase hex: {bad[0][:200]!r}")
        self._check_schema()
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

    def search(self, vector: np.ndarray | None, q: Query) -> list[Hit]:
        """Top-k chunks by ``q.mode``: "vector" (cosine similarity), "keyword"
        (full-text BM25 over the chunk text) or "hybrid" (an exact symbol
        match, vector and keyword rankings fused by reciprocal rank)."""
        q.validate()
        where = where_clause(q)
        if self._chunks is None:
            return []
        self._check_schema()
        if q.mode in ("vector", "hybrid") and (vector is None or vector.shape != (self.dim,)):
            size = 0 if vector is None else vector.size
            raise InvalidArgument(f"query vector has {size} dimensions, the index {self.dim}")
        if q.mode == "vector":
            hits = self._vector(vector, q.k, where, q.min_score, CHUNK_COLUMNS)
        elif q.mode == "keyword":
            hits = self._keyword(q.text, q.k, where, CHUNK_COLUMNS)
        else:  # three rankings of ids at once, fused; then the k winners' rows
            depth = max(q.k * 3, 30)
            rankings = [self._pool.submit(self._symbols, q.text, depth, where),
                        self._pool.submit(self._vector, vector, depth, where, q.min_score),
                        self._pool.submit(self._keyword, q.text, depth, where)]
            hits = fuse([r.result() for r in rankings], q.k)
            rows = self._rows([h.chunk.id for h in hits])
            hits = [Hit(rows[h.chunk.id], h.score) for h in hits if h.chunk.id in rows]
        for h in hits:
            h.snippet = snippet(h.chunk.text, q.text)
        return hits

    def _rows(self, ids: list[str]) -> dict[str, Chunk]:
        if not ids:
            return {}
        rows = self._chunks.search().where(in_list("id", ids)).select(CHUNK_COLUMNS).limit(None).to_list()
        return {row["id"]: _chunk(row) for row in rows}

    def _vector(self, vector: np.ndarray, k: int, where: str, min_score: float | None,
                columns: list[str] = ID_ONLY) -> list[Hit]:
        q = self._chunks.search(vector.astype(np.float32)).distance_type("cosine").limit(k)
        ann = self._ann
        if ann is not None:
            q = q.nprobes(ann.nprobes)
            if ann.refine:
                q = q.refine_factor(ann.refine)
        if where:
            q = q.where(where, prefilter=True)
        hits = [Hit(_chunk(row), 1.0 - float(row["_distance"])) for row in q.select([*columns, "_distance"]).to_list()]
        return [h for h in hits if min_score is None or h.score >= min_score]

    def _keyword(self, text: str, k: int, where: str, columns: list[str] = ID_ONLY) -> list[Hit]:
        self._ensure_fts()
        q = self._chunks.search(text, query_type="fts", fts_columns="text").limit(k)
        if where:
            q = q.where(where, prefilter=True)
        return [Hit(_chunk(row), float(row["_score"])) for row in q.select([*columns, "_score"]).to_list()]

    def _symbols(self, text: str, k: int, where: str) -> list[Hit]:
        """Chunks whose symbol or qualified name is exactly the query (an identifier)."""
        name = text.strip()
        if not _IDENTIFIER.match(name):
            return []
        match = f"(symbol = {sql_str(name)} OR qualified_name = {sql_str(name)})"
        rows = self._chunks.search().where(f"{match} AND {where}" if where else match).select(ID_ONLY).limit(k)
        return [Hit(_chunk(row), 1.0) for row in rows.to_list()]

    def _ensure_fts(self) -> None:
        """The full-text index, created on the first keyword search if a run has not made it yet
        (known once found: no index listing on every search)."""
        if self._fts_ready:
            return
        with self._replace_lock:
            if not any(ix.index_type == "FTS" for ix in self._chunks.list_indices()):
                self._chunks.create_index("text", config=FTS(), replace=True)
            self._fts_ready = True

    # ------------------------------------------------------------------ maintenance

    def optimize(self) -> Stats:
        """After a run: create the scalar and full-text indexes if missing;
        build the ANN index once the table has ``ann_min_rows`` rows, and
        train it again once the table has grown enough to want twice the
        partitions; then compact both tables (which folds new rows into every
        index) and remove versions older than ``keep_versions_seconds``."""
        keep = timedelta(seconds=self.settings.keep_versions_seconds)
        with self._replace_lock:
            if self._chunks is not None and self._chunks.count_rows():
                with metrics.MAINTENANCE_SECONDS.labels("scalar_indexes").time():
                    have = {c for ix in self._chunks.list_indices() for c in ix.columns}
                    for column, kind in SCALAR_INDEXES.items():
                        if column not in have:
                            self._chunks.create_index(column, config=kind(), replace=True)
                    if "text" not in have:
                        self._chunks.create_index("text", config=FTS(), replace=True)
                    if not any("path" in ix.columns for ix in self._files.list_indices()):
                        self._files.create_index("path", config=BTree(), replace=True)  # each write's lookup
                self._refresh_ann()
            for name, table in ((FILES, self._files), (CHUNKS, self._chunks)):
                if table is not None:
                    with metrics.MAINTENANCE_SECONDS.labels(f"optimize_{name}").time(), warnings.catch_warnings():
                        warnings.simplefilter("ignore", UserWarning)  # the note that keep=0 drops old versions
                        self._commit("optimize", lambda t=table: t.optimize(cleanup_older_than=keep))
        return self.stats()

    def _refresh_ann(self) -> None:
        rows = self._chunks.count_rows()
        current = self._current_ann()
        if rows < self.settings.ann_min_rows or self.settings.ann_index == "none":
            if current is not None:
                self._chunks.drop_index(current.name)
            self._ann = None
            return
        wanted = derive_ann(rows, self.dim, self.settings.ann_index)
        if current is not None and current.kind == wanted.kind and wanted.partitions < 2 * current.partitions:
            self._ann = current  # new rows were folded in by optimize
            return
        started = time.perf_counter()
        if current is not None:  # one vector index per column: until the new one is built, searches are exact
            self._chunks.drop_index(current.name)
            self._ann = None
        self._chunks.create_index("vector", config=wanted.config(self.dim), name=wanted.name, replace=True)
        metrics.MAINTENANCE_SECONDS.labels("vector_index").observe(time.perf_counter() - started)
        log.info("built %s on %d rows in %.1fs", wanted.name, rows, time.perf_counter() - started)
        self._ann = wanted

    def stats(self) -> Stats:
        chunks = self._chunks.count_rows() if self._chunks is not None else 0
        versions = len(self._chunks.list_versions()) if self._chunks is not None else 0
        metrics.TABLE_ROWS.set(chunks)
        metrics.TABLE_VERSIONS.set(versions)
        return Stats(chunks=chunks, files=self._files.count_rows() if self._files is not None else 0,
                     dim=self.dim, model_id=self._model_id, uri=self.uri, versions=versions,
                     vector_index=self._ann.name if self._ann else "")
