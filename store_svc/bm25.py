"""The keyword retrieval over the rows held in memory: BM25 over the chunks'
names and body fields as LanceDB's full-text index scores them, in about a
millisecond where LanceDB's search takes about five (docs/STORE.md, "Rows
held in memory").

The fields are analysed as the store's full-text indexes analyse them
(``lancedb.index.FTS()``'s defaults in lancedb 0.40): split on every
character that is not a letter or a digit, words of 40 bytes or more
dropped, lower case, the Snowball English stemmer, stop words dropped after
stemming (NLTK's English list, matched against the stems: "having" is
dropped as "have", "only" kept as "onli"), then accents folded ("complète"
matches "complete"). Each field is scored as LanceDB's BM25 (k1 1.2, b 0.75,
float32): idf ``ln((N - n + 0.5) / (n + 0.5) + 1)`` with N the rows holding
at least one word of the field, a query word counted as often as it is
written, and a multi-field query scoring a row by its best boosted field
(LanceDB's ``MultiMatchQuery``). Ties are settled by row id (LanceDB 0.40
settles ties at the k-th place by its own walk). Scores equal LanceDB's
within float32 rounding for an index that holds every row; LanceDB's own
differ where its index lags the table (rows written or deleted since its
last update), which these do not."""

from __future__ import annotations

import functools
import threading
import unicodedata
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import regex
import Stemmer

K1 = np.float32(1.2)
B = np.float32(0.75)
MAX_WORD_BYTES = 40  # LanceDB's max_token_length: a word this long or longer is not indexed
_SEPARATORS = regex.compile(r"[^\p{Alphabetic}\p{N}]+")  # a query's words (its rows': :func:`_separators`)

# NLTK's English stop words: the list LanceDB's default analyzer drops, after stemming
STOP_WORDS = frozenset("""
a about above after again against ain all am an and any are aren as at be because been before being below
between both but by can couldn d did didn do does doesn doing don down during each few for from further had
hadn has hasn have haven having he her here hers herself him himself his how i if in into is isn it its itself
just ll m ma me mightn more most mustn my myself needn no nor not now o of off on once only or other our ours
ourselves out over own re s same shan she should shouldn so some such t than that the their theirs them
themselves then there these they this those through to too under until up ve very was wasn we were weren
what when where which while who whom why will with won wouldn y you your yours yourself yourselves
""".split())

# letters ASCII folding turns into others than their base letter, or that do not decompose into a base
# letter and marks (found by comparing with LanceDB letter by letter: tests/test_bm25.py)
_FOLD_SPECIAL = {"ß": "ss", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "þ": "th", "Þ": "TH", "ð": "d", "Ð": "D",
                 "ı": "i", "ø": "o", "Ø": "O", "đ": "d", "Đ": "D", "ł": "l", "Ł": "L", "ħ": "h", "Ħ": "H",
                 "ĸ": "k", "ŀ": "l", "Ŀ": "L", "ŋ": "n", "Ŋ": "N", "ŉ": "n", "ŧ": "t", "Ŧ": "T", "ẚ": "a"}


@functools.cache
def _separators() -> str:
    """:data:`_SEPARATORS` as an Arrow (RE2) pattern, for splitting a whole column at once: what separates
    words for LanceDB's simple tokenizer, any character Rust's ``char::is_alphanumeric`` rejects, that is
    neither Alphabetic (letters, and the vowel signs of Indic scripts, which RE2's \\p{L} leaves out) nor
    Numeric. RE2 has no Alphabetic class: it is spelt out from the tables of ``regex`` (made once)."""
    points = [*range(0xD800), *range(0xE000, 0x110000)]  # every character but the surrogates
    runs = regex.finditer(r"[\p{Alphabetic}\p{N}]+", "".join(map(chr, points)))
    return "[^" + "".join(f"\\x{{{points[m.start()]:x}}}-\\x{{{points[m.end() - 1]:x}}}" for m in runs) + "]+"


