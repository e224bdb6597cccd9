"""What the keyword index sees of a chunk, and of a query: identifiers split
into their words while the whole identifier is kept.

``parseListHeader``, ``parse_list_header`` and ``parse-list-header`` all
become ``parse list header parselistheader``; ``HTTPAdapter`` becomes ``http
adapter httpadapter``; ``is_ipv4_address`` becomes ``is ipv4 address
isipv4address`` (digits stay with their word).
The full-text index (LanceDB's BM25, English stemming, stop words removed)
then matches a plain-English query against the words, and an identifier
typed whole against the whole. A chunk's names (symbol, qualified name,
signature, path components) go in a field of their own, which weighs more
than the body (docstring and code). Queries go through :func:`query_terms`,
so both sides split the same way."""

from __future__ import annotations

import functools
import re

from codeindex_common.identifiers import words
from codeindex_common.model import Chunk

# the rules below, as a number: keyword fields a chunk brings are used only when made by the same rules (a
# parser and a store of different versions would otherwise index words that queries are not split into)
FORMAT = 1

# an identifier: letters, digits, _ and $, with - inside (kebab-case) when letters follow
_IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*(?:-[A-Za-z][A-Za-z0-9_$]*)*")
MAX_BODY_CHARS = 20_000  # a longer chunk's body is cut: its rest adds little to BM25 but costs index space


# one word as identifiers.words sees it (a word, Capitalised or not, or an acronym, with its digits): kept as is
_ONE_WORD = re.compile(r"[A-Z]?[a-z]+[0-9]*|[A-Z]+[0-9]*")


@functools.lru_cache(maxsize=1 << 16)
def _expanded(ident: str) -> str:
    """An identifier of two or more words as its words and its whole; any other as it is. Cached: code
    repeats its identifiers (self, return, the file's own names), and every chunk is split at each write."""
    if _ONE_WORD.fullmatch(ident):
        return ident
    parts = words(ident)
    if len(parts) < 2:
        return ident
    return f"{' '.join(parts)} {''.join(parts)}"


# the same identifiers, captured: re.split gives the text between them at even places, them at odd ones
_IDENT_SPLIT = re.compile(f"({_IDENT.pattern})")


def split(text: str) -> str:
    """``text`` with each identifier of two or more words written as its words and its whole
    (lowercase, no separators); other text is left as it is. (Split, mapped through the cache and joined:
    1.6x a substitution that calls back into Python for every identifier, the store's largest cost.)"""
    parts = _IDENT_SPLIT.split(text)
    parts[1::2] = map(_expanded, parts[1::2])
    return "".join(parts)


def names_field(c: Chunk) -> str:
    """The names of a chunk: symbol(s), qualified name(s), signature, and the path's directories and file
    name (without extension), identifiers split."""
    path_parts = [p for p in re.split(r"[/.]", c.path.rsplit(".", 1)[0]) if p]
    return split(" ".join([c.symbol.replace(",", " "), c.qualified_name.replace(",", " "), c.signature,
                           " ".join(path_parts)]))


def body_field(c: Chunk) -> str:
    """The body of a chunk: its docstring and its code, identifiers split."""
    return split(f"{c.docstring}\n{c.text[:MAX_BODY_CHARS]}")


def query_terms(text: str) -> str:
    """A query as the keyword index should see it: identifiers split as in the chunks."""
    return split(text)
