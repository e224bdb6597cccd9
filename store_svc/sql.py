"""LanceDB filter expressions built from user strings.

User strings never reach a LanceDB filter expression unescaped: every value
goes through :func:`sql_str` (a quoted SQL literal, NUL bytes refused), and a
path glob becomes an anchored regular expression in which every character but
letters, digits, ``_`` and ``/`` is written as ``\\x{..}`` (:func:`glob_regex`).
Build filters here and only here.
"""

from __future__ import annotations

from codeindex_common.errors import InvalidArgument
from codeindex_common.model import Query, SymbolQuery

MAX_GLOB = 1000


def sql_str(value: str) -> str:
    """A SQL string literal; user text never reaches a filter unquoted."""
    if "\0" in value:
        raise InvalidArgument("a filter value contains a NUL byte")
    return "'" + value.replace("'", "''") + "'"


def in_list(column: str, values: list[str]) -> str:
    return f"{column} IN ({', '.join(sql_str(v) for v in values)})"


def names_include(names: list[str]) -> str:
    """Chunks holding a definition named as one of ``names`` (bare or qualified; merged small functions
    included): the ``names`` list column."""
    return f"array_has_any(names, [{', '.join(sql_str(n) for n in names)}])"


def glob_regex(glob: str) -> str:
    """A path glob as an anchored regular expression: ``*`` matches within one
    directory, ``**`` across directories, ``?`` one character; a pattern
    without ``/`` matches the file name in any directory, a trailing ``/``
    everything under a directory. Every other character is literal: written
    as ``\\x{..}`` unless it is a letter, digit, ``_`` or ``/``."""
    if len(glob) > MAX_GLOB:
        raise InvalidArgument(f"path_glob is longer than {MAX_GLOB} characters")
    g = glob.strip()
    anchored = "/" in g.rstrip("/")
    g = g.lstrip("/")
    if g.endswith("/"):
        g += "**"
    out, i = [], 0
    while i < len(g):
        if g.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif g.startswith("**", i):
            out.append(".*")
            i += 2
        elif g[i] == "*":
            out.append("[^/]*")
            i += 1
        elif g[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            c = g[i]
            out.append(c if (c.isascii() and (c.isalnum() or c in "_/")) else f"\\x{{{ord(c):x}}}")
            i += 1
    return "^" + ("" if anchored else "(?:.*/)?") + "".join(out) + "$"


def filters(language: str = "", kind: str = "", path_glob: str = "", symbol: str = "") -> str:
    """The LanceDB filter for these filters (empty ones left out); every value quoted."""
    parts = []
    if language:
        parts.append(f"language = {sql_str(language)}")
    if kind:
        parts.append(f"kind = {sql_str(kind)}")
    if symbol:
        parts.append(names_include([symbol]))  # a definition whose symbol or qualified name is exactly it
    if path_glob.strip():
        parts.append(f"regexp_like(path, {sql_str(glob_regex(path_glob))})")
    return " AND ".join(parts)


def where_clause(q: Query | SymbolQuery) -> str:
    """The filter of a search's (or a symbol lookup's) filters."""
    if isinstance(q, SymbolQuery):
        return filters(q.language, q.kind, q.path_glob)
    return filters(q.language, q.kind, q.path_glob, q.symbol)
