"""``make bench STAGE=scale``: a synthetic monorepo of at least 100,000 files
and 1,000,000 chunks, made from the benchmark corpus's real sources (its
files of at most 16 KB, copied under distinct paths, each copy's files
given one line of their own so that no two files are the same), indexed
with the instant ``hash`` backend, which measures everything but the model.

Reported: the full index (chunks/s, peak RSS of each process and of all
together, the index's size on disk), the first search after it (a cold
``orchestrator search``: services started, answer printed), then a
no-change re-index, a ``touch`` of every file (as a branch checkout does)
and a one-file edit: wall time, the run's own seconds, files read and
hashed, chunks embedded; then search at that size: the ANN index's recall
against exact search, and latency through the gRPC API in each mode; then
``CODEINDEX_SCALE_RUNS`` incremental runs (100) as the store sees them,
counting versions and fragments; then several writers on a local S3
(:mod:`bench.s3writers`).
``CODEINDEX_SCALE_FILES`` sets the size (default 100,000 files).

Before it, the same costs at smaller sizes of the same monorepo (its first
files), for the curve of cost against size: ``CODEINDEX_SCALE_CURVE`` lists
their file counts (default 900 and 9,000 files, about 10,000 and 100,000
chunks; empty for none)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from bench.common import ORCHESTRATOR, TreeSampler, index_command, latency_ms, summary_of
from bench.s3writers import bench_s3_writers

FILES = int(os.environ.get("CODEINDEX_SCALE_FILES", "100000"))
CURVE = [int(n) for n in os.environ.get("CODEINDEX_SCALE_CURVE", "900,9000").split(",") if n.strip()]
MAX_FILE_BYTES = 16_000
HASH = {"CODEINDEX_EMBED_BACKEND": "hash", "HF_HUB_OFFLINE": "1"}
COMMENT = {".py": "#", ".toml": "#", ".cfg": "#", ".cnf": "#", ".txt": "#", ".in": "#", ".sh": "#",
           ".c": "//", ".h": "//", ".js": "//", ".ts": "//", ".rst": "..", ".md": "<!--"}


def _sources(corpus_root: Path) -> list[Path]:
    return sorted(p for p in corpus_root.rglob("*") if p.is_file() and p.stat().st_size <= MAX_FILE_BYTES
                  and ".codeindex" not in p.parts)


def build(corpus_root: Path, dest: Path, files: int, log) -> dict:
    """The monorepo under ``dest`` (kept between runs while its recipe is the same)."""
    sources = _sources(corpus_root)
    copies = -(-files // len(sources))
    recipe = {"files": files, "copies": copies, "sources": len(sources), "max_file_bytes": MAX_FILE_BYTES}
    stamp = dest / ".scale.json"
    if stamp.exists() and json.loads(stamp.read_text()) == recipe:
        return recipe
    shutil.rmtree(dest, ignore_errors=True)
    started, written = time.perf_counter(), 0
    texts = [(p.relative_to(corpus_root), p.read_bytes()) for p in sources]
    for i in range(copies):
        for rel, data in texts:
            if written == files:
                break
            mark = COMMENT.get(rel.suffix)
            extra = f"\n{mark} scale copy {i}{' -->' if mark == '<!--' else ''}\n".encode() if mark else b""
            target = dest / f"team{i % 16:02d}" / f"svc{i:04d}" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data + extra)
            written += 1
    stamp.write_text(json.dumps(recipe))
    log(f"scale: {written} files in {copies} copies of {len(sources)} corpus files, "
        f"{time.perf_counter() - started:.0f}s")
    return recipe


def _label(cmdline: list[str]) -> str:
    cmd = " ".join(cmdline)
    for stage in ("parser", "embed", "store"):
        if f"{stage}_svc" in cmd:
            return stage
    return "parser" if "forkserver" in cmd or "multiprocessing" in cmd else "orchestrator"


class PeakRss(TreeSampler):
    """Every 0.25 s, the RSS of each process of a tree by stage (the parser's workers with the parser):
    the peak of each stage's sum, and of the whole tree's; and each process's CPU seconds (user and system)
    as last seen, summed by stage (``cpu_by_stage``: a process's last quarter second before it exits is
    missed)."""

    TIMELINE_EVERY = 20  # samples (5 s) between two points of the timeline

    def __init__(self, pid: int):
        super().__init__(pid, 0.25)
        self.by_stage: dict[str, float] = {}
        self.total = 0.0
        self.started = time.perf_counter()
        self.peak_at_s = 0.0
        self.timeline: list[tuple[float, int, int]] = []  # (seconds in, all processes MB, store MB)
        self._samples = 0
        self._cpu: dict[int, tuple[str, float]] = {}  # pid -> (stage, CPU seconds when last seen)

    @property
    def cpu_by_stage(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for label, seconds in self._cpu.values():
            out[label] = out.get(label, 0.0) + seconds
        return out

    def _sample(self) -> None:
        import psutil

        sums: dict[str, float] = {}
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        for p in procs:
            try:
                label = _label(p.cmdline())
                sums[label] = sums.get(label, 0.0) + p.memory_info().rss / 2**20
                cpu = p.cpu_times()
                self._cpu[p.pid] = (label, cpu.user + cpu.system)
            except psutil.Error:
                continue
        for label, mb in sums.items():
            self.by_stage[label] = max(self.by_stage.get(label, 0.0), mb)
        now, total = round(time.perf_counter() - self.started, 1), sum(sums.values())
        if total > self.total:
            self.total, self.peak_at_s = total, now
        if self._samples % self.TIMELINE_EVERY == 0:
            self.timeline.append((now, round(total), round(sums.get("store", 0.0))))
        self._samples += 1


def _index(repo: Path, index_dir: Path, env: dict[str, str] = HASH, timeout: float | None = None) -> dict:
    """One ``orchestrator index`` run (``env``: its settings, the hash backend by default; killed after
    ``timeout`` seconds): its summary, wall time and peak RSS."""
    started = time.perf_counter()
    proc = subprocess.Popen(index_command(repo, index_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **env})
    with PeakRss(proc.pid) as rss:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"orchestrator index {repo} failed ({proc.returncode}): {err[-3000:]}")
    s = summary_of(out)
    return {"wall_s": round(time.perf_counter() - started, 2), "seconds": s["seconds"],
            "files_seen": s["files_seen"], "files_hashed": s.get("files_hashed", s["files_seen"]),
            "files_indexed": s["files_indexed"], "chunks_total": s["chunks_total"],
            "chunks_embedded": s["chunks_embedded"], "index_chunks": s["index_chunks"],
            "index_files": s["index_files"], "peak_rss_mb": round(rss.total), "peak_at_s": rss.peak_at_s,
            "peak_rss_mb_by_stage": {k: round(v) for k, v in sorted(rss.by_stage.items())},
            "cpu_s_by_stage": {k: round(v, 1) for k, v in sorted(rss.cpu_by_stage.items())},
            "orchestrator_us_per_chunk": round(rss.cpu_by_stage.get("orchestrator", 0.0) * 1e6
                                               / max(s["chunks_total"], 1), 1),
            "rss_timeline": rss.timeline}


def _upkeep_seconds(index_dir: Path) -> dict:
    """The last upkeep's time and its ANN build's, from the store's log: the upkeep runs from its log line
    to the store's shutdown at the end of the run."""
    stamp = "%Y-%m-%d %H:%M:%S,%f"
    lines = (index_dir / "logs" / "store.log").read_text(errors="replace").splitlines()
    starts = [i for i, line in enumerate(lines) if " upkeep: " in line]
    if not starts:
        return {}
    began = datetime.strptime(lines[starts[-1]][:23], stamp)
    after = lines[starts[-1]:]
    end = next((line for line in after if "shutting down store" in line), None)
    built = next((line for line in after if " built vector_" in line), None)
    out: dict = {}
    if end is not None:
        out["upkeep_s"] = round((datetime.strptime(end[:23], stamp) - began).total_seconds(), 1)
    if built is not None:
        out["ann_build_s"] = float(built.rsplit(" in ", 1)[1].rstrip("s"))
        out["ann_index"] = built.split(" built ", 1)[1].split(" ", 1)[0]
    return out


def _first_search(repo: Path, index_dir: Path) -> float:
    started = time.perf_counter()
    run = subprocess.run([str(ORCHESTRATOR), "search", "parse the header of a response", "--path", str(repo),
                          "--index-dir", str(index_dir), "--json", "-k", "5"], capture_output=True, text=True,
                         env={**os.environ, **HASH})
    if run.returncode != 0 or not json.loads(run.stdout):
        raise RuntimeError(f"the first search failed: {run.stderr[-2000:]}")
    return round(time.perf_counter() - started, 2)


def _size_mb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20, 1)


