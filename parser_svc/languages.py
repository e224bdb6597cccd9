"""Language detection (extension, then shebang) and the tree-sitter node
types that make chunks in each language."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

EXTENSIONS: dict[str, str] = {
    ".py": "python", ".pyi": "python", ".pyw": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript", ".tsx": "tsx",
    ".go": "go", ".rs": "rust", ".java": "java",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp", ".hxx": "cpp",
    ".cs": "csharp", ".rb": "ruby", ".php": "php", ".kt": "kotlin", ".kts": "kotlin",
    ".swift": "swift", ".scala": "scala", ".sc": "scala",
    ".sh": "bash", ".bash": "bash", ".zsh": "bash",
    ".md": "markdown", ".markdown": "markdown",
}

SHEBANGS = {"python": "python", "python3": "python", "node": "javascript", "bash": "bash", "sh": "bash",
            "zsh": "bash", "ruby": "ruby", "php": "php"}
_SHEBANG = re.compile(rb"^#!\s*(?:/usr/bin/env\s+(?:-S\s+)?)?\S*?([A-Za-z0-9_.+-]+)(?:\s|$)")


# Machine-written files that only add noise (and time) to an index.
GENERATED_NAMES = {"package-lock.json", "yarn.lock", "pnpm-lock.yaml", "poetry.lock", "Cargo.lock", "go.sum",
                   "composer.lock", "Gemfile.lock", "Pipfile.lock", "uv.lock"}
GENERATED_SUFFIXES = (".min.js", ".min.css", ".map", ".lock", ".pb.go", "_pb2.py", "_pb2_grpc.py")


def generated(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return name in GENERATED_NAMES or name.endswith(GENERATED_SUFFIXES)


def detect(path: str, head: bytes) -> str:
    """The language of ``path``; "text" when no grammar applies."""
    ext = os.path.splitext(path)[1].lower()
    if ext in EXTENSIONS:
        return EXTENSIONS[ext]
    m = _SHEBANG.match(head[:200])
    if m:
        name = re.sub(rb"[0-9.]+$", b"", m.group(1)).decode("ascii", "replace")
        return SHEBANGS.get(name, SHEBANGS.get(m.group(1).decode("ascii", "replace"), "text"))
    return "text"


@dataclass(frozen=True)
class Spec:
    """What makes a chunk in one language."""

    grammar: str
    functions: frozenset[str]                 # function-like definitions
    classes: frozenset[str]                   # class-like containers
    methods_always: frozenset[str] = field(default_factory=frozenset)  # always methods (Go, Java)
    # variable declarators whose value is one of these become functions (JS/TS arrows)
    assigned_functions: frozenset[str] = field(default_factory=frozenset)


def _s(*names: str) -> frozenset[str]:
    return frozenset(names)


_JS_FUNCS = _s("function_declaration", "generator_function_declaration", "method_definition")
_JS_ASSIGNED = _s("arrow_function", "function_expression", "function", "generator_function")

SPECS: dict[str, Spec] = {
    "python": Spec("python", _s("function_definition"), _s("class_definition")),
    "javascript": Spec("javascript", _JS_FUNCS, _s("class_declaration", "class"), _s("method_definition"),
                       _JS_ASSIGNED),
    "typescript": Spec("typescript", _JS_FUNCS | _s("function_signature"),
                       _s("class_declaration", "abstract_class_declaration", "interface_declaration",
                          "enum_declaration", "class"), _s("method_definition"), _JS_ASSIGNED),
    "go": Spec("go", _s("function_declaration", "method_declaration"), _s("type_spec"), _s("method_declaration")),
    "rust": Spec("rust", _s("function_item", "function_signature_item"),
                 _s("struct_item", "enum_item", "trait_item", "impl_item", "union_item")),
    "java": Spec("java", _s("method_declaration", "constructor_declaration"),
                 _s("class_declaration", "interface_declaration", "enum_declaration", "record_declaration"),
                 _s("method_declaration", "constructor_declaration")),
    "c": Spec("c", _s("function_definition"), _s("struct_specifier", "enum_specifier", "union_specifier")),
    "cpp": Spec("cpp", _s("function_definition"),
                _s("class_specifier", "struct_specifier", "enum_specifier", "union_specifier")),
    "csharp": Spec("csharp", _s("method_declaration", "constructor_declaration", "local_function_statement"),
                   _s("class_declaration", "interface_declaration", "struct_declaration", "enum_declaration",
                      "record_declaration"), _s("method_declaration", "constructor_declaration")),
    "ruby": Spec("ruby", _s("method", "singleton_method"), _s("class", "module")),
    "php": Spec("php", _s("function_definition", "method_declaration"),
                _s("class_declaration", "interface_declaration", "trait_declaration", "enum_declaration"),
                _s("method_declaration")),
    "kotlin": Spec("kotlin", _s("function_declaration"), _s("class_declaration", "object_declaration")),
    "swift": Spec("swift", _s("function_declaration", "init_declaration"),
                  _s("class_declaration", "protocol_declaration")),
    "scala": Spec("scala", _s("function_definition"),
                  _s("class_definition", "object_definition", "trait_definition")),
    "bash": Spec("bash", _s("function_definition"), _s()),
}
SPECS["tsx"] = Spec("tsx", *[getattr(SPECS["typescript"], f) for f in ("functions", "classes", "methods_always",
                                                                       "assigned_functions")])
