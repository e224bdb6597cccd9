"""Start-up shared by every service: a grpc.aio server with the error
interceptor, grpc.health.v1, server reflection, a Prometheus endpoint, a
ready-file for whoever started us, and graceful shutdown on SIGTERM/SIGINT
(health NOT_SERVING -> stop accepting -> drain within the grace period ->
stop workers)."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import json
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Awaitable, Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from google.protobuf.message import DecodeError
from grpc_reflection.v1alpha import reflection
from prometheus_client import Counter, Histogram, start_http_server

from . import errors

log = logging.getLogger("codeindex")

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]


def _status(exc: errors.CodeindexError) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, exc.status)


_RPC_METRICS: dict[str, tuple[Counter, Histogram]] = {}


def rpc_metrics(stage: str) -> tuple[Counter, Histogram]:
    """``<stage>_rpcs_total{method,code}`` and ``<stage>_rpc_seconds{method}``."""
    if stage not in _RPC_METRICS:
        _RPC_METRICS[stage] = (
            Counter(f"{stage}_rpcs_total", "RPCs finished, by method and status code", ["method", "code"]),
            Histogram(f"{stage}_rpc_seconds", "RPC duration (whole stream for streaming RPCs)", ["method"],
                      buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)))
    return _RPC_METRICS[stage]


class _Undecodable:
    """A request message that did not parse (bad wire format, a string field that is not UTF-8): gRPC
    would answer UNKNOWN; the handler wrapper answers INVALID_ARGUMENT instead."""

    def __init__(self, error: Exception):
        self.error = error


def _lenient(deserialize):
    if deserialize is None:
        return None

    def parse(data: bytes):
        try:
            return deserialize(data)
        except DecodeError as exc:
            return _Undecodable(exc)

    return parse


def _decoded(request):
    if isinstance(request, _Undecodable):
        raise errors.InvalidArgument(f"malformed request: {request.error}")
    return request


async def _decoded_stream(requests):
    async for request in requests:
        yield _decoded(request)


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps domain exceptions to status codes, for all four RPC shapes, and
    counts every RPC by method and status code."""

    def __init__(self, stage: str = "codeindex"):
        self.total, self.seconds = rpc_metrics(stage)

    @contextlib.asynccontextmanager
    async def _outcome(self, method: str, context):
        """Around one RPC: domain errors become status codes; every RPC is counted."""
        started, code = time.perf_counter(), "OK"
        try:
            yield
        except errors.CodeindexError as exc:
            code = exc.status
            await context.abort(_status(exc), str(exc))
        except (asyncio.CancelledError, GeneratorExit):
            code = "CANCELLED"
            raise
        except Exception:
            code = "INTERNAL"
            raise
        finally:
            self.total.labels(method, code).inc()
            self.seconds.labels(method).observe(time.perf_counter() - started)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method.rsplit("/", 1)[-1]

        outcome = self._outcome

        def wrap_unary(fn, streaming_request: bool = False):
            async def wrapped(request, context):
                async with outcome(method, context):
                    request = _decoded_stream(request) if streaming_request else _decoded(request)
                    return await fn(request, context)

            return wrapped

        def wrap_stream(fn, streaming_request: bool = False):
            async def wrapped(request, context):
                async with outcome(method, context):
                    request = _decoded_stream(request) if streaming_request else _decoded(request)
                    result = fn(request, context)
                    if inspect.isawaitable(result):  # a handler that writes with context.write (health Watch)
                        await result
                        return
                    async for item in result:
                        yield item

            return wrapped

        des, ser = _lenient(handler.request_deserializer), handler.response_serializer
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(wrap_unary(handler.unary_unary), des, ser)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(wrap_stream(handler.unary_stream), des, ser)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(wrap_unary(handler.stream_unary, True), des, ser)
        return grpc.stream_stream_rpc_method_handler(wrap_stream(handler.stream_stream, True), des, ser)


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


def service_security(cfg: Any, name: str) -> Security:
    """A stage service's TLS settings (the ``tls_cert``, ``tls_key`` and
    ``tls_client_ca`` fields of its config), checked at once: a missing file
    or a certificate without its key stops the service before it starts
    anything, with a message naming the file (never its contents)."""
    security = Security(cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca)
    try:
        security.credentials()
    except errors.CodeindexError as exc:
        raise SystemExit(f"{name}: {exc}") from None
    return security


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


