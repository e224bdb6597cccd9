"""The ranking stage: what turns retrieval candidates into the hits a search returns.

Retrieval (:mod:`store_svc.search`) gives candidates with what each
retrieval saw of them: the cosine similarity and rank of the vector search,
the BM25 score and rank of the keyword search, an exact definition-name
match. This stage, with no LanceDB of its own, then

1. reads the query (:func:`analyze`): is it an identifier (``HTTPAdapter``,
   ``Router.ServeHTTP``), does it contain some, does it ask for tests,
   examples, docs or changelogs;
2. describes each candidate by a few features (:func:`features`): the two
   retrievals' evidence, exact and partial name matches, and where the chunk
   lives (tests, examples, vendored or generated code, docs, changelogs,
   re-export modules, ``.d.ts`` stubs), a path class counting only when the
   query does not ask for it;
3. scores it with a logistic model fitted on the tuning half of the
   search-quality set (``python -m bench.quality.fit``): a probability of
   relevance between 0 and 1, comparable across queries and modes; the
   model has one set of weights for identifier queries and one for
   plain-English ones;
4. spreads the top of the list (:func:`diversify`): another piece of a
   definition already listed, or yet another chunk of a file already listed,
   gives way to other files;
5. gives each hit its snippet (:func:`snippet`).

Each signal can be turned off (:class:`RankingOptions`); ``make bench
STAGE=quality`` measures each one on and off. docs/SEARCH.md says more.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from codeindex_common.model import SNIPPET_WIDTH, TYPE_KINDS, Chunk, Hit

from codeindex_common.keywords import words

RRF_K = 60  # reciprocal rank fusion constant
SNIPPET_LINES = 3


@dataclass(frozen=True)
class RankingOptions:
    """Which signals the ranking stage uses (all of them by default)."""

    identifiers: bool = True  # keyword retrieval over split identifiers, names weighing more than the body
    query_kind: bool = True  # identifier queries lean on exact definitions, plain-English ones on meaning
    path_priors: bool = True  # tests, examples, vendored/generated code, docs, changelogs, stubs demoted
    diversity: bool = True  # pieces of one definition and chunks of one file do not crowd out other files
    fusion: str = "calibrated"  # calibrated (the fitted model) or rrf (reciprocal rank fusion)


DEFAULT = RankingOptions()
PREVIOUS = RankingOptions(identifiers=False, query_kind=False, path_priors=False, diversity=False, fusion="rrf")
ABLATIONS = {
    "previous ranking (RRF of vector, text BM25, exact symbol)": PREVIOUS,
    "all signals (the default)": DEFAULT,
    "without identifier-aware keywords": replace(DEFAULT, identifiers=False),
    "without the query kind": replace(DEFAULT, query_kind=False),
    "without path priors": replace(DEFAULT, path_priors=False),
    "without diversity": replace(DEFAULT, diversity=False),
    "RRF instead of calibrated fusion": replace(DEFAULT, fusion="rrf"),
}


# ---------------------------------------------------------------- the query

_QUOTED = re.compile(r"`([^`]+)`")
_TOKEN = re.compile(r"[A-Za-z_$][\w$]*(?:(?:\.|::|#|->)[A-Za-z_$][\w$]*)*(?:\(\))?")
_CODE_SHAPED = re.compile(r"[a-z][A-Z]|_|\.|::|#|->|\(\)|^[A-Z][a-z]+[A-Z]")
_STOP = frozenset("a an and are as at be by do does for from get how i in is it of on or that the this to what "
                  "when where which who why with".split())
WANTS = {
    "tests": re.compile(r"\b(tests?|testing|spec|specs|unit ?test|fixtures?)\b", re.I),
    "examples": re.compile(r"\b(examples?|samples?|demos?|tutorial)\b", re.I),
    "docs": re.compile(r"\b(docs?|documentation|readme|guide|manual)\b", re.I),
    "changelog": re.compile(r"\b(changelogs?|release notes?|what changed|news file)\b", re.I),
}


@dataclass(frozen=True)
class QueryInfo:
    text: str
    identifiers: tuple[str, ...]  # names in the query, as typed (qualified ones normalised to dots)
    is_identifier: bool  # the whole query is one name
    terms: frozenset[str]  # the query's content words, identifiers split
    wants: frozenset[str]  # path classes the query asks for (tests, examples, docs, changelog)


def _normal(name: str) -> str:
    return re.sub(r"::|#|->", ".", name.removesuffix("()"))


def analyze(text: str) -> QueryInfo:
    stripped = text.strip().strip("`").strip()
    single = _TOKEN.fullmatch(stripped) is not None
    names = [m.group(1).strip() for m in _QUOTED.finditer(text)]
    names += [t for t in _TOKEN.findall(text) if single or _CODE_SHAPED.search(t)]
    identifiers = tuple(dict.fromkeys(_normal(n) for n in names if n))
    terms = frozenset(w for token in re.findall(r"[A-Za-z_$][\w$]*", text) for w in words(token)
                      if w not in _STOP and len(w) > 1)
    wants = frozenset(k for k, pattern in WANTS.items() if pattern.search(text))
    return QueryInfo(text, identifiers, single, terms, wants)


# ---------------------------------------------------------------- where a chunk lives

PATH_CLASSES = {
    "tests": re.compile(r"(^|/)(tests?|testing|spec|specs|__tests__|testdata|fixtures?)/|(^|/)test_[^/]*$|"
                        r"_test\.\w+$|\.(test|spec)\.[jt]sx?$|(^|/)[^/]*Tests?\.(java|kt|cs|swift)$|_spec\.rb$|"
                        r"(^|/)conftest\.py$", re.I),
    "examples": re.compile(r"(^|/)(examples?|samples?|demos?|example_[^/]*|[^/]*_example\.\w+)(/|$)", re.I),
    "vendored": re.compile(r"(^|/)(vendor|vendored|third_party|third-party|deps|node_modules|dist|build|out|"
                           r"bower_components|_vendor)/|\.min\.\w+$|\.bundle\.\w+$|(^|/)[^/]*\.(cjs|esm)\.[^/]*\.js$|"
                           r"_pb2(_grpc)?\.py$|\.pb\.go$|\.generated\.\w+$", re.I),
    "docs": re.compile(r"(^|/)(docs?|documentation|man)/|\.(md|markdown|rst|txt|adoc)$", re.I),
    "changelog": re.compile(r"(^|/)(changelog|changes|history|news|release[-_]?notes)[^/]*$", re.I),
    "stub": re.compile(r"\.d\.ts$|\.pyi$", re.I),
}
_REEXPORT_FILES = re.compile(r"(^|/)(__init__\.py|index\.[jt]sx?|mod\.rs|lib\.rs)$")
_REEXPORT_LINE = re.compile(r"^\s*(from\s+\S+\s+import\b|import\b|export\s+(\*|\{|type\s+\{)|export\s+.*\bfrom\b|"
                            r"pub\s+use\b|mod\s+\w+;|__all__|#|//|$)")


@lru_cache(maxsize=65536)
def _path_classes(path: str) -> frozenset[str]:
    return frozenset(name for name, pattern in PATH_CLASSES.items() if pattern.search(path))


def reads_text(c: Chunk) -> bool:
    """Whether the ranking looks at the chunk's text: a module chunk of a file that may only re-export."""
    return c.kind == "module" and bool(_REEXPORT_FILES.search(c.path))


