"""embed_svc metrics (prefix ``embed_``)."""

from prometheus_client import Counter, Gauge, Histogram

TEXTS = Counter("embed_texts_total", "Texts embedded")
TOKENS = Counter("embed_tokens_total", "Estimated tokens embedded")
REQUESTS = Counter("embed_requests_total", "Embed requests, by result", ["result"])
QUEUE_DEPTH = Gauge("embed_queue_depth", "Texts waiting for a batch")
BATCH_SIZE = Histogram("embed_batch_size", "Texts per model call",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
QUEUE_WAIT = Histogram("embed_queue_wait_seconds", "Time a text waited before its batch ran",
                       buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
INFERENCE_SECONDS = Histogram("embed_inference_seconds", "Model time per batch",
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
STREAMS = Gauge("embed_active_streams", "Open Embed streams")
QUEUE_CAPACITY = Gauge("embed_queue_capacity", "Most texts the queue holds (max_queue)")
BATCH_TOKENS = Histogram("embed_batch_tokens", "Estimated tokens per model call, padding included",
                         buckets=(64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536))
PADDING_RATIO = Histogram("embed_padding_ratio", "Share of a batch's tokens that are padding",
                          buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0))
BUSY_SECONDS = Counter("embed_busy_seconds_total", "Seconds the model device spent on batches "
                       "(its rate is the device's utilisation: GPU utilisation on a GPU)", ["backend", "device"])
INFO = Gauge("embed_model_info", "The loaded model (value 1)", ["model", "backend", "device"])
