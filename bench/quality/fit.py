"""``python -m bench.quality.fit [--write]``: fit the ranking stage's weights
on the tuning half of the search-quality set (never on the held-out half);
print them, or (``--write``) write store_svc/ranking_weights.json, which
store_svc/ranking.py loads.

For each tuning query, every candidate the hybrid retrievals return is a
training row: its features (store_svc.ranking.features) and whether it
credits one of the query's relevant spans (bench.quality.score.credits).
Per query kind (identifier, plain English, and both together):

1. an L2-regularised logistic regression (Newton's method) gives a start;
2. coordinate ascent on the weights raises the mean NDCG@10 of the tuning
   queries, ranked as the store ranks them (diversity included), on each of
   8 bootstrap samples of them, and the 8 results are averaged (bagging: on
   2-fold cross-validation within the tuning half it ranked better than the
   logistic fit alone, 0.738 against 0.717 NDCG@10, and than one ascent on
   all of it, 0.710);
3. a one-dimensional logistic fit of the resulting sum calibrates it, so
   that the score is an estimate of the chance a hit is relevant.

The vector and keyword modes get a one-feature calibration each.

``--cv``: no weights, but the mean NDCG@10 that this fit reaches on tuning queries it was not fitted on
(4-fold cross-validation within the tuning half, two shuffles, the folds run on every core): what a new
signal is judged on before it is kept. The NDCG@10 of the tuning half under weights fitted on all of it
flatters every signal added (the fit has one more weight to bend to those queries), and the held-out half
is for the report, never for the choice (docs/SEARCH.md)."""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codeindex_common.model import Chunk, Query

from .evaluate import Searcher, build_indexes, log, query_backend
from .judgments import load
from .score import Found, credits, gains

L2 = 1.0
WEIGHTS_FILE = Path(__file__).resolve().parents[2] / "store_svc" / "ranking_weights.json"
STEPS = (2.0, 1.0, 0.5, 0.25, 0.1)


def logistic_fit(x: np.ndarray, y: np.ndarray, l2: float = L2, iterations: int = 50) -> np.ndarray:
    """Weights minimising log-loss + l2/2 |w|^2 (the bias, column 0, not penalised)."""
    w = np.zeros(x.shape[1])
    penalty = np.full(x.shape[1], l2)
    penalty[0] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -30, 30)))
        grad = x.T @ (p - y) + penalty * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


@dataclass
class Case:
    """One tuning query: its kind, its candidates' features and chunks, and its relevant spans."""

    kind: str
    x: np.ndarray
    chunks: list[Chunk]
    labels: np.ndarray
    relevant: tuple
    named: bool  # the query is a name: its exact definitions go first


def cases(searcher: Searcher, queries) -> list[Case]:
    from store_svc import ranking

    out = []
    for q in queries:
        store = searcher.stores[q.project]
        info, cands = store.candidates(searcher.vectors[q.query], Query(text=q.query, k=10, mode="hybrid"))
        ctx = ranking.Context.of(cands)
        x = np.array([[ranking.features(c, info, ctx, ranking.DEFAULT)[n] for n in ranking.FEATURES]
                      for c in cands]).reshape(-1, len(ranking.FEATURES))
        labels = np.array([float(any(credits(_found(c.chunk), s) for s in q.relevant)) for c in cands])
        out.append(Case(ranking.query_kind(info, ranking.DEFAULT), x, [c.chunk for c in cands], labels, q.relevant,
                        info.is_identifier))
    return out


def _found(c: Chunk) -> Found:
    return Found(c.path, c.start_line, c.end_line)


def ndcg(case: Case, w: np.ndarray) -> float:
    """The query's NDCG@10 when its candidates are ranked by ``w`` (and spread as the store spreads them)."""
    from store_svc import ranking

    if not len(case.chunks):
        return 0.0
    scores = case.x @ w
    exact = case.x[:, ranking.FEATURES.index("exact_case")]
    cands = [ranking.Candidate(c, score=1 / (1 + math.exp(-max(-30, min(30, s)))), features={"exact_case": e})
             for c, s, e in zip(case.chunks, scores, exact)]
    top = ranking.choose(cands, 10, named=case.named)
    g = gains([_found(c.chunk) for c in top], case.relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(case.relevant), 10)))
    return sum(x / math.log2(i + 2) for i, x in enumerate(g)) / ideal


def mean_ndcg(data: list[Case], w: np.ndarray) -> float:
    return float(np.mean([ndcg(c, w) for c in data]))


def ascend(data: list[Case], w: np.ndarray, rounds: int = 4) -> np.ndarray:
    """Coordinate ascent on mean NDCG@10: each weight in turn moved by each step, kept where it helps."""
    best = mean_ndcg(data, w)
    for _ in range(rounds):
        improved = False
        for i in range(1, len(w)):  # the bias does not change a ranking
            for step in STEPS:
                for sign in (1, -1):
                    trial = w.copy()
                    trial[i] += sign * step
                    score = mean_ndcg(data, trial)
                    if score > best + 1e-6:
                        w, best, improved = trial, score, True
        if not improved:
            break
    return w


BAGS = 8