def path_classes(c: Chunk) -> frozenset[str]:
    found = set(_path_classes(c.path))
    if reads_text(c):
        lines = c.text.splitlines()
        if lines and sum(bool(_REEXPORT_LINE.match(line)) for line in lines) >= 0.8 * len(lines):
            found.add("reexport")
    return frozenset(found)


@lru_cache(maxsize=65536)
def _words(name: str) -> frozenset[str]:
    return frozenset(words(name))


def _names_match(wanted: str, name: str) -> bool:
    """Whether a definition's ``name`` is the one asked for: the same name, or, for a qualified query
    (``Request.POST``, typed as ``Request#POST`` or ``Request::POST``), a qualified name that ends with its
    last part and holds its other parts in order (``Rack.Request.Helpers.POST``)."""
    if wanted == name:
        return True
    if "." not in wanted or "." not in name:
        return False
    *scopes, last = wanted.split(".")
    *outer, own = name.split(".")
    if own != last:
        return False
    it = iter(outer)
    return all(any(part == scope for part in it) for scope in scopes)


def name_match(identifiers: tuple[str, ...], names: set[str]) -> int:
    """2: a definition named as the query names it, letter case included; 1: in another case (``reaction``
    for ``Reaction``); 0: none."""
    if not identifiers:
        return 0
    names = {n for n in names if n}
    if any(_names_match(w, n) for w in identifiers for n in names):
        return 2
    folded = {n.lower() for n in names}
    return int(any(_names_match(w.lower(), n) for w in identifiers for n in folded))


