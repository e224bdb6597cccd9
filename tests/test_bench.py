"""The benchmark harness's own pieces (the benchmark itself runs with `make bench`)."""

import collections
import json
from pathlib import PurePosixPath

import pytest

from bench import corpus
from bench.quality.judgments import KINDS, QUERIES, check, load
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
    # a half of each project's queries of each kind is held out
    groups = collections.Counter((q.project, q.kind) for q in queries)
    held = collections.Counter((q.project, q.kind) for q in queries if q.held_out)
    assert all(abs(held[k] - groups[k] / 2) <= 0.5 for k in groups), {k: (held[k], groups[k]) for k in groups}
    assert not OUTSIDE & {p.package for p in PROJECTS} and not OUTSIDE & {p.name for p in PROJECTS}
    assert set(corpus.QUICK) <= set(corpus.FULL)


def test_the_query_files_are_well_formed():
    """What needs no fetched sources (the query files are committed, the sources are not): each file is
    its project's, each query has text, a known kind and spans that are relative paths with a line range."""
    problems = []
    for f in sorted(QUERIES.glob("*.json")):
        data = json.loads(f.read_text())
        if data.get("project") != f.stem:
            problems.append(f"{f.name}: project {data.get('project')!r}")
        for q in data["queries"]:
            where = f"{f.name} {q.get('id')}"
            if set(q) != {"id", "kind", "query", "relevant"} or not str(q["id"]).startswith(f"{f.stem}-"):
                problems.append(f"{where}: keys {sorted(q)}")
                continue
            if q["kind"] not in KINDS or not q["query"].strip() or not q["relevant"]:
                problems.append(f"{where}: kind {q['kind']!r}, query {q['query']!r}, {len(q['relevant'])} spans")
            for r in q["relevant"]:
                path = PurePosixPath(r["path"])
                if path.is_absolute() or ".." in path.parts or "\\" in r["path"] or not path.parts:
                    problems.append(f"{where}: path {r['path']!r}")
                if not (isinstance(r["start"], int) and isinstance(r["end"], int) and 1 <= r["start"] <= r["end"]):
                    problems.append(f"{where}: lines {r['start']!r}-{r['end']!r}")
    assert not problems, problems
    assert {q.project for q in load()} == {f.stem for f in QUERIES.glob("*.json")}


def test_the_judged_spans_lie_in_their_files():
    """Needs the sources, which `make bench STAGE=quality` fetches (bench/.cache, not committed)."""
    from bench.quality.evaluate import SRC

    present = [q for q in load() if (SRC / q.project).is_dir()]
    if not present:
        pytest.skip(f"no quality sources under {SRC} (make bench STAGE=quality fetches them)")
    assert not check(present, SRC)


def test_scoring_credits_each_span_once_at_the_chunk_level():
    from bench.quality.judgments import Judged, Span
    from bench.quality.score import Found, metrics

    q = Judged("x-1", "x", "behaviour", "q", (Span("a.py", 10, 30),), False)
    piece, again, klass = Found("a.py", 10, 20), Found("a.py", 21, 30), Found("a.py", 1, 200)
    assert metrics([piece, again], q) == {"ndcg@10": 1.0, "mrr@10": 1.0, "hit@1": 1.0, "hit@5": 1.0}
    assert metrics([klass, Found("b.py", 1, 5), again], q)["mrr@10"] == 1 / 3  # a class around it is not it
    assert metrics([Found("b.py", 10, 30)], q)["ndcg@10"] == 0.0


def _synthetic_cases(informative: bool, n: int = 16, per: int = 8, seed: int = 3):
    """Tuning cases of a made-up ranking problem: one relevant candidate a query, in a file of its own; its
    cosine stands out (``informative``) or is drawn like every other candidate's."""
    import numpy as np

    from bench.quality.fit import Case
    from bench.quality.judgments import Span
    from codeindex_common.model import Chunk
    from store_svc.ranking import FEATURES

    rng = np.random.default_rng(seed)
    out = []
    for q in range(n):
        x = np.zeros((per, len(FEATURES)))
        x[:, 0] = 1.0
        x[:, FEATURES.index("cosine")] = rng.uniform(0.1, 0.6, per)
        for noise in ("lines", "keyword", "name_cover", "file_share"):  # signals that say nothing here
            x[:, FEATURES.index(noise)] = rng.uniform(0, 1, per)
        relevant = int(rng.integers(per))
        if informative:
            x[relevant, FEATURES.index("cosine")] = 0.9
        chunks = [Chunk(id=f"{q}-{i}", path=f"q{q}/f{i}.py", language="python", kind="function", symbol=f"f{i}",
                        qualified_name=f"f{i}", parent_id="", start_line=1, end_line=5, start_byte=0, end_byte=50,
                        text="", embed_text="", content_hash="") for i in range(per)]
        labels = np.zeros(per)
        labels[relevant] = 1.0
        # one query a name: a fold holding it has no other of its kind to fit on, and falls back to both kinds'
        out.append(Case("identifier" if q == n - 1 else "text", x, chunks, labels,
                        (Span(f"q{q}/f{relevant}.py", 1, 5),), False))
    return out


