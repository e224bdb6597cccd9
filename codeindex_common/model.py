"""Domain types shared by the services. They own their protobuf conversion,
so generated types never leak into core code."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from protos import common_pb2

KINDS = ("function", "method", "class", "module", "block", "section")
_KIND_TO_PB = {k: getattr(common_pb2, f"CHUNK_KIND_{k.upper()}") for k in KINDS}
_PB_TO_KIND = {v: k for k, v in _KIND_TO_PB.items()}


MODES = ("vector", "keyword", "hybrid")
DEFAULT_MODE = "hybrid"


def mode_to_pb(mode: str) -> int:
    return getattr(common_pb2, f"SEARCH_MODE_{mode.upper()}", common_pb2.SEARCH_MODE_UNSPECIFIED)


def mode_from_pb(value: int) -> str:
    """The mode's name; unspecified means the default (hybrid)."""
    if value == common_pb2.SEARCH_MODE_UNSPECIFIED:
        return DEFAULT_MODE
    try:
        return common_pb2.SearchMode.Name(value).removeprefix("SEARCH_MODE_").lower()
    except ValueError:
        from .errors import InvalidArgument

        raise InvalidArgument(f"unknown search mode {value}") from None


def kind_to_pb(kind: str) -> int:
    return _KIND_TO_PB.get(kind, common_pb2.CHUNK_KIND_UNSPECIFIED)


def kind_from_pb(value: int) -> str:
    return _PB_TO_KIND.get(value, "")


@dataclass(frozen=True)
class Chunk:
    id: str
    path: str
    language: str
    kind: str
    symbol: str
    qualified_name: str
    parent_id: str
    start_line: int
    end_line: int
    start_byte: int
    end_byte: int
    text: str
    embed_text: str
    content_hash: str
    docstring: str = ""
    signature: str = ""

    @classmethod
    def from_pb(cls, pb: common_pb2.Chunk) -> Chunk:
        return cls(
            id=pb.id, path=pb.path, language=pb.language, kind=kind_from_pb(pb.kind), symbol=pb.symbol,
            qualified_name=pb.qualified_name, parent_id=pb.parent_id, start_line=pb.start_line,
            end_line=pb.end_line, start_byte=pb.start_byte, end_byte=pb.end_byte, text=pb.text,
            embed_text=pb.embed_text, content_hash=pb.content_hash, docstring=pb.docstring,
            signature=pb.signature,
        )

    def to_pb(self) -> common_pb2.Chunk:
        d = asdict(self)
        d["kind"] = kind_to_pb(self.kind)
        return common_pb2.Chunk(**d)


@dataclass(frozen=True)
class FileResult:
    """What the parser made of one file: chunks, or a skip with its reason."""

    path: str
    language: str
    chunks: tuple[Chunk, ...] = ()
    skip_reason: str = ""
    detail: str = ""


@dataclass
class FileRecord:
    """One file as the store writes it: all its chunks and their vectors."""

    path: str
    file_hash: str
    chunks: list[Chunk]
    vectors: np.ndarray  # (len(chunks), dim) float32
    skip_reason: str = ""
    model_id: str = ""


MAX_K = 1000
MAX_QUERY_CHARS = 4096


@dataclass(frozen=True)
class Query:
    """What a search asks for: ranking mode, how many, and filters. Filter
    values are matched literally (the store quotes them), never interpreted."""

    text: str = ""
    k: int = 10
    mode: str = DEFAULT_MODE
    language: str = ""
    path_glob: str = ""
    kind: str = ""
    symbol: str = ""
    min_score: float | None = None  # minimum cosine similarity (vector and hybrid modes)

    def validate(self) -> None:
        from .errors import InvalidArgument

        if not 1 <= self.k <= MAX_K:
            raise InvalidArgument(f"k must be between 1 and {MAX_K}, got {self.k}")
        if self.mode not in MODES:
            raise InvalidArgument(f"unknown search mode {self.mode!r}; one of {', '.join(MODES)}")
        if len(self.text) > MAX_QUERY_CHARS:
            raise InvalidArgument(f"the query is longer than {MAX_QUERY_CHARS} characters")
        if self.mode in ("keyword", "hybrid") and not self.text.strip():
            raise InvalidArgument(f"{self.mode} search needs the query text")
        if self.kind and self.kind not in KINDS:
            raise InvalidArgument(f"unknown kind {self.kind!r}; one of {', '.join(KINDS)}")
        if self.min_score is not None:
            if self.mode == "keyword":
                raise InvalidArgument("min_score is a cosine similarity: keyword mode has none")
            if not -1.0 <= self.min_score <= 1.0:
                raise InvalidArgument(f"min_score is a cosine similarity in [-1, 1], got {self.min_score}")
        for name in ("text", "language", "path_glob", "kind", "symbol"):
            if "\0" in getattr(self, name):
                raise InvalidArgument(f"{name} contains a NUL byte")

    @classmethod
    def from_pb(cls, pb, mode: str) -> Query:
        """From a store SearchRequest or an orchestrator QueryRequest."""
        text = pb.query_text if hasattr(pb, "query_text") else pb.query
        return cls(text=text, k=pb.k or 10, mode=mode, language=pb.language, path_glob=pb.path_glob,
                   kind=pb.kind, symbol=pb.symbol, min_score=pb.min_score if pb.HasField("min_score") else None)
