"""A real Prometheus server scrapes all four services during a real index
run; then every panel query of the Grafana dashboard must return data, the
alert rules must load, and every metric the dashboard and rules name must be
in the services' /metrics output."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

DASHBOARD = ROOT / "deploy/grafana/dashboards/codeindex.json"
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
METRIC = re.compile(r"\b((?:parser|embed|store|orchestrator|process)_[a-z0-9_]+)\b")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 10):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.load(resp) if "json" in resp.headers.get("Content-Type", "") else resp.read().decode()


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def alert_exprs() -> list[str]:
    return [r["expr"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def test_dashboard_json_is_generated_from_its_source():
    sys.path.insert(0, str(ROOT / "deploy/grafana"))
    import dashboard

    for out in dashboard.OUTPUTS:
        assert out.read_text() == dashboard.render(), f"{out} is stale: run deploy/grafana/dashboard.py"


def test_promtool_accepts_config_and_rules(tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs Debian's prometheus package"
    config = (ROOT / "deploy/prometheus/prometheus.yml").read_text().replace("/etc/prometheus/alerts.yml",
                                                                           str(ALERTS))
    (tmp_path / "prometheus.yml").write_text(config)
    subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")], check=True)
    subprocess.run([promtool, "check", "rules", str(ALERTS)], check=True)


def test_prometheus_scrapes_a_run_and_every_panel_has_data(tmp_path, start_service):
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus is missing: `make test` installs Debian's prometheus package"
    parser = start_service("parser", "--workers", "2")
    # its own embedder: the session's has other tests' texts of this repository in its cache, and a run that
    # embeds nothing ends before Prometheus has scraped it twice
    embed_service = start_service("embed")
    store = start_service("store", "--uri", str(tmp_path / "index"))
    orch_port, web_port = free_port(), free_port()
    targets = {"parser": parser.metrics_port, "embed": embed_service.metrics_port, "store": store.metrics_port,
               "orchestrator": orch_port}
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [{"job_name": f"codeindex-{name}", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                           for name, port in targets.items()],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    prom = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{web_port}"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "wb"))
    api = f"http://127.0.0.1:{web_port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                get(f"{api}/-/ready")
                break
            except OSError:
                assert prom.poll() is None and time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()
                time.sleep(0.2)
        started = time.time()

        # a real repository: this project's own code, plus a binary file to be skipped
        repo = tmp_path / "repo"
        for pkg in ("parser_svc", "embed_svc", "store_svc", "orchestrator", "codeindex_common"):
            shutil.copytree(ROOT / pkg, repo / pkg, ignore=shutil.ignore_patterns("__pycache__"))
        (repo / "logo.png").write_bytes(b"\x89PNG\x00\x00" + bytes(100))
        exe = str(Path(sys.executable).with_name("orchestrator"))
        addrs = ["--parser-addr", parser.address, "--embed-addr", embed_service.address, "--store-addr",
                 store.address]
        run = subprocess.run([exe, "index", str(repo), "--json", "--index-metrics-port", str(orch_port), *addrs],
                             capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert run.returncode == 0, run.stderr
        summary = json.loads(run.stdout.strip().splitlines()[-1])
        assert summary["files_indexed"] > 20 and summary["files_skipped"]["binary"] == 1
        for mode in ("hybrid", "vector", "keyword"):
            subprocess.run([exe, "search", "parse a file into chunks", "--path", str(repo), "--mode", mode, *addrs],
                           check=True, capture_output=True, timeout=120, cwd=ROOT)
        time.sleep(3)  # a few more scrapes
        end = time.time()

        # every target was scraped, the orchestrator during its run
        up = get(f"{api}/api/v1/query_range?" + urllib.parse.urlencode(
            {"query": "max_over_time(up[1h])", "start": started, "end": end, "step": 1}))["data"]["result"]
        assert {r["metric"]["job"] for r in up if float(r["values"][-1][1]) == 1} == {f"codeindex-{n}" for n in targets}

        empty = []
        for expr in dashboard_exprs():
            q = expr.replace("$namespace", ".*").replace("$instance", ".*")
            data = get(f"{api}/api/v1/query_range?" + urllib.parse.urlencode(
                {"query": q, "start": started, "end": end, "step": 1}))["data"]["result"]
            if not any(series["values"] for series in data):
                empty.append(expr)
        assert not empty, f"panel queries with no data: {empty}"

        rules = get(f"{api}/api/v1/rules")["data"]["groups"]
        loaded = [r for g in rules for r in g["rules"]]
        assert len(loaded) == len(alert_exprs())
        assert all(r["health"] in ("ok", "unknown") for r in loaded), loaded

        # every metric the dashboard and the rules name is exported by a service
        exported = set()
        for port in (parser.metrics_port, embed_service.metrics_port, store.metrics_port):
            exported |= {line.split("{")[0].split(" ")[0] for line in get(f"http://127.0.0.1:{port}/metrics")
                         .splitlines() if line and not line.startswith("#")}
        orch = get(f"{api}/api/v1/label/__name__/values")["data"]  # the orchestrator has exited: ask Prometheus
        exported |= {name for name in orch if name.startswith("orchestrator_")}
        named = {m for expr in dashboard_exprs() + alert_exprs() for m in METRIC.findall(expr)}
        assert named and not named - exported, f"not exported: {sorted(named - exported)}"
    finally:
        prom.terminate()
        prom.wait(30)
        os.sync()


def test_every_metric_is_documented():
    from prometheus_client import REGISTRY

    import embed_svc.metrics  # noqa: F401
    import orchestrator.metrics  # noqa: F401
    import parser_svc.metrics  # noqa: F401
    import store_svc.metrics  # noqa: F401
    from codeindex_common.interceptors import rpc_metrics

    for stage in ("parser", "embed", "store", "orchestrator"):
        rpc_metrics(stage)
    doc = (ROOT / "docs/METRICS.md").read_text()
    names = {m.name + ("_total" if m.type == "counter" else "") for c in list(REGISTRY._collector_to_names)
             if hasattr(c, "describe") for m in c.describe()
             if m.name.split("_")[0] in ("parser", "embed", "store", "orchestrator")}
    assert len(names) > 40
    assert not {n for n in names if f"`{n}`" not in doc}, "docs/METRICS.md misses metrics"
