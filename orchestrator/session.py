"""Connect to the stages of one run: running services where addresses are
configured, local child processes (the embedded default) where not."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator, Iterator

from codeindex_common.errors import CodeindexError
from codeindex_common.launcher import LocalServices
from codeindex_common.tls import ClientTLS

from .clients import Stages
from .config import OrchestratorConfig, RunSettings
from .owner import Owner, current_owner


def index_dir(cfg: OrchestratorConfig, repo: str) -> str:
    return os.path.abspath(cfg.index_dir or os.path.join(repo, ".codeindex"))


def stat_cache_path(cfg: OrchestratorConfig, repo: str) -> str:
    """Where the runs over ``repo`` keep each file's stat and hash (orchestrator.statcache): in the index
    directory, also when every stage is given (only this file is written there then)."""
    return os.path.join(index_dir(cfg, repo), "stat-cache")


def settings(cfg: OrchestratorConfig) -> RunSettings:
    """The run group of the orchestrator's settings."""
    return RunSettings(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(RunSettings)})


@contextlib.contextmanager
def stage_addresses(cfg: OrchestratorConfig, repo: str, need_parser: bool = True,
                    need_embedder: bool = True) -> Iterator[dict[str, str]]:
    """Addresses of the stages needed (parser, embed, store); starts the missing ones locally."""
    addresses = cfg.given_addresses()
    if not need_parser:
        addresses.pop("parser")
    if not need_embedder:
        addresses.pop("embed")
    missing = [stage for stage, addr in addresses.items() if not addr]
    if not missing:
        yield addresses
        return
    with LocalServices(missing, index_dir(cfg, repo), cfg.start_timeout) as local:
        yield {**addresses, **{stage: local.address(stage) for stage in missing}}


def serving_owner(cfg: OrchestratorConfig, repo: str) -> Owner | None:
    """The live server holding ``repo``'s local index (``serve``, ``watch``, ``mcp``), when this machine
    can use its public API as it is (plain text, no token)."""
    if cfg.store_addr:
        return None
    owner = current_owner(index_dir(cfg, repo), wait=0.5)
    return owner if owner is not None and owner.address and owner.plaintext else None


def owner_api(cfg: OrchestratorConfig, repo: str) -> str:
    """The address of that server's API, or ""."""
    owner = serving_owner(cfg, repo)
    return owner.address if owner is not None else ""


def internal_tls(cfg: OrchestratorConfig) -> ClientTLS:
    """TLS to the stages started apart (--internal-tls-*); off when no file is given."""
    tls = ClientTLS(cfg.internal_tls_ca, cfg.internal_tls_cert, cfg.internal_tls_key, cfg.internal_tls_server_name)
    if tls.server_name and not tls.enabled:
        raise CodeindexError("--internal-tls-server-name needs TLS: give --internal-tls-ca")
    if tls.enabled:
        tls.credentials()  # the files are there and complete, before anything starts
    return tls


def make_stages(cfg: OrchestratorConfig, addresses: dict[str, str], local: LocalServices | None = None) -> Stages:
    """Clients of the stages: TLS (when configured) to those given by address; the ones started locally
    (the embedded default, on unix sockets) are plain text."""
    tls = internal_tls(cfg)
    return Stages(addresses.get("parser", ""), addresses.get("embed", ""), addresses["store"], cfg.rpc_timeout,
                  cfg.retry_seconds,
                  {stage: tls for stage, addr in cfg.given_addresses().items() if addr and tls.enabled}, local)


@contextlib.asynccontextmanager
async def index_stages(cfg: OrchestratorConfig, repo: str) -> AsyncIterator[Stages]:
    """The stages of one ``orchestrator index`` run of its own. Those not given by address are local child
    processes, none started yet: the run spawns the embedder and the store as soon as it knows it needs them
    (at once, unless the last run's marker may answer for it: orchestrator.settled) and the parser when a
    file needs parsing. It waits for each when it first needs it, so that its walk overlaps their start, and
    stops the parser and embedder once its stream is over (Pipeline.index)."""
    addresses = cfg.given_addresses()
    missing = [stage for stage, addr in addresses.items() if not addr]
    local = LocalServices(missing, index_dir(cfg, repo), cfg.start_timeout, lazy=missing) if missing else None
    try:
        if local is not None:
            await asyncio.to_thread(local.start, False)
            addresses.update({stage: local.address(stage) for stage in missing})
        stages = make_stages(cfg, addresses, local)
        try:
            yield stages
        finally:
            await stages.close()
    finally:
        if local is not None:
            await asyncio.to_thread(local.stop)
