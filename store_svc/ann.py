"""The ANN vector index of the chunks table: which one a table of so many
rows wants (:func:`derive_ann`), which one it has (its name records the kind
and partition count), and its upkeep after a run (:class:`AnnIndex`). Below
``min_rows`` rows there is none and vector search is exact."""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass

from lancedb.index import IvfFlat, IvfHnswSq, IvfPq

from codeindex_common.errors import InvalidArgument

from . import metrics

log = logging.getLogger("codeindex.store")

ANN_KINDS = ("auto", "ivf_flat", "ivf_pq", "ivf_hnsw_sq", "none")


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
            return IvfPq(distance_type="cosine", num_partitions=self.partitions, num_sub_vectors=sub_vectors(dim))
        if self.kind == "ivf_hnsw_sq":
            return IvfHnswSq(distance_type="cosine", num_partitions=self.partitions)
        return IvfFlat(distance_type="cosine", num_partitions=self.partitions)


def sub_vectors(dim: int) -> int:
    """PQ sub-vectors of 8 dimensions (or the nearest divisor of dim)."""
    for width in (8, 4, 16, 2, 1):
        if dim % width == 0:
            return dim // width
    return 1


PQ_PARTITION_ROWS = 4096  # rows per IVF_PQ partition
# LanceDB's optimize folds new rows into the ANN index as one more segment (a delta) each time, and a search
# probes its partitions in every segment: at 400,000 rows, 11 segments of a few rows each took a query from
# 9.6 to 22 ms (docs/STORE.md, "Index maintenance"). Past this many, the quiet upkeep trains the index again as one.
MAX_ANN_DELTAS = 4


def derive_ann(rows: int, dim: int, kind: str = "auto", partitions: int = 0) -> Ann | None:
    """The ANN index for a table of ``rows`` rows. ``auto``: IVF_FLAT (exact
    within the probed partitions; cheap to refresh) below a million rows,
    IVF_PQ (compressed, refined) above. IVF_FLAT's partitions: sqrt(rows), so
    that a partition holds about as many rows as there are partitions, 1/16 of
    them probed. IVF_PQ's: one per 4,096 rows, 1/32 of them probed (at least
    8), and the best candidates refined with their full vectors. LanceDB's
    cost grows with the partitions a search probes more than with their size:
    at 1.1 million rows, 1,057 partitions with 66 probed took 80 ms a search,
    256 with 12 probed 10 ms, with a higher recall; 273 with 8 probed kept
    13's recall@10 (0.963 against 0.964, 200 queries) at 18.9 ms p50 against
    25.9 (docs/STORE.md)."""
    if kind == "none":
        return None
    if kind == "auto":
        kind = "ivf_flat" if rows < 1_000_000 else "ivf_pq"
    if not partitions:
        if kind == "ivf_hnsw_sq":
            partitions = max(1, rows // 25_000)
        elif kind == "ivf_pq":
            partitions = max(1, min(4096, rows // PQ_PARTITION_ROWS))
        else:
            partitions = max(1, min(4096, round(math.sqrt(rows))))
    if kind == "ivf_hnsw_sq":
        return Ann(kind, partitions, nprobes=max(1, partitions), refine=5)
    if kind == "ivf_pq":
        return Ann(kind, partitions, min(partitions, max(8, partitions // 32)), refine=10)
    return Ann(kind, partitions, min(partitions, max(16, partitions // 16)))


def built_ann(table) -> Ann | None:
    """The ANN index built on this chunks table, if any (read from the index names)."""
    if table is None:
        return None
    for ix in table.list_indices():
        ann = Ann.from_name(ix.name)
        if ann is not None:
            return ann
    return None


class AnnIndex:
    """The chunks table's ANN index as searches use it (``current``; None
    while search is exact), and its upkeep: built once the table has
    ``min_rows`` rows, trained again once the table wants twice the
    partitions, dropped below ``min_rows`` or with kind ``none``."""

    def __init__(self, kind: str = "auto", min_rows: int = 10_000):
        if kind not in ANN_KINDS:
            raise InvalidArgument(f"unknown ANN index {kind!r}; one of {', '.join(ANN_KINDS)}")
        self.kind = kind
        self.min_rows = min_rows
        self.current: Ann | None = None

    def load(self, table) -> None:
        """Take the index a table already has (an index opened again)."""
        self.current = built_ann(table)

    def due(self, table, dim: int) -> bool:
        """Whether ``refresh`` would build, rebuild or drop the index (not merely keep it)."""
        rows = table.count_rows()
        current = built_ann(table)
        if rows < self.min_rows or self.kind == "none":
            return current is not None
        wanted = derive_ann(rows, dim, self.kind)
        return current is None or current.kind != wanted.kind or wanted.partitions >= 2 * current.partitions

    def deltas(self, table) -> int:
        """How many segments the table's ANN index has (0: none)."""
        current = built_ann(table) if table is not None else None
        return table.index_stats(current.name).num_indices if current is not None else 0

    def refresh(self, table, dim: int, merge: bool = False) -> None:
        """After new rows (which the table's optimize folds into an existing index). ``merge`` (the quiet
        upkeep): an index of more than ``MAX_ANN_DELTAS`` segments is trained again as one, in place: searches
        use the old one until the new one is committed."""
        rows = table.count_rows()
        current = built_ann(table)
        if rows < self.min_rows or self.kind == "none":
            if current is not None:
                table.drop_index(current.name)
            self.current = None
            return
        wanted = derive_ann(rows, dim, self.kind)
        if current is not None and current.kind == wanted.kind and wanted.partitions < 2 * current.partitions:
            self.current = current  # new rows were folded in by optimize
            if merge and (deltas := table.index_stats(current.name).num_indices) > MAX_ANN_DELTAS:
                started = time.perf_counter()
                table.create_index("vector", config=current.config(dim), name=current.name, replace=True)
                metrics.MAINTENANCE_SECONDS.labels("vector_index").observe(time.perf_counter() - started)
                log.info("trained %s again over its %d segments (%d rows) in %.1fs", current.name, deltas, rows,
                         time.perf_counter() - started)
            return
        self._rebuild(table, dim, current, wanted, rows)

    def _rebuild(self, table, dim: int, current: Ann | None, wanted: Ann, rows: int) -> None:
        started = time.perf_counter()
        if current is not None:  # one vector index per column: until the new one is built, searches are exact
            table.drop_index(current.name)
            self.current = None
        table.create_index("vector", config=wanted.config(dim), name=wanted.name, replace=True)
        metrics.MAINTENANCE_SECONDS.labels("vector_index").observe(time.perf_counter() - started)
        log.info("built %s on %d rows in %.1fs", wanted.name, rows, time.perf_counter() - started)
        self.current = wanted
