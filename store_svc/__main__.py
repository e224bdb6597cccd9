"""``python -m store_svc``: run the store service."""

from __future__ import annotations

import asyncio
import sys

from codeindex_common import config, server
from codeindex_common.pb import store_pb2, store_pb2_grpc

from .config import StoreConfig
from .servicer import StoreServicer
from .store import VectorStore

SERVICE_NAME = store_pb2.DESCRIPTOR.services_by_name["Store"].full_name


def build(cfg: StoreConfig) -> server.Service:
    servicer = StoreServicer(None, cfg.flush_rows, cfg.flush_ms)  # type: ignore[arg-type]

    async def start() -> None:
        servicer.store = await asyncio.to_thread(VectorStore, cfg.uri)

    return server.Service(
        name="store", service_names=[SERVICE_NAME],
        register=lambda s: store_pb2_grpc.add_StoreServicer_to_server(servicer, s), start=start)


def main(argv: list[str] | None = None) -> None:
    cfg = config.load(StoreConfig, "store", argv, description="codeindex store service")
    server.main(build(cfg), cfg.listen, cfg.metrics_port, cfg.ready_file, cfg.grace_seconds, cfg.metrics_host)


if __name__ == "__main__":
    main(sys.argv[1:])
