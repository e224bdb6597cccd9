"""Writers on object storage, measured against a local S3 (``moto_server``):
how the single-writer store scales when several store processes write.

Each writer is a process with its own ``VectorStore`` (as a store replica
would be), writing ``FILES`` new files of ``CHUNKS`` chunks each, one
``write`` (three commits: files pending, chunks, files done) per file, back to
back. Two layouts at 1, 2 and 4 writers:

- ``shared``: every writer on one table (one URI): LanceDB commits a version
  with a conditional put, and a writer that loses the race retries (counted);
- ``partitioned``: each writer on a table of its own (a URI per path prefix),
  so no two writers ever race for a version.

Reported per run: files written per second over all writers, the p50/p99 of
one file's write, the commit retries, and whether every row landed (the
tables are read back and counted)."""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import latency_ms

FILES = int(os.environ.get("CODEINDEX_S3_FILES", "30"))
CHUNKS = 8
DIM = 384
WRITERS = (1, 2, 4)


def _record(writer: int, n: int):
    from codeindex_common.model import Chunk, FileRecord

    path = f"w{writer}/f{n}.py"
    chunks = [Chunk(id=f"{path}:{i}", path=path, language="python", kind="function", symbol=f"f{i}",
                    qualified_name=f"f{i}", parent_id="", start_line=3 * i + 1, end_line=3 * i + 2,
                    start_byte=0, end_byte=0, text=f"def f{i}():\n    return {writer * 1000 + n}\n",
                    embed_text=f"def f{i}", content_hash=f"{path}:{i}") for i in range(CHUNKS)]
    vecs = np.random.default_rng(writer * 100_000 + n).standard_normal((CHUNKS, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return FileRecord(path, f"h{n}", chunks, vecs, "", "bench-model")


def _writer(uri: str, options: dict, writer: int, start, out) -> None:
    """One writer process: wait for the start, write FILES files one at a time, report latencies and retries."""
    from prometheus_client import REGISTRY

    from store_svc.store import VectorStore

    store = VectorStore(uri, storage_options=options)
    start.wait()
    took = []
    for n in range(FILES):
        began = time.perf_counter()
        store.write([_record(writer, n)])
        took.append((time.perf_counter() - began) * 1000)
    retries = sum(REGISTRY.get_sample_value("store_commit_retries_total", {"op": op}) or 0.0
                  for op in ("pending", "append", "done"))
    out.put({"writer": writer, "ms": took, "retries": retries})


def _run(moto, bucket: str, layout: str, writers: int) -> dict:
    from store_svc.store import VectorStore

    base = f"s3://{bucket}/{layout}-{writers}"
    uris = [f"{base}/p{w}" if layout == "partitioned" else base for w in range(writers)]
    seed = VectorStore(uris[0], storage_options=moto.storage_options())  # the tables exist before the race
    seed.write([_record(99, 0)])
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(uris[w], moto.storage_options(), w, start, out)) for w in range(writers)]
    for p in procs:
        p.start()
    time.sleep(3.0)  # every writer has opened its store
    began = time.perf_counter()
    start.set()
    reports = [out.get(timeout=600) for _ in procs]
    wall = time.perf_counter() - began
    for p in procs:
        p.join(60)
    rows = sum(VectorStore(u, storage_options=moto.storage_options()).stats().chunks for u in sorted(set(uris)))
    expected = writers * FILES * CHUNKS + CHUNKS
    ms = [t for r in reports for t in r["ms"]]
    return {"layout": layout, "writers": writers, "files": writers * FILES, "wall_s": round(wall, 2),
            "files_per_s": round(writers * FILES / wall, 1), "write_ms": latency_ms(ms),
            "commit_retries": int(sum(r["retries"] for r in reports)), "rows": rows, "rows_expected": expected,
            "nothing_lost": rows == expected}


def bench_s3_writers(log) -> dict:
    from tests.moto import BUCKET, CREDENTIALS, MotoServer

    os.environ.update(CREDENTIALS)
    with tempfile.TemporaryDirectory(prefix="bench-moto-") as tmp:
        moto = MotoServer(Path(tmp) / "moto.log")
        try:
            runs = []
            for layout in ("shared", "partitioned"):
                for writers in WRITERS:
                    r = _run(moto, BUCKET, layout, writers)
                    runs.append(r)
                    log(f"s3 writers: {layout}, {writers} writer(s): {r['files_per_s']} files/s, write p50 "
                        f"{r['write_ms']['p50_ms']} ms, p99 {r['write_ms']['p99_ms']} ms, {r['commit_retries']} "
                        f"retries, rows {r['rows']}/{r['rows_expected']}")
        finally:
            moto.stop()
    return {"files_per_writer": FILES, "chunks_per_file": CHUNKS, "dim": DIM, "runs": runs}
