"""Client channels to the services: message-size limits, TLS when asked for,
and a wait until a server reports SERVING."""

from __future__ import annotations

import time
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from . import errors
from .tls import ClientTLS

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]


def open_channel(address: str, tls: ClientTLS | None = None, options: list[tuple[str, Any]] | None = None,
                 *, aio: bool = False, server_name: str = ""):
    """A channel to ``address``: TLS when ``tls`` is enabled, plain text otherwise (``aio``: a grpc.aio one)."""
    module = grpc.aio if aio else grpc
    options = list(options or [])
    if tls is None or not tls.enabled:
        if tls is not None and tls.server_name:
            raise errors.InvalidArgument("a TLS server name needs TLS: give the CA file")
        return module.insecure_channel(address, options=options)
    return module.secure_channel(address, tls.credentials(), options=[*options, *tls.options(server_name)])


def wait_for_serving(address: str, timeout: float, service: str = "", tls: ClientTLS | None = None) -> None:
    """Block until the server at ``address`` reports SERVING (sync client; TLS when ``tls`` is enabled)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    with open_channel(address, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError as exc:
                last = exc
            time.sleep(0.1)
    raise errors.Unavailable(f"{address} did not become SERVING within {timeout:.0f}s ({last})")
