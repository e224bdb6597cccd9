"""`orchestrator mcp`, driven by the MCP SDK's own stdio client (and its streamable HTTP client), on a
real repository with the real services and the real model."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import EXE, ROOT, stop_process
from tests.test_crash import read_files
from tests.test_faults import assert_equals_a_fresh_index_of

pytestmark = pytest.mark.slow
TOOLS = {"search_code", "find_symbol", "index_status", "reindex", "read_code"}


def make_repo(root: Path) -> Path:
    (root / "billing").mkdir(parents=True)
    (root / "billing" / "invoice.py").write_text(
        "def compute_invoice_total(items, tax_rate):\n    \"\"\"Sum the line items and add sales tax.\"\"\"\n"
        "    return round(sum(items) * (1 + tax_rate), 2)\n\n\nclass InvoiceRepository:\n"
        "    def save(self, invoice):\n        return invoice\n")
    (root / "web").mkdir()
    (root / "web" / "retry.ts").write_text(
        "export async function retryWithBackoff(fn: () => Promise<void>, attempts: number) {\n"
        "  for (let i = 0; i < attempts; i++) {\n    try { return await fn(); } catch { await sleep(2 ** i); }\n"
        "  }\n}\n")
    (root / "outside.txt").write_text("not to be read through a link\n")
    return root


def params(repo: Path, *extra: str, env: dict[str, str] | None = None):
    from mcp.client.stdio import StdioServerParameters

    env = {**{k: v for k, v in os.environ.items() if k.startswith(("CODEINDEX_", "HF_", "PATH", "HOME"))},
           **(env or {})}
    return StdioServerParameters(command=EXE, args=["mcp", "--path", str(repo), *extra], cwd=str(ROOT), env=env)


async def call(session, tool: str, **arguments):
    return await session.call_tool(tool, arguments, read_timeout_seconds=120)


async def until(predicate, timeout: float = 60.0, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(step)


def test_an_agent_searches_reads_and_sees_edits(tmp_path):
    from mcp.client.session import ClientSession
    from mcp.client.stdio import stdio_client

    repo = make_repo(tmp_path / "repo")
    (tmp_path / "secret.txt").write_text("outside the repository\n")
    (repo / "leak").symlink_to(tmp_path / "secret.txt")

    async def scenario() -> None:
        async with stdio_client(params(repo)) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            tools = {t.name: t for t in (await session.list_tools()).tools}
            assert set(tools) == TOOLS
            for t in tools.values():
                assert t.description and t.input_schema["type"] == "object" and t.output_schema, t.name
            assert tools["search_code"].input_schema["properties"]["mode"]["enum"] == ["hybrid", "vector", "keyword"]

            async def indexed():
                r = await call(session, "index_status")
                done = not r.is_error and r.structured_content["last_run"] and r.structured_content["files"] >= 3
                return r.structured_content if done else None

            status = await until(indexed, timeout=300)
            assert status and status["watching"] and "all-MiniLM-L6-v2" in status["model"]

            r = await call(session, "search_code", query="add sales tax to the total of an invoice", k=3)
            assert not r.is_error and r.structured_content["hits"][0]["qualified_name"] == "compute_invoice_total"
            assert "billing/invoice.py:1-3" in r.content[0].text
            r = await call(session, "find_symbol", name="InvoiceRepository.save")
            assert [(d["path"], d["start_line"]) for d in r.structured_content["definitions"]] == [
                ("billing/invoice.py", 7)]
            r = await call(session, "read_code", path="billing/invoice.py", start_line=6, end_line=7)
            assert r.structured_content["text"] == "class InvoiceRepository:\n    def save(self, invoice):"

            # bad arguments are tool errors that say what to send; the server keeps serving
            for tool, args, said in (("search_code", {"query": "x", "mode": "fuzzy"}, "mode"),
                                     ("search_code", {"query": ""}, "query"),
                                     ("read_code", {"path": "../secret.txt"}, "outside the repository"),
                                     ("read_code", {"path": "leak"}, "outside the repository"),
                                     ("read_code", {"path": "nope.py"}, "no such file"),
                                     ("reindex", {"paths": ["/etc"]}, "outside the repository")):
                r = await call(session, tool, **args)
                assert r.is_error and said in r.content[0].text, (tool, args, r.content[0].text)

            # the live index: an edit is found once the watcher ran, a deleted file is gone
            (repo / "web" / "retry.ts").write_text(
                "export function parseDurationString(text: string): number {\n"
                "  return Number(text.replace('ms', ''));\n}\n")

            async def found(query: str, path: str):
                r = await call(session, "search_code", query=query, k=5)
                assert not r.is_error, r.content[0].text  # a search while the watcher reindexes must answer
                return path in [h["path"] for h in r.structured_content["hits"]][:1]

            assert await until(lambda: found("parseDurationString", "web/retry.ts"))
            r = await call(session, "search_code", query="parseDurationString", k=5)
            assert r.structured_content["hits"][0]["qualified_name"] == "parseDurationString"
            (repo / "billing" / "invoice.py").unlink()

            async def gone():
                r = await call(session, "find_symbol", name="compute_invoice_total")
                return not r.structured_content["definitions"]

            assert await until(gone)
            r = await call(session, "reindex")
            assert not r.is_error and r.structured_content["files_indexed"] == 0
            chunks = r.structured_content["index_chunks"]
            # paths as a person or an agent writes them name the same files: no second copy under another name
            for paths in (["."], ["./web//retry.ts"], ["web/../web/retry.ts"], [str(repo / "web" / "retry.ts")]):
                r = await call(session, "reindex", paths=paths)
                assert not r.is_error and r.structured_content["index_chunks"] == chunks, (paths, r.content[0].text)
            r = await call(session, "find_symbol", name="parseDurationString")
            assert [d["path"] for d in r.structured_content["definitions"]] == ["web/retry.ts"]
            r = await call(session, "reindex", paths=["web/../../elsewhere"])
            assert r.is_error and "outside the repository" in r.content[0].text
            # a file's last newline ends its last line (3 lines, as wc -l counts them)
            r = await call(session, "read_code", path="web/retry.ts")
            assert r.structured_content["total_lines"] == 3 and r.structured_content["end_line"] == 3

    asyncio.run(scenario())


def test_a_second_server_goes_through_the_first_and_http_needs_the_token(tmp_path):
    """A second `mcp` on the same index serves through the first (never a second writer); the http
    transport refuses a request without the token."""
    from mcp.client.session import ClientSession
    from mcp.client.stdio import stdio_client

    repo = make_repo(tmp_path / "repo")
    token = tmp_path / "token"
    token.write_text("t0ken-for-the-test\n")
    log = tmp_path / "first.log"
    with log.open("w") as out:  # a file, not a pipe: nothing the server writes can fill a pipe and stall it
        first = subprocess.Popen([EXE, "mcp", "--path", str(repo), "--transport", "http", "--mcp-token-file",
                                  str(token)], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=out, text=True)
    try:
        url = ""
        deadline = time.monotonic() + 300
        while not url and time.monotonic() < deadline:
            said = [line for line in log.read_text().splitlines() if "MCP over streamable HTTP at " in line]
            url = said[0].split(" at ", 1)[1].strip() if said else ""
            assert url or first.poll() is None, f"the http server exited:\n{log.read_text()[-3000:]}"
            time.sleep(0.1)
        assert url, log.read_text()[-3000:]

        async def scenario() -> None:
            from mcp.client.streamable_http import streamable_http_client
            from mcp.shared._httpx_utils import create_mcp_http_client

            async with create_mcp_http_client(headers={"Authorization": "Bearer t0ken-for-the-test"}) as http, \
                    streamable_http_client(url, http_client=http) as (read, write, *_), \
                    ClientSession(read, write) as session:
                await session.initialize()

                async def ready():
                    r = await call(session, "index_status")
                    status = r.structured_content
                    return not r.is_error and bool(status["last_run"]) and status["files"] >= 3

                assert await until(ready, timeout=300)
            async with stdio_client(params(repo)) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                r = await call(session, "index_status")
                assert "orchestrator mcp" in r.structured_content["served_by"]
                r = await call(session, "search_code", query="retry with exponential backoff", k=3)
                assert r.structured_content["hits"][0]["path"] == "web/retry.ts"
                import urllib.error
                import urllib.request

                with pytest.raises(urllib.error.HTTPError) as err:
                    urllib.request.urlopen(urllib.request.Request(url, data=b"{}", headers={
                        "Content-Type": "application/json", "Accept": "application/json, text/event-stream"}),
                        timeout=10)
                assert err.value.code == 401
                owner = json.loads((repo / ".codeindex" / "owner.json").read_text())
                assert owner["pid"] == first.pid and owner["command"] == "mcp"

                # the first server goes (its agent's session ended): the second takes the index over, and
                # watches it from then on
                assert await asyncio.to_thread(stop_process, first) == 0, log.read_text()[-3000:]
                r = await call(session, "find_symbol", name="retryWithBackoff")
                assert not r.is_error and [d["path"] for d in r.structured_content["definitions"]] == \
                    ["web/retry.ts"], r.content[0].text
                r = await call(session, "index_status")
                assert r.structured_content["served_by"] == "this server" and r.structured_content["watching"]
                (repo / "web" / "later.ts").write_text("export function parseLaterDuration(s: string) {}\n")

                async def seen():
                    r = await call(session, "find_symbol", name="parseLaterDuration")
                    return r.structured_content["definitions"]

                assert await until(seen)

        asyncio.run(scenario())
    finally:
        code = stop_process(first)  # SIGTERM, then SIGKILL if it does not end
    assert code == 0, log.read_text()[-3000:]


def test_kill_9_of_the_server_in_the_middle_of_a_reindex(tmp_path):
    """After kill -9 of the MCP server while a reindex is writing (some files in the index, not all), and
    a restart, the reindex that catches up indexes what the killed one left, and the index equals a
    fresh full index."""
    from mcp.client.session import ClientSession
    from mcp.client.stdio import stdio_client

    repo = make_repo(tmp_path / "repo")
    generated = 100
    for i in range(generated):
        (repo / "gen" / f"m{i}").mkdir(parents=True)
        (repo / "gen" / f"m{i}" / "mod.py").write_text(
            "".join(f"def helper_{i}_{j}(value):\n    return value * {j} + {i}\n\n\n" for j in range(8)))
    uri = str(repo / ".codeindex" / "lancedb")

    # the store commits every 16 rows: a run of this size (its small functions merged, about 100 chunks) may
    # otherwise be done within the default 1 s before its first commit, and nothing is ever seen mid-run
    small_commits = {"CODEINDEX_STORE_FLUSH_ROWS": "16", "CODEINDEX_STORE_FLUSH_MS": "100"}

    async def reindex_and_die():
        async with stdio_client(params(repo, "--no-watch", env=small_commits)) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            owner = json.loads((repo / ".codeindex" / "owner.json").read_text())
            task = asyncio.create_task(call(session, "reindex"))
            written = 0
            deadline = time.monotonic() + 300
            while not task.done() and time.monotonic() < deadline:
                written = len(read_files(uri))
                if written:
                    break
                await asyncio.sleep(0.05)
            assert not task.done() and 0 < written < generated, f"not killed mid-run: {written} files written"
            os.kill(owner["pid"], signal.SIGKILL)
            (result,) = await asyncio.gather(task, return_exceptions=True)
            return written, result

    written, result = asyncio.run(reindex_and_die())
    assert isinstance(result, BaseException) or result.is_error, result  # the killed reindex did not succeed
    assert len(read_files(uri)) < generated, "the killed run had finished"
    # the store outlives its parent by up to half a second (it then stops, finishing the writes it holds:
    # several files a message since WriteMany, all of them in a CI run once), so what it left is counted
    # once its files rows have stopped changing
    rows, deadline = read_files(uri), time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(1.0)
        if (now := read_files(uri)) == rows:
            break
        rows = now
    done = {path for path, file_hash, _ in rows if file_hash}

    async def restart() -> None:
        async with stdio_client(params(repo, "--no-watch")) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            r = await call(session, "reindex")
            assert not r.is_error, r.content[0].text
            summary = r.structured_content
            # it caught up: what the killed run committed is unchanged, everything else (pending or never
            # written) is indexed now
            assert summary["files_unchanged"] == len(done), (summary, len(done))
            assert summary["files_indexed"] + summary["files_unchanged"] == summary["files_seen"], summary

    asyncio.run(restart())
    assert_equals_a_fresh_index_of(repo, tmp_path)


def test_stdin_that_is_a_file_or_dev_null_is_read_to_its_end(tmp_path):
    """stdin need not be a pipe: a file of requests is answered and the server exits 0; /dev/null ends it."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.py").write_text("def hello_there():\n    return 1\n")
    requests = tmp_path / "requests.jsonl"
    requests.write_text(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}) + "\n")
    env = {**os.environ, "CODEINDEX_EMBED_BACKEND": "hash"}
    for stdin in (str(requests), os.devnull):
        with open(stdin, "rb") as fh:
            run = subprocess.run([EXE, "mcp", "--path", str(repo), "--no-watch"], stdin=fh, capture_output=True,
                                 timeout=120, env=env)
        assert run.returncode == 0 and b"Traceback" not in run.stderr, run.stderr.decode()[-2000:]
        if stdin != os.devnull:
            assert json.loads(run.stdout.splitlines()[0])["result"]["serverInfo"]["name"] == "codeindex"
