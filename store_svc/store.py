"""The VectorStore core over LanceDB. No grpc here.

Two tables: ``chunks`` (one row per chunk, with its vector and the model
that made it) and ``files`` (one row per file: its hash, how it was indexed,
the model). A batch of files is written in three steps:

1. their ``files`` rows are marked pending (empty hash);
2. their chunks are written in one LanceDB transaction: files the index has
   never seen are *appended* (appends from several streams run at once),
   files it holds are *replaced* by one ``merge_insert`` by chunk id, their
   old chunks overwritten by tombstones that no search returns (deleted by
   the commit after; replaces and deletes are serialised);
3. their ``files`` rows get the files' hashes.

A crash anywhere leaves each file fully old, fully new or pending, and a
pending file is re-indexed (or deleted) by the next run: the index converges
to what a fresh full index gives. A file's chunks are always committed
together, so a search never sees half a file.

The rest of the store lives beside this module: filters (``sql``), the
tables' schemas and row conversions (``schema``), the ANN index (``ann``),
retrieval (``search``) and the ranking stage (``ranking``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lancedb.index import FTS, BTree
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from codeindex_common.errors import FailedPrecondition, InvalidArgument
from codeindex_common.model import FileRecord, Hit, ManifestEntry, Query, Stats, SymbolHit, SymbolQuery

from . import metrics
from .ann import MAX_ANN_DELTAS, AnnIndex
from .gate import Gate
from .ranking import DEFAULT, RankingOptions
from .schema import (CHUNK_COLUMNS, CHUNKS, DERIVED, DERIVED_FIELDS, FILES, FILES_SCHEMA, FTS_COLUMNS, IS_TOMBSTONE,
                     SCALAR_INDEXES, chunk_rows, chunks_schema, derived_rows, file_rows, missing_columns,
                     tombstone_rows)
from .resident import Resident
from .search import ROW_COLUMNS, ChunkSearch
from .sql import in_list, where_clause

log = logging.getLogger("codeindex.store")

_HEX = re.compile(r"^[0-9a-f]{1,128}$")
NEVER = timedelta(days=36500)  # an optimize's cleanup that removes nothing (its compaction alone)


def _shared(method):
    """The method holds the store's gate shared (:mod:`store_svc.gate`): no cleanup removes files under it."""

    @functools.wraps(method)
    def holding(self, *args, **kwargs):
        with self._gate.shared():
            return method(self, *args, **kwargs)
    return holding


@dataclass(frozen=True)
class StoreSettings:
    ann_min_rows: int = 10_000
    ann_index: str = "auto"
    keep_versions_seconds: float = 60.0
    # the upkeep after a run (see VectorStore.optimize and StoreConfig's upkeep_* settings)
    upkeep_full_rows: int = 1_000
    upkeep_unindexed_share: float = 0.05
    upkeep_max_versions: int = 100
    commit_attempts: int = 8
    consistency_seconds: float = 5.0
    # LanceDB's caches (its defaults are GBs: the metadata cache grew to 1.3 GB over 1,000 writes of 160 rows)
    index_cache_mb: int = 512
    metadata_cache_mb: int = 128
    # up to this many rows, searches use the chunks' vectors, rows and keyword postings held in memory once
    # the table's version has held still this long, with no upkeep running (store_svc.resident); 0: never
    resident_rows: int = 200_000
    resident_settle_s: float = 3.0
    ranking: RankingOptions = DEFAULT


def _is_conflict(exc: BaseException) -> bool:
    return "conflict" in str(exc).lower()


def _check_records(records: list[FileRecord]) -> set[int]:
    """InvalidArgument unless every record can be written; returns the vector dimensions given."""
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
    return dims


