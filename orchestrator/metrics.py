"""orchestrator metrics (prefix ``orchestrator_``). See docs/METRICS.md."""

from prometheus_client import Counter, Gauge, Histogram

STAGE_FILES = Counter("orchestrator_stage_files_total", "Files that left a stage (parse, write)", ["stage"])
FILES_SKIPPED = Counter("orchestrator_files_skipped_total", "Files skipped, by reason", ["reason"])
FILES_REMOVED = Counter("orchestrator_files_removed_total", "Files removed from the index")
CHUNKS_EMBEDDED = Counter("orchestrator_chunks_embedded_total", "Chunks sent to the embedder")
CHUNKS_REUSED = Counter("orchestrator_chunks_reused_total", "Chunks whose vectors were reused")
STAGE_WAIT = Counter("orchestrator_stage_wait_seconds_total",
                     "Time a stage waited: starved (for input) or blocked (handing output on)", ["stage", "kind"])
STAGE_RETRIES = Counter("orchestrator_stage_retries_total",
                        "Calls repeated and streams resumed after a transient failure, by stage", ["stage"])
QUEUE_DEPTH = Gauge("orchestrator_queue_depth", "Files in each queue between stages (the embed queue: requests)",
                    ["queue"])
RUN_FILES = Gauge("orchestrator_run_files", "Files of the current run: total, done, remaining", ["state"])
RUN_CHUNKS = Gauge("orchestrator_run_chunks", "Chunks of the current run: done, embedded, remaining", ["state"])
RUN_CHUNKS_PER_SECOND = Gauge("orchestrator_run_chunks_per_second", "Chunks written per second in the current run")
RUN_ETA_SECONDS = Gauge("orchestrator_run_eta_seconds", "Estimated seconds left in the current run")
RUN_SECONDS = Histogram("orchestrator_index_run_seconds", "Duration of index runs",
                        buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600))
SEARCH_SECONDS = Histogram("orchestrator_search_seconds", "Search latency, query embedding included",
                           buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))

for _stage, _kind in (("read", "blocked"), ("parse", "starved"), ("parse", "blocked"), ("reuse", "starved"),
                      ("reuse", "blocked"), ("embed", "starved"), ("embed", "blocked"), ("write", "starved")):
    STAGE_WAIT.labels(_stage, _kind)
for _stage in ("parser", "embed", "store"):
    STAGE_RETRIES.labels(_stage)
for _queue in ("files", "parsed", "embed", "write"):
    QUEUE_DEPTH.labels(_queue)
