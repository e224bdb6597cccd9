"""Thin gRPC layer over :class:`parser_svc.parser.Parser`."""

from __future__ import annotations

import asyncio

import grpc

from codeindex_common import wire
from codeindex_common.pb import parser_pb2
from codeindex_common.streams import map_unordered, map_unordered_ready

from . import metrics
from .parser import Parser

SERVICE_NAME = parser_pb2.DESCRIPTOR.services_by_name["Parser"].full_name

# the files a ParsedBatch holds at most: those done together, up to this many
ANSWER_FILES = 64


class ParserServicer:
    def __init__(self, parser: Parser, max_in_flight: int):
        self.parser = parser
        self.max_in_flight = max_in_flight

    async def Parse(self, request_iterator, context):
        """Files go to workers as they arrive; each file's answer is sent back
        as soon as it is done (no per-batch barrier). The first request may
        carry the stream's chunk options."""
        async def files():
            async for req in request_iterator:
                yield req, req.options if req.HasField("options") else None

        metrics.STREAMS.inc()
        try:
            async for payload in map_unordered(files(), self._parser_for_stream(), self.max_in_flight):
                yield payload
        finally:
            metrics.STREAMS.dec()

    async def ParseMany(self, request_iterator, context):
        """Parse's, several files a message: each message's files go to the
        workers together, and the files done together are answered in one
        message (made of the workers' serialized answers as they are)."""
        async def files():
            options = None
            async for batch in request_iterator:
                if options is None and batch.HasField("options"):
                    options = batch.options
                for req in batch.files:
                    yield req, options

        metrics.STREAMS.inc()
        try:
            async for payloads in map_unordered_ready(files(), self._parser_for_stream(), self.max_in_flight,
                                                      ANSWER_FILES):
                yield b"".join(wire.field(1, p) for p in payloads)
        finally:
            metrics.STREAMS.dec()

    def _parser_for_stream(self):
        """What parses one file of a stream, (request, the stream's options so far) -> serialized
        ParseResponse: the limits come from the options the stream's first file has (loading a tokenizer
        blocks: off the event loop), and later files wait for them."""
        limits: asyncio.Future = asyncio.get_running_loop().create_future()
        seen = []

        async def parse_one(item: tuple[parser_pb2.ParseRequest, parser_pb2.ChunkOptions | None]) -> bytes:
            req, options = item
            if not seen:
                seen.append(True)
                try:
                    found = None
                    if options is not None:
                        found = await asyncio.to_thread(self.parser.limits_for, options.max_tokens,
                                                        options.tokenizer_json)
                    limits.set_result(found)
                except BaseException as exc:
                    limits.set_exception(exc)
                    raise
            parsed = await self.parser.parse(req.path, req.content, req.language, await limits)
            return parsed.payload

        return parse_one

    def register(self, server) -> None:
        """Responses are ParseResponse messages the workers already serialized (ParsedBatch: several of
        them, each framed as its field): the serializer passes their bytes through."""
        handlers = {
            "Parse": grpc.stream_stream_rpc_method_handler(
                self.Parse, request_deserializer=parser_pb2.ParseRequest.FromString, response_serializer=bytes),
            "ParseMany": grpc.stream_stream_rpc_method_handler(
                self.ParseMany, request_deserializer=parser_pb2.ParseBatch.FromString, response_serializer=bytes)}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))


