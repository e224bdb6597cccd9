"""What a person sees of a search on a terminal: hits grouped under their
file (files in the order of their best hit), each with its score (0 to 1),
lines, qualified name and kind, then the snippet with line numbers and the
query's words highlighted (on a terminal, unless NO_COLOR is set), and
``--context N`` lines around it read from the file. ``--json`` is not made
here: it prints every field of every hit (``Hit.to_dict``)."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable

from codeindex_common.identifiers import words as identifier_words
from codeindex_common.model import SNIPPET_WIDTH, Hit, SymbolHit

BOLD, MATCH, DIM, RESET = "\033[1m", "\033[1;33m", "\033[2m", "\033[0m"
_STOP = frozenset("a an and are as at be by do does for from how in is it of on or the to what when where which "
                  "with".split())


def use_color(choice: str = "auto", stream=None) -> bool:
    """``always``, ``never``, or (``auto``) when writing to a terminal and NO_COLOR is not set."""
    if choice != "auto":
        return choice == "always"
    stream = stream or sys.stdout
    return stream.isatty() and not os.environ.get("NO_COLOR")


def query_words(query: str) -> list[str]:
    """The words to highlight: the query's words and the parts of its identifiers, longest first."""
    found: set[str] = set()
    for token in re.findall(r"[A-Za-z_$][\w$]*", query):
        found.add(token.lower())
        found.update(identifier_words(token))
    return sorted((w for w in found if len(w) > 1 and w not in _STOP), key=lambda w: (-len(w), w))


def highlight(line: str, words: Iterable[str], color: bool) -> str:
    words = list(words)
    if not color or not words:
        return line
    pattern = re.compile("|".join(re.escape(w) for w in words), re.IGNORECASE)
    return pattern.sub(lambda m: f"{MATCH}{m.group(0)}{RESET}", line)


def _file_lines(root: str, path: str) -> list[str] | None:
    try:
        with open(os.path.join(root, path), encoding="utf-8", errors="replace") as fh:
            return fh.read().split("\n")
    except OSError:
        return None


def _excerpt(h: Hit, root: str, context: int) -> list[tuple[int, str]]:
    """(line number, text) of the snippet and ``context`` lines on each side (within the file, when it can
    be read; else within the chunk)."""
    first = h.snippet_line or h.chunk.start_line
    count = max(1, len(h.snippet.splitlines()))
    lines = _file_lines(root, h.chunk.path) if context else None
    if lines is not None and _changed(lines, first, h.snippet):
        lines = None  # the file changed since it was indexed: its lines as indexed, not lines that moved
    if lines is None:  # the snippet alone, or context from the chunk's own text
        text = h.chunk.text.split("\n")
        lo = max(h.chunk.start_line, first - context)
        hi = min(h.chunk.end_line, first + count - 1 + context)
        return [(n, text[n - h.chunk.start_line]) for n in range(lo, hi + 1) if 0 <= n - h.chunk.start_line < len(text)]
    lo, hi = max(1, first - context), min(len(lines), first + count - 1 + context)
    return [(n, lines[n - 1]) for n in range(lo, hi + 1)]


def _changed(lines: list[str], first: int, snippet: str) -> bool:
    """The file's lines where the snippet was are not the snippet's (the file changed since it was indexed)."""
    want = [line.rstrip() for line in snippet.split("\n")]
    # the store cuts a snippet's lines (store_svc.ranking.snippet)
    return [line[:SNIPPET_WIDTH].rstrip() for line in lines[first - 1:first - 1 + len(want)]] != want


def format_hits(hits: list[Hit], query: str, root: str = ".", context: int = 0, color: bool = False) -> str:
    if not hits:
        return "no results"
    words = query_words(query)
    groups: dict[str, list[Hit]] = {}
    for h in hits:
        groups.setdefault(h.chunk.path, []).append(h)
    out: list[str] = []
    for path, group in groups.items():
        out.append(f"{BOLD}{path}{RESET}" if color else path)
        for h in group:
            c = h.chunk
            name = c.qualified_name or "-"
            out.append(f"  {h.score:.2f}  {path}:{c.start_line}-{c.end_line}  {name} ({c.kind}, {c.language})")
            width = len(str(c.end_line + context))
            for n, line in _excerpt(h, root, context):
                number = f"{n:>{width}} │"
                out.append(f"        {DIM}{number}{RESET} " if color else f"        {number} ")
                out[-1] += highlight(line[:200], words, color)
        out.append("")
    return "\n".join(out).rstrip()


def format_definitions(found: list[SymbolHit], name: str, color: bool = False) -> str:
    if not found:
        return f"no definition named {name!r}"
    out = []
    for h in found:
        d = h.definition
        where = f"{h.path}:{d.start_line}-{d.end_line}"
        out.append(f"{BOLD}{where}{RESET}" if color else where)
        out[-1] += f"  {d.qualified_name} ({d.kind}, {h.language})"
        if h.signature:
            out.append(f"        {highlight(h.signature.splitlines()[0][:200], [d.symbol], color)}")
    return "\n".join(out)
