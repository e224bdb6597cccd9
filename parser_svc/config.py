"""parser_svc settings."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .sizing import Limits


@dataclass(frozen=True)
class ParserConfig:
    listen: str = "127.0.0.1:50051"
    """gRPC address: host:port (port 0 lets the OS pick) or unix:PATH. CODEINDEX_PARSER_LISTEN"""
    metrics_port: int = 9101
    """Prometheus HTTP port (0 lets the OS pick). CODEINDEX_PARSER_METRICS_PORT"""
    metrics_host: str = "127.0.0.1"
    """Address the metrics endpoint binds. CODEINDEX_PARSER_METRICS_HOST"""
    workers: int = 0
    """Worker processes; 0 means one per core. CODEINDEX_PARSER_WORKERS"""
    max_in_flight: int = 64
    """Files per stream submitted to workers and not yet streamed back. CODEINDEX_PARSER_MAX_IN_FLIGHT"""
    max_file_bytes: int = 2_000_000
    """Files larger than this are skipped as too_large. CODEINDEX_PARSER_MAX_FILE_BYTES"""
    max_line_length: int = 4_000
    """Files with a longer line (minified code) are skipped as long_lines. CODEINDEX_PARSER_MAX_LINE_LENGTH"""
    max_text_bytes: int = 256_000
    """Files without a grammar (data, logs) larger than this are skipped as too_large.
    CODEINDEX_PARSER_MAX_TEXT_BYTES"""
    parse_timeout: float = 60.0
    """Seconds one file may take in a worker; past it the worker is replaced and the file reported as timeout.
    CODEINDEX_PARSER_PARSE_TIMEOUT"""
    worker_memory_mb: int = 4096
    """Address-space limit of each worker (0 = none): a file that needs more fails alone.
    CODEINDEX_PARSER_WORKER_MEMORY_MB"""
    group_below_bytes: int = 32_768
    """Files smaller than this that arrive together go to a worker in groups of up to 16 (one task, less
    overhead); a group whose worker dies is parsed again one file per task. 0 = one file per task.
    CODEINDEX_PARSER_GROUP_BELOW_BYTES"""
    overlap_tokens: int = 32
    """Pieces of a definition longer than the model's window repeat this many tokens of the previous piece.
    CODEINDEX_PARSER_OVERLAP_TOKENS"""
    min_tokens: int = 24
    """Adjacent functions shorter than this many tokens (getters, stubs) are merged into one chunk; 0 = never.
    CODEINDEX_PARSER_MIN_TOKENS"""
    ready_file: str = ""
    """Write {address, metrics_port, pid} as JSON here once serving. CODEINDEX_PARSER_READY_FILE"""
    grace_seconds: float = 10.0
    """Shutdown grace period for in-flight streams. CODEINDEX_PARSER_GRACE_SECONDS"""
    max_concurrent_rpcs: int = 64
    """Calls served at once (streams included); more get RESOURCE_EXHAUSTED. CODEINDEX_PARSER_MAX_CONCURRENT_RPCS"""
    tls_cert: str = ""
    """The server's TLS certificate (PEM file); with --tls-key the service speaks TLS only (for services started
    apart from the orchestrator, which then needs --internal-tls-ca). CODEINDEX_PARSER_TLS_CERT"""
    tls_key: str = ""
    """The server's private key (PEM file, read from the file; never give key material on the command line).
    CODEINDEX_PARSER_TLS_KEY"""
    tls_client_ca: str = ""
    """Mutual TLS: clients must present a certificate signed by this CA (PEM file); others fail the handshake.
    CODEINDEX_PARSER_TLS_CLIENT_CA"""

    def limits(self) -> Limits:
        """Per-file limits; the window and tokenizer come with each stream (from the embedder's Info)."""
        return Limits(max_file_bytes=self.max_file_bytes, max_line_length=self.max_line_length,
                      max_text_bytes=self.max_text_bytes, overlap_tokens=self.overlap_tokens,
                      min_tokens=self.min_tokens)

    def worker_count(self) -> int:
        return self.workers if self.workers > 0 else (os.cpu_count() or 1)
