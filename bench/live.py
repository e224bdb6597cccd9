"""``make bench STAGE=live``: the live, warm index, as a coding agent and a
person see it, on a copy of the benchmark corpus and its index (about 11,000
chunks in the full corpus).

1. ``orchestrator mcp`` (stdio, watching), driven by the MCP SDK's client:
   warm searches through MCP (``search_code``, one client, back to back),
   then 20 saved edits, each a new function in an existing file, timed
   from the write until ``search_code`` for its name puts that file first;
   a deleted file until ``find_symbol`` no longer finds its function; a
   renamed file until its new path is found. Meanwhile ``orchestrator
   search`` from the command line goes through the MCP server (its API):
   its wall time, process start included.
2. ``orchestrator watch --json`` on the same repository: a branch switch
   (up to BRANCH_FILES Python files changed at once: 253 in the full corpus) and how
   many runs it took."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import random
import shutil
import subprocess
import threading
import time
from pathlib import Path

from bench.common import ORCHESTRATOR, latency_ms

EXE = str(ORCHESTRATOR)
EDITS = 20
SEARCHES = 200
CLI_SEARCHES = 10
BRANCH_FILES = 300


def _python_files(repo: Path) -> list[Path]:
    return sorted(p for p in repo.rglob("*.py") if ".codeindex" not in p.parts and p.stat().st_size > 200)


async def _mcp_phase(repo: Path, index_dir: Path, queries: list[str], log) -> dict:
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    env = {k: v for k, v in os.environ.items() if k.startswith(("CODEINDEX_", "HF_", "PATH", "HOME"))}
    params = StdioServerParameters(command=EXE, args=["mcp", "--path", str(repo), "--index-dir", str(index_dir)],
                                   env=env)
    out: dict = {}
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()

        async def tool(tool_name: str, **args):
            r = await session.call_tool(tool_name, args, read_timeout_seconds=300)
            if r.is_error:
                raise RuntimeError(f"{tool_name}: {r.content[0].text}")
            return r.structured_content

        started = time.perf_counter()
        while not (await tool("index_status"))["last_run"]:
            await asyncio.sleep(0.2)
        status = await tool("index_status")
        out["live_index_chunks"] = status["chunks"]
        log(f"live: MCP server ready, index up to date, {status['chunks']} chunks, in "
            f"{time.perf_counter() - started:.1f}s")
        for q in queries[:10]:  # warm-up
            await tool("search_code", query=q, k=10)
        latencies = []
        for q in (queries * 2)[:SEARCHES]:
            t = time.perf_counter()
            await tool("search_code", query=q, k=10)
            latencies.append(1000 * (time.perf_counter() - t))
        out["live_mcp_search"] = latency_ms(latencies)
        log(f"live: {len(latencies)} warm searches through MCP: p50 {out['live_mcp_search']['p50_ms']} ms, "
            f"p99 {out['live_mcp_search']['p99_ms']} ms")
        out["live_cli_search"] = latency_ms(await asyncio.to_thread(_cli_searches, repo, index_dir, queries))
        log(f"live: `orchestrator search` through the MCP server's API, wall (process start included): p50 "
            f"{out['live_cli_search']['p50_ms']} ms")
        out.update(await _edits(repo, tool, log))
    return out


def _cli_searches(repo: Path, index_dir: Path, queries: list[str]) -> list[float]:
    walls = []
    for q in queries[:CLI_SEARCHES]:
        t = time.perf_counter()
        run = subprocess.run([EXE, "search", q, "--path", str(repo), "--index-dir", str(index_dir), "--json"],
                             capture_output=True, text=True, timeout=120)
        if run.returncode != 0:
            raise RuntimeError(f"orchestrator search failed: {run.stderr[-1000:]}")
        walls.append(1000 * (time.perf_counter() - t))
    return walls


async def _until(check, timeout: float = 60.0) -> float:
    """Seconds until ``await check()`` is true."""
    started = time.perf_counter()
    while not await check():
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"not seen within {timeout}s")
        await asyncio.sleep(0.02)
    return time.perf_counter() - started


async def _edits(repo: Path, tool, log) -> dict:
    rng = random.Random(0)
    files = _python_files(repo)
    edit_s = []
    for n in range(EDITS):
        path = rng.choice(files)
        name = f"live_bench_edit_{n}_{rng.randrange(10**6)}"
        rel = path.relative_to(repo).as_posix()
        with open(path, "a") as fh:
            fh.write(f"\n\ndef {name}(value):\n    return value + {n}\n")

        async def found(name=name, rel=rel) -> bool:
            hits = (await tool("search_code", query=name, k=3))["hits"]
            return bool(hits) and hits[0]["path"] == rel

        edit_s.append(await _until(found))
    out = {"live_edit_to_searchable": latency_ms([1000 * s for s in edit_s])}
    victim = files[0]
    name = "live_bench_removed_function"
    with open(victim, "a") as fh:
        fh.write(f"\n\ndef {name}():\n    return 0\n")

    async def present(name=name) -> bool:
        return bool((await tool("find_symbol", name=name))["definitions"])

    await _until(present)
    victim.unlink()

    async def absent() -> bool:
        return not await present()

    out["live_delete_to_gone_ms"] = round(1000 * await _until(absent), 1)
    moved, target = files[1], files[1].with_name("live_bench_renamed.py")
    moved.rename(target)
    rel = target.relative_to(repo).as_posix()

    async def renamed() -> bool:
        defs = (await tool("find_symbol", name=_first_def(target) or "-"))["definitions"]
        return any(d["path"] == rel for d in defs)

    out["live_rename_to_found_ms"] = round(1000 * await _until(renamed), 1)
    log(f"live: {EDITS} edits searchable after p50 {out['live_edit_to_searchable']['p50_ms']} ms, p95 "
        f"{out['live_edit_to_searchable']['p95_ms']} ms; a deleted file gone after {out['live_delete_to_gone_ms']} ms,"
        f" a renamed one found after {out['live_rename_to_found_ms']} ms")
    return out


def _first_def(path: Path) -> str:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("def ") and "(" in line:
            return line[4:line.index("(")].strip()
    return ""


def _branch_switch(repo: Path, index_dir: Path, log) -> dict:
    proc = subprocess.Popen([EXE, "watch", str(repo), "--json", "--index-dir", str(index_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        json.loads(lines.get(timeout=600))  # the run that brings the index up to date
        files = _python_files(repo)[:BRANCH_FILES]
        started = time.perf_counter()
        for i, path in enumerate(files):
            with open(path, "a") as fh:
                fh.write(f"\n# branch switch {i}\n")
        indexed, runs = 0, 0
        while indexed < len(files):
            run = json.loads(lines.get(timeout=600))
            runs += 1
            indexed += run["files_indexed"]
        seconds = time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(60)
    log(f"live: a branch switch of {len(files)} files: {runs} run(s), all indexed after {seconds:.1f}s")
    return {"live_branch_files": len(files), "live_branch_runs": runs, "live_branch_seconds": round(seconds, 2)}


def bench_live(corpus_root: Path, index_dir: Path, queries: list[str], work: Path, log) -> dict:
    """On copies of ``corpus_root`` and its ``index_dir`` (never the originals)."""
    repo, idx = work / "live-repo", work / "live-index"
    for d in (repo, idx):
        shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(corpus_root, repo, ignore=shutil.ignore_patterns(".codeindex"))
    shutil.copytree(index_dir, idx, ignore=shutil.ignore_patterns("logs", "lock", "owner.json"))
    out = asyncio.run(_mcp_phase(repo, idx, queries, log))
    out.update(_branch_switch(repo, idx, log))
    return out
