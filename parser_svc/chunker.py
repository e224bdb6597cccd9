"""Turn one file's bytes into chunks. Pure functions, run inside the parser's
worker processes (everything here is picklable and imports no grpc)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from functools import cache

from codeindex_common.model import Chunk, FileResult

from .languages import SPECS, Spec, detect, generated

WINDOW_LINES = 40  # line window size for files without a grammar
MODULE_WINDOW_LINES = 60


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = 2_000_000
    max_line_length: int = 4_000
    max_text_bytes: int = 256_000  # files without a grammar (data, logs, prose) are cut in line windows up to this


def _digest(*parts: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(p.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


def make_chunk(path: str, language: str, kind: str, symbol: str, qualified: str, parent_id: str,
               start_line: int, end_line: int, start_byte: int, end_byte: int, text: str,
               embed_body: str | None = None) -> Chunk:
    """Build a chunk. Its embedded text is a short context header (language,
    kind, qualified name) plus the body; the path is left out of it, so that
    the content hash (of exactly what is embedded) is the same wherever the
    code lives, and a moved or copied file reuses its vectors."""
    body = text if embed_body is None else embed_body
    label = f"{language} {kind} {qualified}".strip() if qualified else f"{language} {kind}"
    embed_text = f"{label}\n{body}"
    return Chunk(
        id=_digest(path, kind, qualified, str(start_byte), str(end_byte)),
        path=path, language=language, kind=kind, symbol=symbol, qualified_name=qualified,
        parent_id=parent_id, start_line=start_line, end_line=end_line, start_byte=start_byte,
        end_byte=end_byte, text=text, embed_text=embed_text,
        content_hash=_digest(embed_text),
    )


def decode(data: bytes) -> tuple[str | None, str]:
    """(text, note): text is None when the file is skipped for ``note``;
    invalid UTF-8 is decoded with replacement characters (note "invalid_utf8")."""
    if b"\0" in data[:8192]:
        return None, "binary"
    try:
        return data.decode("utf-8"), ""
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace"), "invalid_utf8"


def chunk_file(path: str, data: bytes, language: str = "", limits: Limits = Limits()) -> FileResult:
    """Chunk one file. Never raises for bad input: returns a skip reason."""
    if len(data) > limits.max_file_bytes:
        return FileResult(path, language, skip_reason="too_large",
                          detail=f"{len(data)} bytes > max_file_bytes {limits.max_file_bytes}")
    language = language or detect(path, data[:256])
    if generated(path, data[:1024]):
        return FileResult(path, language, skip_reason="generated", detail="a lock file or generated code")
    if language not in SPECS and language != "markdown" and len(data) > limits.max_text_bytes:
        return FileResult(path, language, skip_reason="too_large",
                          detail=f"{len(data)} bytes of {language} > max_text_bytes {limits.max_text_bytes}")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # a BOM; offsets count from after it
    text, note = decode(data)
    if text is None:
        return FileResult(path, language, skip_reason=note)
    if not text.strip():
        return FileResult(path, language, skip_reason="empty")
    longest = max(map(len, text.split("\n")), default=0)
    if longest > limits.max_line_length:
        return FileResult(path, language, skip_reason="long_lines",
                          detail=f"a line of {longest} characters > max_line_length {limits.max_line_length}")
    spec = SPECS.get(language)
    if language == "markdown":
        chunks = markdown_sections(path, text)
    elif spec is None:
        chunks = line_windows(path, language, text, WINDOW_LINES, "block")
    else:
        chunks = TreeChunker(path, spec, language, data).chunks()
    if not chunks:
        return FileResult(path, language, skip_reason="no_chunks", detail="nothing but punctuation and blanks")
    return FileResult(path, language, tuple(chunks), detail=note and "invalid UTF-8 decoded with replacements")


def split_lines(text: str) -> list[str]:
    """Lines ending in "\n" only, as tree-sitter and editors count them
    (str.splitlines also breaks at form feeds and other separators)."""
    lines = text.split("\n")
    out = [line + "\n" for line in lines[:-1]]
    if lines[-1]:
        out.append(lines[-1])
    return out


def _line_starts(lines: list[str]) -> list[int]:
    """Byte offset of the start of each line (UTF-8), plus the end."""
    starts, pos = [0], 0
    for line in lines:
        pos += len(line.encode("utf-8", "surrogatepass"))
        starts.append(pos)
    return starts


def line_windows(path: str, language: str, text: str, size: int, kind: str,
                 first_line: int = 1, base_byte: int = 0) -> list[Chunk]:
    """Split ``text`` (which starts at ``first_line``/``base_byte`` of its file)
    into windows of ``size`` lines; blank windows are dropped."""
    lines = split_lines(text)
    offsets = _line_starts(lines)
    base = base_byte
    chunks = []
    for i in range(0, len(lines), size):
        piece = "".join(lines[i:i + size])
        if piece.strip():
            chunks.append(make_chunk(path, language, kind, "", "", "", first_line + i,
                                     first_line + min(i + size, len(lines)) - 1, base + offsets[i],
                                     base + offsets[min(i + size, len(lines))], piece))
    return chunks


_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def markdown_sections(path: str, text: str) -> list[Chunk]:
    """One chunk per heading section (long sections in line windows)."""
    lines = split_lines(text)
    offsets = _line_starts(lines)
    starts = [i for i, line in enumerate(lines) if _HEADING.match(line)]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    chunks = []
    for n, begin in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        body = "".join(lines[begin:end])
        if not body.strip():
            continue
        m = _HEADING.match(lines[begin])
        title = m.group(2) if m else ""
        for offset in range(0, end - begin, MODULE_WINDOW_LINES):
            part_end = min(begin + offset + MODULE_WINDOW_LINES, end)
            piece = "".join(lines[begin + offset:part_end])
            if piece.strip():
                chunks.append(make_chunk(path, "markdown", "section", title, title, "", begin + offset + 1,
                                         part_end, offsets[begin + offset], offsets[part_end], piece))
    return chunks


@cache
def get_parser(grammar: str):
    from tree_sitter_language_pack import get_parser as _get

    return _get(grammar)


_NAME_TYPES = ("identifier", "type_identifier", "field_identifier", "property_identifier", "constant",
               "simple_identifier", "name", "word", "operator_name", "destructor_name", "qualified_identifier")


def node_name(node) -> str:
    """The declared name of a definition node, across grammars."""
    for field_name in ("name", "declarator", "type"):
        child = node.child_by_field_name(field_name)
        depth = 0
        while child is not None and depth < 8:
            if child.type in _NAME_TYPES:
                return child.text.decode("utf-8", "replace")
            nxt = child.child_by_field_name("name") or child.child_by_field_name("declarator")
            if nxt is None:
                nxt = next((c for c in child.named_children if c.type in _NAME_TYPES), None)
            child, depth = nxt, depth + 1
    for child in node.named_children:
        if child.type in _NAME_TYPES:
            return child.text.decode("utf-8", "replace")
    return ""


class TreeChunker:
    """Definitions (functions, classes, methods) become chunks linked by
    parent_id; top-level code outside them becomes module chunks."""

    def __init__(self, path: str, spec: Spec, language: str, data: bytes):
        self.path, self.spec, self.language = path, spec, language
        self.data = data  # the file's own bytes: offsets are exact even where UTF-8 is invalid
        self.out: list[Chunk] = []

    def _src(self, start: int, end: int) -> str:
        return self.data[start:end].decode("utf-8", "replace")

    def _definition(self, node):
        """(kind_group, outer_node, name) if ``node`` defines a chunk, else None."""
        if not node.is_named:
            return None
        found = self._definition_of(node)
        # decorators (Python) and `export` (JS/TS) belong to the chunk
        while found and found[1].parent is not None and \
                found[1].parent.type in ("decorated_definition", "export_statement"):
            found = (found[0], found[1].parent, found[2])
        return found

    def _definition_of(self, node):
        t = node.type
        if t in self.spec.functions:
            return "function", node, node_name(node)
        if t in self.spec.classes:
            if t == "type_spec":  # Go: only struct and interface types are class-like
                ty = node.child_by_field_name("type")
                if ty is None or ty.type not in ("struct_type", "interface_type"):
                    return None
                parent = node.parent
                outer = parent if parent is not None and parent.type == "type_declaration" and \
                    parent.named_child_count == 1 else node
                return "class", outer, node_name(node)
            if t in ("struct_specifier", "enum_specifier", "union_specifier", "class_specifier") and \
                    node.child_by_field_name("body") is None:
                return None  # a C/C++ type used, not defined
            name = node_name(node)
            if t == "impl_item":
                ty = node.child_by_field_name("type")
                name = ty.text.decode("utf-8", "replace") if ty is not None else name
            return "class", node, name
        if t == "variable_declarator" and self.spec.assigned_functions:
            value = node.child_by_field_name("value")
            if value is not None and value.type in self.spec.assigned_functions:
                parent = node.parent
                outer = parent if parent is not None and parent.named_child_count == 1 else node
                return "function", outer, node_name(node)
        return None

    def chunks(self) -> list[Chunk]:
        tree = get_parser(self.spec.grammar).parse(self.data)
        root = tree.root_node
        top_ranges: list[tuple[int, int]] = []
        # Iterative walk: (node, parent chunk, qualified prefix, in_class, in_function)
        stack = [(root, None, "", False, False)]
        while stack:
            node, parent, prefix, in_class, in_function = stack.pop()
            found = self._definition(node) if node is not root else None
            if found and not (in_function and found[0] == "function"):
                group, outer, name = found
                kind = group
                if group == "function" and (in_class or node.type in self.spec.methods_always):
                    kind = "method"
                receiver = self._go_receiver(node) if node.type == "method_declaration" and \
                    self.language == "go" else ""
                qual_prefix = receiver or prefix
                qualified = f"{qual_prefix}.{name}" if qual_prefix and name else name
                chunk = self._emit(outer, kind, name, qualified, parent.id if parent else "")
                if parent is None:
                    top_ranges.append((outer.start_byte, outer.end_byte))
                if group == "class":
                    children = [(c, chunk, qualified, True, False) for c in node.children]
                else:
                    children = [(c, chunk, qualified, False, True) for c in node.children]
                stack.extend(reversed(children))
                continue
            stack.extend(reversed([(c, parent, prefix, in_class, in_function) for c in node.children]))
        self._link_go_methods()
        self._class_skeletons()
        self._module_chunks(top_ranges)
        self.out.sort(key=lambda c: (c.start_byte, -c.end_byte))
        return self.out

    def _go_receiver(self, node) -> str:
        recv = node.child_by_field_name("receiver")
        if recv is None:
            return ""
        ids = [n for n in _walk(recv) if n.type == "type_identifier"]
        return ids[0].text.decode("utf-8", "replace") if ids else ""

    def _emit(self, node, kind: str, name: str, qualified: str, parent_id: str) -> Chunk:
        chunk = make_chunk(self.path, self.language, kind, name, qualified, parent_id,
                           node.start_point[0] + 1, node.end_point[0] + 1, node.start_byte, node.end_byte,
                           self._src(node.start_byte, node.end_byte))
        self.out.append(chunk)
        return chunk

    def _link_go_methods(self) -> None:
        if self.language != "go":
            return
        types = {c.symbol: c.id for c in self.out if c.kind == "class"}
        for i, c in enumerate(self.out):
            if c.kind == "method" and not c.parent_id and "." in c.qualified_name:
                owner = types.get(c.qualified_name.split(".", 1)[0])
                if owner:
                    self.out[i] = replace(c, parent_id=owner)

    def _class_skeletons(self) -> None:
        """A class chunk embeds as a skeleton: its own lines plus the first
        line (signature) of each member; member bodies are elided."""
        by_parent: dict[str, list[Chunk]] = {}
        for c in self.out:
            if c.parent_id:
                by_parent.setdefault(c.parent_id, []).append(c)
        for i, c in enumerate(self.out):
            members = by_parent.get(c.id)
            if c.kind != "class" or not members:
                continue
            lines = split_lines(c.text)
            keep = [True] * len(lines)
            for m in members:
                for ln in range(m.start_line + 1, m.end_line + 1):
                    idx = ln - c.start_line
                    if 0 <= idx < len(keep):
                        keep[idx] = False
            skeleton, elided = [], False
            for line, k in zip(lines, keep):
                if k:
                    skeleton.append(line)
                    elided = False
                elif not elided:
                    skeleton.append("    ...\n")
                    elided = True
            self.out[i] = make_chunk(c.path, c.language, c.kind, c.symbol, c.qualified_name, c.parent_id,
                                     c.start_line, c.end_line, c.start_byte, c.end_byte, c.text,
                                     embed_body="".join(skeleton))

    def _module_chunks(self, covered: list[tuple[int, int]]) -> None:
        """Top-level code outside every definition, in line windows."""
        covered.sort()
        gaps, pos = [], 0
        for start, end in covered:
            if start > pos:
                gaps.append((pos, start))
            pos = max(pos, end)
        gaps.append((pos, len(self.data)))
        for start, end in gaps:
            piece = self._src(start, end)
            if not re.search(r"\w", piece):
                continue  # whitespace and punctuation only
            # a gap that starts mid-line after a definition starts on the next line
            nl = self.data.find(b"\n", start, end)
            if nl != -1 and not re.search(rb"\w", self.data[start:nl]):
                start = nl + 1
            # widen to the start of the line only over blanks, never into a definition
            line_start = self.data.rfind(b"\n", 0, start) + 1
            if self.data[line_start:start].strip():
                line_start = start
            first_line = self.data.count(b"\n", 0, line_start) + 1
            self.out.extend(line_windows(self.path, self.language, self._src(line_start, end),
                                         MODULE_WINDOW_LINES, "module", first_line, line_start))


def _walk(node):
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(n.children))

