"""Thin gRPC layer over :class:`parser_svc.parser.Parser`."""

from __future__ import annotations

from codeindex_common.pb import parser_pb2, parser_pb2_grpc
from codeindex_common.streams import map_unordered

from . import metrics
from .parser import Parser


class ParserServicer(parser_pb2_grpc.ParserServicer):
    def __init__(self, parser: Parser, max_in_flight: int):
        self.parser = parser
        self.max_in_flight = max_in_flight

    async def _parse_one(self, req: parser_pb2.ParseRequest) -> parser_pb2.ParseResponse:
        result = await self.parser.parse(req.path, req.content, req.language)
        return parser_pb2.ParseResponse(
            path=result.path, language=result.language, chunks=[c.to_pb() for c in result.chunks],
            skip_reason=result.skip_reason, detail=result.detail)

    async def Parse(self, request_iterator, context):
        """Files go to workers as they arrive; each file's chunks are sent
        back as soon as it is done (no per-batch barrier)."""
        metrics.STREAMS.inc()
        try:
            async for response in map_unordered(request_iterator, self._parse_one, self.max_in_flight):
                yield response
        finally:
            metrics.STREAMS.dec()