def _search(repo: Path, index_dir: Path, log, modes: tuple[str, ...] = ("hybrid", "vector", "keyword")) -> dict:
    """The ANN index's recall@10 against exact search (200 query vectors near stored ones), then one client
    through ``orchestrator serve`` (the gRPC API; the hash backend embeds the query) for 10 s in each mode, on
    the index as the last run left it (the store's idle upkeep off). If that run deferred its upkeep (rows
    outside the indexes), a second ``serve`` with the store's defaults: how long until its idle upkeep has
    folded them in (``idle_upkeep_s``, from the API's start), then each mode again (``after_idle_upkeep``)."""
    from bench.run import _Api, _recall

    recall = _recall(index_dir)
    out: dict = {"ann_recall_at_10": recall["all"], "ann_recall_at_10_near": recall["near"],
                 "ann_recall_queries_near": recall["queries_near"], "ann_recall_queries": recall["queries"]}
    api = _Api(repo, index_dir, {**HASH, "CODEINDEX_STORE_UPKEEP_IDLE_S": "0"})
    try:
        out["unindexed_rows"] = _status(api.address).unindexed_rows
        out.update(_latencies_by_mode(api.address, modes, log, "as the run left it"))
    finally:
        api.stop()
    if out["unindexed_rows"]:
        started = time.perf_counter()
        api = _Api(repo, index_dir, HASH)
        try:
            while _status(api.address).unindexed_rows:
                if time.perf_counter() - started > 600:
                    raise RuntimeError("the store's idle upkeep did not fold the rows in within 600 s")
                time.sleep(0.5)
            out["idle_upkeep_s"] = round(time.perf_counter() - started, 1)
            log(f"scale: the store's idle upkeep, {out['idle_upkeep_s']} s after the API started")
            out["after_idle_upkeep"] = _latencies_by_mode(api.address, modes, log, "after the idle upkeep")
        finally:
            api.stop()
    return out


