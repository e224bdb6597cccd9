"""Turn one file's bytes into chunks. Pure functions, run inside the parser's
worker processes (everything here is picklable and imports no grpc)."""

from __future__ import annotations

import inspect
import re
from functools import cache

from codeindex_common.model import TYPE_KINDS, FileResult

from .languages import SPECS, Spec, detect, generated
from .sizing import Item, Limits, Sizer, Unit

__all__ = ["Limits", "chunk_file", "decode", "get_parser"]


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
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # a BOM; offsets count from after it
    language = language or detect(path, data[:256])
    if generated(path, data[:1024]):
        return FileResult(path, language, skip_reason="generated", detail="a lock file or generated code")
    if language not in SPECS and language != "markdown" and len(data) > limits.max_text_bytes:
        return FileResult(path, language, skip_reason="too_large",
                          detail=f"{len(data)} bytes of {language} > max_text_bytes {limits.max_text_bytes}")
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
    sizer = Sizer(path, language, data, limits)
    if language == "markdown":
        chunks = sizer.chunks(markdown_sections(data))
    elif spec is None:
        chunks = sizer.chunks([Item("block", 0, len(data), window=True)])
    else:
        chunks = sizer.chunks(TreeChunker(spec, language, data, sizer).items(), module_root=True)
    if not chunks:
        return FileResult(path, language, skip_reason="no_chunks", detail="nothing but punctuation and blanks")
    return FileResult(path, language, tuple(chunks), detail=note and "invalid UTF-8 decoded with replacements")


_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def markdown_sections(data: bytes) -> list[Item]:
    """One item per heading section (a long section is cut in windows);
    a "#" line inside a fenced code block is not a heading."""
    starts, titles, fence, pos = [0], [""], b"", 0
    for line in data.splitlines(keepends=True):
        stripped = line.lstrip()
        if stripped.startswith((b"```", b"~~~")):
            fence = b"" if fence and stripped.startswith(fence) else (fence or stripped[:3])
        elif not fence and (m := _HEADING.match(line.decode("utf-8", "replace").rstrip("\r\n"))):
            if pos == 0:
                starts, titles = [], []
            starts.append(pos)
            titles.append(m.group(2))
        pos += len(line)
    bounds = [*starts[1:], len(data)]
    return [Item("section", begin, end, symbol=title, qualified=title, window=True)
            for begin, end, title in zip(starts, bounds, titles)]


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
    for child in node.children:  # Swift's init/deinit, Kotlin's constructor: named by their keyword
        if not child.is_named and child.type in ("init", "deinit", "constructor"):
            return child.type
    return ""


def _swift_extension(node) -> bool:
    """Whether a Swift ``class_declaration`` is an ``extension`` of a type declared elsewhere."""
    kind = node.child_by_field_name("declaration_kind")
    return kind is not None and kind.type == "extension"


_BODY_TYPES = ("block", "body", "compound_statement", "declaration_list", "statement_block")
# a class field whose value is a function is a method (TypeScript's and JavaScript's grammars)
_CLASS_FIELDS = ("public_field_definition", "field_definition")
_STRING_QUOTES = re.compile(r"^[rRbBuUfF]*(\"\"\"|\'\'\'|\"|\')(.*)\1$", re.DOTALL)
_COMMENT_MARKS = re.compile(r"^\s*(?:/\*+!?|\*+/|//+!?|#+|\*+(?!/)|--+)\s?")


def _clean_comment(text: str) -> str:
    lines = [_COMMENT_MARKS.sub("", line).rstrip() for line in text.splitlines()]
    lines = [line.removesuffix("*/").rstrip() for line in lines]
    return inspect.cleandoc("\n".join(lines)).strip()


