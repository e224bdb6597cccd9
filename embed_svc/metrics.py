"""embed_svc metrics (prefix ``embed_``). Model-side series carry the backend
(torch, onnx, triton, hash) and device (cpu, cuda:0, triton:HOST:PORT)."""

from prometheus_client import Counter, Gauge, Histogram

_BD = ["backend", "device"]

TEXTS = Counter("embed_texts_total", "Distinct texts run through the model", _BD)
TOKENS = Counter("embed_tokens_total", "Tokens run through the model (the tokenizer's count, padding excluded)", _BD)
REQUESTS = Counter("embed_requests_total", "Embed requests, by result", ["result"])
FAILURES = Counter("embed_failures_total", "Texts not embedded, by reason "
                   "(queue_full, cancelled, backend_error, shutdown)", ["reason"])
CACHE = Counter("embed_cache_texts_total", "Texts asked for, by how they were answered: hit (the cache), "
                "joined (the same text already queued or running), miss (queued)", ["result"])
CACHE_ENTRIES = Gauge("embed_cache_entries", "Vectors held in the in-memory cache")
QUEUE_DEPTH = Gauge("embed_queue_depth", "Texts waiting for a batch")
QUEUE_CAPACITY = Gauge("embed_queue_capacity", "Most texts the queue holds (max_queue)")
BATCH_SIZE = Histogram("embed_batch_size", "Texts per model call", _BD,
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
BATCH_TOKENS = Histogram("embed_batch_tokens", "Tokens per model call, padding included (texts x longest)", _BD,
                         buckets=(64, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536))
PADDING_RATIO = Histogram("embed_padding_ratio", "Share of a batch's tokens that are padding", _BD,
                          buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0))
QUEUE_WAIT = Histogram("embed_queue_wait_seconds", "Time a text waited before its batch was tokenized",
                       buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
INFERENCE_SECONDS = Histogram("embed_inference_seconds", "Model time per batch, launch to vectors (the onnx "
                              "backend's CPU runs: the run itself)", _BD,
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
BUSY_SECONDS = Counter("embed_busy_seconds_total", "Seconds the model spent on batches (its rate is the "
                       "device's utilisation; above 1 when batches overlap on a GPU or a Triton server; "
                       "the onnx backend's CPU runs count over their number: 1 when every run is busy)", _BD)
STREAMS = Gauge("embed_active_streams", "Open Embed streams")
INFO = Gauge("embed_model_info", "The loaded model (value 1)", ["model", "backend", "device"])