@functools.lru_cache(maxsize=1 << 14)
def _fold_char(ch: str) -> str:
    if ch in _FOLD_SPECIAL:
        return _FOLD_SPECIAL[ch]
    base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c) and c != "\u2044")
    if base and base.isascii():  # "é": "e"; "½" (1, fraction slash, 2): "12"
        return base
    if len(base) == 1 and base != ch and (folded := _fold_char(base)).isascii():
        return folded  # a letter with a mark of its own and another: "ǿ" is "ø" and an acute
    return ch


def _fold(word: str) -> str:
    """A word's accented Latin letters as their ASCII letters ("complèt" -> "complet"); other characters
    as they are."""
    return word if word.isascii() else "".join(map(_fold_char, word))


def _lower(word: str) -> str:
    """Lower case as LanceDB's filter makes it: character by character (Python's ``str.lower`` writes a
    Greek capital sigma at a word's end as a final sigma, Rust's ``char::to_lowercase`` as a sigma)."""
    return word.lower() if word.isascii() else "".join(c.lower() for c in word)


class Analyzer:
    """Words to the terms an index holds (None for a word the index drops): a row's words cached by word
    (a field's vocabulary), a query's worked out each time (queries would grow the cache without end)."""

    def __init__(self):
        self._stemmer = Stemmer.Stemmer("english", 0)  # its own cache off: the vocabulary's is this one
        self._lock = threading.Lock()  # a Stemmer is not safe to share between threads: searches run at once
        self._terms: dict[str, str | None] = {}

    def terms(self, words: list[str], remember: bool = True) -> list[str | None]:
        new = [w for w in dict.fromkeys(words) if w not in self._terms]
        found = self._terms if remember else {}
        if new:
            with self._lock:
                stems = self._stemmer.stemWords([_lower(w) for w in new])
            for word, stem in zip(new, stems):
                dropped = not word or len(word.encode()) >= MAX_WORD_BYTES or stem in STOP_WORDS
                found[word] = None if dropped else _fold(stem)
        return [self._terms[w] if w in self._terms else found[w] for w in words]

    def forget(self) -> None:
        """Let the rows' words go (an index made: queries need none of them)."""
        self._terms = {}

    def query(self, text: str) -> list[str]:
        """A query's terms, in order, repeats kept (LanceDB counts a word written twice twice)."""
        return [t for t in self.terms(_SEPARATORS.split(text), remember=False) if t is not None]


@dataclass(frozen=True)
class FieldIndex:
    """One field's postings: the rows holding each term (``rows[bounds[i]:bounds[i + 1]]`` for the term
    numbered i, in row order), each with the term's BM25 weight in the row before its idf
    (``(k1 + 1) f / (f + norm)``)."""

    terms: dict[str, int]
    rows: np.ndarray  # int32
    weights: np.ndarray  # float32
    bounds: np.ndarray  # int64
    num_docs: int  # rows holding at least one term (LanceDB's N)

    def add_scores(self, terms: list[str], scores: np.ndarray) -> None:
        """Each term's BM25 in each row holding it, added to ``scores`` (one float32 a row)."""
        n = np.float32(self.num_docs)
        for term in terms:
            i = self.terms.get(term)
            if i is None:
                continue
            start, end = self.bounds[i], self.bounds[i + 1]
            docs = np.float32(end - start)
            idf = np.log((n - docs + np.float32(0.5)) / (docs + np.float32(0.5)) + np.float32(1), dtype=np.float32)
            rows = self.rows[start:end]
            scores[rows] += idf * self.weights[start:end]


