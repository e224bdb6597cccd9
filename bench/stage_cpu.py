"""``python -m bench.stage_cpu REPO [--runs N]``: what each stage's processes cost in CPU a chunk, for
issue 20's part 2 (nothing but the model may be the ceiling at GPU speed).

Each run is a full ``orchestrator index`` of REPO into a fresh index with the instant ``hash`` backend (so
the model costs nothing), the services started by the run; every process of the run is sampled every
0.25 s (bench.scale.PeakRss) for its CPU seconds (user and system), summed by stage. Reported per run:
wall and the run's own seconds, chunks, CPU seconds by stage and µs a chunk for each. The scale stage's
monorepo at 9,000 files (bench/.cache/work/scale-repo-9000, about 100,000 chunks) is the usual REPO."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from bench.common import code_commit
from bench.scale import _index


def run(repo: Path, runs: int) -> list[dict]:
    out = []
    for _ in range(runs):
        index_dir = Path(tempfile.mkdtemp(prefix="stage-cpu-"))
        try:
            r = _index(repo, index_dir)
        finally:
            shutil.rmtree(index_dir, ignore_errors=True)
        chunks = max(r["chunks_total"], 1)
        out.append({"wall_s": r["wall_s"], "seconds": r["seconds"], "chunks": r["chunks_total"],
                    "files": r["files_seen"], "cpu_s_by_stage": r["cpu_s_by_stage"],
                    "us_per_chunk": {k: round(v * 1e6 / chunks, 1) for k, v in r["cpu_s_by_stage"].items()}})
        print(json.dumps(out[-1]), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.stage_cpu", description=__doc__.split("\n\n")[0])
    ap.add_argument("repo", type=Path)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args(argv)
    if not args.repo.is_dir():
        raise SystemExit(f"{args.repo}: not a directory (make bench STAGE=scale builds the monorepos)")
    runs = run(args.repo, args.runs)
    print(json.dumps({"commit": code_commit(), "repo": str(args.repo), "runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