def _status(address: str):
    import grpc

    from codeindex_common.pb import orchestrator_pb2, orchestrator_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        return orchestrator_pb2_grpc.OrchestratorStub(channel).Status(orchestrator_pb2.StatusRequest(), timeout=60)


def _latencies_by_mode(address: str, modes: tuple[str, ...], log, when: str) -> dict:
    from bench.run import _latencies, corpus_queries

    out = {}
    for mode in modes:
        r = _latencies(address, corpus_queries(), 1, 10, mode=mode)
        out[mode] = {k: r[k] for k in ("p50_ms", "p95_ms", "p99_ms", "qps", "queries", "errors")}
        log(f"scale: {mode} search through the API ({when}): p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms")
    return out


def _edit(repo: Path) -> Path:
    """Add a function to the first Python file (:func:`_unedit` takes it out again)."""
    edited = next(p for p in sorted(repo.rglob("*.py")))
    with open(edited, "a") as fh:
        fh.write("\n\ndef _scale_bench_added(x):\n    return x + 1\n")
    return edited


def _unedit(edited: Path) -> None:
    edited.write_bytes(edited.read_bytes().split(b"\n\ndef _scale_bench_added")[0])


def _curve_point(corpus_root: Path, work: Path, files: int, log) -> dict:
    """A smaller monorepo of the curve: full index, no-change re-index, one edit, hybrid search's latency."""
    repo, index_dir = work / f"scale-repo-{files}", work / f"scale-index-{files}"
    build(corpus_root, repo, files, log)
    shutil.rmtree(index_dir, ignore_errors=True)
    point: dict = {"files": files, "full": _index(repo, index_dir)}
    time.sleep(2.1)  # past the stat cache's racy window, as below
    point["noop"] = _index(repo, index_dir)
    edited = _edit(repo)
    point["one_edit"] = _index(repo, index_dir)
    _unedit(edited)
    point["search"] = _search(repo, index_dir, log, modes=("hybrid",))
    for run in ("full", "noop", "one_edit"):
        point[run].pop("rss_timeline", None)
    full = point["full"]
    log(f"scale curve: {full['index_chunks']} chunks: full {full['wall_s']}s, no change {point['noop']['wall_s']}s, "
        f"one edit {point['one_edit']['wall_s']}s, hybrid p50 {point['search']['hybrid']['p50_ms']} ms, "
        f"peak RSS {full['peak_rss_mb']} MB")
    shutil.rmtree(index_dir, ignore_errors=True)
    return point