# ---------------------------------------------------------------- candidates and their features


@dataclass
class Candidate:
    """A chunk, and what each retrieval saw of it (None: that retrieval did not return it)."""

    chunk: Chunk  # what the ranking reads of it (store_svc.search.RANK_COLUMNS) until it is a hit
    names: tuple[str, ...] = ()  # the names of the definitions it holds (symbols and qualified names)
    row_id: int | None = None  # where the retrieval found its row, to read the rest of it from
    whole: bool = False  # its whole row was read (ROW_COLUMNS): nothing more to read for it
    cosine: float | None = None
    vector_rank: int | None = None
    keyword_score: float | None = None
    keyword_rank: int | None = None
    score: float = 0.0
    features: dict[str, float] = field(default_factory=dict)


FEATURES = ("bias", "cosine", "vector_rr", "keyword", "keyword_rr", "exact", "exact_case", "name_cover",
            "test", "example", "vendored", "doc", "changelog", "reexport", "stub", "module", "class", "lines",
            "file_cosine", "file_share", "pieces", "def_cosine", "def_keyword")
_PRIOR_FEATURES = {"tests": "test", "examples": "example", "vendored": "vendored", "docs": "doc",
                   "changelog": "changelog", "reexport": "reexport", "stub": "stub"}


@dataclass(frozen=True)
class Context:
    """What features compare a candidate with: the best keyword score, and per file the best cosine and the
    number of candidates."""

    top_keyword: float
    file_cosine: dict[str, float]
    file_count: dict[str, int]
    total: int
    pieces: dict[tuple[str, str], list[Candidate]]  # the candidates that are pieces of one definition

    @classmethod
    def of(cls, candidates: list[Candidate]) -> Context:
        file_cosine: dict[str, float] = {}
        file_count: dict[str, int] = {}
        pieces: dict[tuple[str, str], list[Candidate]] = {}
        for c in candidates:
            p = c.chunk.path
            file_count[p] = file_count.get(p, 0) + 1
            if c.cosine is not None:
                file_cosine[p] = max(file_cosine.get(p, -1.0), c.cosine)
            if c.chunk.qualified_name:
                pieces.setdefault((p, c.chunk.qualified_name), []).append(c)
        return cls(max([(c.keyword_score or 0.0) for c in candidates] or [0.0]), file_cosine, file_count,
                   len(candidates), pieces)


def features(c: Candidate, q: QueryInfo, ctx: Context, options: RankingOptions) -> dict[str, float]:
    top_keyword = ctx.top_keyword
    f = dict.fromkeys(FEATURES, 0.0)
    f["bias"] = 1.0
    if c.cosine is not None:
        f["cosine"] = c.cosine
    if c.vector_rank is not None:
        f["vector_rr"] = 10.0 / (10 + c.vector_rank)
    if c.keyword_score is not None and top_keyword > 0:
        f["keyword"] = c.keyword_score / top_keyword
    if c.keyword_rank is not None:
        f["keyword_rr"] = 10.0 / (10 + c.keyword_rank)
    names = set(c.names) | {c.chunk.symbol, c.chunk.qualified_name}
    match = name_match(q.identifiers, names)
    f["exact"], f["exact_case"] = float(match > 0), float(match > 1)
    name_words = {w for n in names for w in _words(n)}
    if q.terms:
        f["name_cover"] = len(q.terms & name_words) / len(q.terms)
    if options.path_priors:
        for path_class in path_classes(c.chunk) - q.wants:
            f[_PRIOR_FEATURES[path_class]] = 1.0
    f["module"] = float(c.chunk.kind in ("module", "block", "section"))
    f["class"] = float(c.chunk.kind in TYPE_KINDS)
    f["lines"] = math.log1p(max(0, c.chunk.end_line - c.chunk.start_line)) / 5
    f["file_cosine"] = ctx.file_cosine.get(c.chunk.path, 0.0)
    f["file_share"] = ctx.file_count.get(c.chunk.path, 0) / max(1, ctx.total) * 10
    siblings = ctx.pieces.get((c.chunk.path, c.chunk.qualified_name), [c])
    f["pieces"] = min(len(siblings), 4) / 4
    f["def_cosine"] = max((x.cosine for x in siblings if x.cosine is not None), default=f["cosine"])
    if top_keyword > 0:
        f["def_keyword"] = max((x.keyword_score or 0.0) for x in siblings) / top_keyword
    return f


