"""``python -m store_svc``: run the store service."""

from __future__ import annotations

import os

# Before numpy loads OpenBLAS: its threads (the exact vector search over the rows held in memory is a numpy
# product) spin for about 0.1 s after each product by default, as good as a core busy after every search on a
# 2-core machine, under the next query's embedding and search; 2^4 cycles instead. Through the API, one client:
# p50 26.2 / 26.6 ms against 28.4 / 30.7, p99 36 against 43-50 (docs/STORE.md, "Rows held in memory").
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import asyncio
import json
import sys
import time

from codeindex_common import config, server
from codeindex_common.pb import store_pb2, store_pb2_grpc

from .config import StoreConfig
from .servicer import StoreServicer
from .store import StoreSettings, VectorStore

SERVICE_NAME = store_pb2.DESCRIPTOR.services_by_name["Store"].full_name


def build(cfg: StoreConfig) -> server.Service:
    servicer = StoreServicer(None, cfg.flush_rows, cfg.flush_ms, cfg.write_concurrency)
    settings = StoreSettings(ann_min_rows=cfg.ann_min_rows, ann_index=cfg.ann_index,
                             keep_versions_seconds=cfg.keep_versions_seconds, upkeep_full_rows=cfg.upkeep_full_rows,
                             upkeep_unindexed_share=cfg.upkeep_unindexed_share,
                             upkeep_max_versions=cfg.upkeep_max_versions,
                             consistency_seconds=cfg.consistency_seconds, index_cache_mb=cfg.index_cache_mb,
                             metadata_cache_mb=cfg.metadata_cache_mb, resident_rows=cfg.resident_rows)
    options = storage_options(cfg)
    background: list[asyncio.Task] = []

    async def start() -> None:
        servicer.store = await asyncio.to_thread(VectorStore, cfg.uri, options, settings)
        servicer.last_write = time.monotonic()  # idle from now on
        if cfg.upkeep_idle_s > 0:
            background.append(asyncio.create_task(servicer.upkeep_when_idle(cfg.upkeep_idle_s)))

    async def stop() -> None:
        for task in background:
            task.cancel()

    return server.Service(
        name="store", service_names=[SERVICE_NAME],
        register=lambda s: store_pb2_grpc.add_StoreServicer_to_server(servicer, s), start=start, stop=stop)


def storage_options(cfg: StoreConfig) -> dict[str, str]:
    """--storage-options (key=value,...) with --storage-options-file (JSON) over it."""
    options: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in cfg.storage_options.split(","))):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"store: --storage-options wants key=value pairs, got {pair!r}")
        options[key.strip()] = value.strip()
    if cfg.storage_options_file:
        with open(cfg.storage_options_file, encoding="utf-8") as fh:
            extra = json.load(fh)
        if not isinstance(extra, dict):
            raise SystemExit(f"store: {cfg.storage_options_file} must hold a JSON object")
        options.update({str(k): str(v) for k, v in extra.items()})
    return options


def main(argv: list[str] | None = None) -> None:
    cfg = config.load(StoreConfig, "store", argv, description="codeindex store service")
    server.main(build(cfg), cfg)


if __name__ == "__main__":
    main(sys.argv[1:])
