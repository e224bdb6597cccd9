"""orchestrator settings, in three groups: how to reach the stages (every
command), how an index run streams (``index``, ``serve``), and the public
API's server (``serve``). :class:`OrchestratorConfig` is all three; every
field is also the variable ``CODEINDEX_ORCHESTRATOR_<FIELD>``."""

from __future__ import annotations

import os
from dataclasses import dataclass

from codeindex_common.config import ServerSettings, flag_of
from codeindex_common.errors import CodeindexError, InvalidArgument
from codeindex_common.tls import Security

TOKEN_ENV = "CODEINDEX_ORCHESTRATOR_AUTH_TOKEN"
MCP_TOKEN_ENV = "CODEINDEX_ORCHESTRATOR_MCP_TOKEN"


def read_token(path: str, env: str) -> str:
    """A bearer token: from the file ``path`` when given (an empty file is refused), else the variable
    ``env`` ("" when unset); never from the command line."""
    if not path:
        return os.environ.get(env, "")
    with open(path, encoding="utf-8") as fh:
        token = fh.read().strip()
    if not token:
        raise CodeindexError(f"{path} is empty: no token to require")
    return token


@dataclass(frozen=True)
class Connection:
    """The stages: where they are (or where to start them), TLS to them, and how long to wait for them."""

    parser_addr: str = ""
    """Parser service address(es): host:port, unix:PATH, dns:///NAME:PORT (every address the name resolves to,
    e.g. a headless Service), or several separated by commas; streams are spread over all of them in turn.
    Empty starts one locally (the embedded default)."""
    embed_addr: str = ""
    """Embedding service address(es), as --parser-addr; empty starts one locally."""
    store_addr: str = ""
    """Store service address (one writer per table, see docs/STORE.md); empty starts one locally over the index
    directory."""
    index_dir: str = ""
    """Where a locally started store keeps the index; empty means REPO/.codeindex."""
    start_timeout: float = 120.0
    """Seconds to wait for locally started services to be SERVING."""
    rpc_timeout: float = 60.0
    """Deadline of each unary RPC, and the longest a stream may hold items without answering one (then it
    is reopened, as after a crash), in seconds."""
    retry_seconds: float = 60.0
    """How long a stage may fail transiently (UNAVAILABLE, RESOURCE_EXHAUSTED) before the run stops: calls are
    retried with backoff and broken streams resumed meanwhile."""
    internal_tls_ca: str = ""
    """TLS to the stages given by address (--parser-addr, --embed-addr, --store-addr; those started locally
    stay on plain unix sockets): their certificates are verified against this CA bundle (PEM file)."""
    internal_tls_cert: str = ""
    """Mutual TLS to the stages: the orchestrator's client certificate (PEM file), with --internal-tls-key."""
    internal_tls_key: str = ""
    """Mutual TLS to the stages: the client certificate's private key (PEM file, read from the file)."""
    internal_tls_server_name: str = ""
    """TLS to the stages: the name their certificates must hold, instead of the host in each address (a
    dns:/// name is checked as written even though the orchestrator connects to the addresses it resolves to)."""

    def given_addresses(self) -> dict[str, str]:
        """Each stage's configured address by stage name ("parser", "embed", "store"); "" where it is to be
        started locally."""
        return {"parser": self.parser_addr, "embed": self.embed_addr, "store": self.store_addr}


@dataclass(frozen=True)
class RunSettings:
    """How an index run streams files through the stages."""

    parse_streams: int = 2
    """Parse streams kept open at once."""
    embed_streams: int = 4
    """Embed streams kept open at once."""
    write_streams: int = 2
    """Store Write streams kept open at once."""
    embed_request_texts: int = 32
    """Most texts in one Embed request."""
    queue_size: int = 256
    """Capacity of each queue between stages (files)."""
    max_file_bytes: int = 2_000_000
    """Larger files are skipped as too_large without being sent."""
    index_metrics_port: int = -1
    """`index`: serve the orchestrator's metrics on this port during the run (-1: off, 0: the OS picks)."""


@dataclass(frozen=True)
class ApiSettings(ServerSettings):
    """`serve`: the public gRPC API's server."""

    listen: str = "127.0.0.1:50050"
    metrics_port: int = 9100
    auth_token_file: str = ""
    """A file holding the bearer token every call but health checks must carry (`authorization: Bearer
    TOKEN`); the token may also come from the environment variable CODEINDEX_ORCHESTRATOR_AUTH_TOKEN, never from
    the command line."""
    allowed_roots: str = ""
    """Directories (comma-separated) under which the public Index RPC may index; empty: only --path. Paths are
    resolved (symbolic links, `..`) before the check."""

    def security(self) -> Security:
        """TLS files and the bearer token of the public API. The token comes from
        --auth-token-file or the environment, never from a flag."""
        return Security(self.tls_cert, self.tls_key, self.tls_client_ca, read_token(self.auth_token_file, TOKEN_ENV))


@dataclass(frozen=True)
class McpSettings:
    """`mcp`: the Model Context Protocol server for coding agents."""

    transport: str = "stdio"
    """stdio (the agent starts the server and speaks over its stdin and stdout) or http (streamable HTTP on
    127.0.0.1, every request with `authorization: Bearer TOKEN`)."""
    http_port: int = 0
    """http transport: the port on 127.0.0.1 (0: the OS picks; the address is printed on stderr)."""
    mcp_token_file: str = ""
    """http transport: a file holding the bearer token; or the environment variable
    CODEINDEX_ORCHESTRATOR_MCP_TOKEN, never the command line."""
    watch: bool = True
    """Keep the index live: index every change as it is saved (--no-watch: only when asked, by reindex)."""

    def mcp_token(self) -> str:
        return read_token(self.mcp_token_file, MCP_TOKEN_ENV)


@dataclass(frozen=True)
class OrchestratorConfig(McpSettings, ApiSettings, RunSettings, Connection):
    """Every orchestrator setting."""

    def __post_init__(self) -> None:
        for name in ("parse_streams", "embed_streams", "write_streams", "embed_request_texts", "queue_size",
                     "max_file_bytes"):
            if getattr(self, name) < 1:
                raise InvalidArgument(f"{flag_of(name)} must be 1 or more, not {getattr(self, name)}")
        for name in ("start_timeout", "rpc_timeout"):
            if not 0 < getattr(self, name) <= MAX_SECONDS:  # NaN is refused too; gRPC fails at once past 1e10
                raise InvalidArgument(f"{flag_of(name)} must be more than 0 and at most {MAX_SECONDS:,} seconds, "
                                      f"not {getattr(self, name)}")
        if not 0 <= self.retry_seconds <= MAX_SECONDS:
            raise InvalidArgument(f"--retry-seconds must be from 0 to {MAX_SECONDS:,}, not {self.retry_seconds}")
        for name, least in (("index_metrics_port", -1), ("metrics_port", 0), ("http_port", 0)):
            if not least <= (port := getattr(self, name)) <= 65535:
                raise InvalidArgument(f"{flag_of(name)} must be a port from {least} to 65535, not {port}")


MAX_SECONDS = 30 * 24 * 3600  # a deadline or wait longer than 30 days is a mistake (and gRPC's deadlines end at 1e10 s)
