"""``make bench STAGE=quality``: index every project of the set with the real
pipeline (``orchestrator index``, the embedded default, the default model),
then search each query as the store does and score the ranking, for every
mode and for the ranking stage with each signal on and off.

Searches run in this process against each project's index (``VectorStore``,
the same code the store service runs), with the query embedded once by the
embedder's default backend, as the orchestrator embeds a query
(``embedding_text``). The search latency of the API itself is the search
stage's (``make bench STAGE=search``)."""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

from bench.common import run_index
from codeindex_common.model import Query, embedding_text
from parser_svc.languages import detect

from .judgments import Judged, load
from .projects import PROJECTS, ROOT, SRC, WORK
from .score import Found, metrics, summarize



def log(msg: str) -> None:
    print(f"[quality {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parser_fingerprint() -> str:
    """A digest of the code that decides what the chunks are: an index built by other code is rebuilt
    (an unchanged file is otherwise not parsed again)."""
    import hashlib

    h = hashlib.sha256()
    for path in sorted([*(ROOT / "parser_svc").glob("*.py"), ROOT / "codeindex_common" / "identifiers.py"]):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def query_backend():
    """The embedder's default backend as the run's services make it (``CODEINDEX_EMBED_DTYPE`` honoured:
    ``fp32`` measures the fp32 model beside the default)."""
    from embed_svc.backends import make_backend

    return make_backend("auto", dtype=os.environ.get("CODEINDEX_EMBED_DTYPE", "auto"), runs=1)  # one batch a call


def build_indexes(names: list[str], model_id: str) -> dict[str, Path]:
    """Each project's index for the model ``model_id``, brought up to date by ``orchestrator index``
    (incremental: a no-op once built; rebuilt with ``--reindex`` when the parser's code changed since).
    Each model has its indexes apart (an index holds one model's vectors)."""
    from bench.corpus import fetch_sources

    fetch_sources([p for p in PROJECTS if p.name in names], SRC)
    fingerprint = parser_fingerprint()
    out = {}
    for name in names:
        index_dir = WORK / "index" / model_id.replace("/", "_") / name
        stamp = index_dir / "parser.fingerprint"
        stale = stamp.exists() and stamp.read_text() != fingerprint or not stamp.exists() and index_dir.exists()
        started = time.perf_counter()
        summary = run_index(SRC / name, index_dir, *(["--reindex"] if stale else []))
        stamp.write_text(fingerprint)
        log(f"{name}: {summary['index_chunks']} chunks of {summary['index_files']} files "
            f"({summary['chunks_embedded']} embedded) in {time.perf_counter() - started:.1f}s")
        out[name] = index_dir
    return out


def language_of(q: Judged) -> str:
    """The language a query is scored under: its first answer's."""
    return detect(q.relevant[0].path, b"")


class Searcher:
    """Every project's store, opened once, and the query vectors, embedded once."""

    def __init__(self, indexes: dict[str, Path], queries: list[Judged], backend):
        from store_svc.store import VectorStore

        self.stores = {name: VectorStore(str(path / "lancedb")) for name, path in indexes.items()}
        texts = sorted({q.query for q in queries})
        vectors = backend.encode([embedding_text(t) for t in texts])  # as the orchestrator embeds a query
        self.vectors = dict(zip(texts, vectors))

    def search(self, q: Judged, mode: str, k: int = 10, ranking=None) -> list[Found]:
        store = self.stores[q.project]
        hits = store.search(self.vectors[q.query] if mode != "keyword" else None,
                            Query(text=q.query, k=k, mode=mode), ranking=ranking)
        return [Found(h.chunk.path, h.chunk.start_line, h.chunk.end_line) for h in hits]


def run_config(searcher: Searcher, queries: list[Judged], mode: str, ranking=None) -> dict:
    per_query, timings = [], []
    for q in queries:
        started = time.perf_counter()
        found = searcher.search(q, mode, ranking=ranking)
        timings.append(time.perf_counter() - started)
        per_query.append((q, language_of(q), metrics(found, q)))
    summary = summarize(per_query)
    summary["store_search_p50_ms"] = round(1000 * statistics.median(timings), 2)
    summary["per_query"] = {q.id: round(m["ndcg@10"], 3) for q, _, m in per_query}
    return summary


def bench_quality() -> dict:
    from store_svc.ranking import ABLATIONS, DEFAULT

    queries = load()
    projects = sorted({q.project for q in queries})
    backend = query_backend()
    indexes = build_indexes(projects, backend.model_id)
    searcher = Searcher(indexes, queries, backend)
    results: dict = {"model_id": backend.model_id,"projects": [f"{p.name} ({p.registry}: {p.package} {p.version})"
                                  for p in PROJECTS if p.name in projects],
                     "queries": len(queries), "held_out": sum(q.held_out for q in queries)}
    modes = {}
    for mode in ("vector", "keyword", "hybrid"):
        modes[mode] = run_config(searcher, queries, mode)
        log(f"{mode}: {_line(modes[mode])}")
    results["modes"] = modes
    ablation = {}
    for name, options in ABLATIONS.items():
        ablation[name] = run_config(searcher, queries, "hybrid", ranking=options)
        log(f"hybrid, {name}: {_line(ablation[name])}")
    results["ablation"] = ablation
    results["default_ranking"] = repr(DEFAULT)
    return results


def _line(s: dict) -> str:
    t, h = s["tuning"], s["held_out"]
    return (f"tuning NDCG@10 {t['ndcg@10']:.3f} hit@1 {t['hit@1']:.3f} | held-out NDCG@10 {h['ndcg@10']:.3f} "
            f"hit@1 {h['hit@1']:.3f} MRR@10 {h['mrr@10']:.3f} | p50 {s['store_search_p50_ms']} ms")


__all__ = ["bench_quality", "build_indexes", "Searcher", "run_config"]
