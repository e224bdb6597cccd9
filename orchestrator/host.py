"""A warm stack for one repository: what ``serve``, ``watch`` and ``mcp`` run.

A :class:`Host` holds the index's lock (one writer per index), keeps the
three stages up (started locally and supervised, or given by address) with
the model loaded, and serves the public gRPC API (Index, Search, Status,
FindSymbol) so that the CLI and other front ends on this machine go through
it instead of starting their own services. Its own front ends (the watcher,
the MCP server) call it directly. Index runs, whoever asks for them, run one
at a time."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time

from codeindex_common import server
from codeindex_common.launcher import LocalServices
from codeindex_common.model import Hit, IndexSummary, Query, Stats, SymbolHit, SymbolQuery
from codeindex_common.pb import orchestrator_pb2, orchestrator_pb2_grpc

from .config import ApiSettings, OrchestratorConfig
from .owner import IndexLock, Owner, current_owner, held_by
from .pipeline import Pipeline, find_symbol, search
from .servicer import OrchestratorServicer
from .session import index_dir, make_stages, settings, stat_cache_path
from .walker import IgnoreCache

log = logging.getLogger("codeindex.orchestrator")

API_NAME = orchestrator_pb2.DESCRIPTOR.services_by_name["Orchestrator"].full_name


class Host:
    """``async with Host(cfg, root, "watch") as host:``; then ``host.index()``, ``host.search(q)``..."""

    def __init__(self, cfg: OrchestratorConfig, root: str, command: str, allowed_roots: list[str] | None = None,
                 ephemeral_api: bool = False):
        self.cfg, self.root, self.command = cfg, os.path.abspath(root), command
        self.index_dir = index_dir(cfg, self.root)
        self.allowed_roots = allowed_roots or [self.root]
        self.ephemeral_api = ephemeral_api  # listen on a port the OS picks (watch, mcp), unless one was given
        self.lock: IndexLock | None = None
        self.local: LocalServices | None = None
        self.stages = None
        self.running: server.Running | None = None
        self.servicer: OrchestratorServicer | None = None
        self.runs = asyncio.Lock()  # one index run at a time, whoever asks (the API, the watcher, MCP)
        self.ignores = IgnoreCache(self.root)

    async def __aenter__(self) -> Host:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    # ------------------------------------------------------------------ start and stop

    async def start(self) -> None:
        cfg = self.cfg
        security = cfg.security()
        security.credentials()  # files that do not work: said before anything starts
        if not cfg.store_addr:  # the index is a local directory: one writer
            self.lock = IndexLock(self.index_dir)
            if not self.lock.acquire(self.command):
                raise held_by(self.index_dir, current_owner(self.index_dir) or Owner(0, "(gone)"))
        addresses = cfg.given_addresses()
        missing = [stage for stage, addr in addresses.items() if not addr]
        if missing:
            self.local = LocalServices(missing, self.index_dir, cfg.start_timeout)
            await asyncio.to_thread(self.local.start)
            addresses.update({stage: self.local.address(stage) for stage in missing})
        self.stages = make_stages(cfg, addresses)
        self.servicer = servicer = OrchestratorServicer(
            self.stages, settings(cfg), addresses, self.allowed_roots, index_lock=self.runs,
            stat_cache=stat_cache_path(cfg, self.root))
        service = server.Service(name="orchestrator", service_names=[API_NAME],
                                 register=lambda srv: orchestrator_pb2_grpc.add_OrchestratorServicer_to_server(
                                     servicer, srv))
        self.running = await server.start(service, self._api_settings(), security)
        if self.lock is not None:
            self.lock.publish(Owner(os.getpid(), self.command, self.running.address,
                                    plaintext=not (security.cert_file or security.token), started=time.time()))
        if cfg.ready_file:
            server.write_ready_file(cfg.ready_file, self.running)
        log.info("%s: the API for %s on %s", self.command, self.root, self.running.address)

    def _api_settings(self) -> ApiSettings:
        cfg = self.cfg
        if not self.ephemeral_api:
            return cfg
        defaults = ApiSettings()
        return dataclasses.replace(cfg, listen="127.0.0.1:0" if cfg.listen == defaults.listen else cfg.listen,
                                   metrics_port=0 if cfg.metrics_port == defaults.metrics_port else cfg.metrics_port)

    async def stop(self) -> None:
        if self.running is not None:
            await self.running.shutdown(self.cfg.grace_seconds)
            self.running = None
        if self.stages is not None:
            await self.stages.close()
            self.stages = None
        if self.local is not None:
            await asyncio.to_thread(self.local.stop)
            self.local = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    @property
    def address(self) -> str:
        return self.running.address if self.running else ""

    # ------------------------------------------------------------------ what front ends ask

    @property
    def last_run_at(self) -> float:
        """When the last index run ended, the API's or one asked of this Host (Unix time; 0: none yet)."""
        return self.servicer.last_run_at if self.servicer is not None else 0.0

    async def index(self, paths: set[str] | None = None, reindex: bool = False, maintain: bool = True,
                    on_progress=None) -> IndexSummary:
        """An index run over the repository (or only ``paths``), after any run already going."""
        async with self.runs:
            summary = await Pipeline(self.stages, settings(self.cfg), on_progress, self.servicer.stat_cache).index(
                self.root, reindex=reindex, paths=paths, maintain=maintain, ignores=self.ignores)
        self.servicer.last_run_at = time.time()
        return summary

    async def maintain(self) -> Stats:
        """Compaction and index refresh (after a burst of watched runs, once the repository is quiet): the
        indexes then cover every row, also when the upkeep of a large table would wait (docs/SCALE.md)."""
        async with self.runs:
            await self.stages.store.optimize(quiet=True)
            return await self.stages.store.stats()

    async def search(self, q: Query) -> list[Hit]:
        return await search(self.stages, q, self.servicer.model_check)

    async def find_symbol(self, q: SymbolQuery) -> list[SymbolHit]:
        return await find_symbol(self.stages, q)

    async def stats(self) -> Stats:
        return await self.stages.store.stats()
