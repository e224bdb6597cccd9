"""store_svc metrics (prefix ``store_``)."""

from prometheus_client import Counter, Gauge, Histogram

COMMIT_OPS = ("pending", "append", "replace", "done", "delete", "optimize", "cleanup")

ROWS_WRITTEN = Counter("store_rows_written_total", "Chunk rows written, by how: append (a new file) or replace",
                       ["how"])
FILES_WRITTEN = Counter("store_files_written_total", "Files written (chunks replaced, manifest row updated)")
FILES_DELETED = Counter("store_files_deleted_total", "Files removed")
WRITE_ROWS = Histogram("store_write_batch_rows", "Chunk rows per coalesced write",
                       buckets=(0, 1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000))
WRITE_FILES = Histogram("store_write_batch_files", "Files per coalesced write",
                        buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000))
WRITE_SECONDS = Histogram("store_write_seconds", "Time to write one coalesced batch (all its commits)",
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
COMMIT_SECONDS = Histogram("store_commit_seconds", "Time of one LanceDB commit (retries included), by operation",
                           ["op"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
COMMIT_RETRIES = Counter("store_commit_retries_total", "LanceDB commits retried after a commit conflict, by operation",
                         ["op"])
for _op in COMMIT_OPS:
    COMMIT_RETRIES.labels(_op)
SEARCH_SECONDS = Histogram("store_search_seconds", "Time to answer a search, by mode", ["mode"],
                           buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
VECTORS_LOOKED_UP = Counter("store_vectors_lookup_total",
                            "Chunk content hashes asked for before embedding, by result: found (its vector is reused) "
                            "or missing (it is embedded)", ["result"])
for _result in ("found", "missing"):
    VECTORS_LOOKED_UP.labels(_result)
TABLE_ROWS = Gauge("store_table_rows", "Chunk rows in the table")
RESIDENT_ROWS = Gauge("store_resident_rows", "Chunk rows held in memory for search (0: searches read the table)")
TABLE_VERSIONS = Gauge("store_table_versions", "Versions of the chunks table kept on storage")
MAINTENANCE_SECONDS = Histogram("store_maintenance_seconds", "Time of the maintenance after a run, by step", ["step"],
                                buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
UPKEEP_DEFERRED = Counter("store_upkeep_deferred_total",
                          "Runs whose upkeep was not due yet (above --upkeep-full-rows rows, few new rows)")
ACTIVE_STREAMS = Gauge("store_active_streams", "Open Write streams")
ACTIVE_WRITES = Gauge("store_active_writes", "Coalesced writes in progress (at most --write-concurrency)")
CLEANUP_SKIPPED = Counter("store_upkeep_cleanup_skipped_total",
                          "Upkeeps that left a table's old versions to the next one, by reason: written (the table "
                          "was written after its compaction) or busy (operations in flight over 2 s)", ["reason"])
for _reason in ("written", "busy"):
    CLEANUP_SKIPPED.labels(_reason)
