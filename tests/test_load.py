"""Search under load: 32 clients search through the public gRPC API
(`orchestrator serve`) for the whole of an index run that writes to the same
store through the same services (real services, the real model, real
LanceDB). No search may fail, every client gets its searches done, the run
completes, and the table then equals a fresh index. Latency is reported (run
with -s), not asserted. `make bench STAGE=load` measures the same at scale.

The embedder batches queries (EmbedOnce) before the texts an index run has
queued: without that, a search waited behind the run's whole backlog (tens of
seconds on a CPU) and ran out of time. The first tests check that on the
batcher alone."""

from __future__ import annotations

import asyncio
import collections
import json
import shutil
import statistics
import subprocess
import threading
import time

import grpc
import pytest

from embed_svc.backends import HashBackend
from embed_svc.batcher import Batcher
from tests.conftest import ROOT, OrchestratorServe
from tests.test_crash import RUN_TIMEOUT, index_cmd, make_repo, read_chunks, read_files, run_index

CLIENTS = 32
MODES = ("hybrid", "vector", "keyword")
MIN_SEARCHES = 3  # per client, however short the index run
# About this project's own code: the base repository and the packages the index run adds.
QUERIES = [
    "start a gRPC server with health checks and reflection",
    "wait until a service reports SERVING",
    "split a source file into chunks of functions and classes",
    "write chunk rows and their vectors to a LanceDB table",
    "retry a call that failed with UNAVAILABLE",
    "walk a repository and skip files that .gitignore excludes",
    "pack float32 vectors into bytes",
    "map domain exceptions to gRPC status codes",
    "search the index by vector, keyword or both",
    "read settings from command line flags and environment variables",
    "stop the local services when the run ends",
    "reuse stored vectors of chunks whose content did not change",
]
# What the index run adds to the indexed repository: code the index has never seen, under a directory of
# its own (the session's embedding service may have embedded these files under their usual paths).
ADDED_PACKAGES = ("store_svc", "orchestrator")
ADDED_UNDER = "grown"


# ---------------------------------------------------------------- the batcher alone


class RecordingBackend(HashBackend):
    """Records each batch's texts; holds every launch until ``gate`` is set."""

    def __init__(self, delay: float = 0.0):
        super().__init__(dim=16)
        self.batches: list[list[str]] = []
        self.delay = delay
        self.gate = threading.Event()

    def launch(self, batch):
        self.gate.wait()
        time.sleep(self.delay)
        self.batches.append(list(batch.texts))
        return super().launch(batch)


def test_a_query_is_not_queued_behind_the_bulk_texts_ahead_of_it():
    backend = RecordingBackend()
    batcher = Batcher(backend, max_batch_size=8, max_wait_ms=1, in_flight=1)
    batcher.start()

    async def main():
        bulk = asyncio.ensure_future(batcher.embed([f"def f{i}():\n    return {i}\n" for i in range(400)]))
        await asyncio.sleep(0.1)  # all queued; the first batch held at the model
        query = asyncio.ensure_future(batcher.embed(["parse a header"], urgent=True))
        await asyncio.sleep(0.1)
        backend.gate.set()
        await asyncio.gather(bulk, query)

    try:
        asyncio.run(main())
    finally:
        batcher.stop()
    at = next(n for n, b in enumerate(backend.batches) if "parse a header" in b)
    # behind the batches taken before it came (launched, tokenized, being handed over), not 50 of them
    assert at <= 3, f"the query was batch {at} of {len(backend.batches)}"
    assert backend.batches[at] == ["parse a header"]
    assert sum(map(len, backend.batches)) == 401


def test_bulk_texts_are_not_starved_by_a_steady_stream_of_queries():
    """Queries always waiting: batches alternate between queries and bulk texts while bulk texts wait."""
    backend = RecordingBackend(delay=0.002)
    backend.gate.set()
    batcher = Batcher(backend, max_batch_size=4, max_wait_ms=1)
    batcher.start()

    async def main():
        bulk = asyncio.ensure_future(batcher.embed([f"bulk {i}" for i in range(40)]))

        async def searcher(k: int) -> None:
            n = 0
            while not bulk.done():
                await batcher.embed([f"query {k} {n}"], urgent=True)
                n += 1

        await asyncio.wait_for(asyncio.gather(bulk, *(searcher(k) for k in range(8))), 30)

    try:
        asyncio.run(main())
    finally:
        batcher.stop()
    kinds = ["bulk" if b[0].startswith("bulk") else "query" for b in backend.batches]
    assert all(t.startswith(kinds[n]) for n, b in enumerate(backend.batches) for t in b), "a batch of both"
    last_bulk = max(n for n, k in enumerate(kinds) if k == "bulk")
    assert "query" in kinds[:last_bulk], "no query was batched while bulk texts waited"
    assert not [n for n in range(last_bulk) if kinds[n] == kinds[n + 1] == "query"], kinds[:last_bulk + 1]


# ---------------------------------------------------------------- end to end


