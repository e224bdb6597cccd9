"""store_svc metrics (prefix ``store_``)."""

from prometheus_client import Counter, Gauge, Histogram

ROWS_WRITTEN = Counter("store_rows_written_total", "Chunk rows written")
FILES_WRITTEN = Counter("store_files_written_total", "Files replaced")
FILES_DELETED = Counter("store_files_deleted_total", "Files removed")
COMMIT_FILES = Histogram("store_commit_files", "Files per commit", buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000))
COMMIT_SECONDS = Histogram("store_commit_seconds", "Time to commit one coalesced write",
                           buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
SEARCH_SECONDS = Histogram("store_search_seconds", "Time to answer a search, by mode", ["mode"],
                           buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
VECTORS_LOOKED_UP = Counter("store_vectors_lookup_total", "Content hashes asked for, by result", ["result"])
for _result in ("found", "missing"):
    VECTORS_LOOKED_UP.labels(_result)
TABLE_ROWS = Gauge("store_table_rows", "Chunk rows in the table after the last commit")
ACTIVE_STREAMS = Gauge("store_active_streams", "Open Write streams")