class TreeChunker:
    """Definitions (functions, classes, methods) become items linked by
    parent; top-level code outside them becomes module items. A class embeds
    as a skeleton: its own lines, each member's signature, bodies elided."""

    MAX_SIGNATURE = 1000
    MAX_DOC_CONTEXT = 600  # characters of a doc comment repeated in the header
    MAX_DOCSTRING = 4000  # characters kept in the docstring field
    MAX_DOC_COMMENTS = 64  # comment nodes walked back from a definition (each step scans siblings)
    # a function longer than this many bytes a token of the model's window (surely more than one window) has
    # the functions defined in it as chunks of their own, and is embedded as a skeleton, as a class is
    NESTED_BYTES_PER_TOKEN = 4

    def __init__(self, spec: Spec, language: str, data: bytes, sizer: Sizer):
        self.spec, self.language, self.data, self.sizer = spec, language, data, sizer
        self.out: list[Item] = []
        self.sig_end: list[int] = []  # per item: the byte where its signature ends

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
            if t == "impl_item":  # Rust `impl [Trait for] Type<T>`: named as its type, without its arguments
                ty = node.child_by_field_name("type")
                if ty is not None and ty.type == "generic_type":
                    ty = ty.child_by_field_name("type") or ty
                return "impl", node, ty.text.decode("utf-8", "replace") if ty is not None else node_name(node)
            if t == "class_declaration" and _swift_extension(node):
                return "impl", node, node_name(node)
            return "class", node, node_name(node)
        if t == "variable_declarator" and self.spec.assigned_functions:
            value = node.child_by_field_name("value")
            if value is not None and value.type in self.spec.assigned_functions:
                parent = node.parent
                outer = parent if parent is not None and parent.named_child_count == 1 else node
                return "function", outer, node_name(node)
        if t in _CLASS_FIELDS and self.spec.assigned_functions:  # JS/TS `produce = (base, recipe) => {...}`
            value = node.child_by_field_name("value")
            if value is not None and value.type in self.spec.assigned_functions:
                name = node.child_by_field_name("name") or node.child_by_field_name("property")
                return "function", node, name.text.decode("utf-8", "replace") if name is not None else ""
        return None

    def items(self) -> list[Item]:
        tree = get_parser(self.spec.grammar).parse(self.data)
        root = tree.root_node
        top_ranges: list[tuple[int, int]] = []
        # The definitions enclosing the current node, innermost last: (start, end of the defining node, the
        # context its descendants get: parent item, qualified prefix, in_class, in_function). A function skipped
        # inside another opens nothing: what it holds sees the context around it, as in a walk over every node.
        open_defs: list[tuple[int, int, tuple[int, str, bool, bool]]] = []
        for node in self._candidates(root):
            start, end = node.start_byte, node.end_byte
            # in preorder, an enclosing definition is one whose range holds this node's
            while open_defs and not (open_defs[-1][0] <= start and end <= open_defs[-1][1]):
                open_defs.pop()
            parent, prefix, in_class, in_function = open_defs[-1][2] if open_defs else (-1, "", False, False)
            found = self._definition(node)
            if not found or (in_function and found[0] == "function"):
                continue
            group, outer, name = found
            kind = group
            if group == "function" and (in_class or node.type in self.spec.methods_always):
                kind = "method"
            receiver = self._go_receiver(node) if node.type == "method_declaration" and \
                self.language == "go" else ""
            qual_prefix = receiver or prefix
            qualified = f"{qual_prefix}.{name}" if qual_prefix and name else name
            index = self._add(node, outer, kind, name, qualified, parent)
            if parent < 0:
                top_ranges.append((outer.start_byte, outer.end_byte))
            in_def = (True, False) if group in TYPE_KINDS else (False, not self._holds_functions(outer))
            open_defs.append((start, end, (index, qualified, *in_def)))
        self._link_go_methods()
        self._contexts()
        self._class_skeletons()
        self._module_items(top_ranges)
        return self.out

    def _candidates(self, root) -> list:
        """Every node that may define a chunk, in preorder (a parent before its children, siblings in order).
        A tree-sitter query finds them in C: a walk in Python made a ``Node`` of every node of the tree, about
        half of the parser's time."""
        query = _definition_query(self.spec)
        if query is None:
            return []
        from tree_sitter import QueryCursor

        nodes = [n for n in QueryCursor(query).captures(root).get("def", ()) if n.id != root.id]
        # the cursor gives them in no useful order; by start, the longest first, is preorder but for nodes with
        # the same range (a parent and its only child), which keep the tree's order by their depth
        nodes.sort(key=_range_key)
        if any(_range_key(a) == _range_key(b) for a, b in zip(nodes, nodes[1:])):
            nodes.sort(key=lambda n: (*_range_key(n), _depth(n)))
        return nodes

    def _holds_functions(self, outer) -> bool:
        """Whether the functions defined in this function are chunks of their own: only in one too long for a
        window (JS's `enablePatches`, hundreds of lines of inner functions), not in a closure or decorator."""
        window = self.sizer.limits.max_tokens
        return bool(window) and outer.end_byte - outer.start_byte > self.NESTED_BYTES_PER_TOKEN * window

    def _go_receiver(self, node) -> str:
        recv = node.child_by_field_name("receiver")
        if recv is None:
            return ""
        ids = [n for n in _walk(recv) if n.type == "type_identifier"]
        return ids[0].text.decode("utf-8", "replace") if ids else ""

    def _add(self, node, outer, kind: str, name: str, qualified: str, parent: int) -> int:
        body = self._body(node)
        if body is not None:  # up to the last token before the body that is not a comment
            sig_end = node.start_byte
            for child in node.children:
                if child.start_byte >= body.start_byte:
                    break
                if "comment" not in child.type:
                    sig_end = child.end_byte
            if sig_end == node.start_byte:
                sig_end = body.start_byte
        else:
            sig_end = self.data.find(b"\n", node.start_byte, node.end_byte)
        if sig_end < 0:
            sig_end = node.end_byte
        sig_start = node.start_byte if node.type != "variable_declarator" else outer.start_byte
        raw = self.data[sig_start:sig_end].rstrip()
        signature = raw.decode("utf-8", "replace").strip()
        if len(signature) > self.MAX_SIGNATURE:
            signature = signature[:self.MAX_SIGNATURE] + "..."
        docstring, outside = self._docstring(body), False
        if not docstring:
            docstring, outside = self._doc_comment(outer), True
        docstring = docstring[:self.MAX_DOCSTRING]
        self.out.append(Item(kind, outer.start_byte, outer.end_byte, name, qualified, parent, signature,
                               docstring))
        self.sig_end.append(sig_start + len(raw))
        if outside and docstring:  # a doc comment above the definition: outside its range, so in its header
            self.out[-1].context = [docstring[:self.MAX_DOC_CONTEXT]]
        return len(self.out) - 1

    @staticmethod
    def _body(node):
        if node.type == "variable_declarator" or node.type in _CLASS_FIELDS:
            node = node.child_by_field_name("value") or node
        body = node.child_by_field_name("body")
        if body is not None:
            return body
        return next((c for c in reversed(node.named_children) if any(t in c.type for t in _BODY_TYPES)), None)

    def _docstring(self, body) -> str:
        """A docstring: the first statement of the body, if a string literal (Python)."""
        if body is None or self.language != "python":
            return ""
        first = next((c for c in body.named_children if c.type != "comment"), None)
        if first is not None and first.type == "expression_statement" and first.named_child_count == 1:
            first = first.named_children[0]
        if first is None or first.type != "string":
            return ""
        m = _STRING_QUOTES.match(first.text.decode("utf-8", "replace"))
        return inspect.cleandoc(m.group(2)).strip() if m else ""

    def _doc_comment(self, outer) -> str:
        """The comment lines directly above a definition (no blank line between; one blank line after a
        ``/** ... */`` or ``///`` doc comment, which some code styles leave)."""
        comments, node, row = [], outer.prev_named_sibling, outer.start_point[0]
        while node is not None and "comment" in node.type and len(comments) < self.MAX_DOC_COMMENTS:
            text = node.text.decode("utf-8", "replace")
            gap = 2 if not comments and text.lstrip().startswith(("/**", "///")) else 1
            if node.end_point[0] < row - gap:
                break
            if text.startswith("#!"):
                break
            prev = node.prev_sibling
            if prev is not None and prev.end_point[0] == node.start_point[0] and "comment" not in prev.type:
                break  # a trailing comment of the line above
            comments.append(text)
            row, node = node.start_point[0], node.prev_named_sibling
        return _clean_comment("\n".join(reversed(comments))) if comments else ""

    def _link_go_methods(self) -> None:
        if self.language != "go":
            return
        types = {it.symbol: i for i, it in enumerate(self.out) if it.kind == "class"}
        for it in self.out:
            if it.kind == "method" and it.parent < 0 and "." in it.qualified:
                it.parent = types.get(it.qualified.split(".", 1)[0], -1)

    def _contexts(self) -> None:
        """A method's header names the signature of its class (a nested definition's, of its function)."""
        for it in self.out:
            if it.parent >= 0:
                it.context = [self.out[it.parent].signature, *it.context]

    def _class_skeletons(self) -> None:
        """Each member keeps its lines up to the end of its signature; the rest
        of its body becomes one "..." line."""
        elided: dict[int, list[tuple[int, int]]] = {}
        for i, it in enumerate(self.out):
            owner = self.out[it.parent] if it.parent >= 0 else None
            # members inside the class's (or function's) range (a Go method is declared outside its type)
            if owner is not None and owner.start <= it.start and it.end <= owner.end:
                cut = self.data.find(b"\n", self.sig_end[i], it.end)
                if cut != -1 and cut + 1 < it.end:
                    end = self.data.find(b"\n", it.end)
                    elided.setdefault(it.parent, []).append((cut + 1, it.end if end == -1 else end + 1))
        for i, spans in elided.items():
            cls = self.out[i]
            units: list[Unit] = []
            spans.sort()
            pos = cls.start
            for start, end in spans:
                if start < pos:
                    continue  # nested inside a member already elided
                units.extend(self.sizer.lines(pos, start))
                first = self.data[start:self.data.find(b"\n", start, end) + 1 or end].decode("utf-8", "replace")
                indent = first[:len(first) - len(first.lstrip())]
                units.append((start, min(end, cls.end), f"{indent}...\n"))
                pos = min(end, cls.end)
            units.extend(self.sizer.lines(pos, cls.end))
            cls.skeleton = units

    def _module_items(self, covered: list[tuple[int, int]]) -> None:
        """Top-level code outside every definition."""
        covered.sort()
        gaps, pos = [], 0
        for start, end in covered:
            if start > pos:
                gaps.append((pos, start))
            pos = max(pos, end)
        gaps.append((pos, len(self.data)))
        for start, end in gaps:
            if not _WORDLIKE.search(self.data, start, end):
                continue  # whitespace and punctuation only
            # a gap that starts mid-line after a definition (its `;`, `}`) starts on the next line
            nl = self.data.find(b"\n", start, end)
            if start > 0 and self.data[start - 1:start] != b"\n" and nl != -1 and \
                    not _WORDLIKE.search(self.data, start, nl):
                start = nl + 1
            # widen to the start of the line only over blanks, never into a definition
            line_start = self.data.rfind(b"\n", 0, start) + 1
            if self.data[line_start:start].strip():
                line_start = start
            self.out.append(Item("module", line_start, end, window=True))


@cache
def _definition_query(spec: Spec):
    """A query capturing (as ``def``) every named node whose type ``_definition_of`` looks at for this language,
    or None when there is none. A type the grammar lacks is left out: it would fail the query, and no tree
    holds it."""
    from tree_sitter import Query

    types = set(spec.functions) | set(spec.classes)
    if spec.assigned_functions:
        types |= {"variable_declarator", *_CLASS_FIELDS}
    language = get_parser(spec.grammar).language
    known = sorted(t for t in types if language.id_for_node_kind(t, True) is not None)
    return Query(language, "[" + " ".join(f"({t})" for t in known) + "] @def") if known else None


def _range_key(node) -> tuple[int, int]:
    return node.start_byte, -node.end_byte


def _depth(node) -> int:
    depth = 0
    while (node := node.parent) is not None:
        depth += 1
    return depth


_WORDLIKE = re.compile(rb"[\w\x80-\xff]")  # a letter, digit or any non-ASCII character


def _walk(node):
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(n.children))

