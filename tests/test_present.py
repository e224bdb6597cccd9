"""What `orchestrator search` prints: hits grouped under their file, scores 0 to 1, lines, names, the
snippet with line numbers, the query's words highlighted on a terminal, --context lines from the file."""

from __future__ import annotations

from codeindex_common.model import Chunk, Definition, Hit, SymbolHit
from orchestrator import present

SOURCE = "import os\n\n\ndef read_config(path):\n    with open(path) as fh:\n        return fh.read()\n\n\nx = 1\n"


def chunk(path: str, name: str, start: int, end: int, text: str) -> Chunk:
    return Chunk(f"id-{name}", path, "python", "function", name, name, "", start, end, 0, 0, text, "", "")


def hits(tmp_path) -> list[Hit]:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "config.py").write_text(SOURCE)
    body = "def read_config(path):\n    with open(path) as fh:\n        return fh.read()"
    return [Hit(chunk("app/config.py", "read_config", 4, 6, body), 0.91, "def read_config(path):", 0.62, 4),
            Hit(chunk("lib/other.py", "helper", 1, 2, "def helper():\n    pass"), 0.40, "def helper():", None, 1),
            Hit(chunk("app/config.py", "x", 9, 9, "x = 1"), 0.12, "x = 1", None, 9)]


def test_hits_are_grouped_under_their_file_in_the_order_of_their_best_hit(tmp_path):
    text = present.format_hits(hits(tmp_path), "read the config file", str(tmp_path))
    lines = text.splitlines()
    assert lines[0] == "app/config.py" and "lib/other.py" in lines
    assert lines.index("lib/other.py") > next(i for i, line in enumerate(lines) if "app/config.py:9-9" in line)
    assert "  0.91  app/config.py:4-6  read_config (function, python)" in lines
    assert any(line.strip() == "4 │ def read_config(path):" for line in lines)
    assert "\033[" not in text  # no colour unless asked for


def test_the_querys_words_are_highlighted_and_context_comes_from_the_file(tmp_path):
    text = present.format_hits(hits(tmp_path)[:1], "readConfig file", str(tmp_path), context=2, color=True)
    assert f"{present.MATCH}read{present.RESET}_{present.MATCH}config{present.RESET}" in text
    numbered = [line for line in text.splitlines() if "│" in line]
    assert len(numbered) == 5 and "2 │" in numbered[0] and "6 │" in numbered[-1]  # lines 2-6: one snippet line +2/-2
    assert present.query_words("HTTPAdapter send") == ["httpadapter", "adapter", "http", "send"]  # longest first


def test_context_falls_back_to_the_chunk_when_the_file_is_gone(tmp_path):
    text = present.format_hits(hits(tmp_path)[1:2], "helper", str(tmp_path / "nowhere"), context=3)
    assert [line.strip() for line in text.splitlines() if "│" in line] == ["1 │ def helper():", "2 │     pass"]


def test_definitions_are_listed_with_their_lines():
    found = [SymbolHit("lib/greeter.rb", "ruby", Definition("name", "Greeter.name", "method", 5, 7), "", "c1")]
    assert present.format_definitions(found, "name") == "lib/greeter.rb:5-7  Greeter.name (method, ruby)"
    assert present.format_definitions([], "nothing") == "no definition named 'nothing'"


def test_context_of_a_file_changed_since_it_was_indexed_comes_from_the_chunk(tmp_path):
    found = hits(tmp_path)[:1]
    (tmp_path / "app" / "config.py").write_text("# a header added\n# since the index was made\n\n" + SOURCE)
    text = present.format_hits(found, "read config", str(tmp_path), context=2)
    numbered = [line.strip() for line in text.splitlines() if "│" in line]
    # lines 4-6 as indexed (the function), not the file's lines 2-6 now (which hold other code)
    assert numbered == ["4 │ def read_config(path):", "5 │     with open(path) as fh:", "6 │         return fh.read()"]


def test_a_snippet_line_cut_at_200_characters_is_not_taken_for_a_change(tmp_path):
    long = "    return " + "x + " * 80 + "1"
    (tmp_path / "m.py").write_text("import os\n\n\ndef f():\n" + long + "\n")
    hit = Hit(chunk("m.py", "f", 4, 5, "def f():\n" + long), 0.5, "def f():\n" + long[:200], None, 4)
    numbered = [line for line in present.format_hits([hit], "f", str(tmp_path), context=2).splitlines() if "│" in line]
    assert "2 │" in numbered[0]  # the context came from the file: it was not taken for changed