def bagged_ascent(data: list[Case], start: np.ndarray, seed: int = 0) -> np.ndarray:
    """The mean of coordinate ascents (two rounds each) on bootstrap samples of the queries."""
    rng = np.random.default_rng(seed)
    runs = [ascend([data[i] for i in rng.integers(0, len(data), len(data))], start.copy(), rounds=2)
            for _ in range(BAGS)]
    return np.mean(runs, axis=0)


def calibrate(data: list[Case], w: np.ndarray) -> np.ndarray:
    """``w`` scaled and shifted so that the logistic of the sum estimates the chance of relevance."""
    s = np.concatenate([c.x @ w for c in data])
    y = np.concatenate([c.labels for c in data])
    b, a = logistic_fit(np.column_stack([np.ones_like(s), s]), y, l2=0.0)
    out = w * a
    out[0] += b
    return out


KINDS = ("identifier", "text", "any")  # "any": both, for the ablation without the query kind


def fit_weights(data: list[Case], seed: int = 0, report: bool = False, kinds=KINDS) -> dict[str, np.ndarray]:
    """Per query kind, the calibrated weights of the bagged ascent from the logistic fit (``report``: each
    kind's tuning NDCG@10 logged)."""
    weights = {}
    for kind in kinds:
        picked = [c for c in data if kind == "any" or c.kind == kind]
        if not picked:
            continue
        x = np.concatenate([c.x for c in picked])
        y = np.concatenate([c.labels for c in picked])
        start = logistic_fit(x, y)
        weights[kind] = calibrate(picked, bagged_ascent(picked, start, seed=seed))
        if report:
            log(f"{kind}: {len(picked)} queries, {len(y)} candidates, {int(y.sum())} relevant; tuning NDCG@10 "
                f"{mean_ndcg(picked, start):.3f} (logistic) -> {mean_ndcg(picked, weights[kind]):.3f} (bagged "
                "ascent, calibrated)")
    return weights


FOLDS = 4
SHUFFLES = 2


def _fold_scores(args: tuple[list[Case], int, int, int]) -> list[float]:
    data, seed, fold, folds = args
    order = np.random.default_rng(100 + seed).permutation(len(data))
    test = set(order[fold::folds].tolist())
    train = [c for i, c in enumerate(data) if i not in test]
    weights = fit_weights(train, seed=seed, kinds=sorted({data[i].kind for i in test}))
    if any(data[i].kind not in weights for i in test):  # a kind the other folds lack: both kinds' weights
        weights.update(fit_weights(train, seed=seed, kinds=("any",)))
    return [ndcg(data[i], weights.get(data[i].kind, weights.get("any"))) for i in sorted(test)]


def cross_validate(data: list[Case], folds: int = FOLDS, shuffles: int = SHUFFLES, workers: int = 0) -> float:
    """The mean NDCG@10 of each query ranked by weights fitted without it: ``folds``-fold cross-validation,
    ``shuffles`` times over (each query scored once a shuffle), the folds on ``workers`` processes (0: one
    a core)."""
    import multiprocessing
    import os

    jobs = [(data, seed, fold, folds) for seed in range(shuffles) for fold in range(folds)]
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    if workers == 1:
        parts = list(map(_fold_scores, jobs))
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            parts = pool.map(_fold_scores, jobs)
    return float(np.mean([x for part in parts for x in part]))


def main(argv: list[str]) -> int:
    from store_svc import ranking

    queries = [q for q in load() if not q.held_out]
    backend = query_backend()
    searcher = Searcher(build_indexes(sorted({q.project for q in queries}), backend.model_id), queries, backend)
    data = cases(searcher, queries)
    if "--cv" in argv:
        started = time.perf_counter()
        score = cross_validate(data)
        log(f"{FOLDS}-fold cross-validation within the tuning half ({len(data)} queries, {SHUFFLES} shuffles): "
            f"NDCG@10 {score:.4f} ({time.perf_counter() - started:.0f} s)")
        return 0
    by_kind = fit_weights(data, report=True)
    if missing := [kind for kind in KINDS if kind not in by_kind]:  # the store looks every kind up
        log(f"no tuning query of kind {', '.join(missing)}: no weights written")
        return 1
    weights = {kind: {n: round(float(v), 3) for n, v in zip(ranking.FEATURES, w)} for kind, w in by_kind.items()}
    raw = {}
    for mode, feature in (("vector", "cosine"), ("keyword", "keyword")):
        rows_x, rows_y = [], []
        for q in queries:
            store = searcher.stores[q.project]
            info, cands = store.candidates(searcher.vectors[q.query] if mode == "vector" else None,
                                           Query(text=q.query, k=10, mode=mode))
            ctx = ranking.Context.of(cands)
            for c in cands:
                rows_x.append([1.0, ranking.features(c, info, ctx, ranking.DEFAULT)[feature]])
                rows_y.append(float(any(credits(_found(c.chunk), s) for s in q.relevant)))
        bias, weight = logistic_fit(np.array(rows_x), np.array(rows_y), l2=0.01)
        raw[mode] = (feature, round(float(weight), 3), round(float(bias), 3))
    fitted = {"fitted_on": f"the tuning half of bench/quality: {len(queries)} queries",
              "WEIGHTS": weights, "RAW": raw}
    text = json.dumps(fitted, indent=1) + "\n"
    if "--write" in argv:
        WEIGHTS_FILE.write_text(text)
        log(f"wrote {WEIGHTS_FILE}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
