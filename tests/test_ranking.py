"""The ranking stage's choice of hits (store_svc/ranking.py), apart from any store: the spread over files
and definitions, and that its early stop picks what comparing every candidate picks."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from codeindex_common.model import Chunk
from store_svc import ranking
from store_svc.ranking import Candidate, choose


def _candidate(i: int, path: str, qualified: str, score: float, exact: bool = False, kind: str = "function"):
    chunk = Chunk(id=f"c{i}", path=path, language="python", kind=kind, symbol=qualified.rsplit(".", 1)[-1],
                  qualified_name=qualified, parent_id="", start_line=i * 10 + 1, end_line=i * 10 + 9,
                  start_byte=0, end_byte=0, text="", embed_text="", content_hash="")
    return Candidate(chunk, score=score, features={"exact_case": float(exact)})


def _every_candidate_compared(ordered: list[Candidate], k: int, first: bool) -> list[tuple[str, float]]:
    """The greedy spread as first written: each pick compares the discounted key of every candidate left."""
    pool, chosen, per_file, pieces = list(ordered), [], {}, set()
    while pool and len(chosen) < k:
        def discounted(c):
            factor = ranking.SAME_FILE ** per_file.get(c.chunk.path, 0)
            if c.chunk.qualified_name and (c.chunk.path, c.chunk.qualified_name) in pieces:
                factor *= ranking.DUPLICATE_PIECE
            return c.score * factor

        best = max(range(len(pool)), key=lambda i: (*ranking.precedence(pool[i], first), discounted(pool[i]), -i))
        c = pool.pop(best)
        chosen.append((c.chunk.id, discounted(c)))
        per_file[c.chunk.path] = per_file.get(c.chunk.path, 0) + 1
        if c.chunk.qualified_name:
            pieces.add((c.chunk.path, c.chunk.qualified_name))
    return chosen


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.integers(1, 120), st.integers(1, 15), st.booleans(), st.integers(0, 2**32 - 1))
def test_the_spread_picks_what_comparing_every_candidate_picks(n, k, named, seed):
    rng = random.Random(seed)
    files = [f"src/m{j}.py" for j in range(rng.randint(1, 8))]
    scores = [0.0, 0.25, 0.5, 1.0]  # ties too, and scores a discount brings level with others
    cands = [_candidate(i, rng.choice(files), rng.choice(["", "f", "g", "A.h"]),
                        rng.choice(scores) if rng.random() < 0.3 else rng.random(), exact=rng.random() < 0.1,
                        kind=rng.choice(["function", "impl"]))
             for i in range(n)]
    expected = _every_candidate_compared(
        sorted(cands, key=lambda c: (*(-x for x in ranking.precedence(c, named)), -c.score, c.chunk.path,
                                     c.chunk.start_line)), k, named)
    got = [(c.chunk.id, c.score) for c in choose([_copy(c) for c in cands], k, named=named)]
    assert got == expected


def _copy(c: Candidate) -> Candidate:
    return Candidate(c.chunk, score=c.score, features=dict(c.features))


def test_pieces_of_one_definition_and_chunks_of_one_file_give_way():
    def candidates():
        return [_candidate(0, "a.py", "f", 0.9), _candidate(1, "a.py", "f", 0.85), _candidate(2, "a.py", "g", 0.8),
                _candidate(3, "b.py", "h", 0.7)]

    picked = choose(candidates(), 4)
    assert [c.chunk.id for c in picked] == ["c0", "c3", "c2", "c1"]
    # the second piece of f: its own score, times one chunk of a.py already listed twice and a piece of f
    assert picked[-1].score == 0.85 * ranking.SAME_FILE ** 2 * ranking.DUPLICATE_PIECE
    assert [c.chunk.id for c in choose(candidates(), 4, spread=False)] == ["c0", "c1", "c2", "c3"]


def test_a_name_query_puts_its_exact_definitions_first_whatever_their_score():
    cands = [_candidate(0, "a.py", "f", 0.9), _candidate(1, "b.py", "Target", 0.1, exact=True),
             _candidate(2, "c.py", "Target", 0.05, exact=True, kind="impl")]
    assert [c.chunk.id for c in choose(cands, 3, named=True)] == ["c1", "c2", "c0"]
    assert [c.chunk.id for c in choose(cands, 3, named=False)] == ["c0", "c1", "c2"]
