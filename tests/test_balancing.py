"""Client-side load balancing: the orchestrator spreads its streams over every
replica of a stage, given several addresses or a `dns:///` name."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_services import counter

pytestmark = pytest.mark.slow


def test_streams_are_spread_over_every_replica(tmp_path, embed_service, start_service):
    repo = tmp_path / "repo"
    for package in ("parser_svc", "store_svc", "orchestrator", "codeindex_common"):
        shutil.copytree(ROOT / package, repo / package, ignore=shutil.ignore_patterns("__pycache__"))
    parsers = [start_service("parser", "--workers", "1") for _ in range(2)]
    embedders = [embed_service, start_service("embed")]
    store = start_service("store", "--uri", str(tmp_path / "index"))
    # texts asked of each replica, however answered: the shared embedder's cache may already hold them
    before = [counter(e.metrics_port, "embed_cache_texts_total") for e in embedders]
    exe = str(Path(sys.executable).with_name("orchestrator"))
    port = store.address.rsplit(":", 1)[1]
    run = subprocess.run(
        [exe, "index", str(repo), "--json",
         "--parser-addr", ",".join(p.address for p in parsers),
         "--embed-addr", ",".join(e.address for e in embedders),
         "--store-addr", f"dns:///127.0.0.1:{port}",  # a dns:/// target with the round_robin policy
         "--embed-request-texts", "8"],
        capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["files_indexed"] > 20 and summary["chunks_embedded"] > 100
    parsed = [counter(p.metrics_port, "parser_files_total") for p in parsers]
    embedded = [counter(e.metrics_port, "embed_cache_texts_total") - b for e, b in zip(embedders, before)]
    assert all(n > 0 for n in parsed), f"files parsed per parser replica: {parsed}"
    assert sum(parsed) >= summary["files_indexed"]
    assert all(n > 0 for n in embedded), f"texts embedded per embedder replica: {embedded}"
    assert sum(embedded) >= summary["chunks_embedded"]
