"""orchestrator metrics (prefix ``orchestrator_``)."""

from prometheus_client import Counter, Histogram

STAGE_FILES = Counter("orchestrator_stage_files_total", "Files that left a stage", ["stage"])
FILES_SKIPPED = Counter("orchestrator_files_skipped_total", "Files skipped, by reason", ["reason"])
FILES_REMOVED = Counter("orchestrator_files_removed_total", "Files removed from the index")
CHUNKS_EMBEDDED = Counter("orchestrator_chunks_embedded_total", "Chunks sent to the embedder")
CHUNKS_REUSED = Counter("orchestrator_chunks_reused_total", "Chunks whose vectors were reused")
RUN_SECONDS = Histogram("orchestrator_index_run_seconds", "Duration of index runs",
                        buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600))
SEARCH_SECONDS = Histogram("orchestrator_search_seconds", "Search latency, query embedding included",
                           buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
