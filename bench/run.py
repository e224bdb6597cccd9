"""``make bench``: measure the pipeline against its bottleneck, against the
sequential design it replaces, and over time. See docs/BENCHMARKS.md.

    python -m bench.run [--quick] [--stage parser|embed|store|pipeline|search|load|quality|live|peer|scale]

Everything runs in one process tree on this machine, on a corpus fetched from
PyPI (bench/corpus.py); results are merged into bench/results/latest.json,
appended to bench/results/history.jsonl, and docs/BENCHMARKS.md is
regenerated from them.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench import corpus as corpus_mod  # noqa: E402
from bench.common import code_commit, index_command, percentile, summary_of  # noqa: E402
from codeindex_common.model import FileRecord  # noqa: E402
from orchestrator.clients import EmbedderClient, StoreClient  # noqa: E402
from codeindex_common.launcher import LocalServices, ServiceProcess, orchestrator_command  # noqa: E402
from orchestrator.walker import file_hash, read, walk  # noqa: E402

RESULTS = Path(os.environ.get("CODEINDEX_BENCH_RESULTS", ROOT / "bench" / "results"))
DOCS = Path(os.environ.get("CODEINDEX_BENCH_DOCS", ROOT / "docs"))
STAGES = ("parser", "embed", "tokenize", "store", "pipeline", "search", "load", "quality", "live", "peer",
          "scale")
DEVICE = os.environ.get("CODEINDEX_EMBED_DEVICE", "cpu")  # `make bench-gpu` sets cuda for services and baselines
WORK = Path(os.environ.get("CODEINDEX_BENCH_WORK", ROOT / "bench" / ".cache" / "work"))
# The corpus's chunk texts saved by `--save-texts`: the embed stage then needs no corpus download and no
# parser grammars (how it runs on a lent GPU machine, which has neither).
TEXTS_FILE = os.environ.get("CODEINDEX_BENCH_TEXTS", "")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def model_window() -> tuple[int, bytes]:
    """The default model's window and tokenizer, as the embedder's Info gives them to the parser."""
    from embed_svc.backends import default_model_path

    return 256, (Path(default_model_path()) / "tokenizer.json").read_bytes()


def model_limits():
    """Chunking as in a real run: sized for the default model's window."""
    from embed_svc.backends import default_model_path
    from parser_svc.chunker import Limits

    return Limits(max_tokens=model_window()[0], tokenizer=str(Path(default_model_path()) / "tokenizer.json"))


class Corpus:
    def __init__(self, quick: bool):
        self.quick = quick
        self._chunks = None
        self._texts: list[str] | None = None
        self._described: dict | None = None
        if TEXTS_FILE:
            saved = json.loads(Path(TEXTS_FILE).read_text())
            if saved["describe"]["quick"] != quick:
                raise SystemExit(f"{TEXTS_FILE} holds the {'quick' if saved['describe']['quick'] else 'full'} "
                                 "corpus's texts: run with the same --quick")
            self._texts, self._described = saved["texts"], saved["describe"]
            self.files, self.projects = [], saved["describe"]["projects"]
            return
        self.root, self.projects = corpus_mod.corpus(quick, WORK / ("corpus-quick" if quick else "corpus-full"))
        self.files: list[tuple[str, bytes]] = []
        for e in walk(str(self.root)):
            if not e.skip_reason and e.size <= 2_000_000:
                self.files.append((e.path, read(e)))
        self.bytes = sum(len(d) for _, d in self.files)

    def chunks(self):
        """Every chunk of the corpus (parsed here, in-process), by file."""
        if self._chunks is None:
            from parser_svc.chunker import chunk_file

            limits = model_limits()
            self._chunks = [(p, chunk_file(p, d, limits=limits)) for p, d in self.files]
        return self._chunks

    def texts(self) -> list[str]:
        """Each distinct embedded text once, as the pipeline embeds them."""
        if self._texts is not None:
            return self._texts
        seen: dict[str, str] = {}
        for _, r in self.chunks():
            for c in r.chunks:
                seen.setdefault(c.content_hash, c.embed_text)
        return list(seen.values())

    def projects_dirs(self) -> list[str]:
        return [p.name for p in self.root.iterdir() if p.is_dir()]

    def describe(self) -> dict:
        if self._described is not None:
            return self._described
        n_chunks = sum(len(r.chunks) for _, r in self.chunks())
        return {"projects": self.projects, "files": len(self.files), "bytes": self.bytes, "chunks": n_chunks,
                "distinct_texts": len(self.texts()), "quick": self.quick}


def services(stages: list[str], index_dir: Path, env: dict[str, str] | None = None) -> LocalServices:
    """The given stages started locally, their settings in ``env``; stopped by the caller."""
    svc = LocalServices(stages, str(index_dir), timeout=300, env=env)
    try:
        svc.start()
    except BaseException:
        svc.stop()
        raise
    return svc


# --------------------------------------------------------------------------- parser


async def _over_streams(items: list, streams: int, call, count) -> tuple[float, int]:
    """Send ``items`` over ``streams`` concurrent streams opened by ``call``
    (which takes an async iterator); returns (seconds, sum of ``count`` over
    the responses)."""
    queue: asyncio.Queue = asyncio.Queue()
    for item in [*items, *([None] * streams)]:
        queue.put_nowait(item)

    async def feed():
        while (item := await queue.get()) is not None:
            yield item

    async def one() -> int:
        return sum([count(r) async for r in call(feed())])

    started = time.perf_counter()
    n = sum(await asyncio.gather(*(one() for _ in range(streams))))
    return time.perf_counter() - started, n


