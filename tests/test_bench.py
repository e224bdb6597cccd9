"""The benchmark harness's own pieces (the benchmark itself runs with `make bench`)."""

from bench import corpus
from bench.queries import QUERIES
from bench.report import write_report


def test_queries_cover_the_corpus():
    assert len(QUERIES) >= 40
    assert len({q for q, _, _ in QUERIES}) == len(QUERIES)
    projects = {corpus._norm(name) for name, _ in corpus.FULL}
    assert {p for _, p, _ in QUERIES} <= projects
    assert all(names for _, _, names in QUERIES)
    assert set(corpus.QUICK) <= set(corpus.FULL)


def test_report_lists_the_measures(tmp_path):
    results = {"e2e_chunks_per_s": 50.5, "embed_standalone_chunks_per_s": 52.0, "pipeline_efficiency": 0.97,
               "noop_reindex_seconds": 0.04, "noop_reindex_wall_seconds": 6.1,
               "search_quality": {"vector": {"mrr_at_10": 0.5, "hit_at_5": 0.6, "queries": 45, "ranks": []}},
               "utilisation": [{"t": 0.0, "embed": 190.0, "parser": 5.0}, {"t": 0.5, "embed": 195.0}],
               "machine": {"cores": 2}, "corpus": {"projects": ["x==1"]}, "command": "make bench"}
    write_report(results, tmp_path)
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| whole pipeline (embedded default), chunks/s | 50.5 |" in text
    assert "| pipeline efficiency (embedded chunks/s over the embedder alone, same backend) | 0.970 |" in text
    assert "0.040 (6.100 wall)" in text
    assert "| vector | 0.5 | 0.6 |" in text
    assert (tmp_path / "benchmarks.png").stat().st_size > 1000


def test_pipeline_efficiency_compares_with_the_backend_the_pipeline_runs():
    from bench.run import DEVICE, pipeline_efficiency

    results = {"e2e_embedded_chunks_per_s": 59.4, "embed_standalone_chunks_per_s": 38.7,
               "embed_onnx_chunks_per_s": 71.8}
    # the default backend: ONNX Runtime on a CPU, torch on CUDA
    assert pipeline_efficiency(results) == (1.535 if DEVICE.startswith("cuda") else 0.827)
    assert pipeline_efficiency({"embed_onnx_chunks_per_s": 71.8}) is None  # no pipeline figures yet