# Fitted by `python -m bench.quality.fit --write` on the tuning half of bench/quality (see docs/SEARCH.md) and
# kept beside this module: per query kind ("identifier": the query is or holds a name; "text": plain English;
# "any": both, for the ablation without the query kind), a weight per feature (the score is the logistic of
# their sum); and for the vector and keyword modes, the weight and bias of their one signal.
FITTED = json.loads((Path(__file__).with_name("ranking_weights.json")).read_text())
WEIGHTS: dict[str, dict[str, float]] = FITTED["WEIGHTS"]
DUPLICATE_PIECE = 0.3  # another piece of a definition already listed keeps this share of its score
SAME_FILE = 0.75  # each hit already listed from the same file keeps this share of the next one's score


def query_kind(q: QueryInfo, options: RankingOptions) -> str:
    if not options.query_kind:
        return "any"
    return "identifier" if q.is_identifier or q.identifiers else "text"


def _logistic(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, x))))


def rank(candidates: list[Candidate], q: QueryInfo, k: int, options: RankingOptions = DEFAULT,
         mode: str = "hybrid") -> list[Hit]:
    """The k best candidates, scored 0 to 1 and spread over files; snippets not yet set."""
    if not candidates:
        return []
    ctx = Context.of(candidates)
    if mode != "hybrid":
        return _raw(candidates, mode, k, ctx.top_keyword)
    w = WEIGHTS[query_kind(q, options)]
    for c in candidates:
        c.features = features(c, q, ctx, options)
        if options.fusion == "rrf":
            c.score = _rrf(c, options)
        else:
            c.score = _logistic(sum(w[name] * value for name, value in c.features.items()))
    chosen = choose(candidates, k, options.diversity, q.is_identifier and options.query_kind)
    return [Hit(c.chunk, c.score, similarity=c.cosine) for c in chosen]


def choose(scored: list[Candidate], k: int, spread: bool = True, named: bool = False) -> list[Candidate]:
    """The k hits from scored candidates: by score, spread over files (``spread``). A query that is a name
    (``named``) asks for that definition: its exact definitions come first, a type's own before its impl
    blocks (Rust's ``impl Display for Comparator`` is named ``Comparator`` too), then by score."""
    ordered = sorted(scored, key=lambda c: (*(-x for x in precedence(c, named)), -c.score, c.chunk.path,
                                            c.chunk.start_line))
    return diversify(ordered, k, first=named) if spread else ordered[:k]


# vector and keyword modes keep their retrieval's order; the score is the logistic of the one signal
RAW: dict[str, tuple[str, float, float]] = {mode: tuple(v) for mode, v in FITTED["RAW"].items()}


def _raw(candidates: list[Candidate], mode: str, k: int, top_keyword: float) -> list[Hit]:
    """One retrieval's own order (nearest, or best BM25, first), calibrated."""
    feature, weight, bias = RAW[mode]
    ordered = sorted(candidates, key=lambda c: c.vector_rank if mode == "vector" else c.keyword_rank or 0)[:k]
    out = []
    for c in ordered:
        value = c.cosine if mode == "vector" else (c.keyword_score or 0.0) / (top_keyword or 1.0)
        out.append(Hit(c.chunk, _logistic(weight * (value or 0.0) + bias), similarity=c.cosine))
    return out


