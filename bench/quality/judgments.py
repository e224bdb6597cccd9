"""The query files (``bench/quality/queries/<project>.json``): each query with
its kind and the spans (a file and an inclusive 1-based line range) that
answer it, written by reading the project's code. ``python -m
bench.quality.judgments [PROJECT ...]`` checks them against the fetched
sources and prints each span's first line, for a person to look over."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.quality.projects import SRC

HERE = Path(__file__).resolve().parent
QUERIES = HERE / "queries"
KINDS = ("behaviour", "architecture", "symbol")


@dataclass(frozen=True)
class Span:
    path: str  # relative to the project's directory, '/' separated
    start: int
    end: int


@dataclass(frozen=True)
class Judged:
    id: str
    project: str
    kind: str
    query: str
    relevant: tuple[Span, ...]
    held_out: bool  # every second query of each project and kind, in file order: never tuned on


def load(projects: list[str] | None = None) -> list[Judged]:
    out: list[Judged] = []
    for f in sorted(QUERIES.glob("*.json")):
        data = json.loads(f.read_text())
        project = data["project"]
        if projects and project not in projects:
            continue
        seen: dict[str, int] = {}
        for q in data["queries"]:
            n = seen[q["kind"]] = seen.get(q["kind"], 0) + 1
            out.append(Judged(q["id"], project, q["kind"], q["query"],
                              tuple(Span(r["path"], int(r["start"]), int(r["end"])) for r in q["relevant"]),
                              held_out=n % 2 == 0))
    return out


def check(queries: list[Judged], src: Path) -> list[str]:
    """Problems: unknown kinds, duplicate ids, spans outside their files."""
    problems, ids = [], set()
    for q in queries:
        if q.id in ids:
            problems.append(f"{q.id}: duplicate id")
        ids.add(q.id)
        if q.kind not in KINDS:
            problems.append(f"{q.id}: kind {q.kind!r} is not one of {KINDS}")
        if not q.query.strip() or not q.relevant:
            problems.append(f"{q.id}: no query text or no relevant span")
        for s in q.relevant:
            path = src / q.project / s.path
            if not path.is_file():
                problems.append(f"{q.id}: no file {s.path}")
                continue
            lines = path.read_text(errors="replace").split("\n")
            if not 1 <= s.start <= s.end <= len(lines):
                problems.append(f"{q.id}: {s.path}:{s.start}-{s.end} outside its {len(lines)} lines")
    return problems


def main(argv: list[str]) -> int:
    src = SRC
    queries = load(argv or None)
    for q in queries:
        print(f"{q.id} [{q.kind}{', held out' if q.held_out else ''}] {q.query}")
        for s in q.relevant:
            path = src / q.project / s.path
            first = path.read_text(errors="replace").split("\n")[s.start - 1].strip() if path.is_file() else "?"
            print(f"    {s.path}:{s.start}-{s.end}  {first[:100]}")
    problems = check(queries, src)
    print("\n".join(problems) or f"{len(queries)} queries, no problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
