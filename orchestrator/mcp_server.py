"""``orchestrator mcp``: codeindex for a coding agent, over the Model Context
Protocol (the official ``mcp`` SDK), on stdio or streamable HTTP.

The server is a warm :class:`orchestrator.host.Host` (the stages up, the
model loaded, the index watched and kept live unless ``--no-watch``), so a
search costs milliseconds, not a start-up. When another server already
holds the repository's index (``serve``, ``watch``, another ``mcp``), this
one goes through it: one writer per index.

Tools (each with an input schema, structured output and a short text):
``search_code``, ``find_symbol``, ``index_status``, ``reindex`` and
``read_code``. A bad argument, or a stage that fails, is a tool error with a
message that says what to send or what failed; the server keeps serving."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import socket
import stat
import time
from typing import Annotated, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel, Field

from codeindex_common.errors import CodeindexError, FailedPrecondition
from codeindex_common.model import MAX_K, Hit, Query, SymbolHit, SymbolQuery

from .clients import ApiClient, StageError
from .config import OrchestratorConfig
from .host import Host
from .serving import start_watching, watcher_for
from .session import serving_owner
from .walker import walk

log = logging.getLogger("codeindex.orchestrator")

MAX_READ_LINES = 400
Mode = Literal["hybrid", "vector", "keyword"]
Kind = Literal["", "function", "method", "class", "impl", "module", "block", "section"]


# ---------------------------------------------------------------- what the tools return


class CodeHit(BaseModel):
    path: str = Field(description="file path, relative to the repository")
    start_line: int
    end_line: int
    kind: str = Field(description="function, method, class, module (top-level code), section or block")
    qualified_name: str = Field(description="e.g. Class.method; empty for module code")
    language: str
    score: float = Field(description="0 to 1, higher is better: the estimate that this hit answers the query")
    snippet: str = Field(description="the lines of the hit that match the query best")

    @classmethod
    def of(cls, h: Hit) -> CodeHit:
        c = h.chunk
        return cls(path=c.path, start_line=c.start_line, end_line=c.end_line, kind=c.kind,
                   qualified_name=c.qualified_name, language=c.language, score=round(h.score, 4), snippet=h.snippet)


class SearchResult(BaseModel):
    query: str
    hits: list[CodeHit]


class SymbolDefinition(BaseModel):
    path: str
    start_line: int
    end_line: int
    kind: str
    qualified_name: str
    language: str
    signature: str = ""

    @classmethod
    def of(cls, h: SymbolHit) -> SymbolDefinition:
        d = h.definition
        return cls(path=h.path, start_line=d.start_line, end_line=d.end_line, kind=d.kind,
                   qualified_name=d.qualified_name, language=h.language, signature=h.signature)


class SymbolResult(BaseModel):
    name: str
    definitions: list[SymbolDefinition]


class IndexStatus(BaseModel):
    files: int
    chunks: int
    model: str
    last_run: str | None = Field(description="when the index was last brought up to date (ISO 8601), if known")
    seconds_since_last_run: float | None
    files_changed_since: int | None = Field(
        description="files modified since the last run and not indexed yet (the watcher indexes them soon)")
    watching: bool = Field(description="whether this server indexes every change as it is saved")
    served_by: str


class ReindexResult(BaseModel):
    files_seen: int
    files_indexed: int
    files_unchanged: int
    files_removed: int
    files_skipped: dict[str, int]
    chunks_embedded: int
    chunks_reused: int
    seconds: float
    index_chunks: int
    index_files: int


class CodeText(BaseModel):
    path: str
    start_line: int
    end_line: int
    total_lines: int
    text: str


# ---------------------------------------------------------------- where the tools go


class Backend:
    """What the tools call: this process's Host, or the API of the server that holds the index. When that
    server goes away (its agent's session ended), ``takeover`` makes this one go through whoever holds the
    index now, or hold it itself, and the call is made again."""

    def __init__(self, root: str, host: Host | None = None, api: ApiClient | None = None, owner: str = ""):
        self.root, self.host, self.api, self.owner = root, host, api, owner
        self.watching = False
        self.takeover = None  # async (the error) -> None
        self._switching = asyncio.Lock()

    async def _go(self, on_host, on_api):
        if self.host is None:
            api = self.api
            try:
                return await on_api(api)
            except StageError as exc:
                if exc.status != "UNAVAILABLE" or self.takeover is None:
                    raise
                async with self._switching:
                    if self.host is None and self.api is api:  # nobody switched meanwhile
                        log.warning("the server holding the index is gone (%s): taking over", exc)
                        await self.takeover(exc)
        return await (on_host(self.host) if self.host is not None else on_api(self.api))

    async def search(self, q: Query) -> list[Hit]:
        return await self._go(lambda host: host.search(q), lambda api: api.search(q))

    async def find_symbol(self, q: SymbolQuery) -> list[SymbolHit]:
        return await self._go(lambda host: host.find_symbol(q), lambda api: api.find_symbol(q))

    async def status(self):
        async def on_host(host: Host):
            return await host.stats(), host.last_run_at

        return await self._go(on_host, lambda api: api.status())

    async def reindex(self, paths: set[str] | None):
        async def on_api(api: ApiClient):
            if paths:
                raise CodeindexError("this server goes through the one holding the index, which reindexes the "
                                     "whole repository: call reindex without paths")
            return await api.index(self.root)

        return await self._go(lambda host: host.index(paths), on_api)


def _inside(root: str, path: str) -> str:
    """``path`` (relative to the repository) resolved; refused unless it stays inside the repository."""
    if not path or "\0" in path:
        raise CodeindexError("send a file path relative to the repository root, e.g. src/app.py")
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, path))
    if real != real_root and not real.startswith(real_root + os.sep):
        raise CodeindexError(f"{path!r} resolves outside the repository: only files inside it can be read")
    return real


def _relative(root: str, path: str) -> str:
    """``path`` as the index names it: relative to the repository, '/'-separated, without ``.``, ``..`` or
    doubled slashes (``./lib//a.js`` and ``/abs/repo/lib/a.js`` are ``lib/a.js``; the root itself is "");
    refused when it leads outside. Symbolic links are not followed: the walk does not follow them either."""
    for base in dict.fromkeys((os.path.abspath(root), os.path.realpath(root))):  # an absolute path may name either
        full = os.path.normpath(os.path.join(base, path))
        if full == base or full.startswith(base.rstrip(os.sep) + os.sep):
            rel = os.path.relpath(full, base)
            return "" if rel == "." else rel.replace(os.sep, "/")
    raise CodeindexError(f"{path!r} is outside the repository: give paths inside it, relative to its root")


def _changed_since(root: str, when: float) -> int:
    """Files the walk would index that were modified after ``when`` (stat only, nothing read)."""
    count = 0
    for e in walk(root):
        try:
            if not e.skip_reason and os.stat(e.abspath, follow_symlinks=False).st_mtime > when:
                count += 1
        except OSError:
            continue
    return count


INSTRUCTIONS = (
    "Semantic code search over this repository's index, kept up to date as files change. Use search_code to find "
    "code by what it does (plain English) or by a name; find_symbol to list every definition of a name; read_code "
    "to read lines of a file; index_status to see how fresh the index is; reindex after large changes if the index "
    "is not watched.")
DESCRIPTIONS = {
    "search_code": (
        "Search the repository's code by meaning and by name. Use it first to find where something is done "
        "('where is a failed upload retried', 'how does the router pick a handler') or to look a name up "
        "('HTTPAdapter', 'parse_url'). Returns the best chunks (functions, methods, classes, sections) with their "
        "path, lines, qualified name, a 0-1 score and the lines that match; read more with read_code."),
    "find_symbol": (
        "Every definition of a name, exactly as written: a bare name ('save') or a qualified one "
        "('InvoiceRepository.save'; '::', '#' and '->' read as '.'). Returns each definition's kind, qualified "
        "name and path:lines, small functions merged with a neighbour included. Use it when you know the name; "
        "use search_code when you know what the code does."),
    "index_status": (
        "How fresh and how large the index is: files, chunks, the embedding model, when it last ran, how many "
        "files changed since, and whether it is watched (kept up to date as files are saved)."),
    "reindex": (
        "Bring the index up to date now: the whole repository, or only the given paths (files or folders, "
        "relative to the repository). Only changed files are parsed and only new code is embedded. Not needed "
        "while the index is watched, except after changes the watcher cannot see."),
    "read_code": (
        "Read lines of a file of the repository (a path relative to it; nothing outside it), e.g. to see a "
        f"search hit in full. At most {MAX_READ_LINES} lines at a time."),
}


def _result(text: str, value: BaseModel) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)],
                          structured_content=value.model_dump(mode="json"))


async def _call(coro):
    """A domain error (a bad argument, a stage that failed) becomes a tool error that says so; the server
    goes on."""
    try:
        return await coro
    except CodeindexError as exc:
        raise ToolError(str(exc)) from exc


class Tools:
    """The tools, each a method: its parameters are the input schema, its return annotation the output's."""

    def __init__(self, backend: Backend):
        self.backend = backend

    async def search_code(
        self,
        query: Annotated[str, Field(description="what to find: plain English, or an identifier", min_length=1,
                                    max_length=4096)],
        k: Annotated[int, Field(description="how many hits", ge=1, le=MAX_K)] = 10,
        mode: Annotated[Mode, Field(description="hybrid (the best in general), vector (meaning only) or "
                                                "keyword (words only)")] = "hybrid",
        language: Annotated[str, Field(description="only this language, e.g. python, typescript, go")] = "",
        kind: Annotated[Kind, Field(description="only this kind of chunk")] = "",
        path_glob: Annotated[str, Field(description="only files matching this glob, e.g. 'src/**/*.py'")] = "",
    ) -> Annotated[CallToolResult, SearchResult]:
        q = await _call(_query(query, k, mode, language, kind, path_glob))
        out = SearchResult(query=query, hits=[CodeHit.of(h) for h in await _call(self.backend.search(q))])
        lines = [f"{h.score:.2f} {h.path}:{h.start_line}-{h.end_line} {h.qualified_name or '-'} ({h.kind})"
                 for h in out.hits]
        return _result("\n".join(lines) or "no results", out)

    async def find_symbol(
        self,
        name: Annotated[str, Field(description="the name to look up", min_length=1, max_length=1000)],
        language: Annotated[str, Field(description="only this language")] = "",
        kind: Annotated[Kind, Field(description="only this kind")] = "",
        path_glob: Annotated[str, Field(description="only files matching this glob")] = "",
        limit: Annotated[int, Field(description="most definitions returned", ge=1, le=MAX_K)] = 100,
    ) -> Annotated[CallToolResult, SymbolResult]:
        q = await _call(_symbol_query(name, language, kind, path_glob, limit))
        found = await _call(self.backend.find_symbol(q))
        out = SymbolResult(name=q.name, definitions=[SymbolDefinition.of(h) for h in found])
        lines = [f"{d.path}:{d.start_line}-{d.end_line} {d.qualified_name} ({d.kind})" for d in out.definitions]
        return _result("\n".join(lines) or f"no definition named {q.name!r}", out)

    async def index_status(self) -> Annotated[CallToolResult, IndexStatus]:
        stats, last_run = await _call(self.backend.status())
        changed = await asyncio.to_thread(_changed_since, self.backend.root, last_run) if last_run else None
        out = IndexStatus(
            files=stats.files, chunks=stats.chunks, model=stats.model_id,
            last_run=time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(last_run)) if last_run else None,
            seconds_since_last_run=round(time.time() - last_run, 1) if last_run else None,
            files_changed_since=changed, watching=self.backend.watching,
            served_by=self.backend.owner or "this server")
        fresh = "watched" if out.watching else "not watched"
        return _result(f"{out.files} files, {out.chunks} chunks ({out.model}); last run {out.last_run or 'none'}; "
                       f"{changed if changed is not None else '?'} files changed since; {fresh}", out)

    async def reindex(
        self,
        paths: Annotated[list[str], Field(description="files or folders to look at; empty: everything")] = [],  # noqa: B006
    ) -> Annotated[CallToolResult, ReindexResult]:
        wanted = set()
        for p in paths:
            await _call(_check_inside(self.backend.root, p))
            wanted.add(await _call(_relative_of(self.backend.root, p)))
        # a path that is the root itself asks for everything, as no paths do
        d = (await _call(self.backend.reindex(None if not wanted or "" in wanted else wanted))).to_dict()
        out = ReindexResult(**{name: d[name] for name in ReindexResult.model_fields})
        return _result(f"indexed {out.files_indexed} files ({out.files_unchanged} unchanged, {out.files_removed} "
                       f"removed) in {out.seconds:.1f}s; the index holds {out.index_chunks} chunks", out)

    async def read_code(
        self,
        path: Annotated[str, Field(description="the file, relative to the repository root")],
        start_line: Annotated[int, Field(description="first line, 1-based", ge=1)] = 1,
        end_line: Annotated[int, Field(description="last line (0: start_line + 199)", ge=0)] = 0,
    ) -> Annotated[CallToolResult, CodeText]:
        real = await _call(_check_inside(self.backend.root, path))
        out = await _call(asyncio.to_thread(_read, real, path, start_line, end_line))
        return _result(out.text, out)


def _auth(token: str) -> dict:
    """The MCPServer settings that require ``authorization: Bearer <token>`` on every HTTP request."""
    if not token:
        return {}
    from mcp.server.auth.provider import AccessToken
    from mcp.server.auth.settings import AuthSettings

    class Token:
        async def verify_token(self, given: str) -> AccessToken | None:
            ok = hmac.compare_digest(given.encode(), token.encode())
            return AccessToken(token=given, client_id="local", scopes=[]) if ok else None

    return {"token_verifier": Token(), "auth": AuthSettings(issuer_url="http://127.0.0.1/", resource_server_url=None)}


def build(backend: Backend, token: str = "") -> MCPServer:
    """The MCP server and its tools."""
    mcp = MCPServer("codeindex", instructions=INSTRUCTIONS, log_level="WARNING", **_auth(token))
    tools = Tools(backend)
    for name, description in DESCRIPTIONS.items():
        mcp.add_tool(getattr(tools, name), name=name, description=description)
    return mcp


async def _query(text, k, mode, language, kind, path_glob) -> Query:
    return Query(text=text, k=k, mode=mode, language=language, kind=kind, path_glob=path_glob)


async def _symbol_query(name, language, kind, path_glob, limit) -> SymbolQuery:
    return SymbolQuery(name, language, kind, path_glob, limit)


async def _check_inside(root: str, path: str) -> str:
    return _inside(root, path)


async def _relative_of(root: str, path: str) -> str:
    return _relative(root, path)


def _read(real: str, path: str, start: int, end: int) -> CodeText:
    if not os.path.isfile(real):
        raise CodeindexError(f"no such file in the repository: {path!r}")
    with open(real, encoding="utf-8", errors="replace") as fh:
        text = fh.read()
    lines = text.split("\n")
    if len(lines) > 1 and lines[-1] == "":  # the newline that ends the last line starts no other (as wc -l)
        lines.pop()
    end = end or start + 199
    if end < start:
        raise CodeindexError(f"end_line {end} is before start_line {start}")
    end = min(end, start + MAX_READ_LINES - 1, len(lines))
    if start > len(lines):
        raise CodeindexError(f"{path} has {len(lines)} lines; start_line {start} is past its end")
    return CodeText(path=path, start_line=start, end_line=end, total_lines=len(lines),
                    text="\n".join(lines[start - 1:end]))


# ---------------------------------------------------------------- transports


class _Lines:
    """stdin's lines, read by the event loop (so that stopping the server does not wait for input)."""

    def __init__(self, reader: asyncio.StreamReader):
        self.reader = reader

    def __aiter__(self):
        return self

    async def __anext__(self) -> str:
        line = await self.reader.readline()
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8", errors="replace")


async def serve_stdio(mcp) -> None:
    """Until the client closes stdin, or the task is cancelled (which ends it at once)."""
    from mcp.server.stdio import stdio_server

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    stdin = os.fdopen(os.dup(0), "rb", buffering=0)
    mode = os.fstat(stdin.fileno()).st_mode
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stdin.isatty():
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stdin)
    else:  # a file or /dev/null, which the event loop cannot poll: it ends, so read it whole
        transport = None
        with stdin:
            reader.feed_data(await asyncio.to_thread(stdin.read) or b"")
        reader.feed_eof()
    try:
        async with stdio_server(stdin=_Lines(reader)) as (read, write):
            low = mcp._lowlevel_server  # the SDK's own run_stdio_async reads stdin in a thread that cannot stop
            await low.run(read, write, low.create_initialization_options())
    finally:
        if transport is not None:
            transport.close()


