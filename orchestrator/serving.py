"""The long-running commands: ``serve`` (the public API), ``watch`` (a live
index) and ``mcp`` (both, for a coding agent, over the Model Context
Protocol). Each runs a :class:`orchestrator.host.Host` until SIGTERM or
SIGINT, then shuts it down in order (front ends, the API, the stages, the
lock)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time

from codeindex_common.model import IndexSummary

from .config import OrchestratorConfig
from .host import Host
from .watch import Watcher


def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def serve(cfg: OrchestratorConfig, root: str, allowed_roots: list[str]) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop)
    async with Host(cfg, root, "serve", allowed_roots):
        await stop.wait()


def report_run(summary: IndexSummary, seconds: float, as_json: bool) -> None:
    """A line for each watched run: on stdout as JSON, or for a person on stderr."""
    if as_json:
        print(json.dumps({**summary.to_dict(), "wall_seconds": round(seconds, 3)}), flush=True)
    else:
        print(f"{time.strftime('%H:%M:%S')} indexed {summary.files_indexed} files, removed {summary.files_removed} "
              f"({summary.chunks_embedded} chunks embedded) in {seconds:.2f}s", file=sys.stderr, flush=True)


async def start_watching(watcher: Watcher, timeout: float = 30.0) -> asyncio.Task:
    """The watcher's task, once its watch is in place: nothing saved from now on is missed, and what was
    saved before is for the full run that the caller starts next."""
    task = asyncio.create_task(watcher.run())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(watcher.ready.wait(), timeout)
    return task


def watcher_for(host: Host, on_run) -> Watcher:
    return Watcher(host.root, lambda paths: host.index(paths, maintain=False), host.maintain, host.ignores,
                   on_run=on_run)


async def watch(cfg: OrchestratorConfig, root: str, as_json: bool) -> None:
    """Index the repository (what changed while nobody watched), then every change as it happens."""
    stop = asyncio.Event()
    stop_on_signals(stop)
    async with Host(cfg, root, "watch", ephemeral_api=True) as host:
        print(f"watching {host.root} (the index's API at {host.address}); Ctrl-C stops", file=sys.stderr,
              flush=True)
        watcher = watcher_for(host, lambda summary, seconds: report_run(summary, seconds, as_json))
        task = await start_watching(watcher)
        started = time.perf_counter()
        report_run(await host.index(), time.perf_counter() - started, as_json)
        await stop.wait()
        watcher.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await task
