"""store_svc settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StoreConfig:
    listen: str = "127.0.0.1:50053"
    """gRPC address: host:port (port 0 lets the OS pick) or unix:PATH. CODEINDEX_STORE_LISTEN"""
    metrics_port: int = 9103
    """Prometheus HTTP port (0 lets the OS pick). CODEINDEX_STORE_METRICS_PORT"""
    metrics_host: str = "127.0.0.1"
    """Address the metrics endpoint binds. CODEINDEX_STORE_METRICS_HOST"""
    uri: str = ".codeindex/lancedb"
    """LanceDB directory or URI. CODEINDEX_STORE_URI"""
    flush_rows: int = 2048
    """A Write stream commits once this many rows are buffered... CODEINDEX_STORE_FLUSH_ROWS"""
    flush_ms: float = 1000.0
    """...or once its oldest buffered file has waited this long. CODEINDEX_STORE_FLUSH_MS"""
    ready_file: str = ""
    """Write {address, metrics_port, pid} as JSON here once serving. CODEINDEX_STORE_READY_FILE"""
    grace_seconds: float = 30.0
    """Shutdown grace period for in-flight writes. CODEINDEX_STORE_GRACE_SECONDS"""
