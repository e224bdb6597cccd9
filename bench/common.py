"""What the benchmark's stages do the same way: run ``orchestrator index``, and summarize latencies."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORCHESTRATOR = Path(os.environ.get("CODEINDEX_ORCHESTRATOR", Path(sys.executable).with_name("orchestrator")))


def code_commit() -> str:
    """The code a benchmark ran: HEAD, marked -dirty when the working tree had changes not committed yet
    (outside what the benchmark itself writes: its results and the docs rendered from them)."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    if subprocess.run(["git", "diff", "--quiet", "HEAD", "--", ".", ":!bench/results", ":!docs"], cwd=ROOT).returncode:
        commit += "-dirty"
    return commit


def index_command(repo: Path, index_dir: Path, *extra: str) -> list[str]:
    """``orchestrator index REPO --json --index-dir INDEX_DIR EXTRA``."""
    return [str(ORCHESTRATOR), "index", str(repo), "--json", "--index-dir", str(index_dir), *extra]


def summary_of(output: str) -> dict:
    """The JSON summary an ``index --json`` run prints last; RuntimeError if there is none."""
    lines = [ln for ln in output.splitlines() if ln.startswith("{") and '"chunks_total"' in ln]
    if not lines:
        raise RuntimeError(f"no JSON summary in the output of orchestrator index:\n{output[-3000:]}")
    return json.loads(lines[-1])


def run_index(repo: Path, index_dir: Path, *extra: str, env: dict[str, str] | None = None) -> dict:
    """``orchestrator index`` to its end: its summary; RuntimeError with the tail of stderr if it fails."""
    run = subprocess.run(index_command(repo, index_dir, *extra), capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    if run.returncode != 0:
        raise RuntimeError(f"orchestrator index {repo} failed: {run.stderr[-3000:]}")
    return summary_of(run.stdout)


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank ``p`` percentile (0 < p <= 1) of ``values``, rounded to 0.01; 0.0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered), max(1, math.ceil(p * len(ordered)))) - 1], 2)


def latency_ms(values: list[float]) -> dict:
    """p50 (the median), p95 and p99 of latencies already in milliseconds, and how many there were."""
    return {"p50_ms": round(statistics.median(values), 2) if values else 0.0, "p95_ms": percentile(values, 0.95),
            "p99_ms": percentile(values, 0.99), "n": len(values)}


class TreeSampler:
    """A process tree sampled every ``period`` seconds on a thread while the ``with`` block runs; a subclass
    says what one sample is (``_sample``)."""

    def __init__(self, pid: int, period: float):
        import psutil

        self.root = psutil.Process(pid)
        self.period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
