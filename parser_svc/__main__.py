"""``python -m parser_svc``: run the parser service."""

from __future__ import annotations

import asyncio
import sys

from codeindex_common import config, server

from .config import ParserConfig
from .parser import Parser
from .servicer import SERVICE_NAME, ParserServicer


def build(cfg: ParserConfig) -> tuple[server.Service, Parser]:
    parser = Parser(cfg.worker_count(), cfg.limits(), cfg.parse_timeout, cfg.worker_memory_mb,
                    cfg.group_below_bytes)
    parser.start()  # worker processes exist before the gRPC server starts

    async def stop() -> None:
        await asyncio.to_thread(parser.close)

    service = server.Service(
        name="parser", service_names=[SERVICE_NAME],
        register=ParserServicer(parser, cfg.max_in_flight).register,
        stop=stop)
    return service, parser


def main(argv: list[str] | None = None) -> None:
    cfg = config.load(ParserConfig, "parser", argv, description="codeindex parser service")
    security = server.service_security(cfg, "parser")
    service, _ = build(cfg)
    server.main(service, cfg.listen, cfg.metrics_port, cfg.ready_file, cfg.grace_seconds, cfg.metrics_host,
                cfg.max_concurrent_rpcs, security)


if __name__ == "__main__":
    main(sys.argv[1:])