async def _parse_all(address: str, files, streams: int = 2) -> tuple[float, int]:
    """Every file through the service over ``streams`` streams, chunked for
    the default model's window. The client's own work stays out of the
    measure (it shares these cores): requests are serialized before the clock
    starts and responses parsed (to count chunks) after it stops."""
    import grpc

    from codeindex_common.pb import parser_pb2
    from codeindex_common.channels import CHANNEL_OPTIONS

    max_tokens, tokenizer = model_window()
    options = parser_pb2.ChunkOptions(max_tokens=max_tokens, tokenizer_json=tokenizer)
    ready = [parser_pb2.ParseRequest(path=path, content=data).SerializeToString() for path, data in files]
    first = parser_pb2.ParseRequest(options=options).SerializeToString()  # merged into a stream's first request
    answers: list[bytes] = []
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        service = parser_pb2.DESCRIPTOR.services_by_name["Parser"].full_name
        parse = channel.stream_stream(f"/{service}/Parse", request_serializer=None, response_deserializer=None)

        async def call(items):
            async def requests():
                head = first
                async for raw in items:
                    yield head + raw  # concatenated messages merge: the first carries the options
                    head = b""
            async for r in parse(requests()):
                yield r

        seconds, _ = await _over_streams(ready, streams, call, lambda r: answers.append(r) or 0)
    chunks = sum(len(parser_pb2.ParseResponse.FromString(a).chunks) for a in answers)
    assert len(answers) == len(files), (len(answers), len(files))
    return seconds, chunks


def bench_parser(c: Corpus, repeats: int = 3, instances: int = 2) -> dict:
    """Each worker count: the best of ``repeats`` passes on each of
    ``instances`` freshly started services, each pass over the
    corpus ``rounds`` times (the quick corpus six times, so that the last
    big file's tail, when only one worker still has work, weighs as little
    as in a long run)."""
    out: dict = {}
    cores = os.cpu_count() or 1
    rounds = 6 if c.quick else 1
    files = c.files * rounds
    for workers in sorted({1, cores}):
        passes = []
        for _ in range(instances):  # times differ more between service instances than between passes
            svc = services(["parser"], WORK / "parser", {"CODEINDEX_PARSER_WORKERS": str(workers)})
            try:
                asyncio.run(_parse_all(svc.address("parser"), c.files[:20]))  # warm
                passes += [asyncio.run(_parse_all(svc.address("parser"), files)) for _ in range(repeats)]
            finally:
                svc.stop()
        seconds, chunks = min(passes)
        out[workers] = {"workers": workers, "rounds": rounds, "seconds": round(seconds, 3),
                        "files_per_s": round(len(files) / seconds, 1), "chunks_per_s": round(chunks / seconds, 1),
                        "mb_per_s": round(c.bytes * rounds / 1e6 / seconds, 2)}
        log(f"parser, {workers} worker(s): {out[workers]}")
    return {"parser_chunks_per_s": out[cores]["chunks_per_s"], "parser_files_per_s": out[cores]["files_per_s"],
            "parser_mb_per_s": out[cores]["mb_per_s"],
            "parser_worker_speedup": round(out[cores]["chunks_per_s"] / out[1]["chunks_per_s"], 2),
            "parser_runs": list(out.values())}


# --------------------------------------------------------------------------- embed


async def _embed_all(address: str, texts: list[str], streams: int = 8, per_request: int = 32) -> float:
    client = EmbedderClient(address, 600)
    requests = [(str(i), texts[i:i + per_request]) for i in range(0, len(texts), per_request)]
    try:
        seconds, n = await _over_streams(requests, streams, client.embed, lambda r: len(r[1]))
    finally:
        await client.close()
    assert n == len(texts), (n, len(texts))
    return seconds


class GpuSampler:
    """GPU utilisation (%) sampled by nvidia-smi every 200 ms while the block runs."""

    def __enter__(self):
        self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                      "--format=csv,noheader,nounits", "-lms", "200", "-i", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        rows = [line.split(",") for line in out.splitlines() if line.count(",") == 1]
        self.util = [float(u) for u, _ in rows]
        self.memory_mb = max((float(m) for _, m in rows), default=0.0)

    def summary(self) -> dict:
        busy = [u for u in self.util if u > 0] or [0.0]
        return {"gpu_util_mean_pct": round(sum(busy) / len(busy), 1), "gpu_util_max_pct": max(busy),
                "gpu_memory_mb": self.memory_mb, "gpu_samples": len(self.util)}


EMBED_TEXTS = 3000  # distinct corpus texts per embedder measurement (the quick corpus has ~1,800)
WARM_TEXTS = [f"def warm_up_{i}(x):\n    return x * {i}\n" * (1 + i % 8) for i in range(64)]  # not in the corpus


