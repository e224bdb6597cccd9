"""``orchestrator index|search|status|serve|watch|mcp``: each subcommand shows the
options it uses, and the connection settings (the stages' addresses,
internal TLS, deadlines and retries) in a group of their own; every setting
is also a ``CODEINDEX_ORCHESTRATOR_*`` variable."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import signal
import sys
import time

from codeindex_common import config as configlib
from codeindex_common.errors import CodeindexError
from codeindex_common.model import DEFAULT_MODE, KINDS, MODES, IndexSummary, ProgressUpdate, Query, SymbolQuery

from .config import ApiSettings, Connection, McpSettings, OrchestratorConfig, RunSettings
from . import present
from .pipeline import ModelCheck, Pipeline, Progress, find_symbol, search
from .clients import ApiClient
from .owner import IndexLock, Owner, current_owner, held_by
from .session import (index_dir, index_stages, internal_tls, make_stages, owner_api, serving_owner, settings,
                      stage_addresses, stat_cache_path)

PREFIX = "orchestrator"


def _fields(*classes: type) -> list[str]:
    return [f.name for cls in classes for f in dataclasses.fields(cls)]


CONNECTION = _fields(Connection)
RUN = _fields(RunSettings)
RUN_SERVED = [n for n in RUN if n != "index_metrics_port"]  # a server's runs: its metrics are the server's own
EPHEMERAL_API = ("the public API (others on this machine search through it; unless --listen and --metrics-port are "
                 "given, on ports the OS picks, not the defaults below)")
# which setting groups each subcommand shows (besides the connection group)
GROUPS: dict[str, list[tuple[str, list[str]]]] = {
    "index": [("index run", [*RUN, "metrics_host"])],
    "search": [],
    "status": [],
    "serve": [("index runs (the API's Index)", RUN_SERVED),
              ("the public API", _fields(ApiSettings))],
    "watch": [("index runs", RUN_SERVED), (EPHEMERAL_API, _fields(ApiSettings))],
    "mcp": [("the MCP server", _fields(McpSettings)), ("index runs", RUN_SERVED),
            (EPHEMERAL_API, _fields(ApiSettings))],
}


def _options(sp: argparse.ArgumentParser, command: str) -> None:
    for title, names in GROUPS[command]:
        configlib.add_arguments(sp.add_argument_group(title), OrchestratorConfig, PREFIX, names)
    configlib.add_arguments(sp.add_argument_group(
        "connection", "the stages: their addresses (empty: started locally), TLS to them, deadlines, retries"),
        OrchestratorConfig, PREFIX, CONNECTION)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="orchestrator", description="codeindex: semantic code search over gRPC stages")
    sub = p.add_subparsers(dest="command", required=True)

    ix = sub.add_parser("index", help="index (or incrementally re-index) a repository")
    ix.add_argument("path", help="repository root")
    ix.add_argument("--json", action="store_true", help="print the summary as one JSON object (last line)")
    ix.add_argument("--reindex", action="store_true",
                    help="drop the index and build it again (needed to switch the embedding model)")

    se = sub.add_parser("search", help="search an index (or, with --symbol and no query, list a name's definitions)")
    se.add_argument("query", nargs="?", default="",
                    help="what to find, in plain English or as a name; leave out to list the --symbol's definitions")
    se.add_argument("--path", default=".", help="the indexed repository (default: .)")
    se.add_argument("-k", type=int, default=10, help="number of results (default: 10)")
    se.add_argument("--language", default="", help="only chunks of this language")
    se.add_argument("--glob", default="", dest="path_glob",
                    help="only files matching this glob (`*` within a directory, `**` across; "
                         "without `/` it matches file names anywhere), e.g. 'src/**/*.py'")
    se.add_argument("--kind", default="", choices=("",) + KINDS, help="only chunks of this kind")
    se.add_argument("--symbol", default="",
                    help="with a query: only chunks holding a definition of this name (bare or qualified); "
                         "without one: every definition of the name, with its kind and path:lines")
    se.add_argument("--min-score", type=float, default=None,
                    help="drop results less similar than this cosine similarity (vector and hybrid modes)")
    se.add_argument("--mode", choices=MODES, default=DEFAULT_MODE,
                    help="hybrid (meaning, words and names through the ranking stage; the default), vector "
                         "(meaning alone) or keyword (words alone)")
    se.add_argument("--context", type=int, default=0, metavar="N",
                    help="show N lines of the file before and after each snippet")
    se.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                    help="highlight the query's words (auto: on a terminal, unless NO_COLOR is set)")
    se.add_argument("--json", action="store_true", help="print results as a JSON list, every field of each")

    st = sub.add_parser("status", help="what an index holds")
    st.add_argument("--path", default=".", help="the indexed repository (default: .)")
    st.add_argument("--json", action="store_true")

    sv = sub.add_parser("serve", help="serve the public gRPC API (Index, Search, Status, FindSymbol)")
    sv.add_argument("--path", default=".", help="repository whose index a local store keeps (default: .)")

    wa = sub.add_parser("watch", help="keep a repository's index live: index it, then every change as it is saved")
    wa.add_argument("path", help="repository root")
    wa.add_argument("--json", action="store_true", help="print each run's summary as a JSON line")

    mc = sub.add_parser("mcp", help="serve a coding agent over the Model Context Protocol (stdio, or --transport "
                                    "http), with a live, warm index")
    mc.add_argument("--path", default=".", help="the repository (default: .)")

    for command, sp in (("index", ix), ("search", se), ("status", st), ("serve", sv), ("watch", wa), ("mcp", mc)):
        _options(sp, command)
    return p


def live_view(p: Progress) -> str:
    """Per-stage rates and the bottleneck, for the progress bar."""
    t = max(p.elapsed, 1e-9)

    def active(stage: str) -> float:  # a stage's rate over the time it had work
        return max(min(t, p.waits.finished.get(stage, t)), 1e-9)

    return (f"parse {p.files_parsed / active('parse'):.0f} files/s | "
            f"embed {p.chunks_embedded / active('embed'):.0f} chunks/s | "
            f"write {p.chunks_done / t:.0f} chunks/s | bottleneck: {p.waits.bottleneck(t)}")


class _Bar:
    """A tqdm progress bar over files, with chunk rates in its postfix."""

    def __init__(self, enabled: bool):
        self.bar = None
        self.enabled = enabled
        self.started = time.perf_counter()

    def __call__(self, p: Progress | ProgressUpdate) -> None:
        """A run's progress (a ProgressUpdate when a server runs it: files only, no rates)."""
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=p.files_total, unit="file", desc="indexing", file=sys.stderr, disable=None)
        self.bar.total = p.files_total
        self.bar.n = p.files_done
        if isinstance(p, Progress):
            self.bar.set_postfix_str(live_view(p), refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


async def _with_stages(cfg: OrchestratorConfig, addresses: dict[str, str], use):
    """``use(stages)`` with clients of the stages, closed after."""
    stages = make_stages(cfg, addresses)
    try:
        return await use(stages)
    finally:
        await stages.close()


def cmd_index(cfg: OrchestratorConfig, args) -> int:
    root = os.path.abspath(args.path)
    if not os.path.isdir(root):
        raise CodeindexError(f"not a directory: {args.path}")
    bar = _Bar(enabled=True)
    if cfg.index_metrics_port >= 0:
        from codeindex_common.server import metrics_server

        http = metrics_server(cfg.index_metrics_port, cfg.metrics_host)
        print(f"orchestrator metrics on http://{cfg.metrics_host}:{http.server_port}/metrics", file=sys.stderr)
    try:
        summary = _index(cfg, root, args.reindex, bar)
    finally:
        bar.close()
    d = summary.to_dict()
    if args.json:
        print(json.dumps(d))
    else:
        skipped = ", ".join(f"{n} {r}" for r, n in sorted(d["files_skipped"].items())) or "none"
        print(f"indexed {d['files_indexed']} files ({d['files_unchanged']} unchanged, {d['files_removed']} removed, "
              f"skipped: {skipped}) in {d['seconds']:.1f}s\n"
              f"chunks: {d['chunks_total']} in changed files, {d['chunks_embedded']} embedded, "
              f"{d['chunks_reused']} reused; the index now holds {d['index_chunks']} chunks of "
              f"{d['index_files']} files")
    return 0


def _index(cfg: OrchestratorConfig, root: str, reindex: bool, bar: _Bar) -> IndexSummary:
    """A run of its own, holding the index's lock; or, when a server holds the index, a run by that server."""
    if cfg.store_addr:  # the store is given by address: whoever runs it keeps its writers apart
        return _own_run(cfg, root, reindex, bar)
    where = index_dir(cfg, root)
    owner = current_owner(where)
    if owner is not None:
        if not (owner.address and owner.plaintext):
            raise held_by(where, owner)
        print(f"the index is held by {owner.describe()}: it runs this index", file=sys.stderr)
        return asyncio.run(_via_api(owner.address, lambda api: api.index(root, reindex, bar)))
    with IndexLock(where) as lock:
        if not lock.acquire("index"):
            raise held_by(where, current_owner(where) or Owner(0, "(gone)"))
        return _own_run(cfg, root, reindex, bar)


def _own_run(cfg: OrchestratorConfig, root: str, reindex: bool, bar: _Bar) -> IndexSummary:
    async def run() -> IndexSummary:
        async with index_stages(cfg, root) as stages:
            every_stage_local = not any(cfg.given_addresses().values())  # the marker vouches for those alone
            return await Pipeline(stages, settings(cfg), bar, stat_cache_path(cfg, root),
                                  settle=every_stage_local).index(root, reindex=reindex)

    return asyncio.run(run())


async def _via_api(address: str, use):
    api = ApiClient(address)
    try:
        return await use(api)
    finally:
        await api.close()


def _need_index(cfg: OrchestratorConfig, root: str, path: str) -> None:
    """A local index must exist before a command reads it (starting a store would make an empty one)."""
    where = index_dir(cfg, root)
    if not cfg.store_addr and not os.path.isdir(os.path.join(where, "lancedb")):
        given = f" --index-dir {cfg.index_dir}" if cfg.index_dir else ""
        raise CodeindexError(f"no index in {where} (for {root}): run `orchestrator index {path}{given}` first")


def cmd_search(cfg: OrchestratorConfig, args) -> int:
    root = os.path.abspath(args.path)
    _need_index(cfg, root, args.path)
    if args.context < 0:
        raise CodeindexError(f"--context must be 0 or more, not {args.context}")
    color = present.use_color(args.color)
    if not args.query.strip() and args.symbol:
        return _definitions(cfg, root, SymbolQuery(args.symbol, args.language, args.kind, args.path_glob,
                                                   limit=max(args.k, 100)), args.json, color)
    if not args.query.strip():
        raise CodeindexError("search needs a query (or --symbol NAME to list a name's definitions)")
    query = Query(text=args.query, k=args.k, mode=args.mode, language=args.language, path_glob=args.path_glob,
                  kind=args.kind, symbol=args.symbol, min_score=args.min_score)  # checked here, before any start
    if api := owner_api(cfg, root):  # a server holds the index, warm: it answers
        hits = asyncio.run(_via_api(api, lambda c: c.search(query)))
    else:
        with stage_addresses(cfg, root, need_parser=False) as addresses:
            hits = asyncio.run(_with_stages(cfg, addresses,
                                            lambda stages: search(stages, query, ModelCheck())))
    if args.json:
        print(json.dumps([h.to_dict() for h in hits]))
    else:
        print(present.format_hits(hits, query.text, root, args.context, color))
    return 0


def _definitions(cfg: OrchestratorConfig, root: str, q: SymbolQuery, as_json: bool, color: bool) -> int:
    if api := owner_api(cfg, root):
        found = asyncio.run(_via_api(api, lambda c: c.find_symbol(q)))
    else:
        with stage_addresses(cfg, root, need_parser=False, need_embedder=False) as addresses:
            found = asyncio.run(_with_stages(cfg, addresses, lambda stages: find_symbol(stages, q)))
    if as_json:
        print(json.dumps([h.to_dict() for h in found]))
    else:
        print(present.format_definitions(found, q.name, color))
    return 0


def cmd_status(cfg: OrchestratorConfig, args) -> int:
    root = os.path.abspath(args.path)
    if owner := serving_owner(cfg, root):
        stats, last_run = asyncio.run(_via_api(owner.address, lambda c: c.status()))
        d = {**stats.to_dict(), "served_by": owner.describe(),
             "last_run": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last_run)) if last_run else "none yet"}
    else:
        _need_index(cfg, root, args.path)
        with stage_addresses(cfg, root, need_parser=False, need_embedder=False) as addresses:
            stats = asyncio.run(_with_stages(cfg, addresses, lambda stages: stages.store.stats()))
        d = stats.to_dict()
    print(json.dumps(d) if args.json else "\n".join(f"{k}: {v}" for k, v in d.items()))
    return 0