class SearchClients:
    """``CLIENTS`` threads, one channel each: one warm-up search each, then (once
    ``start`` returns) searches back to back until ``stop``, at least
    ``MIN_SEARCHES`` each. Every failure is recorded; none is retried."""

    def __init__(self, address: str):
        self.address = address
        self.latencies: list[list[float]] = [[] for _ in range(CLIENTS)]
        self.attempts = [0] * CLIENTS
        self.failures: list[str] = []
        self.empty: list[str] = []
        self.warm = threading.Barrier(CLIENTS + 1, timeout=300)
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(CLIENTS)]

    def _client(self, i: int) -> None:
        from codeindex_common.model import mode_to_pb
        from codeindex_common.pb import orchestrator_pb2, orchestrator_pb2_grpc

        with grpc.insecure_channel(self.address) as ch:
            stub = orchestrator_pb2_grpc.OrchestratorStub(ch)

            def search(n: int, timed: bool) -> None:
                query, mode = QUERIES[n % len(QUERIES)], MODES[(n + n // len(QUERIES)) % len(MODES)]
                started = time.perf_counter()
                try:
                    resp = stub.Search(orchestrator_pb2.QueryRequest(query=query, k=10, mode=mode_to_pb(mode)),
                                       timeout=60)
                except grpc.RpcError as err:  # recorded: the test fails on any
                    self.failures.append(f"client {i}, {mode} {query!r}: {err.code().name} {err.details()}")
                    return
                finally:
                    self.attempts[i] += timed
                if timed:
                    self.latencies[i].append(time.perf_counter() - started)
                if not resp.hits:
                    self.empty.append(f"{mode} {query!r}")

            search(i, False)
            self.warm.wait()
            n = i
            while not self.done.is_set() or self.attempts[i] < MIN_SEARCHES:
                n += 1
                search(n, True)

    def start(self) -> None:
        """Start the clients; returns once every one has searched once."""
        for t in self.threads:
            t.start()
        self.warm.wait()
        self.started = time.perf_counter()

    def stop(self) -> None:
        self.done.set()
        for t in self.threads:
            t.join(120)
        self.seconds = time.perf_counter() - self.started
        assert not [t for t in self.threads if t.is_alive()], "a search client did not finish"

    def report(self) -> str:
        lat = sorted(x * 1000 for r in self.latencies for x in r)
        p99 = lat[max(0, int(len(lat) * 0.99) - 1)]
        return (f"{len(lat)} searches by {CLIENTS} clients in {self.seconds:.1f} s ({len(lat) / self.seconds:.1f}/s), "
                f"{len(self.failures)} failed; latency p50 {statistics.median(lat):.0f} ms, p99 {p99:.0f} ms, "
                f"max {lat[-1]:.0f} ms; per client {min(map(len, self.latencies))}-{max(map(len, self.latencies))}")


@pytest.mark.slow
def test_searches_do_not_fail_while_an_index_run_writes(tmp_path, embed_service, start_service):
    base = make_repo(tmp_path / "base", ROOT)  # a real repository, indexed before the clients start
    grown = tmp_path / "grown-repo"  # the same, with code added: what the index run under load indexes
    shutil.copytree(base, grown)
    for package in ADDED_PACKAGES:
        shutil.copytree(ROOT / package, grown / ADDED_UNDER / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    parser = start_service("parser", "--workers", "1")
    uri = str(tmp_path / "lancedb")
    store = start_service("store", "--uri", uri)
    run_index(base, parser.address, embed_service.address, store.address)

    api = OrchestratorServe(tmp_path, grown, "--parser-addr", parser.address, "--embed-addr", embed_service.address,
                            "--store-addr", store.address)
    try:
        clients = SearchClients(api.address)
        clients.start()
        index = subprocess.Popen(index_cmd(grown, parser.address, embed_service.address, store.address), cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = index.communicate(timeout=RUN_TIMEOUT)
        finally:
            if index.poll() is None:
                index.kill()
                index.communicate()
            clients.stop()
        print(f"\nsearch under load: {clients.report()}; index run {index.returncode} in "
              f"{clients.seconds:.1f} s")
        assert not clients.failures, f"{len(clients.failures)} failed searches: {clients.failures[:5]}"
        assert not clients.empty, f"{len(clients.empty)} searches found nothing: {clients.empty[:5]}"
        assert min(clients.attempts) >= MIN_SEARCHES and all(clients.latencies)
        assert index.returncode == 0, f"the index run failed ({index.returncode}):\n{err[-3000:]}"
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["chunks_embedded"] > 0, summary

        # afterwards: every mode still finds things, the added code included
        from codeindex_common.model import mode_to_pb
        from codeindex_common.pb import orchestrator_pb2, orchestrator_pb2_grpc

        with grpc.insecure_channel(api.address) as ch:
            stub = orchestrator_pb2_grpc.OrchestratorStub(ch)
            for mode in MODES:
                hits = stub.Search(orchestrator_pb2.QueryRequest(
                    query="coalesce buffered writes into one LanceDB commit", k=10, mode=mode_to_pb(mode)),
                    timeout=60).hits
                assert hits, mode
            hits = stub.Search(orchestrator_pb2.QueryRequest(query="VectorStore", k=10), timeout=60).hits
            assert any(h.path.startswith(f"{ADDED_UNDER}/store_svc/") for h in hits), [h.path for h in hits]
    finally:
        api_exit = api.stop()
    assert api_exit == 0, api.log.read_text()[-3000:]

    # the table equals a fresh index of the grown repository
    ref_uri = str(tmp_path / "reference")
    ref_store = start_service("store", "--uri", ref_uri)
    run_index(grown, parser.address, embed_service.address, ref_store.address)
    chunks, ref_chunks = read_chunks(uri), read_chunks(ref_uri)
    assert sorted((p, h) for p, _, h in chunks) == sorted((p, h) for p, _, h in ref_chunks)
    assert not [k for k, n in collections.Counter((p, i) for p, i, _ in chunks).items() if n > 1], "duplicates"
    assert sorted(read_files(uri)) == sorted(read_files(ref_uri))
