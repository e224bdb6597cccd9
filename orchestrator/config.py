"""orchestrator settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OrchestratorConfig:
    parser_addr: str = ""
    """Parser service address(es): host:port, unix:PATH, dns:///NAME:PORT (every address the name resolves to,
    e.g. a headless Service), or several separated by commas; streams are spread over all of them in turn.
    Empty starts one locally (the embedded default). CODEINDEX_ORCHESTRATOR_PARSER_ADDR"""
    embed_addr: str = ""
    """Embedding service address(es), as --parser-addr; empty starts one locally.
    CODEINDEX_ORCHESTRATOR_EMBED_ADDR"""
    store_addr: str = ""
    """Store service address (one writer per table, see docs/STORE.md); empty starts one locally over the index
    directory. CODEINDEX_ORCHESTRATOR_STORE_ADDR"""
    index_dir: str = ""
    """Where a locally started store keeps the index; empty means REPO/.codeindex. CODEINDEX_ORCHESTRATOR_INDEX_DIR"""
    listen: str = "127.0.0.1:50050"
    """`serve`: the public API's gRPC address. CODEINDEX_ORCHESTRATOR_LISTEN"""
    metrics_port: int = 9100
    """`serve`: Prometheus HTTP port (0 lets the OS pick). CODEINDEX_ORCHESTRATOR_METRICS_PORT"""
    metrics_host: str = "127.0.0.1"
    """`serve` and `index`: address the metrics endpoint binds. CODEINDEX_ORCHESTRATOR_METRICS_HOST"""
    index_metrics_port: int = -1
    """`index`: serve the orchestrator's metrics on this port during the run (-1: off, 0: the OS picks).
    CODEINDEX_ORCHESTRATOR_INDEX_METRICS_PORT"""
    ready_file: str = ""
    """`serve`: write {address, metrics_port, pid} as JSON here once serving. CODEINDEX_ORCHESTRATOR_READY_FILE"""
    parse_streams: int = 2
    """Parse streams kept open at once. CODEINDEX_ORCHESTRATOR_PARSE_STREAMS"""
    embed_streams: int = 4
    """Embed streams kept open at once. CODEINDEX_ORCHESTRATOR_EMBED_STREAMS"""
    write_streams: int = 2
    """Store Write streams kept open at once. CODEINDEX_ORCHESTRATOR_WRITE_STREAMS"""
    embed_request_texts: int = 32
    """Most texts in one Embed request. CODEINDEX_ORCHESTRATOR_EMBED_REQUEST_TEXTS"""
    queue_size: int = 256
    """Capacity of each queue between stages (files). CODEINDEX_ORCHESTRATOR_QUEUE_SIZE"""
    max_file_bytes: int = 2_000_000
    """Larger files are skipped as too_large without being sent. CODEINDEX_ORCHESTRATOR_MAX_FILE_BYTES"""
    start_timeout: float = 120.0
    """Seconds to wait for locally started services to be SERVING. CODEINDEX_ORCHESTRATOR_START_TIMEOUT"""
    rpc_timeout: float = 60.0
    """Deadline of each unary RPC, and the longest a stream may hold items without answering one (then it
    is reopened, as after a crash), in seconds. CODEINDEX_ORCHESTRATOR_RPC_TIMEOUT"""
    max_concurrent_rpcs: int = 256
    """`serve`: calls served at once; more get RESOURCE_EXHAUSTED. CODEINDEX_ORCHESTRATOR_MAX_CONCURRENT_RPCS"""
    tls_cert: str = ""
    """`serve`: the server's TLS certificate (PEM file); with --tls-key, the public API speaks TLS only.
    CODEINDEX_ORCHESTRATOR_TLS_CERT"""
    tls_key: str = ""
    """`serve`: the server's private key (PEM file). CODEINDEX_ORCHESTRATOR_TLS_KEY"""
    tls_client_ca: str = ""
    """`serve`: mutual TLS: clients must present a certificate signed by this CA (PEM file).
    CODEINDEX_ORCHESTRATOR_TLS_CLIENT_CA"""
    auth_token_file: str = ""
    """`serve`: a file holding the bearer token every call but health checks must carry (`authorization: Bearer
    TOKEN`); the token may also come from the environment variable CODEINDEX_ORCHESTRATOR_AUTH_TOKEN, never from
    the command line. CODEINDEX_ORCHESTRATOR_AUTH_TOKEN_FILE"""
    allowed_roots: str = ""
    """`serve`: directories (comma-separated) under which the public Index RPC may index; empty: only
    --path. Paths are resolved (symbolic links, `..`) before the check. CODEINDEX_ORCHESTRATOR_ALLOWED_ROOTS"""
    internal_tls_ca: str = ""
    """TLS to the stages given by address (--parser-addr, --embed-addr, --store-addr; those started locally
    stay on plain unix sockets): their certificates are verified against this CA bundle (PEM file).
    CODEINDEX_ORCHESTRATOR_INTERNAL_TLS_CA"""
    internal_tls_cert: str = ""
    """Mutual TLS to the stages: the orchestrator's client certificate (PEM file), with --internal-tls-key.
    CODEINDEX_ORCHESTRATOR_INTERNAL_TLS_CERT"""
    internal_tls_key: str = ""
    """Mutual TLS to the stages: the client certificate's private key (PEM file, read from the file).
    CODEINDEX_ORCHESTRATOR_INTERNAL_TLS_KEY"""
    internal_tls_server_name: str = ""
    """TLS to the stages: the name their certificates must hold, instead of the host in each address (a
    dns:/// name is checked as written even though the orchestrator connects to the addresses it resolves to).
    CODEINDEX_ORCHESTRATOR_INTERNAL_TLS_SERVER_NAME"""
    retry_seconds: float = 60.0
    """How long a stage may fail transiently (UNAVAILABLE, RESOURCE_EXHAUSTED) before the run stops: calls are
    retried with backoff and broken streams resumed meanwhile. CODEINDEX_ORCHESTRATOR_RETRY_SECONDS"""
