"""store_svc settings."""

from __future__ import annotations

from dataclasses import dataclass

from codeindex_common.config import ServerSettings


@dataclass(frozen=True)
class StoreConfig(ServerSettings):
    # the server settings, with this service's defaults (documented in ServerSettings)
    listen: str = "127.0.0.1:50053"
    metrics_port: int = 9103
    grace_seconds: float = 30.0
    uri: str = ".codeindex/lancedb"
    """LanceDB directory or URI (s3://bucket/prefix, gs://, az://)."""
    storage_options: str = ""
    """Object-store options as comma-separated key=value pairs
    (endpoint=http://host:9000,region=us-east-1,allow_http=true; a value with a comma goes in
    --storage-options-file). No secrets here: credentials come from the usual environment variables
    (AWS_ACCESS_KEY_ID, ...) or --storage-options-file."""
    storage_options_file: str = ""
    """A JSON object of object-store options merged over --storage-options (credentials mounted from a
    secret)."""
    write_concurrency: int = 4
    """Coalesced writes committed at once over all Write streams (appends run in parallel; replaces and
    deletes are serialised)."""
    ann_min_rows: int = 10_000
    """Build the ANN vector index once the table has this many rows (below, search is exact)."""
    ann_index: str = "auto"
    """ANN index type: auto (IVF_FLAT below a million rows, IVF_PQ above), ivf_flat, ivf_pq, ivf_hnsw_sq
    or none."""
    keep_versions_seconds: float = 60.0
    """At each upkeep, table versions older than this are removed (a reader still on an older version
    needs it)."""
    upkeep_full_rows: int = 1_000
    """Up to this many rows, every run that wrote ends with the upkeep (compaction, indexes refreshed, old
    versions removed); above, only once it is due: see --upkeep-unindexed-share and --upkeep-max-versions
    (an index missing or to be trained again is always due). Compaction writes a table under a million rows
    again whole: 1.4 s after a one-file edit at 6,000 rows (docs/STORE.md, "Index maintenance")."""
    upkeep_unindexed_share: float = 0.05
    """Above --upkeep-full-rows, the upkeep is due once the rows the indexes do not hold yet are this share
    of the table (until then searches read them without an index: nothing is missed)."""
    upkeep_max_versions: int = 100
    """Above --upkeep-full-rows, the upkeep is due once the table has this many versions (which bounds its
    fragments and versions)."""
    upkeep_idle_s: float = 30.0
    """Once the store has had no write for this long while some rows are not in its indexes yet (a run's
    upkeep was deferred, or the rows were written elsewhere), it runs the upkeep itself, so that a store
    serving searches (``orchestrator serve``, ``watch``, ``mcp``, a cluster's store) gets the indexes' speed
    back without another run. 0: never."""
    consistency_seconds: float = 5.0
    """When other processes write the table, reads check for its latest version this often."""
    index_cache_mb: int = 512
    """LanceDB's cache of index pages (vector, full-text and scalar indexes: about 230 MB at a million
    chunks), MB."""
    metadata_cache_mb: int = 128
    """LanceDB's cache of table metadata (manifests, fragment and file metadata), MB. Unbounded, it grows
    with every version an index run commits."""
    resident_rows: int = 200_000
    """Up to this many chunks, the store holds their vectors, rows and keyword postings in memory (about 3 KB
    a chunk at 384 dimensions, 290 MB at 100,000), read once the table has held still for 3 s, and searches
    (filtered or not) use them while the table is unchanged: an exact vector search in a few milliseconds,
    LanceDB's BM25 in about one, and no read of the hits' rows. 0: never."""
    flush_rows: int = 2048
    """A Write stream commits once this many rows are buffered..."""
    flush_ms: float = 1000.0
    """...or once its oldest buffered file has waited this long."""
