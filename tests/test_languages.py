"""Every supported language, on sample files written apart from the chunker
(tests/fixtures/languages, with hand-checked line ranges in expected.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parser_svc.chunker import Limits, chunk_file
from parser_svc.languages import SPECS

FIXTURES = Path(__file__).parent / "fixtures" / "languages"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


def model_limits() -> Limits:
    from embed_svc.backends import default_model_path

    return Limits(max_tokens=256, tokenizer=str(Path(default_model_path()) / "tokenizer.json"))


def test_the_fixtures_cover_every_language():
    languages = {chunk_file(name, (FIXTURES / name).read_bytes()).language for name in EXPECTED}
    assert languages == set(SPECS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_definitions_have_their_names_kinds_lines_and_parents(name):
    data = (FIXTURES / name).read_bytes()
    r = chunk_file(name, data, limits=model_limits())
    assert not r.skip_reason, r
    by_qualified: dict[str, list] = {}
    for c in r.chunks:
        by_qualified.setdefault(c.qualified_name, []).append(c)
    ids = {c.id: c for c in r.chunks}
    lines = data.decode().split("\n")
    for want in EXPECTED[name]:
        q = want["qualified_name"]
        assert q in by_qualified, f"{q} missing; have {sorted(by_qualified)}"
        # its chunk, or the pieces of a definition longer than the window (Rust's struct and impls share a name)
        a, b = want["start_line"], want["end_line"]
        pieces = [c for c in by_qualified[q] if a <= c.start_line <= b and c.end_line <= b]
        assert pieces, f"{q}: nothing within lines {a}-{b}: {[(c.start_line, c.end_line) for c in by_qualified[q]]}"
        got = (pieces[0].kind, pieces[0].symbol, min(c.start_line for c in pieces), max(c.end_line for c in pieces))
        assert got == (want["kind"], want["symbol"], a, b), q
        first = pieces[0]
        assert first.text.split("\n")[0].strip() == lines[first.start_line - 1].strip()
        head = first.signature.split("\n")[0].strip()
        assert head, f"{q} has no signature"
        assert head in lines[first.start_line - 1] or head in first.text, (q, head)
        if "." in q and want["kind"] == "method":
            parent = ids.get(first.parent_id)
            assert parent is not None and parent.kind in ("class", "impl"), f"{q} has no class or impl parent"
            assert q.startswith(parent.qualified_name + "."), (q, parent.qualified_name)
    top = [c for c in r.chunks if c.kind in ("class", "impl", "function") and "." not in c.qualified_name]
    modules = {c.id for c in r.chunks if c.kind == "module"}
    if modules:  # top-level definitions hang off the module chunk...
        assert all(c.parent_id in modules for c in top), [(c.qualified_name, c.parent_id) for c in top]
    else:  # ...or, without one, off nothing
        assert all(c.parent_id == "" for c in top), [(c.qualified_name, c.parent_id) for c in top]


def test_the_docs_table_lists_every_language_and_extension():
    from parser_svc.languages import EXTENSIONS

    doc = (Path(__file__).parent.parent / "docs" / "CHUNKING.md").read_text()
    table = doc[doc.index("## Languages"):doc.index("## What a chunk holds")]
    missing = [ext for ext in EXTENSIONS if f"`{ext}`" not in table]
    assert not missing, f"docs/CHUNKING.md does not list {missing}"
    names = {"csharp": "C#", "cpp": "C++", "tsx": "TSX", "typescript": "TypeScript", "javascript": "JavaScript",
             "php": "PHP", "c": "C"}
    for language in SPECS:
        assert f"| {names.get(language, language.capitalize())}" in table, language
