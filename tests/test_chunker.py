"""Unit tests of the chunker (no processes, no grpc)."""

import pytest

from parser_svc.chunker import chunk_file
from parser_svc.languages import detect


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
    r = chunk_file("src/repo.py", PY)
    assert r.language == "python" and not r.skip_reason
    names = by_name(r)
    fn, cls, m = names["load_config"], names["Repository"], names["Repository.commits"]
    assert (fn.kind, fn.start_line, fn.end_line) == ("function", 5, 9)  # decorator included
    assert fn.text.startswith("@cache")
    assert (cls.kind, cls.start_line, cls.end_line, cls.parent_id) == ("class", 12, 19, "")
    assert (m.kind, m.symbol, m.start_line, m.end_line, m.parent_id) == ("method", "commits", 18, 19, cls.id)
    assert names["Repository.__init__"].parent_id == cls.id
    # the class embeds as a skeleton: member bodies elided, signatures kept
    assert "def commits(self):" in cls.embed_text and "return []" not in cls.embed_text
    assert cls.text == "".join(PY.decode().splitlines(keepends=True)[11:19]).rstrip("\n")
    # a method's embedded text carries its context; its stored text is the exact source
    assert m.embed_text.startswith("python method Repository.commits\n")
    assert m.text == "def commits(self):\n        return []"
    # top-level code outside definitions is not lost
    modules = [c for c in r.chunks if c.kind == "module"]
    assert any("import os" in c.text for c in modules) and any("__main__" in c.text for c in modules)
    assert len({c.id for c in r.chunks}) == len(r.chunks)


CASES = {
    "web/app.js": (b"export function render(view) {\n  return view;\n}\n\nconst add = (a, b) => a + b;\n\n"
                   b"class Cart {\n  total() {\n    return 0;\n  }\n}\n",
                   "javascript", {"render": ("function", 1, 3), "add": ("function", 5, 5),
                                  "Cart": ("class", 7, 11), "Cart.total": ("method", 8, 10)}),
    "web/app.ts": (b"interface Shape {\n  area(): number;\n}\n\nexport class Circle implements Shape {\n"
                   b"  area(): number {\n    return 3;\n  }\n}\n",
                   "typescript", {"Shape": ("class", 1, 3), "Circle": ("class", 5, 9),
                                  "Circle.area": ("method", 6, 8)}),
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
    r = chunk_file(path, data)
    assert r.language == language
    names = by_name(r)
    for name, (kind, start, end) in expected.items():
        assert name in names, f"{name} missing from {sorted(names)}"
        c = names[name]
        assert (c.kind, c.start_line, c.end_line) == (kind, start, end), name
        lines = data.decode().splitlines()
        assert c.text.splitlines()[0] == lines[start - 1].strip() or lines[start - 1].strip() in c.text
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
    assert not chunk_file("src/gen.py", b'"""Tools that generate code."""\nx = 1\n').skip_reason
    assert chunk_file("data/big.csv", b"a,b\n" * 100_000).skip_reason == "too_large"
    assert not chunk_file("src/big.py", b"x = 1\n" * 60_000).skip_reason  # code is chunked up to max_file_bytes


def test_invalid_utf8_and_syntax_errors_still_chunk():
    r = chunk_file("broken.py", b"def ok():\n    return '\xff'\n\ndef broken(:\n    pass\n")
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
    assert [c.content_hash for c in a.chunks] == [c.content_hash for c in b.chunks]
    assert {c.id for c in a.chunks}.isdisjoint({c.id for c in b.chunks})
