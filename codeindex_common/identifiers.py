"""Identifiers as words: ``parseListHeader``, ``parse_list_header`` and
``parse-list-header`` are all the words parse, list, header. Shared by the
parser (a chunk's embedded header says its name in words, which the model
reads better than one long token) and the store (its keyword index)."""

from __future__ import annotations

import re

# camelCase and PascalCase boundaries, acronyms kept together (HTTPAdapter -> HTTP Adapter), digits kept with
# the word before them (ipv4, base64, UTF8)
_CAMEL = re.compile(r"[A-Z]+[0-9]*(?=[A-Z][a-z])|[A-Z]?[a-z]+[0-9]*|[A-Z]+[0-9]*|[0-9]+")


def words(identifier: str) -> list[str]:
    """The lowercase words of one identifier (snake_case, kebab-case, camelCase)."""
    out: list[str] = []
    for part in re.split(r"[_$\-.#:]+", identifier):
        out.extend(w.lower() for w in _CAMEL.findall(part))
    return out
