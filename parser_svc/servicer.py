"""Thin gRPC layer over :class:`parser_svc.parser.Parser`."""

from __future__ import annotations

import asyncio

import grpc

from codeindex_common.pb import parser_pb2
from codeindex_common.streams import map_unordered

from . import metrics
from .parser import Parser

SERVICE_NAME = parser_pb2.DESCRIPTOR.services_by_name["Parser"].full_name


class ParserServicer:
    def __init__(self, parser: Parser, max_in_flight: int):
        self.parser = parser
        self.max_in_flight = max_in_flight

    async def Parse(self, request_iterator, context):
        """Files go to workers as they arrive; each file's answer is sent back
        as soon as it is done (no per-batch barrier). The first request may
        carry the stream's chunk options."""
        metrics.STREAMS.inc()
        limits: asyncio.Future = asyncio.get_running_loop().create_future()
        seen = []

        async def parse_one(req: parser_pb2.ParseRequest) -> bytes:
            if not seen:  # the first request: later ones wait for its options
                seen.append(True)
                try:
                    found = None
                    if req.HasField("options"):  # loading a tokenizer blocks: off the event loop
                        found = await asyncio.to_thread(self.parser.limits_for, req.options.max_tokens,
                                                        req.options.tokenizer_json)
                    limits.set_result(found)
                except BaseException as exc:
                    limits.set_exception(exc)
                    raise
            parsed = await self.parser.parse(req.path, req.content, req.language, await limits)
            return parsed.payload

        try:
            async for payload in map_unordered(request_iterator, parse_one, self.max_in_flight):
                yield payload
        finally:
            metrics.STREAMS.dec()

    def register(self, server) -> None:
        """Responses are ParseResponse messages the workers already serialized:
        the serializer passes their bytes through."""
        handler = grpc.stream_stream_rpc_method_handler(
            self.Parse, request_deserializer=parser_pb2.ParseRequest.FromString, response_serializer=bytes)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, {"Parse": handler}),))
