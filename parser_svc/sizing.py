"""From definitions and spans to chunks sized for the embedding model.

The chunker describes a file as :class:`Item` s (a function, a class with
its skeleton, a run of top-level code, a document section); :class:`Sizer`
turns them into :class:`Chunk` s: it adds the context header, merges tiny
adjacent functions, and splits anything longer than the model's window into
pieces on statement or line boundaries (definitions overlap a little, windows
of top-level code do not). Nothing is truncated: every byte of an item is in
one of its pieces.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field, replace
from functools import cache

from codeindex_common.identifiers import words
from codeindex_common.model import DEFINITION_KINDS, Chunk, Definition

CHARS_PER_TOKEN = 3  # the estimate when no tokenizer is given (code averages 3-4 characters a token)
MIN_BUDGET = 16
SEAM_MARGIN = 2  # tokens: counts of lines and of their joined text can differ by one at a seam
MAX_REPEATED_SIGNATURE = 300  # characters; a longer (or cut) signature is not repeated in later pieces


@dataclass(frozen=True)
class Limits:
    """Per-file limits and sizing (picklable: sent to the workers with each file)."""

    max_file_bytes: int = 2_000_000
    max_line_length: int = 4_000
    max_text_bytes: int = 256_000  # files without a grammar (data, logs, prose) are cut in windows up to this
    max_tokens: int = 0            # the embedding model's window, special tokens included; 0 = never split
    tokenizer: str = ""            # path of a tokenizer.json to count tokens exactly ("" = estimate)
    overlap_tokens: int = 32       # pieces of a split definition repeat this much of the previous piece
    min_tokens: int = 24           # adjacent functions smaller than this are merged into one chunk
    window_lines: int = 40         # line windows when max_tokens is 0


Unit = tuple[int, int, str]  # (start byte, end byte, text to embed): a line, an elision, or part of a long line


@dataclass
class Item:
    """A span of the file that becomes one chunk, or several when too long."""

    kind: str
    start: int  # byte range in the file
    end: int
    symbol: str = ""
    qualified: str = ""
    parent: int = -1  # index of the enclosing item
    signature: str = ""
    docstring: str = ""
    context: list[str] = field(default_factory=list)  # header lines after the label (enclosing signature, ...)
    skeleton: list[Unit] | None = None  # what to embed instead of the source (a class: bodies elided)
    window: bool = False  # top-level code, text, a section: cut in windows without overlap, never merged
    members: list[tuple[str, str, str, int, int]] | None = None  # merged: (kind, symbol, qualified, start, end)


def digest(*parts: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(p.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


@cache
def _tokenizer(path: str):
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one worker per core already
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(path)
    tok.no_truncation()
    tok.no_padding()
    return tok


_ASCII_SPACE = " \t\n\r"


def _drops_whitespace(tok) -> bool:
    """Whether whitespace at the ends of a text never makes a token: BERT's pre-tokenizer splits words on
    whitespace and drops it, and its normalizer at most turns whitespace into spaces, unless an added token
    holds whitespace (those are matched before either). Then a line's indentation need not be tokenized, and
    lines that differ only there are counted once (a fifth less to tokenize over the benchmark corpus)."""
    from tokenizers import normalizers, pre_tokenizers

    return isinstance(tok.pre_tokenizer, pre_tokenizers.BertPreTokenizer) and \
        (tok.normalizer is None or isinstance(tok.normalizer, normalizers.BertNormalizer)) and \
        not any(set(t.content) & set(_ASCII_SPACE) for t in tok.get_added_tokens_decoder().values())


class TokenCounter:
    """Tokens as the embedding model counts them (or an estimate). One per file: it remembers each text's
    count, as sizing asks for the same texts again (a header for each piece, a class's lines in its skeleton
    and its methods, blank and closing lines), and the tokenizer costs about half a microsecond a character."""

    def __init__(self, tokenizer_path: str = ""):
        self.tok = _tokenizer(tokenizer_path) if tokenizer_path else None
        self.special = len(self.tok.encode("").ids) if self.tok is not None else 2
        self.known: dict[str, int] = {}
        self.strip = self.tok is not None and _drops_whitespace(self.tok)

    def counts(self, texts: list[str]) -> list[int]:
        if self.tok is None:
            return [math.ceil(len(t) / CHARS_PER_TOKEN) for t in texts]
        keys = [t.strip(_ASCII_SPACE) for t in texts] if self.strip else texts
        known = self.known
        new = [t for t in dict.fromkeys(keys) if t not in known]
        if new:  # the fast batch skips the offsets, which counting has no use for
            known.update(zip(new, map(len, self.tok.encode_batch_fast(new, add_special_tokens=False))))
        return [known[t] for t in keys]

    def count(self, text: str) -> int:
        return self.counts([text])[0]


_INDENT = re.compile(r"[ \t]*")
_WORD = re.compile(r"\w")


def pack(tokens: list[int], budget: int, overlap: int = 0, breaks: set[int] | None = None) -> list[tuple[int, int]]:
    """Group consecutive units into [i, j) ranges of at most ``budget`` tokens
    (a unit alone may exceed it). A full group ends at the last break (a
    statement start) in its second half, if any; the next group repeats up to
    ``overlap`` tokens of the previous one. Every unit is in some group."""
    groups: list[tuple[int, int]] = []
    cuts = sorted(breaks or ())
    i, n = 0, len(tokens)
    while i < n:
        j, total = i, 0
        while j < n and (j == i or total + tokens[j] <= budget):
            total += tokens[j]
            j += 1
        if j < n and cuts:
            k = bisect_left(cuts, j) - 1  # the last break before j
            if k >= 0 and cuts[k] > i + (j - i) // 2:
                j = cuts[k]
        groups.append((i, j))
        if j >= n:
            break
        k, repeated = j, 0
        while k - 1 > i and repeated + tokens[k - 1] <= overlap:
            k -= 1
            repeated += tokens[k]
        i = k
    return groups


class Sizer:
    """Turns one file's items into chunks."""

    def __init__(self, path: str, language: str, data: bytes, limits: Limits):
        self.path, self.language, self.data, self.limits = path, language, data, limits
        self.counter = TokenCounter(limits.tokenizer)
        self.line_starts = [0] + [m.end() for m in re.finditer(rb"\n", data)]

    # ------------------------------------------------------------------ helpers
    def line_of(self, byte: int) -> int:
        """1-based line of a byte offset."""
        return bisect_right(self.line_starts, byte)

    def src(self, start: int, end: int) -> str:
        return self.data[start:end].decode("utf-8", "replace")

    def lines(self, start: int, end: int) -> list[Unit]:
        """The source lines of [start, end) as units (the last may lack its newline)."""
        units, pos = [], start
        while pos < end:
            nl = self.data.find(b"\n", pos, end)
            stop = end if nl == -1 else nl + 1
            units.append((pos, stop, self.src(pos, stop)))
            pos = stop
        return units

    def _label(self, item: Item) -> str:
        """The header's first line: language, kind, name, and the name's words when they read differently
        (``parseListHeader`` -> ``parse list header``), which the model understands better."""
        label = f"{self.language} {item.kind} {item.qualified}".rstrip()
        said = " ".join(words(item.symbol.split(",")[0])) if item.symbol else ""
        return f"{label} ({said})" if said and said != item.symbol.split(",")[0].lower() else label

    def _chunk(self, item: Item, start: int, end: int, body: str, header: list[str], parent_id: str) -> Chunk:
        """The path is the first header line but not part of the content hash:
        the same code elsewhere (a moved or copied file) reuses its vectors."""
        embedded = "\n".join([*header, body])
        members = item.members or ([(item.kind, item.symbol, item.qualified, item.start, item.end)]
                                   if item.kind in DEFINITION_KINDS else [])
        definitions = tuple(Definition(symbol, qualified, kind, self.line_of(a), self.line_of(max(a, b - 1)))
                            for kind, symbol, qualified, a, b in members)
        return Chunk(
            id=digest(self.path, item.kind, item.qualified, str(start), str(end)),
            path=self.path, language=self.language, kind=item.kind, symbol=item.symbol,
            qualified_name=item.qualified, parent_id=parent_id, start_line=self.line_of(start),
            end_line=self.line_of(max(start, end - 1)), start_byte=start, end_byte=end, text=self.src(start, end),
            embed_text=f"{self.path}\n{embedded}", content_hash=digest(embedded), docstring=item.docstring,
            signature=item.signature, definitions=definitions)

    # ------------------------------------------------------------------ merging
    def _merge_tiny(self, items: list[Item], order: list[int]) -> tuple[list[Item], list[int]]:
        """Runs of adjacent tiny functions (one-line getters, stubs) with the
        same parent and only blanks between become one chunk."""
        small = self.limits.min_tokens
        if small <= 0:
            return items, order
        has_children = {it.parent for it in items}
        candidates = [i for i in order if items[i].kind in ("function", "method") and i not in has_children
                      and items[i].end - items[i].start < small * 8]
        sizes = dict(zip(candidates, self.counter.counts([self.src(items[i].start, items[i].end)
                                                          for i in candidates])))
        limit = self.limits.max_tokens - self.counter.special - 32 if self.limits.max_tokens else small * 8
        merged_into: dict[int, int] = {}
        run: list[int] = []

        def flush() -> None:
            if len(run) > 1:
                first, last = items[run[0]], items[run[-1]]
                first.members = [(items[i].kind, items[i].symbol, items[i].qualified, items[i].start, items[i].end)
                                 for i in run]
                first.symbol = ", ".join(items[i].symbol for i in run)
                first.qualified = ", ".join(items[i].qualified for i in run)
                first.end, first.signature, first.docstring = last.end, "", ""
                owner = items[first.parent] if first.parent >= 0 else None
                first.context = [owner.signature] if owner is not None else []
                for i in run[1:]:
                    merged_into[i] = run[0]
            run.clear()

        def cost(i: int) -> int:  # its code, and its name in the merged label
            return sizes[i] + math.ceil(len(items[i].qualified) / CHARS_PER_TOKEN) + 1

        total = 0
        for i in order:
            tiny = sizes.get(i, small) < small
            if run and tiny and items[i].parent == items[run[-1]].parent and total + cost(i) <= limit and \
                    not self.data[items[run[-1]].end:items[i].start].strip():
                run.append(i)
                total += cost(i)
                continue
            flush()
            if tiny:
                run.append(i)
                total = cost(i)
        flush()
        return items, [i for i in order if i not in merged_into]

    # ------------------------------------------------------------------ splitting
    def _units(self, item: Item) -> list[Unit]:
        if item.skeleton is not None:
            return item.skeleton
        return self.lines(item.start, item.end)

    def _split_long(self, unit: Unit, budget: int) -> list[Unit]:
        """A unit (a very long line) over the budget, halved on UTF-8 character boundaries until each part fits."""
        start, end, text = unit
        if end - start < 2 or self.counter.count(text) <= budget:
            return [unit]
        mid = (start + end) // 2
        while mid > start and (self.data[mid] & 0xC0) == 0x80:
            mid -= 1
        if mid <= start:
            return [unit]
        return self._split_long((start, mid, self.src(start, mid)), budget) + \
            self._split_long((mid, end, self.src(mid, end)), budget)

    def _fit(self, header: list[str], budget: int) -> list[str]:
        """The header cut to at most half the budget (context lines dropped
        from the end, then the label shortened), so the code keeps the rest."""
        cap = max(MIN_BUDGET, budget // 2)
        header = list(header)
        while self.counter.count("\n".join([self.path, *header])) > cap:
            if len(header) > 1:
                header.pop()
            else:
                header[0] = header[0][:max(8, min(len(header[0]) // 2, cap))]
                if len(header[0]) <= 8:
                    break
        return header

    def _pieces(self, item: Item, parent_id: str) -> list[Chunk]:
        header = [self._label(item), *item.context]
        units = self._units(item)
        body = "".join(u[2] for u in units)
        lim = self.limits
        if item.window and not lim.max_tokens:  # no window known: fixed line windows
            groups = [(i, min(i + lim.window_lines, len(units))) for i in range(0, len(units), lim.window_lines)]
        else:
            budget = lim.max_tokens - self.counter.special if lim.max_tokens else 0
            head = "\n".join([self.path, *header]) + "\n"
            # an ASCII token covers at least one character, so short ASCII texts fit without counting
            if not budget or (len(head) + len(body) <= budget and head.isascii() and body.isascii()):
                return self._whole(item, body, header, parent_id)
            # lines are counted once, in one batch: their sum is the body's count give or take a token at a
            # seam, so only a sum close to the budget is checked against the joined text
            counted = self.counter.counts([u[2] for u in units])
            whole = self.counter.count(head) + sum(counted)
            if whole <= budget - SEAM_MARGIN or (whole <= budget + SEAM_MARGIN and
                                                 self.counter.count(head + body) <= budget):
                return self._whole(item, body, header, parent_id)
            header = self._fit(header, budget)
            head_tokens = self.counter.count("\n".join([self.path, *header]) + "\n")
            if not item.window:
                later = self._fit(self._continued(item, header, ""), budget)
                head_tokens = max(head_tokens, self.counter.count("\n".join([self.path, *later]) + "\n"))
            budget = max(MIN_BUDGET, budget - head_tokens - SEAM_MARGIN)
            if max(counted) > budget:  # lines longer than a piece are cut in parts
                parts = [[u] if t <= budget else self._split_long(u, budget) for u, t in zip(units, counted)]
                units = [part for group in parts for part in group]
                counted = self.counter.counts([u[2] for u in units])
            tokens = counted
            breaks = None if item.window else self._breaks(units)
            groups = pack(tokens, budget, 0 if item.window else lim.overlap_tokens, breaks)
        out = []
        for n, (i, j) in enumerate(groups):
            piece_body = "".join(u[2] for u in units[i:j])
            if item.window and not piece_body.strip():
                continue
            piece_header = header
            if n > 0 and not item.window:
                piece_header = self._fit(self._continued(item, header, piece_body), budget + head_tokens)
            out.append(self._chunk(item, units[i][0], units[j - 1][1], piece_body, piece_header, parent_id))
        return out

    def _whole(self, item: Item, body: str, header: list[str], parent_id: str) -> list[Chunk]:
        if not item.window or body.strip():
            return [self._chunk(item, item.start, item.end, body, header, parent_id)]
        return []

    @staticmethod
    def _continued(item: Item, header: list[str], body: str) -> list[str]:
        """The header of a later piece: the enclosing signature, and the item's own if the piece lacks it."""
        later = [header[0] + " (continued)", *header[1:2]]
        if item.signature and item.signature not in body and len(item.signature) <= MAX_REPEATED_SIGNATURE:
            later.append(item.signature)
        return later

    @staticmethod
    def _breaks(units: list[Unit]) -> set[int]:
        """Units that start a statement at the body's own level (or are blank): good places to cut."""
        # the body's own level: lines after the first, not counting the closing line or lone punctuation
        depths = [len(_INDENT.match(u[2]).group()) for u in units[1:-1] if _WORD.search(u[2])]
        if not depths:
            return set()
        base = min(depths)
        return {i for i, u in enumerate(units) if i and (not u[2].strip()
                                                         or len(_INDENT.match(u[2]).group()) <= base)}

    # ------------------------------------------------------------------ all together
    def chunks(self, items: list[Item], module_root: bool = False) -> list[Chunk]:
        order = sorted(range(len(items)), key=lambda i: (items[i].start, -items[i].end))
        items, order = self._merge_tiny(items, order)
        first_id: dict[int, str] = {}
        made: list[tuple[int, list[Chunk]]] = []
        for i in order:
            pieces = self._pieces(items[i], "")
            if pieces:
                first_id[i] = pieces[0].id
                made.append((i, pieces))
        # a second pass: a parent may come after its child (a Go method declared before its type); with
        # module_root, the first module chunk is the parent of what has none (the top-level definitions)
        root_id = next((c.id for _, pieces in made for c in pieces if c.kind == "module"), "") if module_root else ""
        out = []
        for i, pieces in made:
            for c in pieces:
                parent_id = first_id.get(items[i].parent, "") or (root_id if c.kind != "module" else "")
                out.append(replace(c, parent_id=parent_id) if parent_id else c)  # each copy costs microseconds
        out.sort(key=lambda c: (c.start_byte, -c.end_byte))
        return out