def cmd_serve(cfg: OrchestratorConfig, args) -> int:
    from . import serving

    root = os.path.abspath(args.path)
    asyncio.run(serving.serve(cfg, root, allowed_roots(cfg, root)))
    return 0


def cmd_watch(cfg: OrchestratorConfig, args) -> int:
    from . import serving

    root = os.path.abspath(args.path)
    if not os.path.isdir(root):
        raise CodeindexError(f"not a directory: {args.path}")
    asyncio.run(serving.watch(cfg, root, args.json))
    return 0


def cmd_mcp(cfg: OrchestratorConfig, args) -> int:
    from . import mcp_server, serving

    root = os.path.abspath(args.path)
    if not os.path.isdir(root):
        raise CodeindexError(f"not a directory: {args.path}")
    if cfg.transport not in ("stdio", "http"):
        raise CodeindexError(f"--transport is stdio or http, not {cfg.transport!r}")
    token = cfg.mcp_token()
    if cfg.transport == "http" and not token:
        raise CodeindexError("the http transport needs a bearer token: --mcp-token-file FILE, or the environment "
                             "variable CODEINDEX_ORCHESTRATOR_MCP_TOKEN")

    async def run() -> None:
        stop = asyncio.Event()
        serving.stop_on_signals(stop)
        await mcp_server.run(cfg, root, cfg.transport, cfg.watch, cfg.http_port, token, stop=stop,
                             on_listening=lambda url: print(f"MCP over streamable HTTP at {url}", file=sys.stderr,
                                                            flush=True))

    asyncio.run(run())
    return 0


def allowed_roots(cfg: OrchestratorConfig, root: str) -> list[str]:
    """Where the public Index may read: --allowed-roots, else the served repository only."""
    roots = [r.strip() for r in cfg.allowed_roots.split(",") if r.strip()]
    return roots or [root]


COMMANDS = {"index": cmd_index, "search": cmd_search, "status": cmd_status, "serve": cmd_serve,
            "watch": cmd_watch, "mcp": cmd_mcp}


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM ends a run like Ctrl-C: local services are stopped on the way out


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    logging.basicConfig(level=os.environ.get("CODEINDEX_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s orchestrator %(levelname)s %(message)s")
    args = _parser().parse_args(argv)
    try:
        cfg = configlib.from_namespace(OrchestratorConfig, PREFIX, args)
        internal_tls(cfg)  # TLS files missing or incomplete: said before any service starts
        return COMMANDS[args.command](cfg, args)
    except CodeindexError as exc:
        print(f"orchestrator: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("orchestrator: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
