"""``python -m codeindex_common.healthcheck ADDRESS [SERVICE]``: exit 0 when
the gRPC server at ADDRESS reports SERVING (for container health checks and
Kubernetes exec probes), 1 otherwise.

``--of parser`` (embed, store, orchestrator) instead of ADDRESS asks the
service that this container runs, where its own listen setting
(``CODEINDEX_PARSER_LISTEN``...) says it listens: an image's HEALTHCHECK line
then follows a listen address changed at run time (host networking, where
each container binds its own loopback address and port). A wildcard host
(0.0.0.0, [::]) is asked on loopback.

Against a service that speaks TLS: ``--tls-ca`` (or CODEINDEX_HEALTHCHECK_TLS_CA)
and, for mutual TLS, ``--tls-cert`` and ``--tls-key``; ``--tls-server-name``
when the certificate is not for ADDRESS's host (a probe on 127.0.0.1, say).
Each option may come from its environment variable instead, so that an
image's HEALTHCHECK line stays the same with TLS on."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from . import config
from .errors import CodeindexError
from .channels import open_channel
from .tls import ClientTLS


@dataclass(frozen=True)
class HealthcheckConfig:
    tls_ca: str = ""
    """Speak TLS and verify the server against this CA bundle (PEM file)."""
    tls_cert: str = ""
    """Mutual TLS: the client certificate to present (PEM file), with --tls-key."""
    tls_key: str = ""
    """Mutual TLS: the client certificate's private key (PEM file)."""
    tls_server_name: str = ""
    """The name the server's certificate must hold, instead of ADDRESS's host."""
    timeout: float = 3.0
    """Seconds to wait for the answer."""

    def tls(self) -> ClientTLS:
        return ClientTLS(self.tls_ca, self.tls_cert, self.tls_key, self.tls_server_name)


def check(address: str, service: str = "", timeout: float = 3.0, tls: ClientTLS | None = None) -> bool:
    """Whether ``address`` answers SERVING (a reason on stderr when not)."""
    with open_channel(address, tls) as channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                              timeout=timeout)
        except grpc.RpcError as exc:
            print(f"{address}: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return False
    return resp.status == health_pb2.HealthCheckResponse.SERVING


SERVICES = ("parser", "embed", "store", "orchestrator")
# each service's listen setting when its variable is unset (the services' config defaults)
DEFAULT_LISTEN = {"parser": "127.0.0.1:50051", "embed": "127.0.0.1:50052", "store": "127.0.0.1:50053",
                  "orchestrator": "127.0.0.1:50050"}


def listen_address(service: str, environ: Mapping[str, str] = os.environ) -> str:
    """Where ``service`` listens by its ``CODEINDEX_<SERVICE>_LISTEN`` variable, as an address to dial: a wildcard
    host becomes loopback."""
    address = environ.get(f"CODEINDEX_{service.upper()}_LISTEN", "").strip() or DEFAULT_LISTEN[service]
    host, sep, port = address.rpartition(":")
    if sep and host in ("0.0.0.0", "", "[::]", "::"):
        return f"127.0.0.1:{port}"
    return address


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m codeindex_common.healthcheck", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("address", nargs="?", default="", help="host:port, unix:PATH or dns:///NAME:PORT")
    parser.add_argument("service", nargs="?", default="", help="a service name (default: the server as a whole)")
    parser.add_argument("--of", choices=SERVICES, default="",
                        help="instead of ADDRESS: the address this service's CODEINDEX_<SERVICE>_LISTEN names")
    config.add_arguments(parser, HealthcheckConfig, "healthcheck")
    args = parser.parse_intermixed_args(argv)
    if bool(args.address) == bool(args.of):
        parser.error("give either ADDRESS or --of SERVICE")
    address = args.address or listen_address(args.of)
    try:
        cfg = config.from_namespace(HealthcheckConfig, "healthcheck", args)
        ok = check(address, args.service, cfg.timeout, cfg.tls())
    except CodeindexError as exc:
        print(f"healthcheck: error: {exc}", file=sys.stderr)
        return 2
    print("SERVING" if ok else "NOT SERVING")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
