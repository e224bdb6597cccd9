"""The interceptors every server runs: domain exceptions to status codes (and
a count of every RPC), requests that do not parse to INVALID_ARGUMENT, and
the bearer token of a server that asks for one."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import time

import grpc
from google.protobuf.message import DecodeError
from prometheus_client import Counter, Histogram

from . import errors


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
