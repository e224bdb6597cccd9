"""Start-up shared by every service: a grpc.aio server with the interceptors,
grpc.health.v1, server reflection, a Prometheus endpoint, a ready-file for
whoever started us, and graceful shutdown on SIGTERM/SIGINT (health
NOT_SERVING -> stop accepting -> drain within the grace period -> stop
workers). A service plugs in as a :class:`Service`; its settings are a
:class:`codeindex_common.config.ServerSettings`."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Awaitable, Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from . import errors
from .channels import CHANNEL_OPTIONS
from .config import ServerSettings
from .interceptors import BearerAuth, ErrorInterceptor
from .tls import Security

log = logging.getLogger("codeindex")

PARENT_PID_ENV = "CODEINDEX_PARENT_PID"


@dataclass
class Service:
    """What a service plugs into :func:`start`."""

    name: str  # "parser", "embed", "store", "orchestrator"
    service_names: list[str]  # full gRPC service names, for health and reflection
    register: Callable[[grpc.aio.Server], None]
    prepare: Callable[[], None] | None = None  # before the gRPC server exists: start process pools
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
    if not listen.startswith("unix:"):
        port_text = listen.rsplit(":", 1)[-1]
        if not port_text.isdigit() or int(port_text) > 65535:
            raise errors.InvalidArgument(f"cannot listen on {listen!r}: give host:port, a port from 0 to 65535, "
                                         "or unix:PATH")
    try:
        port = server.add_secure_port(listen, credentials) if credentials else server.add_insecure_port(listen)
    except RuntimeError:  # grpcio raises where it used to return 0 (the port taken, the host not ours)
        port = 0
    if listen.startswith("unix:") and port:
        return listen
    if port == 0:
        raise errors.Unavailable(f"could not bind {listen} (is the port taken, or the address not this host's?)")
    host = listen.rsplit(":", 1)[0] or "127.0.0.1"
    return f"{host}:{port}"


def metrics_server(port: int, host: str):
    """Prometheus's HTTP server on ``host:port`` (0: the OS picks); Unavailable, with the reason, where it
    cannot bind."""
    try:
        server, _ = start_http_server(port, addr=host)
    except (OSError, OverflowError) as exc:  # the port taken or out of range, the host unknown or not ours
        raise errors.Unavailable(f"could not serve metrics on {host}:{port}: {exc}") from None
    return server


async def _set_health(health: Any, service: Service, status: int) -> None:
    for name in ["", *service.service_names]:
        await health.set(name, status)


async def start(service: Service, cfg: ServerSettings, security: Security | None = None) -> Running:
    """Start serving; health is NOT_SERVING until ``service.start`` finishes.
    Beyond ``cfg.max_concurrent_rpcs`` calls at once, gRPC answers RESOURCE_EXHAUSTED."""
    security = security or cfg.security()
    credentials = security.credentials()
    interceptors = [BearerAuth(security.token)] if security.token else []
    # SO_REUSEPORT off: with it (gRPC's default) a second server binds a port another one serves, and the
    # kernel splits the connections between them (two `serve` of two repositories, one answering the other's)
    options = [*CHANNEL_OPTIONS, ("grpc.so_reuseport", 0)]
    server = grpc.aio.server(interceptors=[*interceptors, ErrorInterceptor(service.name)], options=options,
                             maximum_concurrent_rpcs=cfg.max_concurrent_rpcs or None)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    service.register(server)
    reflection.enable_server_reflection(
        [*service.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME], server)
    await _set_health(health, service, health_pb2.HealthCheckResponse.NOT_SERVING)
    address = bind(server, cfg.listen, credentials)
    http_server = metrics_server(cfg.metrics_port, cfg.metrics_host)
    await server.start()
    if service.start:
        await service.start()
    await _set_health(health, service, health_pb2.HealthCheckResponse.SERVING)
    return Running(server, address, http_server.server_port, health, service)


def write_ready_file(path: str, running: Running) -> None:
    """{address, metrics_port, pid, ...} as JSON, atomically: whoever started us waits for this file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump({"address": running.address, "metrics_port": running.metrics_port, "pid": os.getpid(),
                   **running.service.extra_ready}, fh)
    os.replace(tmp, path)


def checked_security(service: Service, cfg: ServerSettings) -> Security:
    """The server's TLS settings, checked at once: a missing file or a certificate without its key
    stops the service before it starts anything, with a message naming the file (never its contents)."""
    try:
        security = cfg.security()
        security.credentials()
    except errors.CodeindexError as exc:
        raise SystemExit(f"{service.name}: {exc}") from None
    return security


def main(service: Service, cfg: ServerSettings) -> None:
    """Run a service until SIGTERM/SIGINT, then shut it down gracefully."""
    logging.basicConfig(level=os.environ.get("CODEINDEX_LOG_LEVEL", "INFO"),
                        format=f"%(asctime)s {service.name} %(levelname)s %(message)s")
    security = checked_security(service, cfg)
    if service.prepare:
        service.prepare()
    asyncio.run(_serve(service, cfg, security))


async def _serve(service: Service, cfg: ServerSettings, security: Security) -> None:
    running = await start(service, cfg, security)
    log.info("serving %s on %s (%s), metrics on :%d", service.name, running.address, security.describe(),
             running.metrics_port)
    if cfg.ready_file:
        write_ready_file(cfg.ready_file, running)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watchdog = asyncio.create_task(_watch_parent(stop))
    await stop.wait()
    watchdog.cancel()
    log.info("shutting down %s (grace %.1fs)", service.name, cfg.grace_seconds)
    await running.shutdown(cfg.grace_seconds)


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