async def serve_http(mcp, port: int, on_listening) -> None:
    """Streamable HTTP on 127.0.0.1 (``port`` 0: the OS picks), until cancelled."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except (OSError, OverflowError) as exc:
        sock.close()
        raise CodeindexError(f"could not listen on 127.0.0.1:{port}: {exc}") from None
    server = uvicorn.Server(uvicorn.Config(mcp.streamable_http_app(host="127.0.0.1"), log_level="warning",
                                           lifespan="on", timeout_graceful_shutdown=2))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task
        await asyncio.sleep(0.01)
    on_listening(f"http://127.0.0.1:{sock.getsockname()[1]}/mcp")
    try:
        await task
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def run(cfg: OrchestratorConfig, root: str, transport: str = "stdio", watch: bool = True, port: int = 0,
              token: str = "", on_listening=lambda url: None, stop: asyncio.Event | None = None) -> None:
    """Serve MCP until the client goes (stdio), ``stop`` is set, or a signal comes: through the server that
    holds the index, if one does, else holding it (and, with ``watch``, watching the repository); when the
    server it went through goes away, through the next holder, or holding it then."""
    root = os.path.abspath(root)
    stop = stop or asyncio.Event()
    backend = Backend(root)
    watchers, tasks = [], []
    async with contextlib.AsyncExitStack() as stack:

        async def hold() -> None:
            host = await stack.enter_async_context(Host(cfg, root, "mcp", ephemeral_api=True))
            backend.host, backend.owner, backend.watching = host, "", watch
            if watch:
                watcher = watcher_for(host, lambda summary, seconds: None)
                watchers.append(watcher)
                tasks.append(asyncio.create_task(_index_then_watch(host, watcher)))

        def through(owner) -> None:
            backend.api = ApiClient(owner.address)
            stack.push_async_callback(backend.api.close)
            backend.owner, backend.watching = owner.describe(), owner.command in ("watch", "mcp")

        async def take_over(exc: Exception) -> None:
            # the holder may still be stopping (its API gone, its lock not yet), or another server may be taking
            # the index over too (its lock taken, its API not yet up): wait a while for either to settle
            deadline = time.monotonic() + TAKEOVER_WAIT_S
            while True:
                owner = await asyncio.to_thread(serving_owner, cfg, root)
                if owner is None:
                    with contextlib.suppress(FailedPrecondition):  # another took the lock first
                        await hold()
                        return
                elif owner.address != backend.api.address:
                    through(owner)
                    return
                if time.monotonic() > deadline:
                    raise exc
                await asyncio.sleep(0.5)

        if owner := serving_owner(cfg, root):  # another server holds the index: through it
            through(owner)
        else:
            await hold()
        backend.takeover = take_over
        try:
            await _serve(build(backend, token), transport, port, on_listening, stop)
        finally:
            for watcher in watchers:
                watcher.stop()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


TAKEOVER_WAIT_S = 30.0  # how long a server whose holder went waits for the index to be free or held anew


async def _index_then_watch(host: Host, watcher) -> None:
    """The watch first (nothing saved from now on is missed), then a run over what changed while nobody
    watched, then the watched runs."""
    watching = await start_watching(watcher)
    try:
        await host.index()
    except CodeindexError as exc:
        log.error("the first index run failed: %s", exc)
    await watching


async def _serve(mcp, transport: str, port: int, on_listening, stop: asyncio.Event) -> None:
    serving = asyncio.create_task(serve_stdio(mcp) if transport == "stdio" else serve_http(mcp, port, on_listening))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    for t in (serving, stopping):
        t.cancel()
    await asyncio.gather(serving, stopping, return_exceptions=True)
