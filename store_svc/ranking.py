"""The ranking stage: what turns retrieval candidates into the hits a search returns.

Candidates come from the retrievals over the chunks table
(:mod:`store_svc.search`: vector, keyword, exact symbol); every search's
candidates go through this stage once before they are returned. Today it
fuses a hybrid search's rankings by reciprocal rank (:func:`fuse`) and gives
each hit its snippet (:func:`snippet`). Further ranking signals (the kind of
query, identifier matches, path priors, diversity among the hits) belong here.
No LanceDB here: the stage works on hits alone.
"""

from __future__ import annotations

import re

from codeindex_common.model import Chunk, Hit

RRF_K = 60  # reciprocal rank fusion constant
SNIPPET_LINES = 3


def fuse(rankings: list[list[Hit]], k: int) -> list[Hit]:
    """Reciprocal rank fusion: score = sum over rankings of 1 / (RRF_K + rank)."""
    scores: dict[str, float] = {}
    chunks: dict[str, Chunk] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.chunk.id] = scores.get(hit.chunk.id, 0.0) + 1.0 / (RRF_K + rank)
            chunks.setdefault(hit.chunk.id, hit.chunk)
    best = sorted(scores, key=lambda cid: -scores[cid])[:k]
    return [Hit(chunks[cid], scores[cid]) for cid in best]


def snippet(text: str, query: str) -> str:
    """Up to three lines of a chunk: around the first line that contains a
    word of the query, else its first non-blank lines."""
    lines = text.splitlines()
    words = [w for w in re.findall(r"\w+", query.lower()) if len(w) > 1]
    start = next((i for i, line in enumerate(lines) if any(w in line.lower() for w in words)), None)
    if start is None:
        start = next((i for i, line in enumerate(lines) if line.strip()), 0)
    else:
        start = max(0, start - 1)
    return "\n".join(line[:200] for line in lines[start:start + SNIPPET_LINES])


def with_snippets(hits: list[Hit], query: str) -> list[Hit]:
    """The hits, each with its snippet for this query text."""
    for h in hits:
        h.snippet = snippet(h.chunk.text, query)
    return hits
