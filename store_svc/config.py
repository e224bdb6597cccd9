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
    """LanceDB directory or URI (s3://bucket/prefix, gs://, az://). CODEINDEX_STORE_URI"""
    storage_options: str = ""
    """Object-store options as comma-separated key=value pairs
    (endpoint=http://host:9000,region=us-east-1,allow_http=true; a value with a comma goes in
    --storage-options-file). No secrets here: credentials come from the usual environment variables
    (AWS_ACCESS_KEY_ID, ...) or --storage-options-file. CODEINDEX_STORE_STORAGE_OPTIONS"""
    storage_options_file: str = ""
    """A JSON object of object-store options merged over --storage-options (credentials mounted from a
    secret). CODEINDEX_STORE_STORAGE_OPTIONS_FILE"""
    write_concurrency: int = 4
    """Coalesced writes committed at once over all Write streams (appends run in parallel; replaces and
    deletes are serialised). CODEINDEX_STORE_WRITE_CONCURRENCY"""
    ann_min_rows: int = 10_000
    """Build the ANN vector index once the table has this many rows (below, search is exact).
    CODEINDEX_STORE_ANN_MIN_ROWS"""
    ann_index: str = "auto"
    """ANN index type: auto (IVF_FLAT below a million rows, IVF_PQ above), ivf_flat, ivf_pq, ivf_hnsw_sq
    or none. CODEINDEX_STORE_ANN_INDEX"""
    keep_versions_seconds: float = 60.0
    """After each run, table versions older than this are removed (a reader still on an older version
    needs it). CODEINDEX_STORE_KEEP_VERSIONS_SECONDS"""
    consistency_seconds: float = 5.0
    """When other processes write the table, reads check for its latest version this often.
    CODEINDEX_STORE_CONSISTENCY_SECONDS"""
    flush_rows: int = 2048
    """A Write stream commits once this many rows are buffered... CODEINDEX_STORE_FLUSH_ROWS"""
    flush_ms: float = 1000.0
    """...or once its oldest buffered file has waited this long. CODEINDEX_STORE_FLUSH_MS"""
    ready_file: str = ""
    """Write {address, metrics_port, pid} as JSON here once serving. CODEINDEX_STORE_READY_FILE"""
    grace_seconds: float = 30.0
    """Shutdown grace period for in-flight writes. CODEINDEX_STORE_GRACE_SECONDS"""
    max_concurrent_rpcs: int = 256
    """Calls served at once (streams included); more get RESOURCE_EXHAUSTED. CODEINDEX_STORE_MAX_CONCURRENT_RPCS"""
    tls_cert: str = ""
    """The server's TLS certificate (PEM file); with --tls-key the service speaks TLS only (for services started
    apart from the orchestrator, which then needs --internal-tls-ca). CODEINDEX_STORE_TLS_CERT"""
    tls_key: str = ""
    """The server's private key (PEM file, read from the file; never give key material on the command line).
    CODEINDEX_STORE_TLS_KEY"""
    tls_client_ca: str = ""
    """Mutual TLS: clients must present a certificate signed by this CA (PEM file); others fail the handshake.
    CODEINDEX_STORE_TLS_CLIENT_CA"""
