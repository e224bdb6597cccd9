"""Generates deploy/grafana/dashboards/codeindex.json and its copy in
k8s/monitoring/ (run it after editing
the panels; tests/test_prometheus.py checks that the JSON is up to date and
that every query returns data from the real services)."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# the dashboard, and its copy inside the Kubernetes kustomization (kustomize reads no file outside it)
OUTPUTS = [ROOT / "deploy/grafana/dashboards/codeindex.json", ROOT / "k8s/monitoring/codeindex-dashboard.json"]
SEL = '{namespace=~"$namespace", instance=~"$instance"}'


def sel(metric: str, extra: str = "") -> str:
    inner = SEL[1:-1] + (", " + extra if extra else "")
    return f"{metric}{{{inner}}}"


def rate(metric: str, extra: str = "", by: str = "") -> str:
    grouped = f" by ({by})" if by else ""
    return f"sum{grouped} (rate({sel(metric, extra)}[1m]))"


def quantiles(metric: str, by: str = "") -> list[tuple[str, str]]:
    extra = f", {by}" if by else ""
    label = f"{{{{{by}}}}} " if by else ""
    buckets = sel(metric + "_bucket")
    return [(f"histogram_quantile({q}, sum by (le{extra}) (rate({buckets}[1m])))", f"{label}p{int(q * 100)}")
            for q in (0.5, 0.99)]


ROWS: list[tuple[str, list[tuple[str, str, list[tuple[str, str]]]]]] = [
    ("Throughput", [
        ("Per-stage throughput", "ops", [
            (rate("parser_files_total"), "parser files/s"),
            (rate("parser_chunks_total"), "parser chunks/s"),
            (rate("embed_texts_total"), "embedder chunks/s"),
            (rate("store_rows_written_total"), "store rows/s"),
        ]),
        ("Bytes and tokens", "Bps", [
            (rate("parser_bytes_total"), "parser bytes/s"),
            (rate("embed_tokens_total"), "embedder tokens/s"),
        ]),
        ("Index progress", "short", [
            (f"sum by (state) ({sel('orchestrator_run_files')})", "files {{state}}"),
            (f"sum by (state) ({sel('orchestrator_run_chunks')})", "chunks {{state}}"),
        ]),
        ("Run rate and time left", "short", [
            (f"sum ({sel('orchestrator_run_chunks_per_second')})", "chunks/s"),
            (f"max ({sel('orchestrator_run_eta_seconds')})", "seconds left"),
        ]),
    ]),
    ("Where the pipeline waits", [
        ("Starved vs blocked (share of time)", "percentunit", [
            (rate("orchestrator_stage_wait_seconds_total", by="stage, kind"), "{{stage}} {{kind}}"),
        ]),
        ("Queue depths", "short", [
            (f"sum by (queue) ({sel('orchestrator_queue_depth')})", "orchestrator {{queue}}"),
            (f"sum ({sel('embed_queue_depth')})", "embedder queue"),
            (f"sum ({sel('embed_queue_capacity')})", "embedder queue capacity"),
            (f"sum ({sel('parser_in_flight_files')})", "parser in flight"),
        ]),
        ("Open streams", "short", [
            (f"sum ({sel('parser_active_streams')})", "parse"),
            (f"sum ({sel('embed_active_streams')})", "embed"),
            (f"sum ({sel('store_active_streams')})", "write"),
        ]),
        ("Embedding device busy (GPU utilisation on a GPU)", "percentunit", [
            (rate("embed_busy_seconds_total", by="device"), "{{device}}"),
        ]),
    ]),
    ("Latency", [
        ("Parse time per file", "s", quantiles("parser_parse_seconds")),
        ("Model time per batch", "s", quantiles("embed_inference_seconds")),
        ("Queue wait in the embedder", "s", quantiles("embed_queue_wait_seconds")),
        ("Store write time per batch", "s", quantiles("store_write_seconds")),
        ("LanceDB commit time by operation (p99)", "s", [
            (f"histogram_quantile(0.99, sum by (le, op) (rate({sel('store_commit_seconds_bucket')}[1m])))",
             "{{op}}"),
        ]),
        ("Search latency by mode", "s", quantiles("store_search_seconds", by="mode")),
    ]),
    ("Batching", [
        ("Batch size (texts)", "short", quantiles("embed_batch_size")),
        ("Batch tokens (padding included)", "short", quantiles("embed_batch_tokens")),
        ("Padding share", "percentunit", quantiles("embed_padding_ratio")),
        ("Store write batch: files and rows", "short", [
            *((expr, f"files {legend}") for expr, legend in quantiles("store_write_batch_files")),
            *((expr, f"rows {legend}") for expr, legend in quantiles("store_write_batch_rows")),
        ]),
        ("Embedder texts: cache hit, joined, run", "ops", [
            (rate("embed_cache_texts_total", by="result"), "{{result}}"),
        ]),
    ]),
    ("Errors and skips", [
        ("RPCs by status code", "ops", [
            (rate("parser_rpcs_total", by="method, code"), "parser {{method}} {{code}}"),
            (rate("embed_rpcs_total", by="method, code"), "embed {{method}} {{code}}"),
            (rate("store_rpcs_total", by="method, code"), "store {{method}} {{code}}"),
        ]),
        ("Parser results by reason", "ops", [
            (rate("parser_files_total", by="result"), "{{result}}"),
        ]),
        ("Files skipped by reason (run)", "short", [
            (f"sum by (reason) ({sel('orchestrator_files_skipped_total')})", "{{reason}}"),
        ]),
        ("Store commit retries (conflicts)", "short", [
            (f"sum by (op) ({sel('store_commit_retries_total')})", "{{op}}"),
        ]),
        ("Worker restarts and vector reuse", "short", [
            (f"sum ({sel('parser_worker_restarts_total')})", "parser worker restarts"),
            (f"sum by (result) ({sel('store_vectors_lookup_total')})", "vector lookups {{result}}"),
        ]),
    ]),
    ("Processes", [
        ("CPU per service", "percentunit", [
            (f"sum by (job) (rate({sel('process_cpu_seconds_total')}[1m]))", "{{job}}"),
        ]),
        ("Memory per service", "bytes", [
            (f"sum by (job) ({sel('process_resident_memory_bytes')})", "{{job}}"),
        ]),
        ("Index size", "short", [
            (f"max ({sel('store_table_rows')})", "chunk rows"),
            (f"max ({sel('store_table_versions')})", "table versions"),
            (f"max ({sel('store_resident_rows')})", "chunk rows held in memory for search"),
        ]),
    ]),
]


def build() -> dict:
    panels, pid, y = [], 1, 0
    for title, row in ROWS:
        panels.append({"type": "row", "title": title, "id": pid, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}})
        pid, y = pid + 1, y + 1
        width = 24 // len(row)
        for i, (ptitle, unit, targets) in enumerate(row):
            panels.append({
                "type": "timeseries", "title": ptitle, "id": pid,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "gridPos": {"h": 8, "w": width, "x": i * width, "y": y},
                "targets": [{"expr": expr, "legendFormat": legend, "refId": chr(65 + n)}
                            for n, (expr, legend) in enumerate(targets)],
            })
            pid += 1
        y += 8

    def var(name: str, query: str) -> dict:
        return {"name": name, "type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "query": {"query": query, "refId": name}, "definition": query, "refresh": 2,
                "includeAll": True, "allValue": ".*", "multi": True,
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]}}

    return {
        "title": "codeindex pipeline", "uid": "codeindex-pipeline", "schemaVersion": 39, "version": 1,
        "tags": ["codeindex"], "timezone": "browser", "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus",
             "current": {"text": "Prometheus", "value": "Prometheus"}},
            var("namespace", "label_values(process_cpu_seconds_total, namespace)"),
            var("instance", 'label_values(process_cpu_seconds_total{namespace=~"$namespace"}, instance)'),
        ]},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=1) + "\n"


if __name__ == "__main__":
    for out in OUTPUTS:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render())
        print(f"wrote {out}")
