"""parser_svc metrics (prefix ``parser_``)."""

from prometheus_client import Counter, Gauge, Histogram

FILES = Counter("parser_files_total", "Files parsed, by result (chunked or a skip reason)", ["result"])
BYTES = Counter("parser_bytes_total", "Bytes of file content received")
CHUNKS = Counter("parser_chunks_total", "Chunks produced, by language and kind", ["language", "kind"])
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
PARSE_SECONDS = Histogram("parser_parse_seconds", "Time to chunk one file, queueing for a worker included",
                          buckets=_BUCKETS)
WORKER_SECONDS = Histogram("parser_worker_seconds", "Time a worker spent chunking one file", buckets=_BUCKETS)
FAILURES = Counter("parser_failures_total", "Files the parser failed on (worker_died, timeout, parse_failed)",
                   ["reason"])
IN_FLIGHT = Gauge("parser_in_flight_files", "Files submitted to the worker pool and not yet answered")
WORKER_RESTARTS = Counter("parser_worker_restarts_total", "Workers replaced after dying or running past the timeout")
STREAMS = Gauge("parser_active_streams", "Open Parse streams")
WORKERS = Gauge("parser_workers", "Worker processes in the pool")