class BearerAuth(grpc.aio.ServerInterceptor):
    """Calls without ``authorization: Bearer <token>`` get UNAUTHENTICATED
    (health checks excepted, for probes and load balancers)."""

    OPEN = "/grpc.health.v1.Health/"

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(self.OPEN):
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        if hmac.compare_digest(str(metadata.get("authorization", "")).encode(), self._expected):
            return handler

        async def deny(request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required")

        async def deny_stream(request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required")
            yield  # pragma: no cover - abort raises

        des, ser = handler.request_deserializer, handler.response_serializer
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(deny, des, ser)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(deny_stream, des, ser)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(deny, des, ser)
        return grpc.stream_stream_rpc_method_handler(deny_stream, des, ser)


@dataclass
class Service:
    """What a service plugs into :func:`serve`."""

    name: str  # "parser", "embed", "store", "orchestrator"
    service_names: list[str]  # full gRPC service names, for health and reflection
    register: Callable[[grpc.aio.Server], None]
    start: Callable[[], Awaitable[None]] | None = None  # load model / open table; SERVING after it
    stop: Callable[[], Awaitable[None]] | None = None  # stop workers after draining
    extra_ready: dict[str, Any] = field(default_factory=dict)


@dataclass
class Running:
    server: grpc.aio.Server
    address: str
    metrics_port: int
    health: Any
    service: Service

    async def shutdown(self, grace: float) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self.service.stop:
            await self.service.stop()


def bind(server: grpc.aio.Server, listen: str, credentials: grpc.ServerCredentials | None = None) -> str:
    """Bind ``listen`` (host:port, port 0 lets the OS pick, or unix:PATH),
    with TLS when given ``credentials``; return the address clients should use."""
    port = server.add_secure_port(listen, credentials) if credentials else server.add_insecure_port(listen)
    if listen.startswith("unix:"):
        return listen
    if port == 0:
        raise errors.Unavailable(f"could not bind {listen}")
    host = listen.rsplit(":", 1)[0] or "127.0.0.1"
    return f"{host}:{port}"


async def start(service: Service, listen: str, metrics_port: int, metrics_host: str = "127.0.0.1",
                max_concurrent_rpcs: int | None = None, security: Security = Security()) -> Running:
    """Start serving; health is NOT_SERVING until ``service.start`` finishes.
    Beyond ``max_concurrent_rpcs`` calls at once, gRPC answers RESOURCE_EXHAUSTED."""
    credentials = security.credentials()
    interceptors = [BearerAuth(security.token)] if security.token else []
    server = grpc.aio.server(interceptors=[*interceptors, ErrorInterceptor(service.name)], options=CHANNEL_OPTIONS,
                             maximum_concurrent_rpcs=max_concurrent_rpcs)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    service.register(server)
    reflection.enable_server_reflection(
        [*service.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME], server)
    NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ["", *service.service_names]:
        await health.set(name, NOT_SERVING)
    address = bind(server, listen, credentials)
    http_server, _ = start_http_server(metrics_port, addr=metrics_host)
    await server.start()
    if service.start:
        await service.start()
    for name in ["", *service.service_names]:
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    return Running(server, address, http_server.server_port, health, service)


def main(service: Service, listen: str, metrics_port: int, ready_file: str = "", grace: float = 10.0,
         metrics_host: str = "127.0.0.1", max_concurrent_rpcs: int | None = None,
         security: Security = Security()) -> None:
    """Run a service until SIGTERM/SIGINT, then shut it down gracefully."""
    logging.basicConfig(level=os.environ.get("CODEINDEX_LOG_LEVEL", "INFO"),
                        format=f"%(asctime)s {service.name} %(levelname)s %(message)s")

    async def run() -> None:
        running = await start(service, listen, metrics_port, metrics_host, max_concurrent_rpcs, security)
        log.info("serving %s on %s (%s), metrics on :%d", service.name, running.address, security.describe(),
                 running.metrics_port)
        if ready_file:
            tmp = ready_file + ".tmp"
            with open(tmp, "w") as fh:
                json.dump({"address": running.address, "metrics_port": running.metrics_port,
                           "pid": os.getpid(), **service.extra_ready}, fh)
            os.replace(tmp, ready_file)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        watchdog = asyncio.create_task(_watch_parent(stop))
        await stop.wait()
        watchdog.cancel()
        log.info("shutting down %s (grace %.1fs)", service.name, grace)
        await running.shutdown(grace)

    asyncio.run(run())


PARENT_PID_ENV = "CODEINDEX_PARENT_PID"


async def _watch_parent(stop: asyncio.Event) -> None:
    """A service started as a child (the embedded default) stops when its
    parent is gone, even if the parent was killed with SIGKILL."""
    parent = os.environ.get(PARENT_PID_ENV)
    if not parent:
        return
    while os.getppid() == int(parent):
        await asyncio.sleep(0.5)
    log.warning("parent process %s is gone; shutting down", parent)
    stop.set()


def wait_for_serving(address: str, timeout: float, service: str = "", tls: ClientTLS | None = None) -> None:
    """Block until the server at ``address`` reports SERVING (sync client; TLS when ``tls`` is enabled)."""
    import time

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