INCREMENTAL_RUNS = int(os.environ.get("CODEINDEX_SCALE_RUNS", "100"))


def _incremental(index_dir: Path, runs: int, log) -> dict:
    """``runs`` incremental runs as the store sees them, in this process: one file's chunks replaced (new
    vectors), then the upkeep a run ends with (``optimize``: deferred until due). After each, the table's
    versions and fragments; the upkeep's rule is what must keep both bounded."""
    from codeindex_common.model import FileRecord
    from store_svc.schema import CHUNK_COLUMNS, chunk_from_row
    from store_svc.sql import in_list
    from store_svc.store import VectorStore

    store = VectorStore(str(index_dir / "lancedb"))
    table = store._chunks
    path = table.search().where("path LIKE '%.py' AND kind = 'function'").select(["path"]).limit(1).to_list()[0]["path"]
    rows = table.search().where(in_list("path", [path])).select(CHUNK_COLUMNS).limit(None).to_list()
    chunks = [chunk_from_row(r) for r in rows]
    model = store.model_id()
    rng = np.random.default_rng(7)
    versions, fragments, seconds, upkeeps = [], [], [], 0
    for run in range(runs):
        vecs = rng.standard_normal((len(chunks), store.dim)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        started = time.perf_counter()
        store.write([FileRecord(path, f"incremental-{run}", chunks, vecs, "", model)])
        due = store.upkeep_due()
        stats = store.optimize()
        seconds.append(round(time.perf_counter() - started, 3))
        upkeeps += due
        versions.append(stats.versions)
        fragments.append(store._chunks.stats()["fragment_stats"]["num_fragments"])
    out = {"runs": runs, "file": path, "chunks": len(chunks), "upkeeps": upkeeps,
           "versions_max": max(versions), "versions_last": versions[-1],
           "fragments_max": max(fragments), "fragments_last": fragments[-1],
           "seconds": latency_ms([s * 1000 for s in seconds]), "seconds_max": max(seconds),
           "versions": versions, "fragments": fragments}
    log(f"scale: {runs} incremental runs: versions at most {out['versions_max']} (last {versions[-1]}), fragments "
        f"at most {out['fragments_max']} (last {fragments[-1]}), {upkeeps} upkeeps, slowest run {max(seconds)} s")
    return out


def bench_scale(corpus_root: Path, work: Path, log) -> dict:
    repo, index_dir = work / "scale-repo", work / "scale-index"
    out: dict = {"curve": [_curve_point(corpus_root, work, n, log) for n in CURVE if n < FILES]}
    recipe = build(corpus_root, repo, FILES, log)
    shutil.rmtree(index_dir, ignore_errors=True)
    out["recipe"] = recipe
    out["full"] = full = _index(repo, index_dir)
    full.update(_upkeep_seconds(index_dir))
    log(f"scale: full index {full['index_files']} files, {full['index_chunks']} chunks in {full['wall_s']}s "
        f"({full['chunks_total'] / max(full['seconds'], 1e-9):.0f} chunks/s), peak RSS {full['peak_rss_mb']} MB")
    out["chunks_per_s"] = round(full["chunks_total"] / full["seconds"], 1)
    out["index_mb"] = _size_mb(index_dir / "lancedb")
    out["first_search_s"] = _first_search(repo, index_dir)
    time.sleep(2.1)  # past the stat cache's racy window: what the full run hashed is trusted from now on
    out["noop"] = _index(repo, index_dir)
    out["noop_again"] = _index(repo, index_dir)
    now = time.time_ns()
    for p in repo.rglob("*"):
        if p.is_file() and ".codeindex" not in p.parts and p.name != ".scale.json":
            os.utime(p, ns=(now, now))
    time.sleep(2.1)  # the checkout is over before the run starts (as a watcher's debounce waits for it)
    out["touch_all"] = _index(repo, index_dir)
    edited = _edit(repo)
    out["one_edit"] = _index(repo, index_dir)
    _unedit(edited)
    out["search"] = _search(repo, index_dir, log)
    out["incremental"] = _incremental(index_dir, INCREMENTAL_RUNS, log)
    out["s3_writers"] = bench_s3_writers(log)
    for name in ("noop", "noop_again", "touch_all", "one_edit"):
        r = out[name]
        log(f"scale: {name}: {r['wall_s']}s wall ({r['seconds']}s own), {r['files_hashed']} files hashed, "
            f"{r['chunks_embedded']} embedded, peak RSS {r['peak_rss_mb']} MB")
    return out