class _FieldBuilder:
    """A field's postings, made batch by batch (a batch's words split, counted and let go before the next:
    at 100,000 rows the body's 9 million words at once would cost several times the postings)."""

    def __init__(self, analyzer: Analyzer):
        self.analyzer = analyzer
        self.terms: dict[str, int] = {}
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (term, row, count) of each batch
        self.lengths: list[np.ndarray] = []
        self.rows = 0

    def add(self, texts: pa.Array) -> None:
        n = len(texts)
        if not n:
            return
        words = pc.split_pattern_regex(pc.fill_null(texts, ""), _separators())
        flat = pc.list_flatten(words).dictionary_encode()
        numbered = np.array([-1 if t is None else self.terms.setdefault(t, len(self.terms))
                             for t in self.analyzer.terms(flat.dictionary.to_pylist())] + [-1], np.int64)
        term = numbered[flat.indices.to_numpy(zero_copy_only=False)] if len(flat) else np.empty(0, np.int64)
        row = pc.list_parent_indices(words).to_numpy()[term >= 0]
        term = term[term >= 0]
        self.lengths.append(np.bincount(row, minlength=n))
        pairs, counts = np.unique(term * n + row, return_counts=True)  # by term, then row
        self.parts.append(((pairs // n).astype(np.int32), (pairs % n + self.rows).astype(np.int32),
                           counts.astype(np.float32)))
        self.rows += n

    def finish(self) -> FieldIndex:
        term, rows, freqs = (np.concatenate([p[i] for p in self.parts]) if self.parts else np.empty(0, dtype)
                             for i, dtype in enumerate((np.int32, np.int32, np.float32)))
        self.parts = []
        order = np.argsort(term, kind="stable")  # by term; each term's rows stay in row order
        term, rows, freqs = term[order], rows[order], freqs[order]
        lengths = np.concatenate(self.lengths).astype(np.float32) if self.lengths else np.empty(0, np.float32)
        num_docs = int(np.count_nonzero(lengths))
        # as LanceDB computes it, in float32: norm = k1 (1 - b + b len / avgdl)
        avgdl = np.float32(np.float32(lengths.sum(dtype=np.float64)) / np.float32(num_docs)) if num_docs else 1
        norms = K1 * (np.float32(1) - B + B * lengths / avgdl)
        weights = ((K1 + np.float32(1)) * freqs / (freqs + norms[rows])).astype(np.float32)
        bounds = np.searchsorted(term, np.arange(len(self.terms) + 1))
        return FieldIndex(self.terms, rows, weights, bounds, num_docs)


class KeywordIndexBuilder:
    """A :class:`KeywordIndex` of the named fields, fed batch by batch (rows numbered in the order fed)."""

    def __init__(self, names: list[str] | tuple[str, ...]):
        self.analyzer = Analyzer()
        self._fields = {name: _FieldBuilder(self.analyzer) for name in names}

    def add(self, batch: pa.RecordBatch | pa.Table) -> None:
        for name, field in self._fields.items():
            column = batch.column(name)
            field.add(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)

    def finish(self) -> KeywordIndex:
        fields = {name: field.finish() for name, field in self._fields.items()}
        self.analyzer.forget()  # every word of the rows, as written: 46 MB at 100,000 chunks of Python code
        return KeywordIndex(fields, self.analyzer, next(iter(self._fields.values())).rows if fields else 0)


class KeywordIndex:
    """BM25 over several fields of the same rows, each with a boost; a row scores its best boosted field."""

    def __init__(self, fields: dict[str, FieldIndex], analyzer: Analyzer, rows: int):
        self.fields = fields
        self.analyzer = analyzer
        self.rows = rows

    @classmethod
    def build(cls, fields: dict[str, pa.Array]) -> KeywordIndex:
        """The index of these columns (the same rows each)."""
        builder = KeywordIndexBuilder(list(fields))
        builder.add(pa.table(fields))
        return builder.finish()

    def search(self, text: str, k: int, boosts: dict[str, float], row_ids: np.ndarray,
               mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k best rows for ``text`` (their places and scores, best first; ties by row id), of those that
        hold a word of it (and pass ``mask``: scored as among all rows, as LanceDB's prefilter does)."""
        terms = self.analyzer.query(text)
        if not terms or k <= 0 or not self.rows:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        best = np.zeros(self.rows, np.float32)
        for name, boost in boosts.items():
            scores = np.zeros(self.rows, np.float32)
            self.fields[name].add_scores(terms, scores)
            np.maximum(best, scores * np.float32(boost), out=best)
        if mask is not None:
            best[~mask] = 0
        found = np.flatnonzero(best > 0)
        if len(found) > k:  # all that tie with the k-th best, then the first k of them by score and row id
            kth = best[found[np.argpartition(-best[found], k - 1)[k - 1]]]
            found = found[best[found] >= kth]
        found = found[np.lexsort((row_ids[found], -best[found]))][:k]
        return found, best[found]