def test_cross_validation_scores_queries_the_fit_did_not_see():
    """bench.quality.fit --cv: a signal that marks the answer ranks unseen queries' answers first; with the same
    fit on noise, unseen queries score about what chance gives, though the fit on all of them flatters it."""
    from bench.quality.fit import cross_validate, fit_weights, mean_ndcg

    assert cross_validate(_synthetic_cases(True), workers=1) == 1.0
    noise = _synthetic_cases(False)
    unseen = cross_validate(noise, workers=2)  # the folds in processes of their own, as --cv runs them
    assert unseen < 0.6  # chance: about 0.49 for one answer among 8
    in_sample = fit_weights(noise, kinds=("any",))
    assert mean_ndcg(noise, in_sample["any"]) > unseen + 0.05  # fitted on all of it: bent to the noise


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


def test_the_tokenizing_ways_agree_and_are_timed_on_the_model(tmp_path):
    """bench/tokenize.py in one process on a few texts: both ways give the model's ids and masks (so either keeps
    the vectors as they are), every way is timed, and the report renders the table and the projection."""
    from bench import tokenize

    texts = ["def parse_header(line):\n    return line.split(':', 1)", "x" * 3000, "class Router:\n    pass", "é ü"]
    tokenize.MIN_SECONDS = 0.01
    r = tokenize.measure(texts * 80)  # two batches, the second shorter
    assert r["same_ids"] is True and r["texts"] == 320 and r["tokens"] > 320
    assert all(r[k] > 0 for k in ("preprocess_s", "fast_s", "fast_encode_s", "fast_convert_s"))
    fake = {"texts": 320, "batch": 256, "tokens": r["tokens"], "same_ids": True, "encode_speedup_1_to_2": 1.8,
            "by_cores": {"1": {"preprocess_texts_per_s": 1000, "fast_texts_per_s": 3000,
                               "fast_encode_texts_per_s": 4000, "fast_convert_texts_per_s": 12000}},
            "projected_16_cores": {"serial_texts_per_s": 9000, "overlapped_texts_per_s": 12000}}
    write_report({"tokenize": fake, "machine": {"cores": 2}, "corpus": {"projects": ["x==1"]}}, tmp_path)
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| 1 | 1,000 | 3,000 | 4,000 | 12,000 |" in text and "9,000 texts/s" in text


def test_the_batcher_feed_is_measured_through_the_real_batcher_and_tokenizer(tmp_path, monkeypatch):
    """bench/tokenize.py's batcher measurement (the embedder's Batcher, the torch backend's tokenizing, an instant
    model) answers every text, pads each bulk batch from the encodings that counted it, and is reported."""
    from bench import tokenize
    from embed_svc.backends.torch import TorchBackend

    padded = []
    real = TorchBackend.tokenize
    monkeypatch.setattr(TorchBackend, "tokenize", lambda self, texts, encodings=None: (
        padded.append(encodings is not None), real(self, texts, encodings))[1])
    texts = [f"def f{i}(x):\n    return x * {i}" + " + x" * (i % 40) for i in range(300)]
    assert tokenize.through_batcher(texts, 1) > 0
    assert padded and all(padded)  # every batch from the kept encodings: no text encoded twice
    # with two tokenizer threads one may take texts the other is still counting: those are encoded again
    assert tokenize.through_batcher(texts, 2) > 0
    fake = {"texts": 300, "batch": 256, "tokens": 1, "same_ids": True, "by_cores": {},
            "batcher": {"2x1": {"cores": 2, "threads": 1, "texts_per_s": 4500}}}
    write_report({"tokenize": fake, "machine": {"cores": 2}, "corpus": {"projects": ["x==1"]}}, tmp_path)
    assert "| 2 | 1 | 4,500 |" in (tmp_path / "BENCHMARKS.md").read_text()


def test_the_store_stage_writes_every_record_through_a_real_store(start_service):
    """bench.run's store stage (`make bench STAGE=store`) feeds the store client lists of records, as the
    orchestrator does, and counts an acknowledgement for each (it broke unnoticed when the client went to
    lists), on a real store service."""
    import asyncio

    import numpy as np

    from bench.run import _write_all
    from codeindex_common.model import FileRecord
    from parser_svc.chunker import Limits, chunk_file

    records = []
    for i in range(40):  # more than one list of 16
        chunks = list(chunk_file(f"m{i}.py", f"def f{i}(x):\n    return x + {i}\n".encode(),
                                 limits=Limits(min_tokens=0)).chunks)
        v = np.random.default_rng(i).standard_normal((len(chunks), 8)).astype(np.float32)
        records.append(FileRecord(f"m{i}.py", f"h{i}", chunks, v / np.linalg.norm(v, axis=1, keepdims=True),
                                  "", "bench"))
    store = start_service("store")
    assert asyncio.run(_write_all(store.address, records)) > 0

    import grpc

    from codeindex_common.pb import store_pb2, store_pb2_grpc

    with grpc.insecure_channel(store.address) as channel:
        stats = store_pb2_grpc.StoreStub(channel).Stats(store_pb2.StatsRequest(), timeout=30)
    assert (stats.files, stats.chunks) == (40, sum(len(r.chunks) for r in records))
