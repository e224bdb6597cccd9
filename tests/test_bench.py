"""The benchmark harness's own pieces (the benchmark itself runs with `make bench`)."""

from bench import corpus
from bench.quality.judgments import KINDS, check, load
from bench.quality.projects import PROJECTS
from bench.report import write_report

# how the result is checked from outside: never part of the set
OUTSIDE = {"requests", "flask", "rich", "aiohttp", "fastapi", "pydantic", "model2vec", "express", "@trpc/server",
           "zod"}


def test_the_quality_set_is_large_varied_and_split():
    from bench.quality.evaluate import language_of

    queries = load()
    assert len(queries) >= 200
    assert len({q.id for q in queries}) == len(queries)
    assert len({q.project for q in queries}) >= 8 and {q.project for q in queries} <= {p.name for p in PROJECTS}
    assert len({language_of(q) for q in queries}) >= 5
    assert {q.kind for q in queries} == set(KINDS)
    held = [q for q in queries if q.held_out]
    assert abs(len(held) - len(queries) / 2) <= len({(q.project, q.kind) for q in queries})  # a half, per kind
    assert not OUTSIDE & {p.package for p in PROJECTS} and not OUTSIDE & {p.name for p in PROJECTS}
    assert set(corpus.QUICK) <= set(corpus.FULL)


def test_the_judged_spans_lie_in_their_files_when_the_sources_are_here():
    from bench.quality.evaluate import SRC

    present = [q for q in load() if (SRC / q.project).is_dir()]
    assert not check(present, SRC)


def test_scoring_credits_each_span_once_at_the_chunk_level():
    from bench.quality.judgments import Judged, Span
    from bench.quality.score import Found, metrics

    q = Judged("x-1", "x", "behaviour", "q", (Span("a.py", 10, 30),), False)
    piece, again, klass = Found("a.py", 10, 20), Found("a.py", 21, 30), Found("a.py", 1, 200)
    assert metrics([piece, again], q) == {"ndcg@10": 1.0, "mrr@10": 1.0, "hit@1": 1.0, "hit@5": 1.0}
    assert metrics([klass, Found("b.py", 1, 5), again], q)["mrr@10"] == 1 / 3  # a class around it is not it
    assert metrics([Found("b.py", 10, 30)], q)["ndcg@10"] == 0.0


def test_report_lists_the_measures(tmp_path):
    results = {"e2e_chunks_per_s": 50.5, "embed_standalone_chunks_per_s": 52.0, "pipeline_efficiency": 0.97,
               "noop_reindex_seconds": 0.04, "noop_reindex_wall_seconds": 6.1,
               "quality": {"projects": ["p (pypi: p 1)"], "queries": 4, "held_out": 2, "modes": {"hybrid": {
                   "held_out": {"ndcg@10": 0.8, "mrr@10": 0.7, "hit@1": 0.6, "hit@5": 0.9, "queries": 2},
                   "tuning": {"ndcg@10": 0.5, "mrr@10": 0.5, "hit@1": 0.5, "hit@5": 0.5, "queries": 2},
                   "held_out/language:python": {"ndcg@10": 0.8, "mrr@10": 0.7, "hit@1": 0.6, "hit@5": 0.9,
                                                "queries": 2},
                   "store_search_p50_ms": 3.0}}, "ablation": {}},
               "utilisation": [{"t": 0.0, "embed": 190.0, "parser": 5.0}, {"t": 0.5, "embed": 195.0}],
               "machine": {"cores": 2}, "corpus": {"projects": ["x==1"]}, "command": "make bench"}
    write_report(results, tmp_path)
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| whole pipeline (embedded default), chunks/s | 50.5 |" in text
    assert "| pipeline efficiency (embedded chunks/s over the embedder alone, same backend) | 0.970 |" in text
    assert "0.040 (6.100 wall)" in text
    assert "| hybrid | held-out | 2 | 0.800 | 0.700 | 0.600 | 0.900 | 3.0 |" in text
    assert "| python | 2 | 0.800 | 0.600 | 0 | - | - |" in text
    assert (tmp_path / "benchmarks.png").stat().st_size > 1000


def test_pipeline_efficiency_compares_with_the_backend_the_pipeline_runs():
    from bench.run import DEVICE, pipeline_efficiency

    results = {"e2e_embedded_chunks_per_s": 59.4, "embed_standalone_chunks_per_s": 38.7,
               "embed_onnx_chunks_per_s": 71.8}
    # the default backend: ONNX Runtime on a CPU, torch on CUDA
    assert pipeline_efficiency(results) == (1.535 if DEVICE.startswith("cuda") else 0.827)
    assert pipeline_efficiency({"embed_onnx_chunks_per_s": 71.8}) is None  # no pipeline figures yet
