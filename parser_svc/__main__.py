"""``python -m parser_svc``: run the parser service."""

from __future__ import annotations

import asyncio
import sys

from codeindex_common import config, server
from codeindex_common.pb import parser_pb2, parser_pb2_grpc

from .chunker import Limits
from .config import ParserConfig
from .parser import Parser
from .servicer import ParserServicer

SERVICE_NAME = parser_pb2.DESCRIPTOR.services_by_name["Parser"].full_name


def build(cfg: ParserConfig) -> tuple[server.Service, Parser]:
    parser = Parser(cfg.worker_count(), Limits(cfg.max_file_bytes, cfg.max_line_length, cfg.max_text_bytes))
    parser.start()  # worker processes exist before the gRPC server starts

    async def stop() -> None:
        await asyncio.to_thread(parser.close)

    service = server.Service(
        name="parser", service_names=[SERVICE_NAME],
        register=lambda s: parser_pb2_grpc.add_ParserServicer_to_server(
            ParserServicer(parser, cfg.max_in_flight), s),
        stop=stop)
    return service, parser


def main(argv: list[str] | None = None) -> None:
    cfg = config.load(ParserConfig, "parser", argv, description="codeindex parser service")
    service, _ = build(cfg)
    server.main(service, cfg.listen, cfg.metrics_port, cfg.ready_file, cfg.grace_seconds, cfg.metrics_host)


if __name__ == "__main__":
    main(sys.argv[1:])
