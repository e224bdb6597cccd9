"""``python -m parser_svc``: run the parser service."""

from __future__ import annotations

import asyncio
import sys

from codeindex_common import config, server

from .config import ParserConfig
from .parser import Parser
from .servicer import SERVICE_NAME, ParserServicer


def build(cfg: ParserConfig) -> server.Service:
    """The worker processes start in ``prepare``: before the gRPC server exists."""
    parser = Parser(cfg.worker_count(), cfg.limits(), cfg.parse_timeout, cfg.worker_memory_mb,
                    cfg.group_below_bytes)

    async def stop() -> None:
        await asyncio.to_thread(parser.close)

    return server.Service(name="parser", service_names=[SERVICE_NAME],
                          register=ParserServicer(parser, cfg.max_in_flight).register, prepare=parser.start, stop=stop)


def main(argv: list[str] | None = None) -> None:
    cfg = config.load(ParserConfig, "parser", argv, description="codeindex parser service")
    server.main(build(cfg), cfg)


if __name__ == "__main__":
    main(sys.argv[1:])
