"""The chunks' vectors and rows held in memory, for an exact vector search
in one matrix product where LanceDB's takes several times as long, for the
name and keyword retrievals, and for the hits, without reading anything
from the table.

A :class:`Snapshot` is one table version's rows (tombstones left out): a
float32 matrix of their vectors, normalised, an Arrow table of the columns
asked for (the store asks for all a hit shows), an index of their
definition names, and BM25 postings of their keyword fields
(:mod:`store_svc.bm25`: LanceDB's scores). It answers a search, its filters through a mask of the
rows they keep (:meth:`Snapshot.mask`), only while the table is still at
that version; once the version changes, the next searches read the table as
before, and a new snapshot is read in the background after the version has
held still for ``settle_s`` (3 s, above the store's 1 s flush of a Write
stream, so that a run writing all the time does not have the table read
again after each commit) and no upkeep is running. A table of more than
``max_rows`` rows is not held (0: never): at 384 dimensions a row costs
about 3 KB.

At 100,000 rows on 2 cores (docs/STORE.md, "Rows held in memory"): the
exact product and its top 50 in about 4 ms, against 11-19 ms for LanceDB's
IVF_FLAT search with the same recall; the keyword search in 0.9 ms against
5.5; reading the snapshot about 4.5 s."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import metrics
from .bm25 import KeywordIndex, KeywordIndexBuilder
from .schema import FTS_COLUMNS, TOMBSTONE
from .sql import glob_regex

log = logging.getLogger("codeindex.store")


# one product at a time: it runs on all of OpenBLAS's threads, and products started at once on several
# searches' threads fight over them (8 at once: 36 products/s, 56 ms of CPU each, against 215/s one by one)
_PRODUCT = threading.Lock()


@dataclass(frozen=True)
class Snapshot:
    """One table version's rows: ``vectors`` (normalised, float32) and ``fields`` (the columns asked for
    and ``_rowid``) in the same order; ``order`` sorts ``row_ids`` (for looking rows up by row id)."""

    version: int
    vectors: np.ndarray
    fields: pa.Table
    row_ids: np.ndarray
    order: np.ndarray
    names: dict[str, int]  # a definition name, folded to lower case: its place in name_bounds
    name_rows: np.ndarray  # the rows holding each name, name after name, each name's in row order
    name_bounds: np.ndarray
    keywords: KeywordIndex  # BM25 over the keyword fields (:mod:`store_svc.bm25`)
    _masks: dict = field(default_factory=dict, compare=False, repr=False)  # a search's filters: its rows

    @classmethod
    def read(cls, table, columns: list[str], version: int, rows: int) -> Snapshot | None:
        """The ``rows`` rows (its count, tombstones included) of ``table`` at ``version``; None if the table
        has moved past it meanwhile. The vectors go into one matrix batch by batch (normalised in place), so
        that the read holds little besides what is kept."""
        reader = (table.search().select([*columns, "names_folded", *FTS_COLUMNS, "vector"]).with_row_id(True)
                  .limit(None).to_batches(8192))
        schema = reader.schema
        vectors = np.empty((rows, schema.field("vector").type.list_size), np.float32)
        parts, at, keywords = [], 0, KeywordIndexBuilder(FTS_COLUMNS)
        for batch in reader:  # batch by batch into one matrix: the read holds one batch besides what is kept
            batch = batch.filter(pc.not_equal(batch.column("kind"), TOMBSTONE))
            if at + len(batch) > len(vectors):  # rows written after the count: not this version
                return None
            vectors[at:at + len(batch)] = batch.column("vector").flatten().to_numpy(
                zero_copy_only=False).reshape(len(batch), -1)
            keywords.add(batch)  # the keyword fields go into postings, not into the rows kept
            parts.append(batch.drop_columns(["vector", *FTS_COLUMNS]))
            at += len(batch)
        if table.version != version:  # read at a newer version than the one asked for
            return None
        vectors = vectors[:at]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        np.divide(vectors, norms, out=vectors, where=norms > 0)
        data = pa.Table.from_batches(parts, pa.schema([f for f in schema if f.name not in ("vector", *FTS_COLUMNS)]))
        folded = data.column("names_folded").combine_chunks()
        words = folded.flatten().dictionary_encode()
        codes = words.indices.to_numpy(zero_copy_only=False)
        by_name = np.argsort(codes, kind="stable")  # stable: each name's rows stay in row order
        name_rows = pc.list_parent_indices(folded).to_numpy()[by_name].astype(np.int64)
        name_bounds = np.searchsorted(codes[by_name], np.arange(len(words.dictionary) + 1))
        fields = data.drop_columns(["names_folded"]).combine_chunks()
        row_ids = fields.column("_rowid").to_numpy()
        names = {w: i for i, w in enumerate(words.dictionary.to_pylist())}
        return cls(version, vectors, fields, row_ids, np.argsort(row_ids, kind="stable"), names, name_rows,
                   name_bounds, keywords.finish())

    @property
    def rows(self) -> int:
        return len(self.vectors)

    def mask(self, language: str = "", kind: str = "", path_glob: str = "", symbol: str = "") -> np.ndarray:
        """The rows a search's filters keep, as ``store_svc.sql.filters`` says them to LanceDB: the language
        and kind equal, a definition named ``symbol`` (bare or qualified) in ``names``, the path matching
        the glob's regular expression (Arrow's RE2 reads it as LanceDB's Rust regex does). Kept for the
        snapshot's life (searches repeat their filters), up to 64 of them."""
        key = (language, kind, path_glob.strip(), symbol)
        if (found := self._masks.get(key)) is not None:
            return found
        keep = np.ones(self.rows, bool)
        for column, value in (("language", language), ("kind", kind)):
            if value:
                keep &= pc.equal(self.fields.column(column), value).fill_null(False).to_numpy(zero_copy_only=False)
        if symbol:
            names = self.fields.column("names").combine_chunks()
            named = pc.equal(pc.list_flatten(names), symbol).fill_null(False)
            holding = np.zeros(self.rows, bool)
            holding[pc.list_parent_indices(names).filter(named).to_numpy()] = True
            keep &= holding
        if key[2]:
            keep &= pc.match_substring_regex(self.fields.column("path"), glob_regex(path_glob)).fill_null(
                False).to_numpy(zero_copy_only=False)
        keep.setflags(write=False)  # shared by every search with these filters
        if len(self._masks) >= 64:
            self._masks.clear()
        self._masks[key] = keep
        return keep

    def nearest(self, vector: np.ndarray, k: int, min_score: float | None = None,
                mask: np.ndarray | None = None) -> list[dict]:
        """The k rows of highest cosine similarity to ``vector`` (at least ``min_score``), best first, as a
        retrieval's rows: the fields, ``_rowid`` and ``_distance`` (1 - cosine), as LanceDB's cosine search
        gives them."""
        if not self.rows or k <= 0:
            return []
        norm = float(np.linalg.norm(vector))
        with _PRODUCT:
            scores = self.vectors @ (vector.astype(np.float32) / norm if norm else vector.astype(np.float32))
        kept = np.flatnonzero(mask) if mask is not None else None  # only the rows the filters keep compete
        among = scores[kept] if kept is not None else scores
        k = min(k, len(among))
        if k <= 0:
            return []
        top = np.argpartition(-among, k - 1)[:k] if k < len(among) else np.arange(len(among))
        top = top[np.lexsort((top, -among[top]))]  # best first; ties by row order
        if kept is not None:
            top = kept[top]
        if min_score is not None:
            top = top[scores[top] >= min_score]
        rows = self.fields.take(top).to_pylist()
        for row, i in zip(rows, top):
            row["_distance"] = 1.0 - float(scores[i])
        return rows

    def keyword(self, text: str, k: int, boosts: dict[str, float], mask: np.ndarray | None = None) -> list[dict]:
        """The k best rows by BM25 over the keyword fields (LanceDB's scores, :mod:`store_svc.bm25`), best
        first, as a retrieval's rows: the fields, ``_rowid``, ``_score`` and the vector."""
        top, scores = self.keywords.search(text, k, boosts, self.row_ids, mask)
        rows = self.fields.take(top).to_pylist() if len(top) else []
        for row, i, score in zip(rows, top, scores):
            row["_score"] = float(score)
            row["vector"] = self.vectors[i]
        return rows

    def named(self, folded: list[str], k: int, mask: np.ndarray | None = None) -> list[dict]:
        """The first k rows (in row order, as the table's scan gives them) holding a definition named as
        one of ``folded`` (lower case), with their fields and vector."""
        parts = [self.name_rows[self.name_bounds[i]:self.name_bounds[i + 1]]
                 for i in (self.names.get(name) for name in folded) if i is not None]
        if not parts or k <= 0:
            return []
        rows_at = np.unique(np.concatenate(parts))
        rows_at = (rows_at[mask[rows_at]] if mask is not None else rows_at)[:k]
        rows = self.fields.take(rows_at).to_pylist()
        for row, i in zip(rows, rows_at):
            row["vector"] = self.vectors[i]
        return rows

    def attach(self, found: list[dict]) -> tuple[list[dict], list[dict]]:
        """Rows a retrieval found (``id``, ``_rowid`` and its score) completed with their fields and
        vector from the snapshot; and those the snapshot does not hold (written since, or moved: not at
        the same row id with the same chunk id)."""
        if not found or not self.rows:
            return [], list(found)
        wanted = np.array([row["_rowid"] for row in found], dtype=self.row_ids.dtype)
        at = self.order[np.minimum(np.searchsorted(self.row_ids, wanted, sorter=self.order), self.rows - 1)]
        held = self.row_ids[at] == wanted
        fields = self.fields.take(at[held]).to_pylist() if held.any() else []
        done, missing = [], []
        extra = iter(zip(fields, at[held]))
        for row, ok in zip(found, held):
            if not ok:
                missing.append(row)
                continue
            field, i = next(extra)
            if field["id"] != row["id"]:
                missing.append(row)
                continue
            field.update((key, value) for key, value in row.items() if key not in field)
            field["vector"] = self.vectors[i]
            done.append(field)
        return done, missing