def evenly(items: list, n: int) -> list:
    """``n`` of ``items`` taken at even steps (all of them when there are no more than ``n``)."""
    return items if len(items) <= n else [items[i * len(items) // n] for i in range(n)]


def _embed_service_rate(texts: list[str], streams: int = 8, env: dict[str, str] | None = None) -> float:
    """Chunks/s of a fresh embedding service (``env``: its settings) on ``texts`` over ``streams`` streams."""
    svc = services(["embed"], WORK / "embed", env)
    try:
        asyncio.run(_embed_all(svc.address("embed"), WARM_TEXTS, streams))  # warm, with texts not measured
        seconds = asyncio.run(_embed_all(svc.address("embed"), texts, streams))
    finally:
        svc.stop()
    return len(texts) / seconds


def bench_embed(c: Corpus) -> dict:
    """The service (8 streams, its defaults) against plain SentenceTransformer.encode on the same texts,
    one after the other in this run; the ONNX backend likewise; then a sweep of streams x max_batch_tokens."""
    # a GPU embeds 3,000 texts in well under a second, too short to measure: there it gets them all. On a
    # CPU, 3,000 taken evenly across the corpus: as long as the pipeline's texts on average (184.9 tokens
    # against 184.9 over all 10,920; the first 3,000, used until 2026-12-07, averaged 178.4), so that the
    # pipeline's efficiency compares the same work
    texts = c.texts() if DEVICE.startswith("cuda") else evenly(c.texts(), EMBED_TEXTS)
    gpu = None
    torch_env = {"CODEINDEX_EMBED_BACKEND": "torch"}
    if DEVICE.startswith("cuda"):
        with GpuSampler() as sampler:
            service_rate = _embed_service_rate(texts, env=torch_env)
        gpu = sampler.summary()
        log(f"GPU during the service run: {gpu}")
    else:
        service_rate = _embed_service_rate(texts, env=torch_env)
    log(f"embed service (torch), 8 streams: {service_rate:.1f} chunks/s over {len(texts)} texts")
    from sentence_transformers import SentenceTransformer

    from embed_svc.backends import default_model_path

    model = SentenceTransformer(default_model_path(), device=DEVICE)
    model.encode(WARM_TEXTS, batch_size=32)
    started = time.perf_counter()
    model.encode(texts, batch_size=32, normalize_embeddings=True)
    raw_rate = len(texts) / (time.perf_counter() - started)
    log(f"plain SentenceTransformer.encode(batch_size=32): {raw_rate:.1f} chunks/s")
    out = {"embed_standalone_chunks_per_s": round(service_rate, 1), "embed_raw_chunks_per_s": round(raw_rate, 1),
           "embed_vs_raw_ratio": round(service_rate / raw_rate, 3), "embed_texts": len(texts),
           "embed_texts_sample": "all" if DEVICE.startswith("cuda") or len(texts) == len(c.texts()) else "even"}
    if gpu:
        out["embed_gpu"] = gpu
    if not DEVICE.startswith("cuda"):
        onnx_rate = _embed_service_rate(texts, env={"CODEINDEX_EMBED_BACKEND": "onnx"})
        log(f"embed service (onnx), 8 streams: {onnx_rate:.1f} chunks/s")
        out.update(embed_onnx_chunks_per_s=round(onnx_rate, 1), onnx_vs_raw_ratio=round(onnx_rate / raw_rate, 3))
    sample = texts[:300 if c.quick else 800]
    sweep = []
    for streams in (1, 8):
        for tokens in (1024, 4096, 16384) + ((65536,) if DEVICE.startswith("cuda") else ()):
            rate = _embed_service_rate(sample, streams, {**torch_env, "CODEINDEX_EMBED_MAX_BATCH_SIZE": "256",
                                                         "CODEINDEX_EMBED_MAX_BATCH_TOKENS": str(tokens)})
            sweep.append({"streams": streams, "max_batch_tokens": tokens, "chunks_per_s": round(rate, 1)})
            log(f"sweep: {sweep[-1]}")
    out.update(embed_sweep=sweep, embed_sweep_texts=len(sample))
    return out


# --------------------------------------------------------------------------- store


def _records(c: Corpus, dim: int = 384) -> list[FileRecord]:
    """Each corpus file as the orchestrator sends it to the store: the parser's answer as its workers
    serialize it (the keyword fields computed there), and random unit vectors."""
    from parser_svc.parser import _response as parser_answer

    rng = np.random.default_rng(0)
    records = []
    for path, r in c.chunks():
        if not r.chunks:
            continue
        v = rng.standard_normal((len(r.chunks), dim)).astype(np.float32)
        records.append(FileRecord(path, "h" + path, [], v / np.linalg.norm(v, axis=1, keepdims=True), "", "bench",
                                  parsed=parser_answer(r)))
    return records


async def _write_all(address: str, records: list[FileRecord]) -> float:
    client = StoreClient(address, 600)

    async def feed():  # lists of files, as the orchestrator's records completed together
        for i in range(0, len(records), 16):
            yield records[i:i + 16]

    started = time.perf_counter()
    acks = [a async for acked in client.write(feed()) for a in acked]
    seconds = time.perf_counter() - started
    await client.close()
    assert len(acks) == len(records), (len(acks), len(records))
    return seconds


def bench_store(c: Corpus) -> dict:
    records = _records(c)
    rows = sum(r.rows for r in records)
    out = {}
    for label, flush_rows in (("coalesced", "2048"), ("per_file", "1")):
        index = WORK / f"store-{label}"
        shutil.rmtree(index, ignore_errors=True)
        svc = services(["store"], index, {"CODEINDEX_STORE_FLUSH_ROWS": flush_rows})
        try:
            seconds = asyncio.run(_write_all(svc.address("store"), records))
        finally:
            svc.stop()
        out[label] = rows / seconds
        log(f"store writes, {label}: {out[label]:.0f} rows/s ({len(records)} files, {rows} rows)")
    return {"store_rows_per_s": round(out["coalesced"]), "store_per_file_rows_per_s": round(out["per_file"]),
            "store_write_speedup": round(out["coalesced"] / out["per_file"], 2)}


# --------------------------------------------------------------------------- pipeline


class Sampler:
    """CPU use of each stage process of a running index, every 0.5 s."""

    def __init__(self, pid: int):
        import psutil

        self.proc = psutil.Process(pid)
        self.samples: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _stage(self, p) -> str:
        cmd = " ".join(p.cmdline())
        for stage in ("parser", "embed", "store"):
            if f"{stage}_svc" in cmd:
                return stage
        return "parser" if "forkserver" in cmd or "multiprocessing" in cmd else "orchestrator"

    def _run(self) -> None:
        import psutil

        started = time.perf_counter()
        procs: dict[int, psutil.Process] = {}
        while not self._stop.is_set():
            try:
                for p in [self.proc, *self.proc.children(recursive=True)]:
                    if p.pid not in procs:
                        procs[p.pid] = p
                        p.cpu_percent(None)
                sample = {"t": round(time.perf_counter() - started, 2)}
                for pid, p in list(procs.items()):
                    try:
                        stage = self._stage(p)
                        sample[stage] = sample.get(stage, 0.0) + p.cpu_percent(None)
                    except psutil.Error:
                        procs.pop(pid)
                self.samples.append(sample)
            except psutil.Error:
                break
            self._stop.wait(0.5)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def e2e_index_dir(c: Corpus) -> Path:
    """The corpus's index, kept between stages (one per corpus)."""
    return WORK / ("e2e-index-quick" if c.quick else "e2e-index")


def orchestrator_index(repo: Path, index_dir: Path, env: dict | None = None, sample: bool = False):
    started = time.perf_counter()
    proc = subprocess.Popen(index_command(repo, index_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    samples: list[dict] = []
    if sample:
        with Sampler(proc.pid) as s:
            out, err = proc.communicate()
        samples = s.samples
    else:
        out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"orchestrator index failed: {err[-3000:]}")
    return summary_of(out), time.perf_counter() - started, samples


def sequential_baseline(c: Corpus) -> dict:
    """The design this project replaces: parse 10 files in a process pool,
    then embed their chunks, then write them, one step after the other."""
    from sentence_transformers import SentenceTransformer

    from embed_svc.backends import default_model_path
    from store_svc.store import VectorStore

    model = SentenceTransformer(default_model_path(), device=DEVICE)
    model.encode(["warm up"])
    index = WORK / "sequential"
    shutil.rmtree(index, ignore_errors=True)
    store = VectorStore(str(index))
    chunks = 0
    started = time.perf_counter()
    dim = model.get_embedding_dimension()
    from parser_svc.chunker import chunk_file

    limits = model_limits()
    with ProcessPoolExecutor(os.cpu_count() or 1, mp_context=multiprocessing.get_context("forkserver")) as pool:
        for i in range(0, len(c.files), 10):
            batch = c.files[i:i + 10]
            results = list(pool.map(chunk_file, [p for p, _ in batch], [d for _, d in batch], [""] * len(batch),
                                    [limits] * len(batch)))
            texts = [ch.embed_text for r in results for ch in r.chunks]
            vecs = model.encode(texts, batch_size=32, normalize_embeddings=True) if texts else np.empty((0, dim))
            records, pos = [], 0
            for (path, data), r in zip(batch, results):
                n = len(r.chunks)
                v = np.asarray(vecs[pos:pos + n], dtype=np.float32).reshape(n, dim)
                records.append(FileRecord(path, file_hash(data), list(r.chunks), v, r.skip_reason, "baseline"))
                pos += n
            store.write(records)
            chunks += len(texts)
    seconds = time.perf_counter() - started
    return {"sequential_chunks_per_s": round(chunks / seconds, 1), "sequential_seconds": round(seconds, 1)}


def pipeline_efficiency(results: dict) -> float | None:
    """The pipeline's embedded chunks/s over the embedder alone with the backend the pipeline runs (the
    default: ONNX Runtime on a CPU, torch on CUDA)."""
    alone = results.get("embed_standalone_chunks_per_s" if DEVICE.startswith("cuda") else "embed_onnx_chunks_per_s")
    if not alone or "e2e_embedded_chunks_per_s" not in results:
        return None
    return round(results["e2e_embedded_chunks_per_s"] / alone, 3)


def bench_pipeline(c: Corpus, results: dict) -> dict:
    out: dict = {}
    e2e_dir = e2e_index_dir(c)
    shutil.rmtree(e2e_dir, ignore_errors=True)
    summary, wall, samples = orchestrator_index(c.root, e2e_dir, sample=True)
    embedded_rate = summary["chunks_embedded"] / summary["seconds"]
    out.update({
        "e2e_chunks_per_s": round(summary["chunks_total"] / summary["seconds"], 1),
        "e2e_embedded_chunks_per_s": round(embedded_rate, 1),
        "e2e_seconds": summary["seconds"], "e2e_wall_seconds": round(wall, 1),
        "e2e_chunks": summary["chunks_total"], "e2e_chunks_embedded": summary["chunks_embedded"],
        "utilisation": samples,
    })
    log(f"pipeline end to end: {summary}")

    noop, wall, _ = orchestrator_index(c.root, e2e_dir)
    assert noop["chunks_embedded"] == 0, noop
    out.update({"noop_reindex_seconds": noop["seconds"], "noop_reindex_wall_seconds": round(wall, 1)})
    victim = next(c.root / p for p, _ in c.files if p.endswith(".py") and "/test" not in p)
    original = victim.read_bytes()
    try:
        victim.write_bytes(original + b"\n\ndef _bench_added_function(x):\n    return x * 2\n")
        one, wall, _ = orchestrator_index(c.root, e2e_dir)
    finally:
        victim.write_bytes(original)
    assert one["files_indexed"] == 1, one
    out.update({"one_file_reindex_seconds": one["seconds"], "one_file_reindex_wall_seconds": round(wall, 1),
                "one_file_reindex_chunks_embedded": one["chunks_embedded"]})
    orchestrator_index(c.root, e2e_dir)  # back to the corpus as it is, for the search benchmark
    log(f"no-change re-index {noop['seconds']}s, one file changed {one['seconds']}s")

    noembed_dir = WORK / "noembed-index"
    shutil.rmtree(noembed_dir, ignore_errors=True)
    fast, _, _ = orchestrator_index(c.root, noembed_dir, env={"CODEINDEX_EMBED_BACKEND": "hash"})
    out["noembed_pipeline_chunks_per_s"] = round(fast["chunks_total"] / fast["seconds"], 1)
    log(f"pipeline with the near-instant backend: {out['noembed_pipeline_chunks_per_s']} chunks/s")

    out.update(sequential_baseline(c))
    out["speedup_vs_sequential"] = round(out["e2e_chunks_per_s"] / out["sequential_chunks_per_s"], 2)
    log(f"sequential baseline: {out['sequential_chunks_per_s']} chunks/s; speedup {out['speedup_vs_sequential']}x")
    return out


# --------------------------------------------------------------------------- search


SEARCH_ROWS = 100_000
SEARCH_CLIENTS = 8


class _Api:
    """``orchestrator serve`` on an index (it starts its embedder and store)."""

    def __init__(self, root: Path, index_dir: Path, env: dict[str, str] | None = None):
        self._work = tempfile.TemporaryDirectory(prefix="bench-api-")
        work = Path(self._work.name)
        self.api = ServiceProcess("orchestrator serve", orchestrator_command("serve"),
                                  ["--path", str(root), "--index-dir", str(index_dir)], listen="127.0.0.1:0",
                                  ready_file=str(work / "api.json"), log_path=str(work / "api.log"), env=env)
        try:
            self.address = self.api.wait(300).address
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        try:
            self.api.stop(60)
        finally:
            self._work.cleanup()


def _until_held(address: str, query: str, timeout: float = 180.0) -> float:
    """Search now and then until the store holds the table's rows in memory (docs/STORE.md, "Rows held in
    memory": read once the version has held still, at a search): the seconds that took. The latencies are
    of a store serving as it does from then on, not of its first seconds."""
    import grpc

    from codeindex_common.pb import orchestrator_pb2, orchestrator_pb2_grpc

    started = time.perf_counter()
    with grpc.insecure_channel(address) as ch:
        stub = orchestrator_pb2_grpc.OrchestratorStub(ch)
        while time.perf_counter() - started < timeout:
            stub.Search(orchestrator_pb2.QueryRequest(query=query, k=10), timeout=60)
            status = stub.Status(orchestrator_pb2.StatusRequest(), timeout=60)
            if status.resident_rows and status.resident_rows == status.chunks:
                return round(time.perf_counter() - started, 1)
            time.sleep(0.5)
    raise RuntimeError(f"the store held no rows in memory after {timeout:.0f}s")


def _latencies(address: str, queries: list[str], clients: int, seconds: float, mode: str = "",
               modes: tuple[str, ...] = (), before=None) -> dict:
    """``clients`` threads, each on its own channel, warm up (5 searches each),
    then search back to back for ``seconds``: latency percentiles (ms) and
    queries per second over that window. With ``modes``, each client takes them
    in turn (from a different one each), and the percentiles are also given by
    mode. ``before``, if given, runs once every client is warm, before the
    window opens. Every failed call is counted (by status code), warm-up calls
    included; none is retried."""
    import grpc

    from codeindex_common.model import mode_to_pb
    from codeindex_common.pb import orchestrator_pb2, orchestrator_pb2_grpc

    modes = modes or (mode,)
    results: list[list[tuple[str, float]]] = [[] for _ in range(clients)]
    errors: list[str] = []
    empty: list[str] = []

    def client(i: int) -> None:
        with grpc.insecure_channel(address) as ch:
            stub = orchestrator_pb2_grpc.OrchestratorStub(ch)

            def one(n: int) -> tuple[str, float]:
                m = modes[(n + n // len(queries)) % len(modes)]  # each query in every mode
                req = orchestrator_pb2.QueryRequest(query=queries[n % len(queries)], k=10,
                                                    mode=mode_to_pb(m) if m else 0)
                started = time.perf_counter()
                resp = stub.Search(req, timeout=30)
                took = (time.perf_counter() - started) * 1000
                if not resp.hits:
                    empty.append(m)
                return m, took

            def search(n: int, timed: bool) -> None:
                try:
                    took = one(n)
                    if timed:
                        results[i].append(took)
                except grpc.RpcError as err:  # counted, never hidden
                    errors.append(str(err.code()))

            for n in range(5):  # warm up this channel
                search(i + n, False)
            gate.wait()
            n, deadline = i * 7, time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                search(n, True)
                n += 1

    opened: list[float] = []
    gate = threading.Barrier(clients, action=lambda: (before and before(), opened.append(time.perf_counter())))
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ended = time.perf_counter()
    started = opened[0]
    elapsed = ended - started

    lat = sorted(x for r in results for _, x in r)
    out = {"p50_ms": round(statistics.median(lat), 2) if lat else 0.0, "p95_ms": percentile(lat, 0.95),
           "p99_ms": percentile(lat, 0.99), "max_ms": round(lat[-1], 2) if lat else 0.0,
           "qps": round(len(lat) / elapsed, 1), "queries": len(lat), "errors": len(errors),
           "error_codes": dict(collections.Counter(errors)), "empty": len(empty),
           "per_client_min": min(len(r) for r in results), "per_client_max": max(len(r) for r in results),
           "started": started, "ended": ended}
    if len(modes) > 1:
        out["by_mode"] = {}
        for m in modes:
            ms = sorted(x for r in results for mm, x in r if mm == m)
            out["by_mode"][m] = {"queries": len(ms), "p50_ms": round(statistics.median(ms), 2) if ms else 0.0,
                                 "p99_ms": percentile(ms, 0.99)}
    return out


def _search_table(e2e_dir: Path, big_dir: Path, rows: int) -> int:
    """A ``rows``-row index made of the real corpus index and copies of it
    under other paths, each copy's vectors moved by noise (cosine ~0.93 to
    the original), so that the table has the real data's structure."""
    import lancedb
    import pyarrow as pa
    import pyarrow.compute as pc

    src = lancedb.connect(str(e2e_dir / "lancedb"))
    chunks, files = src.open_table("chunks").to_arrow(), src.open_table("files").to_arrow()
    shutil.rmtree(big_dir, ignore_errors=True)
    db = lancedb.connect(str(big_dir / "lancedb"))
    rng = np.random.default_rng(0)
    dim = chunks.schema.field("vector").type.list_size
    base = chunks.column("vector").combine_chunks().flatten().to_numpy().reshape(-1, dim)
    chunk_parts, file_parts, total, n = [chunks], [files], chunks.num_rows, 0
    while total < rows:
        n += 1
        part = chunks.slice(0, min(chunks.num_rows, rows - total))
        prefix = f"copy{n}/"
        v = base[:part.num_rows] + 0.02 * rng.standard_normal((part.num_rows, dim)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        cols = {name: part.column(name) for name in part.schema.names}
        cols["path"] = pc.binary_join_element_wise(prefix, part.column("path"), "")
        cols["id"] = pc.binary_join_element_wise(part.column("id"), f"-{n}", "")
        cols["content_hash"] = pc.binary_join_element_wise(f"{n:04x}", pc.utf8_slice_codeunits(
            part.column("content_hash"), 4), "")
        cols["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), dim)
        chunk_parts.append(pa.table(cols, schema=chunks.schema))
        fcols = {name: files.column(name) for name in files.schema.names}
        fcols["path"] = pc.binary_join_element_wise(prefix, files.column("path"), "")
        file_parts.append(pa.table(fcols, schema=files.schema))
        total += part.num_rows
    db.create_table("chunks", pa.concat_tables(chunk_parts))
    db.create_table("files", pa.concat_tables(file_parts))
    return total


def _recall(big_dir: Path, samples: int = 200) -> dict:
    """Recall@10 of the ANN index against exact search, for query vectors near
    (cosine ~0.93) stored ones. Counted by distance, so that ties are fair: an
    ANN hit counts when it is as near as exact search's tenth (where many rows
    hold the same vector, as copies of one text do, any ten of them are right).
    The exact tenth is computed here from every stored vector (cosine, in
    blocks), not by LanceDB's flat search: 200 of those over a million rows
    would take minutes.

    ``all``: over every query. ``near``: over the queries that have a
    neighbourhood, whose exact tenth lies within cosine distance 0.5. The
    hash backend's vectors are random, so for a query near a chunk whose text
    occurs once, neighbours two to ten are unrelated vectors at about 0.8,
    spread over every partition: no partitioned index finds those without
    scanning, and real embeddings do not look like that."""
    from store_svc.store import VectorStore

    store = VectorStore(str(big_dir / "lancedb"))
    table = store._chunks
    dim = store.dim
    rng = np.random.default_rng(1)
    picks = rng.choice(table.count_rows(), samples, replace=False)
    stored = table.search().select(["vector"]).limit(None).to_arrow().column("vector")
    stored = stored.combine_chunks().flatten().to_numpy().reshape(-1, dim)
    queries = stored[picks] + 0.02 * rng.standard_normal((samples, dim)).astype(np.float32)
    tenth = _exact_tenth(stored, queries)
    found = []
    for q, limit in zip(queries, tenth):
        got = [r["_distance"] for r in store._search.vector(q, 10, "", columns=["id"])]  # as searches probe
        found.append(sum(d <= limit + 1e-5 for d in got) / 10)
    near = [f for f, limit in zip(found, tenth) if limit <= 0.5]
    return {"all": round(float(np.mean(found)), 4), "near": round(float(np.mean(near)), 4) if near else None,
            "queries": samples, "queries_near": len(near)}


def _exact_tenth(stored: np.ndarray, queries: np.ndarray, block: int = 65536) -> np.ndarray:
    """Each query's tenth smallest cosine distance to the stored vectors."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    best = np.full((len(q), 10), np.inf, np.float32)
    for start in range(0, len(stored), block):
        part = stored[start:start + block]
        norms = np.linalg.norm(part, axis=1)
        dist = 1.0 - (q @ part.T) / np.where(norms > 0, norms, 1.0)
        best = np.sort(np.concatenate([best, np.partition(dist, min(9, dist.shape[1] - 1), axis=1)[:, :10]],
                                      axis=1), axis=1)[:, :10]
    return best[:, 9]


def corpus_index(c: Corpus) -> Path:
    """The corpus's index, up to date with the corpus (a no-op after the pipeline stage)."""
    e2e_dir = e2e_index_dir(c)
    try:
        orchestrator_index(c.root, e2e_dir)
    except RuntimeError as err:  # an index an older codeindex wrote: built again
        log(f"rebuilding the corpus index: {str(err)[-300:]}")
        shutil.rmtree(e2e_dir, ignore_errors=True)
        orchestrator_index(c.root, e2e_dir)
    return e2e_dir


def corpus_queries() -> list[str]:
    """What the latency and load measures search for: the search-quality set's queries (their quality is
    measured by the quality stage, on its own projects)."""
    from bench.quality.judgments import load

    return sorted({q.query for q in load()})


# The embedder's vector cache off: the queries cycle, and a repeated query's vector would come from the cache
# (0.6 ms instead of about 3 to embed it, and no model run beside the store's search): each is embedded, as a
# question asked for the first time is.
SEARCH_ENV = {"CODEINDEX_EMBED_CACHE_SIZE": "0"}


def bench_search(c: Corpus) -> dict:
    from store_svc.store import StoreSettings, VectorStore

    e2e_dir = corpus_index(c)
    queries = corpus_queries()
    out: dict = {}
    # latency at SEARCH_ROWS rows: exact search first, then with the ANN index
    big_dir = WORK / "search-index"
    rows = _search_table(e2e_dir, big_dir, SEARCH_ROWS)
    VectorStore(str(big_dir / "lancedb"), settings=StoreSettings(ann_index="none")).optimize()  # scalar + FTS
    seconds = 10 if c.quick else 30
    for label in ("exact", "ann"):
        if label == "ann":
            started = time.perf_counter()
            stats = VectorStore(str(big_dir / "lancedb")).optimize()
            out.update(ann_index=stats.vector_index, ann_build_seconds=round(time.perf_counter() - started, 1))
            log(f"built {stats.vector_index} on {rows} rows in {out['ann_build_seconds']}s")
        api = _Api(c.root, big_dir, SEARCH_ENV)
        try:
            held_s = _until_held(api.address, queries[0])
            single = _latencies(api.address, queries, 1, seconds)
            vector = _latencies(api.address, queries, 1, seconds / 2, mode="vector")
            loaded = _latencies(api.address, queries, SEARCH_CLIENTS, seconds)
        finally:
            api.stop()
        key = "search" if label == "ann" else "search_exact"
        out.update({f"{key}_p50_ms": single["p50_ms"], f"{key}_p99_ms": single["p99_ms"],
                    f"{key}_vector_p50_ms": vector["p50_ms"], f"{key}_qps": loaded["qps"],
                    f"{key}_loaded_p50_ms": loaded["p50_ms"], f"{key}_loaded_p99_ms": loaded["p99_ms"],
                    f"{key}_errors": single["errors"] + vector["errors"] + loaded["errors"],
                    f"{key}_held_after_s": held_s})
        log(f"search, {label}, {rows} rows (held in memory {held_s}s after the API started): "
            f"one client p50 {single['p50_ms']} ms p99 {single['p99_ms']} ms "
            f"(vector mode p50 {vector['p50_ms']} ms); {SEARCH_CLIENTS} clients {loaded['qps']} QPS, "
            f"p50 {loaded['p50_ms']} ms p99 {loaded['p99_ms']} ms")
    recall = _recall(big_dir)
    out["ann_recall_at_10"], out["ann_recall_at_10_near"] = recall["all"], recall["near"]
    out["search_rows"] = rows
    log(f"ANN recall@10 against exact search: {out['ann_recall_at_10']}")
    return out


# --------------------------------------------------------------------------- search under load


LOAD_CLIENTS = 32
LOAD_SECONDS = 60
LOAD_MODES = ("hybrid", "vector", "keyword")
# What the index run adds to a copy of the corpus while the searches run: code the index has never seen
# (so every chunk is embedded; a copy of indexed files would reuse their vectors), pinned sdists from PyPI.
LOAD_EXTRA = [("flask", "3.1.0"), ("pydantic_core", "2.27.2")]
LOAD_EXTRA_QUICK = [("flask", "3.1.0")]


def _counter(port: int, name: str) -> float:
    """The sum of a metric's samples (all labels) on a local service's metrics page."""
    import re
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


class _IndexRun(threading.Thread):
    """``orchestrator index`` against running services, in the background."""

    def __init__(self, repo: Path, env: dict[str, str]):
        super().__init__(daemon=True)
        self.repo, self.env = repo, env
        self.summary: dict = {}
        self.error = ""
        self.started = self.ended = self.wall = 0.0

    def run(self) -> None:
        self.started = time.perf_counter()
        try:
            self.summary, self.wall, _ = orchestrator_index(self.repo, WORK / "load-unused", self.env)
        except Exception as err:  # noqa: BLE001 - reported: the run did not complete
            self.error = str(err)[-2000:]
        self.ended = time.perf_counter()


def _index_under_load(c: Corpus, repo: Path, clients: int, seconds: float) -> dict:
    """Parser, embedder and store as running services over a copy of the corpus's
    index, ``orchestrator serve`` on them, and ``orchestrator index`` of ``repo``
    against the same services; once the run is embedding, ``clients`` search
    clients for ``seconds`` (none: the run alone, for comparison)."""
    import grpc

    from codeindex_common.model import mode_to_pb
    from codeindex_common.pb import orchestrator_pb2, orchestrator_pb2_grpc

    index_dir = WORK / "load-index"
    shutil.rmtree(index_dir, ignore_errors=True)
    shutil.copytree(e2e_index_dir(c) / "lancedb", index_dir / "lancedb")
    queries = corpus_queries()
    out: dict = {}
    with LocalServices(["parser", "embed", "store"], str(index_dir), timeout=300) as svc:
        env = {f"CODEINDEX_ORCHESTRATOR_{stage.upper()}_ADDR": svc.address(stage)
               for stage in ("parser", "embed", "store")}
        embed_port, store_port = svc.children["embed"].metrics_port, svc.children["store"].metrics_port
        api = _Api(repo, index_dir, env)
        try:
            with grpc.insecure_channel(api.address) as ch:  # warm: the query path and every mode
                stub = orchestrator_pb2_grpc.OrchestratorStub(ch)
                for n, mode in enumerate(LOAD_MODES * 2):
                    stub.Search(orchestrator_pb2.QueryRequest(query=queries[n], k=10, mode=mode_to_pb(mode)),
                                timeout=60)
            run = _IndexRun(repo, env)
            rows: list[float] = []

            def start_index() -> None:  # once the clients are warm: the searches start once the run embeds
                embedded = _counter(embed_port, "embed_texts_total")
                run.start()
                while _counter(embed_port, "embed_texts_total") <= embedded and run.is_alive():
                    time.sleep(0.2)  # walking, hashing, diffing
                rows.append(_counter(store_port, "store_rows_written_total"))

            if not clients:
                start_index()
            else:
                loaded = _latencies(api.address, queries, clients, seconds, modes=LOAD_MODES, before=start_index)
                rows_during = _counter(store_port, "store_rows_written_total") - rows[0]
                index_end = run.ended if not run.is_alive() else loaded["ended"]
                overlap = max(0.0, min(loaded["ended"], index_end) - max(loaded["started"], run.started))
                out.update(load=loaded, overlap=round(overlap, 1), index_outlasted=run.is_alive(),
                           rows_during=int(rows_during), searched_seconds=round(loaded["ended"] - loaded["started"], 1),
                           index_started_before=round(loaded["started"] - run.started, 1))
            run.join()
            out.update(summary=run.summary, error=run.error, wall=round(run.ended - run.started, 1))
            if clients:  # and afterwards every mode still finds the corpus
                with grpc.insecure_channel(api.address) as ch:
                    stub = orchestrator_pb2_grpc.OrchestratorStub(ch)
                    out["hits_after"] = min(len(stub.Search(orchestrator_pb2.QueryRequest(
                        query=q, k=10, mode=mode_to_pb(m)), timeout=60).hits) for q in queries[:5] for m in LOAD_MODES)
        finally:
            api.stop()
    return out


def bench_load(c: Corpus) -> dict:
    """32 clients search through the public API for 60 s while an index run adds new code to the same
    store (through the same services); the same run without the searches, for comparison."""
    corpus_index(c)
    repo = WORK / "load-repo"
    shutil.rmtree(repo, ignore_errors=True)
    shutil.copytree(c.root, repo)
    extra = LOAD_EXTRA_QUICK if c.quick else LOAD_EXTRA
    corpus_mod.fetch(extra, repo)
    seconds = 20 if c.quick else LOAD_SECONDS
    quiet = _index_under_load(c, repo, 0, 0)
    if quiet["error"]:
        raise RuntimeError(f"the index run without load failed: {quiet['error']}")
    log(f"index run alone: {quiet['summary']} ({quiet['wall']} s wall)")
    r = _index_under_load(c, repo, LOAD_CLIENTS, seconds)
    s, load = r["summary"], r["load"]
    log(f"under load: {load['queries']} searches, {load['errors']} failed {load['error_codes']}, {load['qps']} QPS, "
        f"p50 {load['p50_ms']} p95 {load['p95_ms']} p99 {load['p99_ms']} max {load['max_ms']} ms, by mode "
        f"{load['by_mode']}; index run {'completed' if not r['error'] else 'FAILED: ' + r['error']} {s} "
        f"({r['wall']} s wall), overlapping the searches for {r['overlap']} of {r['searched_seconds']} s")
    return {
        "load_clients": LOAD_CLIENTS, "load_seconds": seconds, "load_modes": list(LOAD_MODES),
        "load_extra": [f"{n}=={v}" for n, v in extra],
        "load_searches": load["queries"], "load_failed_searches": load["errors"],
        "load_error_codes": load["error_codes"], "load_empty_searches": load["empty"],
        "load_qps": load["qps"], "load_p50_ms": load["p50_ms"], "load_p95_ms": load["p95_ms"],
        "load_p99_ms": load["p99_ms"], "load_max_ms": load["max_ms"], "load_by_mode": load["by_mode"],
        "load_searches_per_client_min": load["per_client_min"],
        "load_searches_per_client_max": load["per_client_max"],
        "load_searched_seconds": r["searched_seconds"], "load_overlap_seconds": r["overlap"],
        "load_index_outlasted_searches": r["index_outlasted"], "load_index_started_before_s": r["index_started_before"],
        "load_rows_written_during_searches": r["rows_during"], "load_hits_after": r["hits_after"],
        "load_index_completed": not r["error"], "load_index_error": r["error"],
        "load_index_seconds": s.get("seconds"), "load_index_wall_seconds": r["wall"],
        "load_index_chunks": s.get("chunks_total"), "load_index_chunks_embedded": s.get("chunks_embedded"),
        "load_index_files": s.get("files_indexed"),
        "load_quiet_index_seconds": quiet["summary"]["seconds"], "load_quiet_index_wall_seconds": quiet["wall"],
        "load_quiet_index_chunks_embedded": quiet["summary"]["chunks_embedded"],
    }


# --------------------------------------------------------------------------- main


def machine() -> dict:
    gpu = ""
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001
        pass
    return {"cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(), "gpu": gpu or "none",
            "python": platform.python_version(), "platform": platform.platform()}


def history_line(results: dict) -> dict:
    """What history.jsonl keeps of a run: its figures, without the per-sample CPU use or the quality
    stage's per-query scores (latest.json has both)."""
    out = {k: v for k, v in results.items() if k != "utilisation"}
    for key in [k for k in out if k == "quality" or k.startswith("quality_")]:  # quality_fp32: the model in fp32
        if isinstance(quality := out[key], dict):
            out[key] = {k: v for k, v in quality.items() if k not in ("modes", "ablation")}
            for group in ("modes", "ablation"):
                out[key][group] = {name: {k: v for k, v in cfg.items() if k != "per_query"}
                                   for name, cfg in quality.get(group, {}).items()}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smaller corpus; a few minutes")
    ap.add_argument("--stage", choices=STAGES, help="run one part and merge its keys into latest.json")
    ap.add_argument("--save-texts", metavar="FILE", help="save the corpus's chunk texts for CODEINDEX_BENCH_TEXTS "
                                                         "(an embed-stage run elsewhere) and stop")
    args = ap.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    if args.save_texts:
        c = Corpus(args.quick)
        Path(args.save_texts).write_text(json.dumps({"describe": c.describe(), "texts": c.texts()}))
        log(f"saved {len(c.texts())} texts of {c.describe()['files']} files to {args.save_texts}")
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    gpu = DEVICE.startswith("cuda")
    latest_path = RESULTS / ("latest-gpu.json" if gpu else "latest.json")
    results = json.loads(latest_path.read_text()) if args.stage and latest_path.exists() else {}
    if results.get("corpus", {}).get("quick") != args.quick:
        results = {}  # never mix figures from two corpora: a STAGE run on the other corpus starts afresh
    started = time.perf_counter()
    c = Corpus(args.quick)
    log(f"corpus: {c.describe()}")
    # the side-by-side with the peer is a CPU comparison (and needs its virtualenv), and the scale stage uses
    # the instant hash backend: neither is part of a GPU run
    stages = [args.stage] if args.stage else [st for st in STAGES if not (gpu and st in ("peer", "scale"))]
    for stage in stages:
        log(f"--- {stage}")
        if stage == "parser":
            results.update(bench_parser(c))
        elif stage == "embed":
            results.update(bench_embed(c))
        elif stage == "tokenize":
            from bench.tokenize import bench_tokenize

            results["tokenize"] = bench_tokenize(c.texts(), log)
        elif stage == "store":
            results.update(bench_store(c))
        elif stage == "pipeline":
            results.update(bench_pipeline(c, results))
        elif stage == "search":
            results.update(bench_search(c))
        elif stage == "load":
            results.update(bench_load(c))
        elif stage == "quality":
            from bench.quality.evaluate import bench_quality

            # CODEINDEX_EMBED_DTYPE=fp32 measures the model in fp32 beside the default's figures, not over them
            dtype = os.environ.get("CODEINDEX_EMBED_DTYPE", "auto")
            results["quality" if dtype == "auto" else f"quality_{dtype}"] = bench_quality()
        elif stage == "live":
            from bench.live import bench_live

            results.update(bench_live(c.root, corpus_index(c), corpus_queries(), WORK, log))
        elif stage == "peer":
            from bench.peer import PEER_CORPUS, bench_peer

            root = corpus_mod.fetch(PEER_CORPUS, WORK / "peer-corpus")
            results["peer"] = bench_peer(root, WORK / "peer", log)
            results["peer"]["corpus"] = [f"{n}=={v}" for n, v in PEER_CORPUS]
        elif stage == "scale":
            from bench.scale import bench_scale

            results["scale"] = bench_scale(c.root, WORK, log)
    if (efficiency := pipeline_efficiency(results)) is not None:
        results["pipeline_efficiency"] = efficiency
    cmd = " ".join(part for part in ["make bench-gpu" if gpu else "make bench", "QUICK=1" if args.quick else "",
                                     f"STAGE={args.stage}" if args.stage else ""] if part)
    date = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    commit = code_commit()
    if results and "stage_runs" not in results:  # figures from a run that did not record this: its command
        results["stage_runs"] = {st: {"command": results.get("command", "?"), "date": results.get("date", "?"),
                                      "commit": "?"} for st in STAGES}
    runs = results.setdefault("stage_runs", {})  # which command measured each stage's figures, on which code
    for stage in stages:
        runs[stage] = {"command": cmd, "date": date, "commit": commit}
    results.update({"machine": machine(), "corpus": c.describe(), "command": cmd, "date": date,
                    "bench_seconds": round(time.perf_counter() - started, 1)})
    latest_path.write_text(json.dumps(results, indent=1) + "\n")
    with open(RESULTS / ("history-gpu.jsonl" if gpu else "history.jsonl"), "a") as fh:
        fh.write(json.dumps(history_line(results)) + "\n")
    from bench.report import write_report

    write_report(results, DOCS, "BENCHMARKS-GPU.md" if gpu else "BENCHMARKS.md")
    log(f"done in {results['bench_seconds']}s: {latest_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
