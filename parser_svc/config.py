"""parser_svc settings."""

from __future__ import annotations

import os
from dataclasses import dataclass

from codeindex_common.config import ServerSettings

from .sizing import Limits


@dataclass(frozen=True)
class ParserConfig(ServerSettings):
    # the server settings, with this service's defaults (documented in ServerSettings)
    listen: str = "127.0.0.1:50051"
    metrics_port: int = 9101
    max_concurrent_rpcs: int = 64
    workers: int = 0
    """Worker processes; 0 means one per core."""
    max_in_flight: int = 64
    """Files per stream submitted to workers and not yet streamed back."""
    max_file_bytes: int = 2_000_000
    """Files larger than this are skipped as too_large."""
    max_line_length: int = 4_000
    """Files with a longer line (minified code) are skipped as long_lines."""
    max_text_bytes: int = 256_000
    """Files without a grammar (data, logs) larger than this are skipped as too_large."""
    parse_timeout: float = 60.0
    """Seconds one file may take in a worker; past it the worker is replaced and the file reported as timeout."""
    worker_memory_mb: int = 4096
    """Address-space limit of each worker (0 = none): a file that needs more fails alone."""
    group_below_bytes: int = 32_768
    """Files smaller than this that arrive together go to a worker in groups of up to 16 (one task, less
    overhead); a group whose worker dies is parsed again one file per task. 0 = one file per task."""
    overlap_tokens: int = 32
    """Pieces of a definition longer than the model's window repeat this many tokens of the previous piece."""
    min_tokens: int = 24
    """Adjacent functions shorter than this many tokens (getters, stubs) are merged into one chunk; 0 = never."""

    def limits(self) -> Limits:
        """Per-file limits; the window and tokenizer come with each stream (from the embedder's Info)."""
        return Limits(max_file_bytes=self.max_file_bytes, max_line_length=self.max_line_length,
                      max_text_bytes=self.max_text_bytes, overlap_tokens=self.overlap_tokens,
                      min_tokens=self.min_tokens)

    def worker_count(self) -> int:
        return self.workers if self.workers > 0 else (os.cpu_count() or 1)
