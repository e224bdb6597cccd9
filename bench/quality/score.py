"""Scoring a ranked list of hits against a query's judged spans, at the chunk
level: a hit earns credit when most of its lines lie in a relevant span, and
each relevant span is credited once (a second piece of a function already
found, or a second chunk of a file already credited for that span, earns
nothing). NDCG@10 with binary gains, MRR@10, hit@1 and hit@5."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass

from .judgments import Judged, Span

K = 10


@dataclass(frozen=True)
class Found:
    """A hit as the evaluation sees it."""

    path: str
    start: int
    end: int


def credits(hit: Found, span: Span) -> bool:
    """Most of the hit's lines lie in the span (a class chunk around a relevant method does not count)."""
    if hit.path != span.path:
        return False
    overlap = min(hit.end, span.end) - max(hit.start, span.start) + 1
    return overlap > 0 and overlap >= 0.5 * (hit.end - hit.start + 1)


def gains(hits: list[Found], relevant: tuple[Span, ...], k: int = K) -> list[int]:
    """1 where a hit is the first to credit one of the relevant spans, else 0."""
    credited: set[int] = set()
    out = []
    for hit in hits[:k]:
        new = next((i for i, s in enumerate(relevant) if i not in credited and credits(hit, s)), None)
        if new is None:
            out.append(0)
        else:
            credited.add(new)
            out.append(1)
    return out


def metrics(hits: list[Found], q: Judged, k: int = K) -> dict[str, float]:
    g = gains(hits, q.relevant, k)
    dcg = sum(x / math.log2(i + 2) for i, x in enumerate(g))
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(q.relevant), k)))
    first = next((i for i, x in enumerate(g) if x), None)
    return {"ndcg@10": dcg / ideal, "mrr@10": 0.0 if first is None else 1 / (first + 1),
            "hit@1": float(bool(g[:1] and g[0])), "hit@5": float(any(g[:5]))}


METRICS = ("ndcg@10", "mrr@10", "hit@1", "hit@5")


def summarize(per_query: list[tuple[Judged, str, dict[str, float]]]) -> dict:
    """Means over all queries and by half, kind and language: {group: {metric: mean, "queries": n}}."""
    groups: dict[str, list[dict[str, float]]] = defaultdict(list)
    for q, language, m in per_query:
        half = "held_out" if q.held_out else "tuning"
        for key in ("all", half, f"kind:{q.kind}", f"language:{language}", f"{half}/kind:{q.kind}",
                    f"{half}/language:{language}"):
            groups[key].append(m)
    return {key: {**{name: round(statistics.fmean(m[name] for m in ms), 4) for name in METRICS},
                  "queries": len(ms)} for key, ms in sorted(groups.items())}
