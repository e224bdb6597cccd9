"""``orchestrator index|search|status|serve``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time

from codeindex_common import config as configlib
from codeindex_common.errors import CodeindexError
from codeindex_common.model import DEFAULT_MODE, KINDS, MODES, Query

from .config import OrchestratorConfig
from .pipeline import Pipeline, Progress, search
from .session import internal_tls, make_stages, settings, stage_addresses

PREFIX = "orchestrator"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="orchestrator", description="codeindex: semantic code search over gRPC stages")
    sub = p.add_subparsers(dest="command", required=True)

    ix = sub.add_parser("index", help="index (or incrementally re-index) a repository")
    ix.add_argument("path", help="repository root")
    ix.add_argument("--json", action="store_true", help="print the summary as one JSON object (last line)")
    ix.add_argument("--reindex", action="store_true",
                    help="drop the index and build it again (needed to switch the embedding model)")

    se = sub.add_parser("search", help="search an index")
    se.add_argument("query")
    se.add_argument("--path", default=".", help="the indexed repository (default: .)")
    se.add_argument("-k", type=int, default=10, help="number of results (default: 10)")
    se.add_argument("--language", default="", help="only chunks of this language")
    se.add_argument("--glob", default="", dest="path_glob",
                    help="only files matching this glob (`*` within a directory, `**` across; "
                         "without `/` it matches file names anywhere), e.g. 'src/**/*.py'")
    se.add_argument("--kind", default="", choices=("",) + KINDS, help="only chunks of this kind")
    se.add_argument("--symbol", default="", help="only chunks with this symbol or qualified name")
    se.add_argument("--min-score", type=float, default=None,
                    help="drop results less similar than this cosine similarity (vector and hybrid modes)")
    se.add_argument("--mode", choices=MODES, default=DEFAULT_MODE,
                    help="vector (meaning), keyword (full text) or hybrid (both, fused; the default)")
    se.add_argument("--json", action="store_true", help="print results as a JSON list")

    st = sub.add_parser("status", help="what an index holds")
    st.add_argument("--path", default=".", help="the indexed repository (default: .)")
    st.add_argument("--json", action="store_true")

    sv = sub.add_parser("serve", help="serve the public gRPC API (Index, Search, Status)")
    sv.add_argument("--path", default=".", help="repository whose index a local store keeps (default: .)")

    for sp in (ix, se, st, sv):
        configlib.add_arguments(sp.add_argument_group("services"), OrchestratorConfig, PREFIX)
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

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=p.files_total, unit="file", desc="indexing", file=sys.stderr, disable=None)
        self.bar.n = p.files_done
        self.bar.set_postfix_str(live_view(p), refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


async def _index(cfg: OrchestratorConfig, root: str, addresses: dict[str, str], bar: _Bar, reindex: bool):
    stages = make_stages(cfg, addresses)
    try:
        return await Pipeline(stages, settings(cfg), bar).index(root, reindex=reindex)
    finally:
        await stages.close()


async def _search(cfg: OrchestratorConfig, addresses, query: Query):
    stages = make_stages(cfg, addresses)
    try:
        return await search(stages, query)
    finally:
        await stages.close()


async def _status(cfg: OrchestratorConfig, addresses):
    stages = make_stages(cfg, addresses)
    try:
        return await stages.store.stats()
    finally:
        await stages.close()


def cmd_index(cfg: OrchestratorConfig, args) -> int:
    root = os.path.abspath(args.path)
    if not os.path.isdir(root):
        raise CodeindexError(f"not a directory: {args.path}")
    bar = _Bar(enabled=True)
    if cfg.index_metrics_port >= 0:
        from prometheus_client import start_http_server

        http, _ = start_http_server(cfg.index_metrics_port, addr=cfg.metrics_host)
        print(f"orchestrator metrics on http://{cfg.metrics_host}:{http.server_port}/metrics", file=sys.stderr)
    with stage_addresses(cfg, root) as addresses:
        try:
            summary = asyncio.run(_index(cfg, root, addresses, bar, args.reindex))
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


def cmd_search(cfg: OrchestratorConfig, args) -> int:
    root = os.path.abspath(args.path)
    if not cfg.store_addr and not os.path.isdir(os.path.join(cfg.index_dir or os.path.join(root, ".codeindex"),
                                                             "lancedb")):
        raise CodeindexError(f"no index at {root}: run `orchestrator index {args.path}` first")
    query = Query(text=args.query, k=args.k, mode=args.mode, language=args.language, path_glob=args.path_glob,
                  kind=args.kind, symbol=args.symbol, min_score=args.min_score)
    query.validate()
    with stage_addresses(cfg, root, need_parser=False) as addresses:
        hits = asyncio.run(_search(cfg, addresses, query))
    if args.json:
        print(json.dumps([{
            "path": h.chunk.path, "start_line": h.chunk.start_line, "end_line": h.chunk.end_line,
            "symbol": h.chunk.symbol, "qualified_name": h.chunk.qualified_name, "kind": h.chunk.kind,
            "language": h.chunk.language, "score": round(h.score, 4), "snippet": h.snippet} for h in hits]))
    else:
        for h in hits:
            c = h.chunk
            print(f"{h.score:.3f}  {c.path}:{c.start_line}-{c.end_line}  {c.qualified_name or '-'} "
                  f"({c.kind}, {c.language})")
            for line in h.snippet.splitlines():
                print(f"        {line[:120]}")
    return 0


def cmd_status(cfg: OrchestratorConfig, args) -> int:
    root = os.path.abspath(args.path)
    with stage_addresses(cfg, root, need_parser=False) as addresses:
        stats = asyncio.run(_status(cfg, addresses))
    d = {"chunks": stats.chunks, "files": stats.files, "dim": stats.dim, "model_id": stats.model_id,
         "index_uri": stats.uri, "versions": stats.versions, "vector_index": stats.vector_index or "none (exact)"}
    print(json.dumps(d) if args.json else "\n".join(f"{k}: {v}" for k, v in d.items()))
    return 0


def cmd_serve(cfg: OrchestratorConfig, args) -> int:
    from codeindex_common import server
    from codeindex_common.pb import orchestrator_pb2, orchestrator_pb2_grpc

    from .servicer import OrchestratorServicer

    root = os.path.abspath(args.path)
    name = orchestrator_pb2.DESCRIPTOR.services_by_name["Orchestrator"].full_name
    with stage_addresses(cfg, root) as addresses:
        stages = None

        def register(srv) -> None:
            nonlocal stages
            stages = make_stages(cfg, addresses)
            orchestrator_pb2_grpc.add_OrchestratorServicer_to_server(
                OrchestratorServicer(stages, settings(cfg), addresses, allowed_roots(cfg, root)), srv)

        server.main(server.Service(name="orchestrator", service_names=[name], register=register),
                    cfg.listen, cfg.metrics_port, cfg.ready_file, metrics_host=cfg.metrics_host,
                    max_concurrent_rpcs=cfg.max_concurrent_rpcs, security=security(cfg))
    return 0


TOKEN_ENV = "CODEINDEX_ORCHESTRATOR_AUTH_TOKEN"


def security(cfg: OrchestratorConfig):
    """TLS files and the bearer token of the public API. The token comes from
    --auth-token-file or the environment, never from a flag."""
    from codeindex_common.server import Security

    token = os.environ.get(TOKEN_ENV, "")
    if cfg.auth_token_file:
        with open(cfg.auth_token_file, encoding="utf-8") as fh:
            token = fh.read().strip()
        if not token:
            raise CodeindexError(f"{cfg.auth_token_file} is empty: no token to require")
    return Security(cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca, token)


def allowed_roots(cfg: OrchestratorConfig, root: str) -> list[str]:
    """Where the public Index may read: --allowed-roots, else the served repository only."""
    roots = [r.strip() for r in cfg.allowed_roots.split(",") if r.strip()]
    return roots or [root]


COMMANDS = {"index": cmd_index, "search": cmd_search, "status": cmd_status, "serve": cmd_serve}


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