@dataclass
class VectorStore:
    uri: str
    storage_options: dict[str, str] = field(default_factory=dict)
    settings: StoreSettings = field(default_factory=StoreSettings)

    def __post_init__(self) -> None:
        self._ann = AnnIndex(self.settings.ann_index, self.settings.ann_min_rows)  # refuses an unknown kind
        self._gate = Gate()  # every operation on the tables shared; removing their files (cleanup, reset) exclusive
        self._replace_lock = threading.Lock()  # chunk replaces, deletes and maintenance, one at a time
        self._files_lock = threading.Lock()  # the small files-table commits, one at a time
        self._schema_lock = threading.Lock()
        self._claims = threading.Condition()  # paths being written: a path is written by one thread at a time
        self._claimed: set[str] = set()
        self._pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="search")  # a hybrid's three rankings
        self._session = lancedb.Session(index_cache_size_bytes=self.settings.index_cache_mb << 20,
                                        metadata_cache_size_bytes=self.settings.metadata_cache_mb << 20)
        self._db = lancedb.connect(self.uri, storage_options=self.storage_options or None, session=self._session,
                                   read_consistency_interval=timedelta(seconds=self.settings.consistency_seconds))
        self._search: ChunkSearch | None = None
        self._use_chunks(self._open(CHUNKS))
        self._tombstones_left = True  # a crash between a replace's two commits may have left some: the first purges
        self._upgrade()
        self._files = self._open(FILES)
        self._model_id = self._read_model_id()
        self._ann.load(self._chunks)

    def _open(self, name: str):
        try:
            return self._db.open_table(name)
        except (FileNotFoundError, ValueError):
            return None

    def _use_chunks(self, table) -> None:
        """The chunks table (None: none yet), and the retrievals over it."""
        self._chunks = table
        self._schema_checked = None  # the table _check_schema found whole
        if self._search is not None:
            self._search.resident.drop()
        self._search = None
        if table is not None:
            resident = Resident(ROW_COLUMNS, self.settings.resident_rows, self.settings.resident_settle_s,
                                guard=self._gate.shared, busy=self._replace_lock.locked)
            self._search = ChunkSearch(table, self._ann, self._replace_lock, self._pool, resident)

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

    def _ensure_tables(self, dim: int) -> None:
        with self._schema_lock:
            if self._files is None:
                self._files = self._db.create_table(FILES, schema=FILES_SCHEMA, exist_ok=True)
            if dim == 0:  # nothing embedded yet: the chunks table waits for a dimension
                return
            if self._chunks is None:
                self._use_chunks(self._db.create_table(CHUNKS, schema=chunks_schema(dim), exist_ok=True))
            self._check_schema()
            if self.dim != dim:
                raise FailedPrecondition(
                    f"this index holds {self.dim}-dimensional vectors but the embedder gives {dim}: "
                    "index again with --reindex, or into a new directory")

    UPGRADE_BATCH = 2048

    def _upgrade(self) -> None:
        """A table written before the derived columns existed (the keyword fields, the definitions' names)
        gets them in place, computed from its rows: no re-embedding, nothing lost if interrupted (a
        column still empty is computed again next time)."""
        if self._chunks is None:
            return
        missing = missing_columns(self._chunks)
        if not missing <= set(DERIVED) or (not missing and not self._chunks.count_rows("kw_names IS NULL")):
            return  # another schema (refused by _check_schema), or nothing to do
        started = time.perf_counter()
        with self._replace_lock, self._schema_lock:
            fields = [f for f in DERIVED_FIELDS if f.name in missing]
            if fields:
                self._commit("upgrade", lambda: self._chunks.add_columns(fields))
            todo = self._chunks.search().where("kw_names IS NULL").select(CHUNK_COLUMNS).limit(None).to_arrow()
            for i in range(0, todo.num_rows, self.UPGRADE_BATCH):
                rows = derived_rows(todo.slice(i, self.UPGRADE_BATCH))
                self._commit("upgrade", lambda r=rows: self._chunks.merge_insert("id").when_matched_update_all()
                             .execute(r))
        log.info("upgraded the chunks table (%d rows: %s) in %.1fs", todo.num_rows, ", ".join(sorted(missing)),
                 time.perf_counter() - started)

    def _check_schema(self) -> None:
        """An index an older codeindex wrote is refused, never half used."""
        if self._chunks is None or self._schema_checked is self._chunks:
            return  # a table found whole stays whole (columns are only ever added): once per table, not per search
        missing = missing_columns(self._chunks)
        if missing:
            raise FailedPrecondition(
                f"this index was written by an older codeindex (no {', '.join(sorted(missing))} columns): "
                "index again with --reindex, or into a new directory")
        self._schema_checked = self._chunks

    def _check_model(self, records: list[FileRecord]) -> None:
        models = {r.model_id for r in records if r.model_id}
        if len(models) > 1:
            raise InvalidArgument(f"vectors of several models in one write: {sorted(models)}")
        if models and self._model_id and models != {self._model_id}:
            raise FailedPrecondition(
                f"this index holds vectors of model {self._model_id!r}, not {models.pop()!r}; vectors of two "
                "models are never mixed: index again with --reindex, or into a new directory")

    # ------------------------------------------------------------------ writes

    @_shared
    def write(self, records: list[FileRecord]) -> int:
        """Replace every given file's rows; returns chunk rows written. A crash
        at any point leaves each file either as it was, new, or marked pending."""
        if not records:
            return 0
        dims = _check_records(records)
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
            self._append(new, dim)
            self._replace(old, dim)
            # 3. done: the manifest now has these files' hashes
            self._upsert_files(records, pending=False)
            if not self._model_id:
                self._model_id = next((r.model_id for r in records if r.model_id and r.chunks), "")
        rows = sum(len(r.chunks) for r in records)
        self._count_write(started, rows, new, old)
        return rows

    def _append(self, new: list[FileRecord], dim: int) -> None:
        """Step 2 for files the index has never seen (so no chunk rows): one append, concurrent with others."""
        with_chunks = [r for r in new if r.chunks]
        if with_chunks:
            table = chunk_rows(with_chunks, dim)
            self._commit("append", lambda: self._chunks.add(table))

    def _replace(self, old: list[FileRecord], dim: int) -> None:
        """Step 2 for files the index holds: their rows replaced in one transaction (or deleted, if none has
        chunks now), one replace at a time. The transaction is a merge_insert by chunk id, which finds its
        rows through the id index: the new chunks are upserted, and each old chunk that the new ones do
        not replace is overwritten by a tombstone, which no search returns. A second commit then deletes
        the tombstones, which changes nothing a search sees. (A merge_insert that deletes the old rows
        itself, ``when_not_matched_by_source_delete``, joins against the whole table: 0.8 s and 2 GB at a
        million rows.) Tombstones a crash left between the two commits go with the next replace's."""
        if not old or self._chunks is None:
            return
        scope = in_list("path", [r.path for r in old])
        with_chunks = [r for r in old if r.chunks]
        with self._replace_lock:
            if not with_chunks:
                self._commit("replace", lambda: self._chunks.delete(scope))
                return
            table = chunk_rows(with_chunks, dim)
            new_ids = set(table.column("id").to_pylist())
            gone = [i for i in self._chunks.search().where(scope).select(["id"]).limit(None).to_arrow()
                    .column("id").to_pylist() if i not in new_ids]
            if gone:
                table = pa.concat_tables([table, tombstone_rows(gone, dim)])
                self._tombstones_left = True
            self._commit("replace", lambda: (
                self._chunks.merge_insert("id").when_matched_update_all().when_not_matched_insert_all()
                .execute(table)))
            if self._tombstones_left:
                self._commit("purge", lambda: self._chunks.delete(IS_TOMBSTONE))
                self._tombstones_left = False

    def _tombstones(self) -> int:
        """Tombstone rows in the chunks table (none in a table of an older schema, which has no kind)."""
        if self._chunks is None or "kind" not in self._chunks.schema.names:
            return 0
        return self._chunks.count_rows(IS_TOMBSTONE)

    @staticmethod
    def _count_write(started: float, rows: int, new: list[FileRecord], old: list[FileRecord]) -> None:
        metrics.WRITE_SECONDS.observe(time.perf_counter() - started)
        metrics.WRITE_ROWS.observe(rows)
        metrics.ROWS_WRITTEN.labels("append").inc(sum(len(r.chunks) for r in new))
        metrics.ROWS_WRITTEN.labels("replace").inc(sum(len(r.chunks) for r in old))
        metrics.FILES_WRITTEN.inc(len(new) + len(old))

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
        """Steps 1 (``pending``) and 3: the files rows of these files, in one commit."""
        files = file_rows(records, pending)
        with self._files_lock:
            self._commit("pending" if pending else "done", lambda: (
                self._files.merge_insert("path").when_matched_update_all().when_not_matched_insert_all()
                .execute(files)))

    @_shared
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
        with self._gate.exclusive(), self._replace_lock, self._files_lock, self._schema_lock:  # no timeout
            dropped = self._chunks.count_rows() if self._chunks is not None else 0
            if self._files is not None:
                self._commit("pending", lambda: self._files.update(values={"file_hash": ""}))
            for name in (CHUNKS, FILES):
                with contextlib.suppress(FileNotFoundError, ValueError):
                    self._db.drop_table(name)
            self._use_chunks(None)
            self._files = None
            self._model_id = ""
            self._ann.current = None
        metrics.TABLE_ROWS.set(0)
        return dropped

    # ------------------------------------------------------------------ reads

    @_shared
    def manifest(self) -> list[ManifestEntry]:
        """Every file's (path, hash, skip reason), from one scan."""
        self._check_schema()
        if self._files is None:
            return []
        t = self._files.to_arrow().select(["path", "file_hash", "skip_reason"]).to_pydict()
        return [ManifestEntry(p, h, s) for p, h, s in zip(t["path"], t["file_hash"], t["skip_reason"])]

    def manifest_pages(self, after: str = "", size: int = 8192) -> Iterator[tuple[list[str], list[str]]]:
        """(paths, their hashes) of the files after ``after``, in path order, ``size`` at a time: what the
        Manifest RPC streams. One scan, sorted as Arrow columns (never a Python object per file)."""
        with self._gate.shared():  # not across the pages: the caller may hold each as long as it likes
            table = self._files_sorted(after)
        if table is None:
            return
        for start in range(0, table.num_rows, size):
            page = table.slice(start, size)
            yield page["path"].to_pylist(), page["file_hash"].to_pylist()

    def _files_sorted(self, after: str) -> pa.Table | None:
        self._check_schema()
        if self._files is None:
            return None
        # the latest commit, also another process's within the read-consistency interval: what the
        # orchestrator's marker of a settled index is checked against (orchestrator/settled.py)
        with self._files_lock:
            self._files.checkout_latest()
        table = self._files.to_arrow().select(["path", "file_hash"])
        if after:
            table = table.filter(pc.greater(table["path"], after))
        return table.take(pc.sort_indices(table["path"]))

    @_shared
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

    @_shared
    def search(self, vector: np.ndarray | None, q: Query, ranking: RankingOptions | None = None) -> list[Hit]:
        """Top-k chunks by ``q.mode``: "vector" (meaning), "keyword" (full
        text, identifiers understood) or "hybrid" (both, and exact definition
        names), through the ranking stage (``ranking``: which signals; the
        store's setting by default); see :mod:`store_svc.search` and
        :mod:`store_svc.ranking`."""
        where = where_clause(q)  # a bad filter is refused even by an empty index
        search = self._search
        if search is None:
            return []
        self._check_schema()
        return search.search(vector, q, where, ranking or self.settings.ranking)

    @_shared
    def candidates(self, vector: np.ndarray | None, q: Query, ranking: RankingOptions | None = None):
        """What the ranking stage would get for this search: (the query read, the candidates); what
        ``bench.quality.fit`` fits the ranking's weights on."""
        if self._search is None:
            return None, []
        return self._search.candidates(vector, q, where_clause(q), ranking or self.settings.ranking)

    @_shared
    def find_symbol(self, q: SymbolQuery) -> list[SymbolHit]:
        """Every definition named ``q.name`` (bare or qualified), merged small functions included, each with
        its own lines; by path and line."""
        where = where_clause(q)
        search = self._search
        if search is None:
            return []
        self._check_schema()
        return [SymbolHit(chunk.path, chunk.language, d, chunk.signature, chunk.id)
                for chunk, d in search.definitions(q.name, where, q.limit)]

    # ------------------------------------------------------------------ maintenance

    def optimize(self, quiet: bool = False) -> Stats:
        """After a run, when the upkeep is due (``upkeep_due``), or (``quiet``: the
        repository has gone quiet) when some rows are not in the indexes yet or
        the ANN index has more than ``MAX_ANN_DELTAS`` segments:
        create the scalar and full-text indexes if missing; build the ANN index
        once the table has ``ann_min_rows`` rows, and train it again once the
        table has grown enough to want twice the partitions (or, quiet, to make
        its segments one again); then compact both
        tables (which folds new rows into every index) and remove versions
        older than ``keep_versions_seconds`` (:meth:`_cleanup`)."""
        with self._gate.shared(), self._replace_lock:
            due = (self._chunks is None or not self._chunks.count_rows() or self.upkeep_due()
                   or (quiet and self.quiet_upkeep_wanted()))
            if due:
                log.info("upkeep: indexes, compaction and old versions (%d rows)",
                         self._chunks.count_rows() if self._chunks is not None else 0)
                if self._chunks is not None and self._chunks.count_rows():
                    with metrics.MAINTENANCE_SECONDS.labels("scalar_indexes").time():
                        self._ensure_indexes()
                    self._ann.refresh(self._chunks, self.dim, merge=quiet)
                settled = self._compact()
            else:
                metrics.UPKEEP_DEFERRED.inc()
        if due:
            self._cleanup(timedelta(seconds=self.settings.keep_versions_seconds), settled)
        return self.stats()

    @_shared
    def upkeep_due(self) -> bool:
        """Whether a run's upkeep is worth its cost now. Up to ``upkeep_full_rows`` rows it always is (its
        compaction writes the table again whole, cheap at that size); above, only when an index is missing or
        wants building again, when the rows that the indexes do not hold yet reach ``upkeep_unindexed_share``
        of the table, or when the table has ``upkeep_max_versions`` versions: so that a one-file edit costs the
        edit, and fragments and versions stay bounded. Until then searches read the newer rows without the
        indexes' help (exactly: nothing is missed)."""
        s, table = self.settings, self._chunks
        rows = table.count_rows()
        if rows <= s.upkeep_full_rows:
            return True
        indices = table.list_indices()
        have = {c for ix in indices for c in ix.columns}
        if not {*SCALAR_INDEXES, *FTS_COLUMNS} <= have or self._ann.due(table, self.dim):
            return True
        if len(table.list_versions()) >= s.upkeep_max_versions:
            return True
        return self.unindexed_rows(indices) >= s.upkeep_unindexed_share * rows

    @_shared
    def quiet_upkeep_wanted(self) -> bool:
        """Whether a quiet upkeep has work: rows outside the indexes, or an ANN index of more segments than
        ``MAX_ANN_DELTAS``."""
        return bool(self.unindexed_rows()) or self._ann.deltas(self._chunks) > MAX_ANN_DELTAS

    @_shared
    def unindexed_rows(self, indices=None) -> int:
        """The most rows any of the chunks table's indexes (``indices``: listed already) does not hold yet."""
        table = self._chunks
        if table is None:
            return 0
        indices = table.list_indices() if indices is None else indices
        return max((table.index_stats(ix.name).num_unindexed_rows for ix in indices), default=0)

    def _ensure_indexes(self) -> None:
        """The scalar indexes and the full-text index, where missing."""
        have = {c for ix in self._chunks.list_indices() for c in ix.columns}
        for column, kind in SCALAR_INDEXES.items():
            if column not in have:
                self._chunks.create_index(column, config=kind(), replace=True)
        for column in FTS_COLUMNS:
            if column not in have:
                self._chunks.create_index(column, config=FTS(), replace=True)
        if not any("path" in ix.columns for ix in self._files.list_indices()):
            self._files.create_index("path", config=BTree(), replace=True)  # each write's lookup

    COMPACT_PASSES = 3

    def _tables(self):
        return [(name, table) for name, table in ((FILES, self._files), (CHUNKS, self._chunks)) if table is not None]

    def _compact(self) -> dict[str, int]:
        """Both tables compacted, new rows folded into every index, no file removed (see :meth:`_cleanup`):
        LanceDB's optimize, again until a pass commits nothing (it leaves some work, such as deleted rows
        to drop from a fragment it has just written, to a next pass), at most ``COMPACT_PASSES`` times.
        Returns the version each table settled at."""
        settled = {}
        for name, table in self._tables():
            with metrics.MAINTENANCE_SECONDS.labels(f"optimize_{name}").time():
                for _ in range(self.COMPACT_PASSES):
                    before = table.version
                    self._commit("optimize", lambda t=table: t.optimize(cleanup_older_than=NEVER))
                    if table.version == before:
                        settled[name] = before
                        break
        return settled

    CLEANUP_WAIT_S = 2.0

    def _cleanup(self, keep: timedelta, settled: dict[str, int]) -> None:
        """The files of the versions committed more than ``keep`` ago removed, but the latest's, with the
        gate held exclusive: no search, write or listing is reading an older version meanwhile (see
        :mod:`store_svc.gate`), and the ones after read the latest. LanceDB removes files only through its
        optimize, which compacts and folds new rows into the indexes first: so only a table still at the
        version :meth:`_compact` settled at (nothing written since) is cleaned, and its optimize has
        nothing else to do, which keeps the gate's hold to milliseconds. New operations wait while the
        cleanup waits for those in flight, so it waits ``CLEANUP_WAIT_S`` at most (a long one is
        another upkeep's compaction). What is not cleaned is left to the next upkeep
        (``store_upkeep_cleanup_skipped_total{reason}``)."""
        with self._gate.exclusive(self.CLEANUP_WAIT_S) as held:
            if not held:
                metrics.CLEANUP_SKIPPED.labels("busy").inc()
                return
            for name, table in self._tables():
                if settled.get(name) != table.version:
                    metrics.CLEANUP_SKIPPED.labels("written").inc()
                    continue
                with metrics.MAINTENANCE_SECONDS.labels(f"cleanup_{name}").time(), warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # the note that keep=0 drops old versions
                    self._commit("cleanup", lambda t=table: t.optimize(cleanup_older_than=keep))

    @_shared
    def stats(self) -> Stats:
        chunks = self._chunks.count_rows() - self._tombstones() if self._chunks is not None else 0
        versions = len(self._chunks.list_versions()) if self._chunks is not None else 0
        metrics.TABLE_ROWS.set(chunks)
        metrics.TABLE_VERSIONS.set(versions)
        ann = self._ann.current
        return Stats(chunks=chunks, files=self._files.count_rows() if self._files is not None else 0,
                     dim=self.dim, model_id=self._model_id, uri=self.uri, versions=versions,
                     vector_index=ann.name if ann else "", unindexed_rows=self.unindexed_rows(),
                     resident_rows=self._search.resident.held_rows(self._chunks) if self._search else 0)