def _rrf(c: Candidate, options: RankingOptions) -> float:
    """Reciprocal rank fusion of the retrievals (an exact name match counts as rank 1), with the path priors
    (when on) as a factor."""
    score = sum(1.0 / (RRF_K + r) for r in (c.vector_rank, c.keyword_rank) if r is not None)
    if c.features.get("exact"):
        score += 1.0 / (RRF_K + 1)
    if any(c.features.get(name) for name in _PRIOR_FEATURES.values()):
        score *= 0.5
    return score


def precedence(c: Candidate, named: bool) -> tuple[bool, bool]:
    """What puts a candidate ahead whatever its score, for a query that is a name (``named``): being an exact
    definition of it, and then a type's own definition rather than an impl block of it."""
    exact = named and bool(c.features.get("exact_case"))
    return exact, exact and c.chunk.kind != "impl"


def diversify(ordered: list[Candidate], k: int, first: bool = False) -> list[Candidate]:
    """Greedy: each next hit is the best one after its discount for the hits already chosen (another piece
    of the same definition, or another chunk of the same file); its score becomes the discounted one.
    ``ordered`` is by precedence, then score, best first (as :func:`choose` sorts it).
    ``first``: exact definitions of the query's name stay ahead of the rest (:func:`precedence`)."""
    pool = list(ordered)
    chosen: list[Candidate] = []
    per_file: dict[str, int] = {}
    pieces: set[tuple[str, str]] = set()

    def discounted(c: Candidate) -> float:
        factor = SAME_FILE ** per_file.get(c.chunk.path, 0)
        if c.chunk.qualified_name and (c.chunk.path, c.chunk.qualified_name) in pieces:
            factor *= DUPLICATE_PIECE
        return c.score * factor

    while pool and len(chosen) < k:
        # the pool is in (precedence, score) order and a discount only lowers a score, so a candidate whose
        # undiscounted key is below the best discounted key so far, and every one after it, cannot win: the
        # scan stops there (the same pick as comparing all of them, in a few steps instead of ~100)
        best, best_key = 0, None
        for i, c in enumerate(pool):
            rank_first = precedence(c, first)
            if best_key is not None and (*rank_first, c.score, -i) < best_key:
                break
            key = (*rank_first, discounted(c), -i)
            if best_key is None or key > best_key:
                best, best_key = i, key
        c = pool.pop(best)
        c.score = discounted(c)
        chosen.append(c)
        per_file[c.chunk.path] = per_file.get(c.chunk.path, 0) + 1
        if c.chunk.qualified_name:
            pieces.add((c.chunk.path, c.chunk.qualified_name))
    return chosen


# ---------------------------------------------------------------- snippets


def snippet_words(query: str) -> frozenset[str]:
    """What a snippet looks for: the query's words (identifiers split) and its names, in lower case."""
    info = analyze(query)
    return info.terms | {n.lower() for n in info.identifiers}


def snippet(text: str, wanted: frozenset[str]) -> tuple[str, int]:
    """Up to three lines of a chunk and the index of the first: around the line that holds the most of the
    ``wanted`` words (:func:`snippet_words`), else its first non-blank lines."""
    lines = text.splitlines()
    best, best_count = None, 0
    for i, line in enumerate(lines):
        low = line.lower()
        count = sum(w in low for w in wanted)
        if count > best_count:
            best, best_count = i, count
    if best is None:
        start = next((i for i, line in enumerate(lines) if line.strip()), 0)
    else:
        start = max(0, best - 1)
    return "\n".join(line[:SNIPPET_WIDTH] for line in lines[start:start + SNIPPET_LINES]), start


def with_snippets(hits: list[Hit], query: str) -> list[Hit]:
    """The hits, each with its snippet for this query text and the file line the snippet starts at."""
    wanted = snippet_words(query)
    for h in hits:
        h.snippet, offset = snippet(h.chunk.text, wanted)
        h.snippet_line = h.chunk.start_line + offset
    return hits