class Resident:
    """The snapshot searches may use now, and its upkeep. ``guard``: held while a snapshot is read (the
    store's shared gate, so that no cleanup removes the files being read)."""

    def __init__(self, columns: list[str], max_rows: int, settle_s: float = 3.0,
                 guard=contextlib.nullcontext, busy=lambda: False):
        self.columns = columns
        self.max_rows = max_rows
        self.settle_s = settle_s
        self._guard = guard
        self._busy = busy
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._seen: tuple[int, float] | None = None  # the newest version seen, and since when
        self._reading: threading.Thread | None = None
        self._skip: int | None = None  # a version not to read: more than max_rows rows, or its read failed

    def current(self, table) -> Snapshot | None:
        """The snapshot of the table's version now, if there is one; otherwise None, and a snapshot of
        this version is read in the background once it has held still for ``settle_s`` (and no upkeep is
        running: ``busy``)."""
        if self.max_rows <= 0:
            return None
        version = table.version
        snapshot = self._snapshot
        if snapshot is not None:
            if snapshot.version == version:
                return snapshot
            self.drop()  # a version once passed is never read again: its memory goes now
        now = time.monotonic()
        with self._lock:
            if self._seen is None or self._seen[0] != version:
                self._seen = (version, now)
            if (now - self._seen[1] < self.settle_s or self._skip == version or self._busy()
                    or (self._reading is not None and self._reading.is_alive())):
                return None
            self._reading = threading.Thread(target=self._read, args=(table, version), name="resident",
                                             daemon=True)
            self._reading.start()
        return None

    def held_rows(self, table) -> int:
        """The rows held of the table's version now (0: none; asking starts no read)."""
        snapshot = self._snapshot
        return snapshot.rows if snapshot is not None and snapshot.version == table.version else 0

    def wait(self, timeout: float | None = None) -> None:
        """Until a snapshot being read is in place (tests, benchmarks)."""
        reading = self._reading
        if reading is not None:
            reading.join(timeout)

    def _read(self, table, version: int) -> None:
        started = time.perf_counter()
        try:
            with self._guard():
                if table.version != version:  # written while this waited for the gate
                    return
                rows = table.count_rows()
                if rows > self.max_rows:
                    self._skip = version
                    return
                snapshot = Snapshot.read(table, self.columns, version, rows)
        except Exception as err:  # noqa: BLE001 - searches read the table, as without a snapshot
            self._skip = version  # not again for this version: the next write tries anew
            log.warning("reading the chunks into memory failed (searches read the table): %s", err)
            return
        _give_back_memory()
        if snapshot is None:
            return
        self._snapshot = snapshot
        metrics.RESIDENT_ROWS.set(snapshot.rows)
        metrics.MAINTENANCE_SECONDS.labels("resident").observe(time.perf_counter() - started)
        log.info("holding %d chunks of version %d in memory for search (%.1fs)", snapshot.rows, version,
                 time.perf_counter() - started)

    def drop(self) -> None:
        """Let the snapshot go (the table is replaced)."""
        self._snapshot = None
        metrics.RESIDENT_ROWS.set(0)


def _give_back_memory() -> None:
    """What the read freed, given back to the system: glibc keeps freed memory in the arenas of the threads
    that used it (LanceDB's), which held 250-400 MB more than the snapshot after reading 100,000 rows."""
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
