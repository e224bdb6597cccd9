"""TLS settings of servers and clients. Certificates and keys are read from
their files (never from a flag's value, never logged)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from . import errors


def read_secret_file(path: str, what: str) -> bytes:
    """A certificate or key, from its file (never from a flag's value, never logged)."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise errors.InvalidArgument(f"cannot read the {what} file {path}: {exc.strerror}") from None


@dataclass(frozen=True)
class Security:
    """TLS for a server (mutual TLS when ``client_ca_file`` is set) and a
    bearer token every call but health checks must carry. Certificates and
    keys are files; the token comes from a file or the environment."""

    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""
    token: str = ""

    def __repr__(self) -> str:  # never the token, in a log or a traceback
        return (f"Security(cert_file={self.cert_file!r}, key_file={self.key_file!r}, "
                f"client_ca_file={self.client_ca_file!r}, token={'set' if self.token else 'unset'})")

    def describe(self) -> str:
        """For the start-up log line: what the server speaks (no file contents, no token)."""
        if not self.cert_file:
            return "plain text"
        return "mutual TLS" if self.client_ca_file else "TLS"

    def credentials(self) -> grpc.ServerCredentials | None:
        if not (self.cert_file or self.key_file):
            if self.client_ca_file:
                raise errors.InvalidArgument("mutual TLS (a client CA) needs the server's certificate and key")
            return None
        if not (self.cert_file and self.key_file):
            raise errors.InvalidArgument("TLS needs both a certificate and a key file")
        client_ca = read_secret_file(self.client_ca_file, "client CA") if self.client_ca_file else None
        return grpc.ssl_server_credentials(
            [(read_secret_file(self.key_file, "TLS key"), read_secret_file(self.cert_file, "TLS certificate"))],
            root_certificates=client_ca, require_client_auth=client_ca is not None)


@dataclass(frozen=True)
class ClientTLS:
    """TLS for a client's channels: the server is verified against ``ca_file``
    (gRPC's default roots when empty); with ``cert_file`` and ``key_file`` the
    client presents its own certificate (mutual TLS). ``server_name``: the
    name the server's certificate must be for, instead of the host in the
    address (``grpc.ssl_target_name_override``). Off when no file is given."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.ca_file or self.cert_file or self.key_file)

    def credentials(self) -> grpc.ChannelCredentials:
        if bool(self.cert_file) != bool(self.key_file):
            raise errors.InvalidArgument("a client certificate needs both the certificate and the key file")
        mutual = self.cert_file and self.key_file
        return grpc.ssl_channel_credentials(
            root_certificates=read_secret_file(self.ca_file, "CA") if self.ca_file else None,
            private_key=read_secret_file(self.key_file, "client key") if mutual else None,
            certificate_chain=read_secret_file(self.cert_file, "client certificate") if mutual else None)

    def options(self, server_name: str = "") -> list[tuple[str, Any]]:
        """Channel options: the name to verify (``server_name`` when this has none of its own)."""
        name = self.server_name or server_name
        return [("grpc.ssl_target_name_override", name)] if name else []
